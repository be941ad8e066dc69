/*
 * kvtier-bench: N worker processes replay realistic prompt workloads
 * against a running kvtierd, the way an inference engine with prefix
 * caching uses it: per request, Lookup the prompt's chained block keys,
 * Acquire the cached prefix (waiting for blocks another worker is still
 * producing), copy its pages out, Release; Reserve the rest, write the
 * pages, Commit.
 *
 * Workloads (requests drawn in advance from a seeded generator, with Zipf
 * popularity):
 *   burst  a burst of requests sharing a few long system prompts, each with
 *          its own question;
 *   chat   multi-turn conversations, each turn extending the last (a
 *          conversation stays on one worker, as a router would keep it);
 *   rag    queries over documents shared across queries, each document
 *          cached as its own chain (document-level reuse).
 * Page size comes from a model shape: llama-3-8b (32 layers, 8 kv heads,
 * head_dim 128, bf16), llama-3-70b (80 layers), tiny (2 layers, 1 head,
 * head_dim 64), or LAYERS:KV_HEADS:HEAD_DIM:DTYPE_BYTES.
 *
 * --redis replays the same requests against a real redis-server on
 * loopback that the benchmark starts (hiredis; pages as values under the
 * same keys, as LMCache's remote tier stores them): pipelined EXISTS to find
 * the cached prefix, pipelined GET to onload it, pipelined SET to offload
 * the rest. Then kvtier/Redis ratios are printed per workload.
 *
 * --two-nodes runs each workload on two kvtierd ("node A", "node B") that
 * share a redis-server on loopback as their remote tier: node A first,
 * which warms the store (write-behind), then node B with a cold host
 * tier, whose hit rate by tier says what the store gave it.
 *
 * --check runs a small version and fails unless the cache did exactly what
 * the workload implies: every distinct block produced once, every other
 * block served from the cache, the page bytes intact, and the daemon's
 * counters agreeing with the workers'.
 *
 * Usage: kvtier-bench [options]; --help lists them. Without --addr it starts
 * its own kvtierd ($KVTIERD).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "client_util.h"
#include "redis_util.h"

#define SAMPLES 50000 /* latency samples kept per RPC per worker */
#define WAIT_MS 10000 /* how long a worker waits for another's blocks */

enum rpc { R_LOOKUP, R_ACQUIRE, R_RELEASE, R_RESERVE, R_COMMIT, NRPC };
static const char *const rpc_names[2][NRPC] = {
	{ "Lookup", "Acquire", "Release", "Reserve", "Commit" },
	{ "EXISTS", "GET", "-", "SET", "-" }, /* the same steps on Redis */
};

struct model {
	const char *name;
	uint32_t layers, kv_heads, head_dim, dtype_bytes;
};

static const struct model models[] = {
	{ "llama-3-8b", 32, 8, 128, 2 },
	{ "llama-3-70b", 80, 8, 128, 2 },
	{ "tiny", 2, 1, 64, 2 },
};

struct options {
	const char *workloads, *addr;
	struct model model;
	uint32_t workers, requests, block_tokens;
	double zipf;
	uint64_t seed, host_bytes;
	bool check, progress, redis, two_nodes;
	const struct test_redis *server; /* the Redis run's */
};

/* One request: chains of tokens whose keys the worker looks up in order
 * (one chain, or one per document for rag). */
struct request {
	uint32_t worker;
	uint32_t nchains;
	uint32_t first_chain; /* into the workload's chains */
};

struct chain {
	uint32_t first_key, nkeys; /* into the workload's keys */
};

struct workload {
	const char *name;
	struct request *reqs;
	uint32_t nreqs;
	struct chain *chains;
	uint32_t nchains, chains_cap;
	struct kvt_key *keys;
	uint32_t nkeys, keys_cap;
	uint64_t tokens, unique_blocks;
};

/* What one worker did, in shared memory for the parent to read. */
struct worker_stats {
	uint64_t requests, lookups, blocks, hits, produced, present, busy;
	uint64_t no_space, bad_pages, bytes_in, bytes_out, hbm_pages;
	double onload_s, offload_s;
	uint32_t nsamples[NRPC];
	uint64_t calls[NRPC];
	float samples[NRPC][SAMPLES]; /* microseconds */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Zipf(s) over 0..n-1 by inversion of a precomputed CDF. */
struct zipf {
	double *cdf;
	uint32_t n;
};

static void zipf_init(struct zipf *z, uint32_t n, double s)
{
	double sum = 0;

	z->n = n;
	z->cdf = malloc(n * sizeof(*z->cdf));
	CHECK(z->cdf);
	for (uint32_t i = 0; i < n; i++)
		z->cdf[i] = (sum += 1.0 / pow(i + 1, s));
	for (uint32_t i = 0; i < n; i++)
		z->cdf[i] /= sum;
}

static uint32_t zipf_draw(const struct zipf *z, uint64_t *rng)
{
	double u = (double)(splitmix(rng) >> 11) / 9007199254740992.0;
	uint32_t lo = 0, hi = z->n - 1;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (z->cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ---- building workloads ---- */

static const uint8_t secret[32] = "kvtier-bench deployment secret";

/* Appends the keys of tokens as a new chain of the request being built. */
static void add_chain(struct workload *w, const struct options *o,
		      const uint32_t *tokens, size_t ntokens)
{
	size_t max = ntokens / o->block_tokens;
	struct chain *c;
	long n;

	if (w->nchains == w->chains_cap) {
		w->chains_cap = w->chains_cap ? 2 * w->chains_cap : 1024;
		w->chains = realloc(w->chains, w->chains_cap * sizeof(*w->chains));
		CHECK(w->chains);
	}
	while (w->nkeys + max > w->keys_cap) {
		w->keys_cap = w->keys_cap ? 2 * w->keys_cap : 65536;
		w->keys = realloc(w->keys, w->keys_cap * sizeof(*w->keys));
		CHECK(w->keys);
	}
	n = kvt_key_prompt(secret, sizeof(secret), tokens, ntokens, o->block_tokens,
			   NULL, 0, w->keys + w->nkeys, max);
	CHECK(n >= 0);
	c = &w->chains[w->nchains++];
	c->first_key = w->nkeys;
	c->nkeys = (uint32_t)n;
	w->nkeys += (uint32_t)n;
	w->tokens += ntokens;
}

/* Token i of stream `id`: distinct streams never share a token run. */
static void fill_tokens(uint32_t *t, size_t n, uint64_t id)
{
	uint64_t s = id * 0x2545f4914f6cdd1dull + 1;

	for (size_t i = 0; i < n; i++)
		t[i] = (uint32_t)(splitmix(&s) % 128256); /* Llama-3 vocabulary */
}

static struct request *new_request(struct workload *w, uint32_t worker)
{
	struct request *r = &w->reqs[w->nreqs++];

	r->worker = worker;
	r->first_chain = w->nchains;
	r->nchains = 0;
	return r;
}

static int cmp_key(const void *a, const void *b)
{
	return memcmp(a, b, KVT_KEY_SIZE);
}

static void count_unique(struct workload *w)
{
	struct kvt_key *sorted = malloc((w->nkeys + 1) * sizeof(*sorted));

	CHECK(sorted);
	memcpy(sorted, w->keys, w->nkeys * sizeof(*sorted));
	qsort(sorted, w->nkeys, sizeof(*sorted), cmp_key);
	w->unique_blocks = 0;
	for (uint32_t i = 0; i < w->nkeys; i++)
		if (i == 0 || memcmp(&sorted[i], &sorted[i - 1], KVT_KEY_SIZE))
			w->unique_blocks++;
	free(sorted);
}

/* A burst sharing 4 long system prompts: 2048 tokens + a 100-token question. */
static void build_burst(struct workload *w, const struct options *o, uint64_t rng)
{
	enum { PROMPTS = 4, SYS = 2048, Q = 100 };
	uint32_t *t = malloc((SYS + Q) * sizeof(*t));
	struct zipf z;

	zipf_init(&z, PROMPTS, o->zipf);
	for (uint32_t i = 0; i < o->requests; i++) {
		struct request *r = new_request(w, i % o->workers);

		fill_tokens(t, SYS, 1 + zipf_draw(&z, &rng));
		fill_tokens(t + SYS, Q, 1000000 + i);
		add_chain(w, o, t, SYS + Q);
		r->nchains = 1;
	}
	free(z.cdf);
	free(t);
}

/* Conversations (64 per worker) of turns of 300 tokens (question and answer),
 * each request one more turn of a conversation drawn by Zipf. */
static void build_chat(struct workload *w, const struct options *o, uint64_t rng)
{
	enum { TURN = 300, MAX_TURNS = 32 };
	uint32_t nconv = 64 * o->workers, *turns = calloc(nconv, sizeof(*turns));
	uint32_t *gen = calloc(nconv, sizeof(*gen));
	uint32_t *t = malloc(TURN * MAX_TURNS * sizeof(*t));
	struct zipf z;

	CHECK(turns && gen && t);
	zipf_init(&z, nconv, o->zipf);
	for (uint32_t i = 0; i < o->requests; i++) {
		uint32_t c = zipf_draw(&z, &rng);
		struct request *r = new_request(w, c % o->workers);

		if (turns[c] == MAX_TURNS) { /* a new conversation in its place */
			turns[c] = 0;
			gen[c]++;
		}
		turns[c]++;
		for (uint32_t k = 0; k < turns[c]; k++)
			fill_tokens(t + k * TURN, TURN,
				    ((uint64_t)c << 40 | (uint64_t)gen[c] << 20 | k) + 7);
		add_chain(w, o, t, (size_t)turns[c] * TURN);
		r->nchains = 1;
	}
	free(z.cdf);
	free(turns);
	free(gen);
	free(t);
}

/* 512 documents of 1024 tokens, 3 per query drawn by Zipf, each document
 * its own chain. */
static void build_rag(struct workload *w, const struct options *o, uint64_t rng)
{
	enum { DOCS = 512, DOC = 1024, PER_QUERY = 3 };
	uint32_t *t = malloc(DOC * sizeof(*t));
	struct zipf z;

	zipf_init(&z, DOCS, o->zipf);
	for (uint32_t i = 0; i < o->requests; i++) {
		struct request *r = new_request(w, i % o->workers);

		for (int k = 0; k < PER_QUERY; k++) {
			fill_tokens(t, DOC, 5000000 + zipf_draw(&z, &rng));
			add_chain(w, o, t, DOC);
			r->nchains++;
		}
	}
	free(z.cdf);
	free(t);
}

static void build(struct workload *w, const char *name, const struct options *o)
{
	memset(w, 0, sizeof(*w));
	w->name = name;
	w->reqs = calloc(o->requests, sizeof(*w->reqs));
	CHECK(w->reqs);
	if (strcmp(name, "burst") == 0)
		build_burst(w, o, o->seed);
	else if (strcmp(name, "chat") == 0)
		build_chat(w, o, o->seed + 1);
	else
		build_rag(w, o, o->seed + 2);
	count_unique(w);
}

/* ---- workers ---- */

static uint64_t page_bytes(const struct options *o)
{
	const struct model *m = &o->model;

	return (uint64_t)2 * m->layers * m->kv_heads * m->head_dim * m->dtype_bytes *
	       o->block_tokens;
}

/* Pages are a template stamped with their key at both ends. */
static uint8_t *page_template;

static void write_page(void *page, uint64_t len, const struct kvt_key *k)
{
	memcpy(page, page_template, len);
	memcpy(page, k, KVT_KEY_SIZE);
	memcpy((char *)page + len - KVT_KEY_SIZE, k, KVT_KEY_SIZE);
}

/* Copies a page out, as an onload would; false if it is not k's. */
static bool read_page(void *dst, const void *page, uint64_t len,
		      const struct kvt_key *k, bool full_check)
{
	memcpy(dst, page, len);
	if (memcmp(dst, k, KVT_KEY_SIZE) ||
	    memcmp((char *)dst + len - KVT_KEY_SIZE, k, KVT_KEY_SIZE))
		return false;
	return !full_check || memcmp((char *)dst + KVT_KEY_SIZE, page_template + KVT_KEY_SIZE,
				     len - 2 * KVT_KEY_SIZE) == 0;
}

struct worker {
	const struct options *o;
	kvt_client *c;
	redisContext *rc; /* the Redis run: instead of c */
	struct kvt_namespace ns;
	struct worker_stats *st;
	uint64_t rng;
	uint8_t *buf; /* where onloads copy to */
};

static void sample(struct worker *w, enum rpc r, double t0)
{
	struct worker_stats *st = w->st;
	uint64_t n = st->calls[r]++;
	float us = (float)((now() - t0) * 1e6);

	if (n < SAMPLES)
		st->samples[r][st->nsamples[r]++] = us;
	else if (splitmix(&w->rng) % (n + 1) < SAMPLES) /* reservoir */
		st->samples[r][splitmix(&w->rng) % SAMPLES] = us;
}

/* Acquires keys (waiting for ones being produced), copies the pinned prefix
 * out, releases. Returns how many were served. */
static size_t onload(struct worker *w, const struct kvt_key *keys, size_t n)
{
	uint64_t len = w->ns.page_bytes;
	struct kvt_lease lease;
	double t0 = now(), t;

	CHECK_RC(w->c, kvt_acquire(w->c, &w->ns, keys, n, WAIT_MS, &lease), 0);
	sample(w, R_ACQUIRE, t0);
	for (size_t i = 0; i < lease.count; i++) {
		if (!read_page(w->buf, lease.pages[i], len, &keys[i], w->o->check))
			w->st->bad_pages++;
		w->st->hbm_pages += lease.hbm[i];
	}
	size_t got = lease.count;

	w->st->bytes_out += got * len;
	t = now();
	if (lease.id) {
		CHECK_RC(w->c, kvt_release(w->c, &lease), 0); /* zeroes lease */
		sample(w, R_RELEASE, t);
	}
	w->st->onload_s += now() - t0;
	return got;
}

/* Reserves keys[0..n) after parent, writes and commits what it got, then
 * waits for the blocks others are producing. */
static void offload(struct worker *w, const struct kvt_key *parent,
		    const struct kvt_key *keys, size_t n)
{
	struct kvt_slot *slots = calloc(n, sizeof(*slots));
	struct kvt_key *mine = malloc(n * sizeof(*mine));
	uint64_t len = w->ns.page_bytes;
	size_t nmine = 0;
	double t0 = now(), t;

	CHECK(slots && mine);
	CHECK_RC(w->c, kvt_reserve(w->c, &w->ns, parent, keys, n, NULL, slots), 0);
	sample(w, R_RESERVE, t0);
	for (size_t i = 0; i < n; i++) {
		switch (slots[i].state) {
		case KVT_SLOT_RESERVED:
			write_page(slots[i].page, len, &keys[i]);
			mine[nmine++] = keys[i];
			break;
		case KVT_SLOT_PRESENT:
			w->st->present++;
			break;
		case KVT_SLOT_BUSY:
			break;
		case KVT_SLOT_NO_SPACE:
			w->st->no_space++;
			break;
		}
	}
	if (nmine) {
		t = now();
		CHECK_RC(w->c, kvt_commit(w->c, &w->ns, mine, nmine), 0);
		sample(w, R_COMMIT, t);
		w->st->produced += nmine;
		w->st->bytes_in += nmine * len;
	}
	w->st->offload_s += now() - t0;
	/* Runs of blocks another worker is producing: early reuse. */
	for (size_t i = 0; i < n;) {
		size_t j = i;

		while (j < n && slots[j].state == KVT_SLOT_BUSY)
			j++;
		if (j > i)
			w->st->busy += onload(w, keys + i, j - i);
		i = j > i ? j : i + 1;
	}
	free(slots);
	free(mine);
}

/* Sends one pipelined command per key (a page with each SET) and reads the
 * replies. Returns the length of the leading run of hits: keys that EXISTS
 * found, or (read_pages) whose GET returned a page, which is copied out. */
static size_t redis_pipeline(struct worker *w, const char *cmd, const struct kvt_key *keys,
			     size_t n, bool read_pages)
{
	uint64_t len = page_bytes(w->o);
	size_t prefix = 0;
	bool run = true;

	for (size_t i = 0; i < n; i++) {
		if (strcmp(cmd, "SET") == 0) {
			write_page(w->buf, len, &keys[i]);
			redisAppendCommand(w->rc, "SET %b %b", keys[i].bytes, (size_t)KVT_KEY_SIZE,
					   w->buf, (size_t)len);
		} else {
			redisAppendCommand(w->rc, "%s %b", cmd, keys[i].bytes, (size_t)KVT_KEY_SIZE);
		}
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *rep;

		CHECK(redisGetReply(w->rc, (void **)&rep) == REDIS_OK && rep);
		if (strcmp(cmd, "EXISTS") == 0)
			run = run && rep->integer == 1;
		else if (read_pages)
			run = run && rep->type == REDIS_REPLY_STRING && rep->len == (size_t)len;
		if (run && read_pages) {
			if (!read_page(w->buf, rep->str, len, &keys[i], w->o->check))
				w->st->bad_pages++;
		}
		prefix += run;
		freeReplyObject(rep);
	}
	return prefix;
}

/* One chain on Redis: EXISTS finds the prefix, GET onloads it (an entry
 * evicted in between ends it), SET offloads the rest. */
static void serve_redis(struct worker *w, const struct kvt_key *keys, size_t n)
{
	uint64_t len = page_bytes(w->o);
	size_t ready, got = 0;
	double t0 = now();

	ready = redis_pipeline(w, "EXISTS", keys, n, false);
	sample(w, R_LOOKUP, t0);
	if (ready) {
		t0 = now();
		got = redis_pipeline(w, "GET", keys, ready, true);
		sample(w, R_ACQUIRE, t0);
		w->st->bytes_out += got * len;
		w->st->onload_s += now() - t0;
	}
	w->st->hits += got;
	if (got < n) {
		t0 = now();
		redis_pipeline(w, "SET", keys + got, n - got, false);
		sample(w, R_RESERVE, t0);
		w->st->produced += n - got;
		w->st->bytes_in += (n - got) * len;
		w->st->offload_s += now() - t0;
	}
}

static void serve(struct worker *w, const struct workload *wl, uint32_t id,
		  uint64_t *done)
{
	for (uint32_t r = 0; r < wl->nreqs; r++) {
		const struct request *req = &wl->reqs[r];

		if (req->worker != id)
			continue;
		for (uint32_t k = 0; k < req->nchains; k++) {
			const struct chain *ch = &wl->chains[req->first_chain + k];
			const struct kvt_key *keys = wl->keys + ch->first_key;
			size_t n = ch->nkeys, ready, pending, got;
			double t0;

			if (n == 0)
				continue;
			w->st->lookups++;
			w->st->blocks += n;
			if (w->rc) {
				serve_redis(w, keys, n);
				continue;
			}
			t0 = now();
			CHECK_RC(w->c, kvt_lookup(w->c, &w->ns, keys, n, &ready, &pending), 0);
			sample(w, R_LOOKUP, t0);
			got = onload(w, keys, n);
			w->st->hits += got;
			if (got < n)
				offload(w, got ? &keys[got - 1] : NULL, keys + got, n - got);
		}
		w->st->requests++;
		__atomic_add_fetch(done, 1, __ATOMIC_RELAXED);
	}
}

static void worker_main(const struct options *o, const struct workload *wl,
			uint32_t id, struct worker_stats *st, uint64_t *done)
{
	struct worker w = { .o = o, .st = st, .rng = o->seed * 31 + id };
	char name[160];

	w.buf = malloc(page_bytes(o));
	CHECK(w.buf);
	if (o->server) {
		w.rc = test_redis_connect(o->server);
		serve(&w, wl, id, done);
		redisFree(w.rc);
		free(w.buf);
		return;
	}
	CHECK(kvt_connect(o->addr, &w.c) == 0);
	snprintf(name, sizeof(name), "kvtier-bench-%s-%u", wl->name, id);
	CHECK_RC(w.c, kvt_attach(w.c, name), 0);
	snprintf(name, sizeof(name), "bench-%s:%s:bt%u", wl->name, o->model.name,
		 o->block_tokens);
	CHECK_RC(w.c, kvt_open_namespace(w.c, name, page_bytes(o), o->block_tokens, 0,
					 &w.ns), 0);
	serve(&w, wl, id, done);
	kvt_close(w.c);
	free(w.buf);
}

/* ---- the daemon's side ---- */

enum { D_COMMITTED, D_IN, D_OUT, D_HITS, D_HITS_NVME, D_HITS_REMOTE, D_HBM_HITS,
       D_EVICTIONS, D_REMOTE_WRITES, D_REMOTE_SKIPPED, ND };
static const char *const daemon_stats[ND] = {
	"committed_blocks_total", "tiers.host.in_bytes_total", "tiers.host.out_bytes_total",
	"lookup_hit_blocks_total", "lookup_nvme_hit_blocks_total",
	"lookup_remote_hit_blocks_total", "hbm_hits_total", "tiers.host.evictions_total",
	"remote_writes_total", "remote_writes_skipped_total",
};

static void collect(void *arg, const char *name, const char *value)
{
	uint64_t *out = arg;

	for (int i = 0; i < ND; i++)
		if (strcmp(name, daemon_stats[i]) == 0)
			out[i] = strtoull(value, NULL, 10);
}

/* The daemon's counters, read by a child: this process forks workers and
 * must not create a gRPC client itself. */
static void daemon_snapshot(const char *addr, uint64_t *shared, uint64_t out[ND])
{
	pid_t pid = fork();
	int status;

	CHECK(pid >= 0);
	if (pid == 0) {
		kvt_client *c;

		memset(shared, 0, ND * sizeof(*shared));
		CHECK(kvt_connect(addr, &c) == 0);
		CHECK_RC(c, kvt_stats(c, collect, shared), 0);
		kvt_close(c);
		_exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	      WEXITSTATUS(status) == 0);
	memcpy(out, shared, ND * sizeof(*out));
}

/* ---- running and reporting ---- */

struct result {
	struct worker_stats sum;
	double seconds;
	uint64_t daemon[ND];
	float *samples[NRPC];
	uint32_t nsamples[NRPC];
};

static void progress(const char *name, uint64_t done, uint32_t total, double t0)
{
	int width = 40, fill = total ? (int)(width * done / total) : width;

	fprintf(stderr, "\r%-6s [%.*s%*s] %3d%% %llu/%u requests, %.1fs", name, fill,
		"########################################", width - fill, "",
		total ? (int)(100 * done / total) : 100, (unsigned long long)done, total,
		now() - t0);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

static double pct(const struct result *r, enum rpc k, double p)
{
	if (!r->nsamples[k])
		return 0;
	return r->samples[k][(size_t)(p * (r->nsamples[k] - 1))];
}

static void run(const struct options *o, const struct workload *wl, struct result *r)
{
	size_t bytes = o->workers * sizeof(struct worker_stats) + 64 + ND * 8;
	uint8_t *shm = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			    -1, 0);
	struct worker_stats *st = (struct worker_stats *)(shm + 64 + ND * 8);
	uint64_t *done = (uint64_t *)shm, before[ND];
	pid_t *pids = calloc(o->workers, sizeof(*pids));
	uint32_t alive = o->workers, ticks = 0;
	double t0;

	CHECK(shm != MAP_FAILED && pids);
	memset(before, 0, sizeof(before));
	memset(r->daemon, 0, sizeof(r->daemon));
	if (!o->server)
		daemon_snapshot(o->addr, (uint64_t *)(shm + 64), before);
	fflush(NULL);
	t0 = now();
	for (uint32_t i = 0; i < o->workers; i++) {
		pids[i] = fork();
		CHECK(pids[i] >= 0);
		if (pids[i] == 0) {
			worker_main(o, wl, i, &st[i], done);
			_exit(0);
		}
	}
	while (alive) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid > 0) {
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				fprintf(stderr, "\nkvtier-bench: a %s worker failed\n", wl->name);
				for (uint32_t i = 0; i < o->workers; i++)
					kill(pids[i], SIGKILL);
				exit(1);
			}
			alive--;
			continue;
		}
		if (o->progress && ++ticks % 40 == 0)
			progress(wl->name, __atomic_load_n(done, __ATOMIC_RELAXED), wl->nreqs, t0);
		usleep(5000);
	}
	r->seconds = now() - t0;
	if (o->progress) {
		progress(wl->name, wl->nreqs, wl->nreqs, t0);
		fprintf(stderr, "\n");
	}
	if (!o->server)
		daemon_snapshot(o->addr, (uint64_t *)(shm + 64), r->daemon);
	for (int i = 0; i < ND; i++)
		r->daemon[i] -= before[i];

	memset(&r->sum, 0, offsetof(struct worker_stats, samples));
	for (int k = 0; k < NRPC; k++) {
		r->samples[k] = malloc((size_t)o->workers * SAMPLES * sizeof(float));
		r->nsamples[k] = 0;
		CHECK(r->samples[k]);
	}
	for (uint32_t i = 0; i < o->workers; i++) {
		struct worker_stats *w = &st[i];
		/* The uint64_t counters, requests to hbm_pages, summed as one array. */
		uint64_t *a = &r->sum.requests, *b = &w->requests;

		for (size_t f = 0; f < offsetof(struct worker_stats, onload_s) / 8; f++)
			a[f] += b[f];
		r->sum.onload_s += w->onload_s;
		r->sum.offload_s += w->offload_s;
		for (int k = 0; k < NRPC; k++) {
			r->sum.calls[k] += w->calls[k];
			memcpy(r->samples[k] + r->nsamples[k], w->samples[k],
			       w->nsamples[k] * sizeof(float));
			r->nsamples[k] += w->nsamples[k];
		}
	}
	for (int k = 0; k < NRPC; k++)
		qsort(r->samples[k], r->nsamples[k], sizeof(float), cmp_float);
	munmap(shm, bytes);
	free(pids);
}

static void report(const struct workload *wl, const struct result *r, bool redis)
{
	const struct worker_stats *s = &r->sum;
	uint64_t served = s->hits + s->present + s->busy;
	double hits = r->daemon[D_HITS] ? (double)r->daemon[D_HITS] : 1;

	printf("%-6s %6llu req %8llu blocks %7llu distinct  token hit %5.1f%% ",
	       wl->name, (unsigned long long)s->requests, (unsigned long long)s->blocks,
	       (unsigned long long)wl->unique_blocks, s->blocks ? 100.0 * served / s->blocks : 0);
	if (!redis)
		printf("(host %.1f%% nvme %.1f%% remote %.1f%% hbm %.1f%% of hits; early reuse %llu; %llu evicted)  ",
		       100.0 * (r->daemon[D_HITS] - r->daemon[D_HITS_NVME] -
				r->daemon[D_HITS_REMOTE]) / hits,
		       100.0 * r->daemon[D_HITS_NVME] / hits,
		       100.0 * r->daemon[D_HITS_REMOTE] / hits,
		       s->hits + s->busy ? 100.0 * s->hbm_pages / (s->hits + s->busy) : 0,
		       (unsigned long long)s->busy, (unsigned long long)r->daemon[D_EVICTIONS]);
	printf("%.0f lookups/s  onload %.2f GB/s  offload %.2f GB/s (per worker)  %.2fs\n",
	       s->lookups / r->seconds,
	       s->onload_s > 0 ? s->bytes_out / s->onload_s / 1e9 : 0,
	       s->offload_s > 0 ? s->bytes_in / s->offload_s / 1e9 : 0,
	       r->seconds);
	printf("       RPC p50/p99 us:");
	for (int k = 0; k < NRPC; k++)
		if (r->nsamples[k])
			printf("  %s %.0f/%.0f", rpc_names[redis][k], pct(r, k, 0.5), pct(r, k, 0.99));
	printf("\n");
}

/* kvtier / Redis on the same requests. */
static void compare(const struct result *k, const struct result *r)
{
	const struct worker_stats *a = &k->sum, *b = &r->sum;
	double hit_k = a->blocks ? 100.0 * (a->hits + a->present + a->busy) / a->blocks : 0;
	double hit_r = b->blocks ? 100.0 * b->hits / b->blocks : 0;

	printf("       kvtier/redis: requests/s %.2fx, lookup p50 %.2fx, onload GB/s %.2fx, "
	       "offload GB/s %.2fx, token hit %.1f%% vs %.1f%%, blocks written %llu vs %llu\n",
	       r->seconds / k->seconds, pct(k, R_LOOKUP, 0.5) / pct(r, R_LOOKUP, 0.5),
	       (a->bytes_out / a->onload_s) / (b->bytes_out / b->onload_s),
	       (a->bytes_in / a->offload_s) / (b->bytes_in / b->offload_s), hit_k, hit_r,
	       (unsigned long long)a->produced, (unsigned long long)b->produced);
}

/* What the workload implies when nothing is evicted. */
static int check(const struct options *o, const struct workload *wl,
		 const struct result *r)
{
	const struct worker_stats *s = &r->sum;
	uint64_t pb = page_bytes(o), served = s->hits + s->present + s->busy;
	int bad = 0;

#define EXPECT(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			printf("CHECK %s: ", wl->name);                         \
			printf(__VA_ARGS__);                                    \
			printf("\n");                                           \
			bad++;                                                  \
		}                                                               \
	} while (0)

	EXPECT(s->requests == wl->nreqs, "%llu requests served, %u in the workload",
	       (unsigned long long)s->requests, wl->nreqs);
	EXPECT(s->blocks == wl->nkeys, "%llu blocks looked up, %u in the workload",
	       (unsigned long long)s->blocks, wl->nkeys);
	EXPECT(s->produced == wl->unique_blocks,
	       "%llu blocks produced, %llu distinct ones in the workload (each once)",
	       (unsigned long long)s->produced, (unsigned long long)wl->unique_blocks);
	EXPECT(served == wl->nkeys - wl->unique_blocks,
	       "%llu blocks served from the cache, %llu repeat blocks in the workload",
	       (unsigned long long)served,
	       (unsigned long long)(wl->nkeys - wl->unique_blocks));
	EXPECT(s->bad_pages == 0, "%llu pages read back wrong", (unsigned long long)s->bad_pages);
	EXPECT(s->no_space == 0, "%llu reservations found no space", (unsigned long long)s->no_space);
	EXPECT(r->daemon[D_EVICTIONS] == 0, "the daemon evicted %llu blocks (host tier too small)",
	       (unsigned long long)r->daemon[D_EVICTIONS]);
	EXPECT(r->daemon[D_COMMITTED] == s->produced, "daemon committed %llu, workers %llu",
	       (unsigned long long)r->daemon[D_COMMITTED], (unsigned long long)s->produced);
	EXPECT(r->daemon[D_IN] == s->produced * pb, "daemon took in %llu bytes, workers wrote %llu",
	       (unsigned long long)r->daemon[D_IN], (unsigned long long)(s->produced * pb));
	EXPECT(r->daemon[D_OUT] == s->bytes_out, "daemon handed out %llu bytes, workers read %llu",
	       (unsigned long long)r->daemon[D_OUT], (unsigned long long)s->bytes_out);
	EXPECT(s->bytes_out == (s->hits + s->busy) * pb, "workers read %llu bytes for %llu pages",
	       (unsigned long long)s->bytes_out, (unsigned long long)(s->hits + s->busy));
	return bad;
}

/* Node A's write-behind is done: every block it committed is written to
 * the store or skipped. Returns how many were skipped. */
static uint64_t store_settled(const char *addr)
{
	uint64_t *shared = mmap(NULL, ND * 8, PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0), st[ND];

	CHECK(shared != MAP_FAILED);
	for (int i = 0;; i++) {
		daemon_snapshot(addr, shared, st);
		if (st[D_REMOTE_WRITES] + st[D_REMOTE_SKIPPED] >= st[D_COMMITTED])
			break;
		CHECK(i < 3000); /* 30 s */
		usleep(10000);
	}
	munmap(shared, ND * 8);
	return st[D_REMOTE_SKIPPED];
}

/* Node B after node A warmed the store: nothing produced again (unless A
 * skipped writes), every repeat served, every page intact. */
static int check_node_b(const struct workload *wl, const struct result *r,
			uint64_t skipped_on_a)
{
	const struct worker_stats *s = &r->sum;
	int bad = 0;

	EXPECT(s->bad_pages == 0, "node B read %llu pages wrong", (unsigned long long)s->bad_pages);
	if (skipped_on_a == 0)
		EXPECT(s->produced == 0 && r->daemon[D_HITS_REMOTE] > 0,
		       "node B produced %llu blocks and hit %llu in the store; node A wrote them all",
		       (unsigned long long)s->produced,
		       (unsigned long long)r->daemon[D_HITS_REMOTE]);
	return bad;
}

/* What one core copies, pages of len bytes, 64 MiB or more in all: the
 * host-memory ceiling that onload and offload rates compare with. */
static double memcpy_gbps(uint64_t len)
{
	size_t n = len >= (64u << 20) ? 1 : (size_t)((64u << 20) / len);
	char *src = malloc(n * len), *dst = malloc(n * len);
	double best = 1e9;

	CHECK(src && dst);
	memset(src, 1, n * len);
	memset(dst, 2, n * len);
	for (int r = 0; r < 5; r++) {
		double t = now();

		for (size_t i = 0; i < n; i++)
			memcpy(dst + i * len, src + i * len, len);
		t = now() - t;
		best = t < best ? t : best;
	}
	free(src);
	free(dst);
	return (double)n * len / best / 1e9;
}

static void usage(void)
{
	printf("usage: kvtier-bench [options]\n"
	       "  --workload LIST     burst,chat,rag (default all three)\n"
	       "  --workers N         worker processes (default 4)\n"
	       "  --requests N        requests per workload (default 400)\n"
	       "  --model NAME        llama-3-8b (default), llama-3-70b, tiny, or L:H:D:BYTES\n"
	       "  --block-tokens N    tokens per block, 2..256 (default 16)\n"
	       "  --zipf S            popularity skew (default 1.0)\n"
	       "  --seed N            workload seed (default 1)\n"
	       "  --addr ADDR         a running kvtierd (default: start one from $KVTIERD)\n"
	       "  --host-size BYTES   host tier of the started kvtierd (default 8G)\n"
	       "  --redis             also replay it against a redis-server on loopback\n"
	       "                      (started here, maxmemory = host size) and compare\n"
	       "  --two-nodes         run each workload on node A, then on node B, two\n"
	       "                      kvtierd sharing a redis-server on loopback (started\n"
	       "                      here) as their remote tier; prints B's hits by tier\n"
	       "  --check             small run (tiny model, 100 requests) that fails on\n"
	       "                      wrong hit counts, byte counts or page contents\n");
}

static bool parse_model(const char *s, struct model *m)
{
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
		if (strcmp(s, models[i].name) == 0) {
			*m = models[i];
			return true;
		}
	m->name = "custom";
	return sscanf(s, "%u:%u:%u:%u", &m->layers, &m->kv_heads, &m->head_dim,
		      &m->dtype_bytes) == 4 && m->layers && m->kv_heads && m->head_dim &&
	       m->dtype_bytes;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "workload", 1, NULL, 'w' }, { "workers", 1, NULL, 'n' },
		{ "requests", 1, NULL, 'r' }, { "model", 1, NULL, 'm' },
		{ "block-tokens", 1, NULL, 'b' }, { "zipf", 1, NULL, 'z' },
		{ "seed", 1, NULL, 's' }, { "addr", 1, NULL, 'a' },
		{ "host-size", 1, NULL, 'H' }, { "check", 0, NULL, 'c' },
		{ "redis", 0, NULL, 'R' }, { "two-nodes", 0, NULL, '2' },
		{ "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	struct options o = { .workloads = "burst,chat,rag", .model = models[0],
			     .workers = 4, .requests = 400, .block_tokens = 16,
			     .zipf = 1.0, .seed = 1, .host_bytes = 8ull << 30 };
	bool requests_set = false, model_set = false;
	struct test_daemon d = { 0 }, node_b = { 0 };
	struct test_redis store = { 0 };
	char host_set[64], seg_set[64], list[64], remote_set[64];
	int opt, bad = 0;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'w': o.workloads = optarg; break;
		case 'n': o.workers = (uint32_t)atoi(optarg); break;
		case 'r': o.requests = (uint32_t)atoi(optarg); requests_set = true; break;
		case 'm':
			if (!parse_model(optarg, &o.model)) {
				fprintf(stderr, "kvtier-bench: --model %s: not a preset or L:H:D:BYTES\n", optarg);
				return 2;
			}
			model_set = true;
			break;
		case 'b': o.block_tokens = (uint32_t)atoi(optarg); break;
		case 'z': o.zipf = atof(optarg); break;
		case 's': o.seed = strtoull(optarg, NULL, 10); break;
		case 'a': o.addr = optarg; break;
		case 'H': {
			char *end;

			o.host_bytes = strtoull(optarg, &end, 10);
			if (*end == 'G' || *end == 'M' || *end == 'K')
				o.host_bytes <<= *end == 'G' ? 30 : *end == 'M' ? 20 : 10;
			if (end == optarg || (*end && end[1]) || (*end && !strchr("GMK", *end)) ||
			    o.host_bytes == 0) {
				fprintf(stderr, "kvtier-bench: --host-size %s: write bytes, or e.g. 512M, 8G\n",
					optarg);
				return 2;
			}
			break;
		}
		case 'c': o.check = true; break;
		case 'R': o.redis = true; break;
		case '2': o.two_nodes = true; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (o.check) {
		if (!model_set)
			o.model = models[2];
		if (!requests_set)
			o.requests = 100;
		o.host_bytes = 256ull << 20;
	}
	if (o.workers < 1 || o.workers > 256 || o.requests < 1 ||
	    o.block_tokens < 2 || o.block_tokens > 256 || o.zipf < 0) {
		fprintf(stderr, "kvtier-bench: --workers 1..256, --requests >= 1, "
				"--block-tokens 2..256, --zipf >= 0\n");
		return 2;
	}
	o.progress = isatty(2) && !o.check;
	page_template = malloc(page_bytes(&o));
	CHECK(page_template);
	test_fill(page_template, page_bytes(&o), 42);

	if (o.two_nodes && (o.addr || o.redis)) {
		fprintf(stderr, "kvtier-bench: --two-nodes starts its own daemons and store: "
				"no --addr, no --redis\n");
		return 2;
	}
	if (!o.addr) {
		uint64_t seg = 64ull << 20;

		while (seg < page_bytes(&o))
			seg *= 2;
		snprintf(host_set, sizeof(host_set), "host.size=%llu", (unsigned long long)o.host_bytes);
		snprintf(seg_set, sizeof(seg_set), "host.segment_size=%llu", (unsigned long long)seg);
		/* --check counts on node B finding what node A wrote: a
		 * Lookup waits for the store as long as it takes (a slow
		 * build, a loaded machine), not the default 5 ms. */
		const char *sets[] = { host_set, seg_set, "limits.max_keys_per_request=4096",
				       o.two_nodes ? remote_set : NULL,
				       o.check ? "remote.lookup_budget=10s" : NULL, NULL };
		if (o.two_nodes) {
			/* The store holds what both nodes' host tiers do. */
			test_redis_start(&store, 2 * o.host_bytes);
			snprintf(remote_set, sizeof(remote_set), "remote.endpoints=127.0.0.1:%d",
				 store.port);
			test_daemon_start(&node_b, sets);
		}
		test_daemon_start(&d, sets);
		o.addr = d.addr;
	}
	printf("kvtier-bench: %u workers, %u requests per workload, %s (%u layers, %u kv heads, "
	       "head_dim %u, %u-byte dtype), %u-token blocks: %.2f MiB pages, zipf %.2f\n",
	       o.workers, o.requests, o.model.name, o.model.layers, o.model.kv_heads,
	       o.model.head_dim, o.model.dtype_bytes, o.block_tokens,
	       page_bytes(&o) / 1048576.0, o.zipf);
	printf("memcpy ceiling: %.2f GB/s per worker (one page size, private to private)\n",
	       memcpy_gbps(page_bytes(&o)));
	snprintf(list, sizeof(list), "%s", o.workloads);
	for (char *save, *name = strtok_r(list, ",", &save); name;
	     name = strtok_r(NULL, ",", &save)) {
		struct workload wl;
		struct result r;

		if (strcmp(name, "burst") && strcmp(name, "chat") && strcmp(name, "rag")) {
			fprintf(stderr, "kvtier-bench: unknown workload %s\n", name);
			return 2;
		}
		build(&wl, name, &o);
		run(&o, &wl, &r);
		printf(o.two_nodes ? "node A " : "kvtier ");
		report(&wl, &r, false);
		if (o.check)
			bad += check(&o, &wl, &r);
		if (o.two_nodes) {
			struct options bo = o;
			uint64_t skipped = store_settled(o.addr);
			struct result rb;

			bo.addr = node_b.addr;
			run(&bo, &wl, &rb);
			printf("node B ");
			report(&wl, &rb, false);
			if (skipped)
				printf("       (node A skipped %llu writes to the store)\n",
				       (unsigned long long)skipped);
			if (o.check)
				bad += check_node_b(&wl, &rb, skipped);
			for (int k = 0; k < NRPC; k++)
				free(rb.samples[k]);
		}
		if (o.redis) {
			struct options ro = o;
			struct test_redis server;
			struct result rr;

			test_redis_start(&server, o.host_bytes);
			ro.server = &server;
			run(&ro, &wl, &rr);
			test_redis_stop(&server);
			printf("redis  ");
			report(&wl, &rr, true);
			compare(&r, &rr);
			for (int k = 0; k < NRPC; k++)
				free(rr.samples[k]);
		}
		for (int k = 0; k < NRPC; k++)
			free(r.samples[k]);
		free(wl.reqs);
		free(wl.chains);
		free(wl.keys);
	}
	if (d.pid)
		CHECK(test_daemon_stop(&d) == 0);
	if (node_b.pid) {
		CHECK(test_daemon_stop(&node_b) == 0);
		test_redis_stop(&store);
	}
	free(page_template);
	if (o.check)
		printf("kvtier-bench --check: %s\n", bad ? "FAILED" : "ok");
	return bad ? 1 : 0;
}

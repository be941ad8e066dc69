/*
 * kvtier-remotebench: the remote tier against plain hiredis, in one run,
 * with a real redis-server on loopback and three kvtierd: node A and node
 * B share the store, node C has no remote tier.
 *   promote: node B, cold, brings in N 2 MiB pages that node A wrote to the
 *            store: Lookup (one EXISTS batch), Acquire (GETs straight into
 *            host slots, each record checked), Release; GB/s beside a plain
 *            hiredis client's pipelined GET of the same N records into
 *            buffers of its own. Alternated, best of R each. Before each
 *            trial B drops the blocks (its copies; the records stay).
 *   lookup:  Lookup of 64 keys, p50: all-local hits on node A (remote tier
 *            on) beside node C (off), alternated; and on node B for keys
 *            only the store has (one EXISTS round trip; dropped before
 *            each call, the drop not timed), beside a plain hiredis
 *            client's pipelined EXISTS of the same 64 records.
 * Each node's client lives in a process of its own (an agent the main
 * process tells what to do over a pipe): the main process runs only
 * hiredis, and forks before any gRPC.
 * Usage: kvtier-remotebench [pages] [trials] (needs $KVTIERD, and
 * redis-server on PATH or in $REDIS_SERVER).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "client_util.h"
#include "bench_util.h"
#include "harness.h"
#include "redis_util.h"

#define BIG_PAGE (2u << 20)
#define RECORD (BIG_PAGE + 128) /* tiers/remote_record.h's header, then the page */
#define KEYS 64
#define LOOKUPS 2000

struct node {
	kvt_client *c;
	struct kvt_namespace big, small;
};

static void node_open(struct node *n, const char *addr)
{
	CHECK(kvt_connect(addr, &n->c) == 0);
	CHECK_RC(n->c, kvt_attach(n->c, "kvtier-remotebench"), 0);
	CHECK_RC(n->c, kvt_open_namespace(n->c, "remotebench:2m", BIG_PAGE, 16, 0, &n->big), 0);
	CHECK_RC(n->c, kvt_open_namespace(n->c, "remotebench:4k", 4096, 16, 0, &n->small), 0);
}

/* Puts count pages of ns (a chain of keys), 4 at a time, each filled
 * with seed 7. */
static void put_pages(struct node *n, const struct kvt_namespace *ns,
		      const struct kvt_key *keys, int count, size_t len)
{
	void *page = malloc(len);
	const void *pages[4];
	size_t stored;

	CHECK(page);
	test_fill(page, len, 7);
	for (int i = 0; i < 4; i++)
		pages[i] = page;
	for (int i = 0; i < count; i += 4) {
		int k = count - i < 4 ? count - i : 4;

		CHECK_RC(n->c, kvt_put(n->c, ns, i ? &keys[i - 1] : NULL, keys + i, pages,
				       (size_t)k, NULL, &stored), 0);
	}
	free(page);
}

static void stat_u64(void *arg, const char *name, const char *value)
{
	if (strcmp(name, "remote_writes_total") == 0)
		*(uint64_t *)arg = strtoull(value, NULL, 10);
}

static void wait_written(struct node *n, uint64_t want)
{
	uint64_t got = 0;

	for (int i = 0; got < want; i++) {
		CHECK(i < 6000);
		CHECK_RC(n->c, kvt_stats(n->c, stat_u64, &got), 0);
		usleep(10000);
	}
}

/* The names of the records in the store, by SCAN. */
static int record_names(const struct test_redis *r, char (*names)[96], int max)
{
	redisContext *c = test_redis_connect(r);
	unsigned long long cursor = 0;
	int n = 0;

	do {
		redisReply *rep = redisCommand(c, "SCAN %llu MATCH kvt1:* COUNT 1000", cursor);

		CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2);
		cursor = strtoull(rep->element[0]->str, NULL, 10);
		for (size_t i = 0; i < rep->element[1]->elements && n < max; i++)
			snprintf(names[n++], sizeof(names[0]), "%s", rep->element[1]->element[i]->str);
		freeReplyObject(rep);
	} while (cursor);
	redisFree(c);
	return n;
}

/* B: Lookup, Acquire, Release of the n pages, after dropping its copies. */
static double promote_trial(struct node *b, const struct kvt_key *keys, int n,
			    const void *want)
{
	enum kvt_where *where = calloc((size_t)n, sizeof(*where));
	struct kvt_lease lease;
	size_t ready, pending, dropped;
	double t;

	CHECK(where);
	CHECK_RC(b->c, kvt_drop(b->c, &b->big, keys, (size_t)n, &dropped), 0);
	t = bench_now();
	CHECK_RC(b->c, kvt_lookup_where(b->c, &b->big, keys, (size_t)n, &ready, &pending,
					where), 0);
	CHECK(ready == (size_t)n && where[0] == KVT_WHERE_REMOTE && where[n - 1] == KVT_WHERE_REMOTE);
	CHECK_RC(b->c, kvt_acquire(b->c, &b->big, keys, (size_t)n, 0, &lease), 0);
	t = bench_now() - t;
	CHECK(lease.count == (size_t)n);
	CHECK(memcmp(lease.pages[0], want, BIG_PAGE) == 0);
	CHECK_RC(b->c, kvt_release(b->c, &lease), 0);
	free(where);
	return (double)n * BIG_PAGE / t / 1e9;
}

/* A plain hiredis client: pipelined GET of the n records into its own
 * buffers (one copy, as the tier's read lands in a host slot). */
static double hiredis_trial(const struct test_redis *r, char (*names)[96], int n,
			    uint8_t *dst)
{
	redisContext *c = test_redis_connect(r);
	double t = bench_now();

	for (int i = 0; i < n; i++)
		CHECK(redisAppendCommand(c, "GET %s", names[i]) == REDIS_OK);
	for (int i = 0; i < n; i++) {
		redisReply *rep;

		CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK);
		CHECK(rep->type == REDIS_REPLY_STRING && rep->len == RECORD);
		memcpy(dst + (size_t)i * RECORD, rep->str, RECORD);
		freeReplyObject(rep);
	}
	t = bench_now() - t;
	redisFree(c);
	return (double)n * BIG_PAGE / t / 1e9;
}

/* p50 of Lookup(64) of keys on n, in microseconds; drop_first: drop them
 * (untimed) before each call, so that each asks the store. */
static double lookup_p50(struct node *n, const struct kvt_key *keys, int iters,
			 bool drop_first)
{
	double *lat = malloc(sizeof(double) * (size_t)iters), p50;
	size_t ready, pending, dropped;

	CHECK(lat);
	for (int i = 0; i < iters; i++) {
		double t;

		if (drop_first)
			CHECK_RC(n->c, kvt_drop(n->c, &n->small, keys, KEYS, &dropped), 0);
		t = bench_now();
		CHECK_RC(n->c, kvt_lookup(n->c, &n->small, keys, KEYS, &ready, &pending), 0);
		lat[i] = (bench_now() - t) * 1e6;
		CHECK(ready == KEYS);
	}
	p50 = bench_percentile(lat, (size_t)iters, 0.5);
	free(lat);
	return p50;
}

/* ---- agents: one node's client each ---- */

enum command { PUT_BIG = 'B', PUT_SMALL = 'S', PROMOTE = 'P', LOOKUP_LOCAL = 'L',
	       LOOKUP_REMOTE = 'R', QUIT = 'Q' };

struct agent {
	pid_t pid;
	int to, from;
};

struct work {
	int pages;
	struct kvt_key *keys, small[KEYS];
	uint8_t *want;
};

static double agent_serve(struct node *n, const struct work *w, char cmd)
{
	switch (cmd) {
	case PUT_BIG:
		put_pages(n, &n->big, w->keys, w->pages, BIG_PAGE);
		wait_written(n, (uint64_t)w->pages);
		return 0;
	case PUT_SMALL:
		put_pages(n, &n->small, w->small, KEYS, 4096);
		return 0;
	case PROMOTE: return promote_trial(n, w->keys, w->pages, w->want);
	case LOOKUP_LOCAL: return lookup_p50(n, w->small, LOOKUPS, false);
	case LOOKUP_REMOTE: return lookup_p50(n, w->small, LOOKUPS / 4, true);
	default: return -1;
	}
}

static void agent_start(struct agent *ag, const char *addr, const struct work *w)
{
	int to[2], from[2];

	CHECK(pipe(to) == 0 && pipe(from) == 0);
	fflush(NULL);
	ag->pid = fork();
	CHECK(ag->pid >= 0);
	if (ag->pid == 0) {
		struct node n;
		char cmd;

		close(to[1]);
		close(from[0]);
		node_open(&n, addr);
		while (read(to[0], &cmd, 1) == 1 && cmd != QUIT) {
			double v = agent_serve(&n, w, cmd);

			CHECK(write(from[1], &v, sizeof(v)) == sizeof(v));
		}
		kvt_close(n.c);
		_exit(0);
	}
	close(to[0]);
	close(from[1]);
	ag->to = to[1];
	ag->from = from[0];
}

static double agent_do(struct agent *ag, char cmd)
{
	double v;

	CHECK(write(ag->to, &cmd, 1) == 1);
	CHECK(read(ag->from, &v, sizeof(v)) == sizeof(v));
	return v;
}

static void agent_stop(struct agent *ag)
{
	char cmd = QUIT;
	int status;

	CHECK(write(ag->to, &cmd, 1) == 1);
	CHECK(waitpid(ag->pid, &status, 0) == ag->pid && WIFEXITED(status) &&
	      WEXITSTATUS(status) == 0);
	close(ag->to);
	close(ag->from);
}

/* p50 of a pipelined EXISTS of the n names, in microseconds. */
static double exists_p50(const struct test_redis *r, char (*names)[96], int n, int iters)
{
	redisContext *c = test_redis_connect(r);
	double *lat = malloc(sizeof(double) * (size_t)iters), p50;

	CHECK(lat);
	for (int i = 0; i < iters; i++) {
		double t = bench_now();

		for (int k = 0; k < n; k++)
			CHECK(redisAppendCommand(c, "EXISTS %s", names[k]) == REDIS_OK);
		for (int k = 0; k < n; k++) {
			redisReply *rep;

			CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK);
			CHECK(rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
			freeReplyObject(rep);
		}
		lat[i] = (bench_now() - t) * 1e6;
	}
	p50 = bench_percentile(lat, (size_t)iters, 0.5);
	free(lat);
	redisFree(c);
	return p50;
}

int main(int argc, char **argv)
{
	int pages = argc > 1 ? atoi(argv[1]) : 64, trials = argc > 2 ? atoi(argv[2]) : 5;
	struct test_daemon da = { 0 }, db = { 0 }, dc = { 0 };
	struct test_redis store = { 0 };
	struct agent a, b, c;
	struct work w = { .pages = pages };
	char remote[64], host[64], (*names)[96], (*small)[96];
	double best_p = 0, best_h = 0, p50_a[5], p50_c[5];
	uint8_t *dst;

	CHECK(pages >= 1 && pages <= 1024 && trials >= 1);
	w.keys = calloc((size_t)pages, sizeof(*w.keys));
	names = calloc((size_t)pages + KEYS, sizeof(*names));
	small = calloc(KEYS, sizeof(*small));
	w.want = malloc(BIG_PAGE);
	dst = malloc((size_t)pages * RECORD);
	CHECK(w.keys && names && small && w.want && dst);
	bench_keys(w.keys, pages, 1000);
	bench_keys(w.small, KEYS, 5000);
	test_fill(w.want, BIG_PAGE, 7);
	memset(dst, 0, (size_t)pages * RECORD);

	test_redis_spawn(&store, NULL);
	snprintf(remote, sizeof(remote), "remote.endpoints=127.0.0.1:%d", store.port);
	snprintf(host, sizeof(host), "host.size=%llu",
		 (unsigned long long)(pages + 64) * BIG_PAGE + (256ull << 20));
	{
		const char *with[] = { host, remote, NULL }, *without[] = { host, NULL };

		test_daemon_start(&da, with);
		test_daemon_start(&db, with);
		test_daemon_start(&dc, without);
	}
	agent_start(&a, da.addr, &w);
	agent_start(&b, db.addr, &w);
	agent_start(&c, dc.addr, &w);

	agent_do(&a, PUT_BIG);
	agent_do(&a, PUT_SMALL);
	agent_do(&c, PUT_SMALL);
	/* The 2 MiB records only: the 4K ones are shorter. */
	{
		redisContext *rc = test_redis_connect(&store);
		int n = record_names(&store, names, pages + KEYS), big = 0, little = 0;

		for (int i = 0; i < n; i++) {
			redisReply *rep = redisCommand(rc, "STRLEN %s", names[i]);

			if (rep->integer == RECORD)
				memmove(names[big++], names[i], sizeof(names[0]));
			else if (little < KEYS)
				memcpy(small[little++], names[i], sizeof(names[0]));
			freeReplyObject(rep);
		}
		redisFree(rc);
		CHECK(big == pages && little == KEYS);
	}

	printf("kvtier-remotebench: %d pages of 2 MiB through redis-server on loopback, best of %d\n",
	       pages, trials);
	for (int t = 0; t < trials; t++) {
		double p = agent_do(&b, PROMOTE);
		double h = hiredis_trial(&store, names, pages, dst);

		best_p = p > best_p ? p : best_p;
		best_h = h > best_h ? h : best_h;
		printf("  trial %d: node B promotion %.2f GB/s, hiredis pipelined GET %.2f GB/s\n",
		       t + 1, p, h);
	}
	printf("promotion: node B %.2f GB/s, plain hiredis %.2f GB/s: %.0f%%\n", best_p, best_h,
	       100.0 * best_p / best_h);

	for (int r = 0; r < 5; r++) {
		p50_a[r] = agent_do(&a, LOOKUP_LOCAL);
		p50_c[r] = agent_do(&c, LOOKUP_LOCAL);
	}
	printf("Lookup(64) p50, all local hits: remote tier on %.1f us, off %.1f us (median of 5 x %d)\n",
	       bench_percentile(p50_a, 5, 0.5), bench_percentile(p50_c, 5, 0.5), LOOKUPS);
	printf("Lookup(64) p50, remote hits (one EXISTS round trip): %.1f us (%d calls); "
	       "plain hiredis pipelined EXISTS of the 64 records: %.1f us\n",
	       agent_do(&b, LOOKUP_REMOTE), LOOKUPS / 4, exists_p50(&store, small, KEYS, LOOKUPS / 4));

	agent_stop(&a);
	agent_stop(&b);
	agent_stop(&c);
	CHECK(test_daemon_stop(&da) == 0);
	CHECK(test_daemon_stop(&db) == 0);
	CHECK(test_daemon_stop(&dc) == 0);
	test_redis_stop(&store);
	free(w.keys);
	free(names);
	free(small);
	free(w.want);
	free(dst);
	return 0;
}

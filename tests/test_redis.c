/*
 * The Redis client (tiers/redis.c) against real redis-server processes on
 * loopback: a single server (batches, misses, sizes, deadlines and late
 * replies, back-pressure, eviction, close with requests in flight,
 * completions that submit, concurrent submitters, AUTH), a three-master
 * cluster made by redis-cli (routing, -ASK and -MOVED during a slot
 * migration, a master killed and started again, a replica promoted), and
 * a measured comparison with synchronous hiredis (printed, not checked;
 * KVT_REDIS_NO_BENCH=1 leaves it out). Exit 77 when redis-server is
 * missing.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "bench/redis_util.h"
#include "harness.h"
#include "redis.h"

#define MS 1000000ull

static bool quiet_log;

static void on_log(void *arg, bool error, const char *msg)
{
	(void)arg;
	if (!quiet_log)
		fprintf(stderr, "  [%s] %s\n", error ? "error" : "info", msg);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- a batch, waited for ---- */

struct waiter {
	pthread_mutex_t m;
	pthread_cond_t cv;
	int calls, rc;
};

#define WAITER_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 }

static void done_cb(void *arg, struct kvt_redis_item *items, uint32_t n, int rc)
{
	struct waiter *w = arg;

	(void)items;
	(void)n;
	pthread_mutex_lock(&w->m);
	w->calls++;
	w->rc = rc;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->m);
}

static int wait_done(struct waiter *w)
{
	pthread_mutex_lock(&w->m);
	while (!w->calls)
		pthread_cond_wait(&w->cv, &w->m);
	CHECK(w->calls == 1);
	pthread_mutex_unlock(&w->m);
	return w->rc;
}

enum op { GET, EXISTS, SET, DEL };

static int submit(struct kvt_redis *r, enum op op, struct kvt_redis_item *it, uint32_t n,
		  uint64_t timeout_ns, struct waiter *w)
{
	switch (op) {
	case GET:
		return kvt_redis_get(r, it, n, timeout_ns, done_cb, w);
	case EXISTS:
		return kvt_redis_exists(r, it, n, timeout_ns, done_cb, w);
	case SET:
		return kvt_redis_set(r, it, n, 0, timeout_ns, done_cb, w);
	default:
		return kvt_redis_del(r, it, n, timeout_ns, done_cb, w);
	}
}

/* One batch, start to end: its rc. */
static int run(struct kvt_redis *r, enum op op, struct kvt_redis_item *it, uint32_t n)
{
	struct waiter w = WAITER_INIT;

	CHECK(submit(r, op, it, n, 0, &w) == 0);
	return wait_done(&w);
}

static struct kvt_redis *client(const char *const *endpoints, uint32_t n, const char *user,
				const char *pass, uint32_t depth)
{
	struct kvt_redis_config cfg = {
		.endpoints = endpoints, .nendpoints = n, .username = user, .password = pass,
		.timeout_ns = 1000 * MS, .interval_ns = 200 * MS, .queue_depth = depth,
		.log = on_log,
	};
	struct kvt_redis *r = NULL;
	char err[256];
	int rc = kvt_redis_create(&cfg, &r, err, sizeof(err));

	if (rc)
		fprintf(stderr, "kvt_redis_create: %s\n", err);
	CHECK(rc == 0);
	return r;
}

static struct kvt_redis_stats stats(struct kvt_redis *r)
{
	struct kvt_redis_stats st;

	kvt_redis_stats(r, &st);
	return st;
}

/* ---- synchronous hiredis, for setting up and checking ---- */

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
	redisReply *rep;
	va_list ap;

	va_start(ap, fmt);
	rep = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!rep)
		fprintf(stderr, "%s: %s\n", fmt, c->errstr);
	CHECK(rep);
	return rep;
}

static void cmd_ok(redisContext *c, const char *fmt, ...)
{
	redisReply *rep;
	va_list ap;

	va_start(ap, fmt);
	rep = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!rep || rep->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "%s: %s\n", fmt, rep ? rep->str : c->errstr);
	CHECK(rep && rep->type != REDIS_REPLY_ERROR);
	freeReplyObject(rep);
}

/* Sends a command without waiting for its answer (DEBUG SLEEP). */
static void cmd_start(redisContext *c, const char *command)
{
	int done = 0;

	CHECK(redisAppendCommand(c, command) == REDIS_OK);
	while (!done)
		CHECK(redisBufferWrite(c, &done) == REDIS_OK);
	usleep(20000); /* the server is asleep before anything else arrives */
}

static void cmd_finish(redisContext *c)
{
	void *rep = NULL;

	CHECK(redisGetReply(c, &rep) == REDIS_OK && rep);
	freeReplyObject(rep);
}

static char *endpoint(int port)
{
	static char bufs[8][32];
	static int i;
	char *b = bufs[i++ % 8];

	snprintf(b, sizeof(bufs[0]), "127.0.0.1:%d", port);
	return b;
}

/* ---- keys and values ---- */

struct keyset {
	uint32_t n;
	char key[128][32];
	uint8_t *val[128];
	size_t len[128];
	struct kvt_redis_item it[128];
};

static void keys_make(struct keyset *k, const char *prefix, uint32_t n, size_t maxlen)
{
	k->n = n;
	for (uint32_t i = 0; i < n; i++) {
		snprintf(k->key[i], sizeof(k->key[i]), "%s:%u", prefix, i);
		k->len[i] = i == 0 ? 0 : (i * 977) % (maxlen + 1);
		k->val[i] = malloc(k->len[i] + 1);
		test_fill(k->val[i], k->len[i], i * 31 + 7);
	}
}

static void keys_free(struct keyset *k)
{
	for (uint32_t i = 0; i < k->n; i++)
		free(k->val[i]);
}

/* Items for op over keys [from, from + n), GET into fresh buffers of cap. */
static struct kvt_redis_item *items(struct keyset *k, enum op op, uint32_t from, uint32_t n,
				    size_t cap)
{
	for (uint32_t i = from; i < from + n; i++) {
		struct kvt_redis_item *it = &k->it[i];

		memset(it, 0, sizeof(*it));
		it->key = k->key[i];
		it->key_len = strlen(k->key[i]);
		it->result = 12345;
		if (op == SET) {
			it->val = k->val[i];
			it->len = k->len[i];
		} else if (op == GET) {
			it->dst = malloc(cap ? cap : 1);
			it->len = cap;
		}
	}
	return &k->it[from];
}

static void items_free(struct keyset *k, enum op op, uint32_t from, uint32_t n)
{
	for (uint32_t i = from; op == GET && i < from + n; i++)
		free(k->it[i].dst);
}

/* GET of keys [from, from + n) gives their values. */
static void check_values(struct keyset *k, uint32_t from, uint32_t n)
{
	for (uint32_t i = from; i < from + n; i++) {
		if (k->it[i].result != (int64_t)k->len[i])
			fprintf(stderr, "%s: result %lld, want %zu\n", k->key[i],
				(long long)k->it[i].result, k->len[i]);
		CHECK(k->it[i].result == (int64_t)k->len[i]);
		CHECK(memcmp(k->it[i].dst, k->val[i], k->len[i]) == 0);
	}
}

static void check_results(struct keyset *k, uint32_t from, uint32_t n, int64_t want)
{
	for (uint32_t i = from; i < from + n; i++) {
		if (k->it[i].result != want)
			fprintf(stderr, "%s: result %lld, want %lld\n", k->key[i],
				(long long)k->it[i].result, (long long)want);
		CHECK(k->it[i].result == want);
	}
}

/* ---- a single server ---- */

/* A SET's prepare: head from the value's first bytes. */
static void fill_head(struct kvt_redis_item *it)
{
	for (size_t i = 0; i < it->head_len; i++)
		((uint8_t *)it->head)[i] = ((const uint8_t *)it->val)[i] ^ 0x5a;
}

static void test_round_trip(struct kvt_redis *r)
{
	struct keyset k;
	struct kvt_redis_stats st0 = stats(r), st;
	uint64_t bytes = 0;

	keys_make(&k, "rt", 33, 5000);
	for (uint32_t i = 0; i < 32; i++)
		bytes += k.len[i];
	CHECK(run(r, SET, items(&k, SET, 0, 32, 0), 32) == 0);
	check_results(&k, 0, 32, 0);

	/* 32 values and one key never set: a miss, not an error */
	CHECK(run(r, GET, items(&k, GET, 0, 33, 5000), 33) == 0);
	check_values(&k, 0, 32);
	CHECK(k.it[32].result == KVT_REDIS_MISS);
	items_free(&k, GET, 0, 33);

	CHECK(run(r, EXISTS, items(&k, EXISTS, 0, 33, 0), 33) == 0);
	check_results(&k, 0, 32, 1);
	CHECK(k.it[32].result == 0);

	/* a value longer than its buffer: -EMSGSIZE, nothing copied */
	CHECK(run(r, GET, items(&k, GET, 5, 1, 10), 1) == -EMSGSIZE);
	CHECK(k.it[5].result == -EMSGSIZE && k.len[5] > 10);
	items_free(&k, GET, 5, 1);

	/* Split: the first head_len bytes to head, the rest to dst, and
	 * -EMSGSIZE only past both. */
	{
		uint8_t head[100];
		struct kvt_redis_item *it = items(&k, GET, 7, 1, k.len[7] - 100);

		it->head = head;
		it->head_len = sizeof(head);
		CHECK(k.len[7] > 200);
		CHECK(run(r, GET, it, 1) == 0 && it->result == (int64_t)k.len[7]);
		CHECK(memcmp(head, k.val[7], 100) == 0);
		CHECK(memcmp(it->dst, k.val[7] + 100, k.len[7] - 100) == 0);
		items_free(&k, GET, 7, 1);
		it = items(&k, GET, 7, 1, k.len[7] - 101);
		it->head = head;
		it->head_len = sizeof(head);
		CHECK(run(r, GET, it, 1) == -EMSGSIZE);
		items_free(&k, GET, 7, 1);
	}
	/* A SET of head then val, head filled by prepare on the client's
	 * thread: one value, read back whole. */
	{
		uint8_t head[64], *got = malloc(64 + k.len[8]);
		struct kvt_redis_item it = { .key = k.key[8], .key_len = strlen(k.key[8]),
					     .val = k.val[8], .len = k.len[8],
					     .head = head, .head_len = sizeof(head),
					     .prepare = fill_head };

		CHECK(got && run(r, SET, &it, 1) == 0 && it.prepare == NULL);
		it = (struct kvt_redis_item){ .key = k.key[8], .key_len = strlen(k.key[8]),
					      .dst = got, .len = 64 + k.len[8] };
		CHECK(run(r, GET, &it, 1) == 0 && it.result == (int64_t)(64 + k.len[8]));
		for (int i = 0; i < 64; i++)
			CHECK(got[i] == (uint8_t)(k.val[8][i] ^ 0x5a));
		CHECK(memcmp(got + 64, k.val[8], k.len[8]) == 0);
		free(got);
		it = (struct kvt_redis_item){ .key = k.key[8], .key_len = strlen(k.key[8]),
					      .val = k.val[8], .len = k.len[8] };
		CHECK(run(r, SET, &it, 1) == 0);
		bytes += 64 + 2 * k.len[8];
	}

	CHECK(run(r, DEL, items(&k, DEL, 0, 16, 0), 16) == 0);
	check_results(&k, 0, 16, 1);
	CHECK(run(r, DEL, items(&k, DEL, 0, 16, 0), 16) == 0);
	check_results(&k, 0, 16, 0);
	CHECK(run(r, GET, items(&k, GET, 0, 32, 5000), 32) == 0);
	check_results(&k, 0, 16, KVT_REDIS_MISS);
	check_values(&k, 16, 16);
	items_free(&k, GET, 0, 32);

	st = stats(r);
	CHECK(st.requests - st0.requests == 12 &&
	      st.keys - st0.keys == 32 + 33 + 33 + 1 + 2 + 3 + 16 + 16 + 32);
	CHECK(st.bytes_out - st0.bytes_out == bytes);
	CHECK(st.errors[KVT_REDIS_ERR_SIZE] - st0.errors[KVT_REDIS_ERR_SIZE] == 2);
	CHECK(st.latency.count - st0.latency.count == 12);
	CHECK(!st.cluster && st.nodes == 1);

	/* SET with an expiry */
	{
		struct waiter w = WAITER_INIT;

		CHECK(kvt_redis_set(r, items(&k, SET, 0, 4, 0), 4, 100, 0, done_cb, &w) == 0);
		CHECK(wait_done(&w) == 0);
		usleep(300 * 1000);
		CHECK(run(r, EXISTS, items(&k, EXISTS, 0, 4, 0), 4) == 0);
		check_results(&k, 0, 4, 0);
	}
	keys_free(&k);
	printf("single: SET/GET/EXISTS/DEL batches, miss, -EMSGSIZE, PX: ok\n");
}

/* A deadline (a budget) shorter than the server's sleep: -ETIMEDOUT at
 * the deadline; the replies that come later find the caller's memory
 * freed (ASan). */
static void test_deadline(struct kvt_redis *r, const struct test_redis *srv)
{
	redisContext *sync = test_redis_connect(srv);
	struct keyset k;
	struct waiter w = WAITER_INIT;
	struct kvt_redis_stats st0 = stats(r);
	struct kvt_redis_item *it = calloc(16, sizeof(*it));
	uint64_t t0;

	keys_make(&k, "late", 16, 3000);
	CHECK(run(r, SET, items(&k, SET, 0, 16, 0), 16) == 0);
	for (uint32_t i = 0; i < 16; i++) {
		it[i].key = k.key[i];
		it[i].key_len = strlen(k.key[i]);
		it[i].dst = malloc(3000);
		it[i].len = 3000;
	}
	cmd_start(sync, "DEBUG SLEEP 0.5");
	t0 = now_ns();
	CHECK(kvt_redis_get(r, it, 16, 50 * MS, done_cb, &w) == 0);
	CHECK(wait_done(&w) == -ETIMEDOUT);
	CHECK(now_ns() - t0 < 400 * MS);
	for (uint32_t i = 0; i < 16; i++) {
		CHECK(it[i].result == -ETIMEDOUT);
		free(it[i].dst);
	}
	free(it);
	/* A deadline shorter than the timeout is the caller's budget: not
	 * the store's error. */
	CHECK(stats(r).budget_expired - st0.budget_expired == 16);
	CHECK(stats(r).errors[KVT_REDIS_ERR_TIMEOUT] == st0.errors[KVT_REDIS_ERR_TIMEOUT]);
	cmd_finish(sync);
	usleep(100 * 1000); /* the late replies arrive and are dropped */
	CHECK(run(r, GET, items(&k, GET, 0, 16, 3000), 16) == 0);
	check_values(&k, 0, 16);
	items_free(&k, GET, 0, 16);
	redisFree(sync);
	keys_free(&k);
	printf("single: deadline shorter than DEBUG SLEEP -> -ETIMEDOUT, late replies dropped: ok\n");
}

/* queue_depth keys queued or in flight: one more is -EAGAIN. */
static void test_backpressure(struct kvt_redis *r, uint32_t depth, const struct test_redis *srv)
{
	redisContext *sync = test_redis_connect(srv);
	struct keyset k;
	struct waiter w = WAITER_INIT, w2 = WAITER_INIT;

	CHECK(depth <= 64);
	keys_make(&k, "bp", depth + 1, 100);
	cmd_start(sync, "DEBUG SLEEP 0.3");
	CHECK(kvt_redis_exists(r, items(&k, EXISTS, 0, depth, 0), depth, 0, done_cb, &w) == 0);
	CHECK(kvt_redis_exists(r, items(&k, EXISTS, depth, 1, 0), 1, 0, done_cb, &w2) == -EAGAIN);
	CHECK(kvt_redis_exists(r, k.it, depth + 1, 0, done_cb, &w2) == -E2BIG);
	CHECK(kvt_redis_exists(r, k.it, 0, 0, done_cb, &w2) == -EINVAL);
	CHECK(wait_done(&w) == 0);
	CHECK(w2.calls == 0);
	CHECK(run(r, EXISTS, items(&k, EXISTS, depth, 1, 0), 1) == 0);
	cmd_finish(sync);
	redisFree(sync);
	keys_free(&k);
	printf("single: -EAGAIN past queue_depth (%u keys): ok\n", depth);
}

/* maxmemory evicted values: GET says miss, never an error. */
static void test_eviction(struct kvt_redis *r, const struct test_redis *srv)
{
	redisContext *sync = test_redis_connect(srv);
	enum { N = 64, LEN = 256 * 1024 };
	struct kvt_redis_item it[N];
	char keys[N][16];
	uint8_t *val = calloc(1, LEN);
	uint32_t misses = 0;

	cmd_ok(sync, "CONFIG SET maxmemory %d", 6 * 1024 * 1024);
	for (uint32_t i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "ev:%u", i);
		it[i] = (struct kvt_redis_item){ .key = keys[i], .key_len = strlen(keys[i]),
						 .val = val, .len = LEN };
		CHECK(run(r, SET, &it[i], 1) == 0);
	}
	for (uint32_t i = 0; i < N; i++)
		it[i] = (struct kvt_redis_item){ .key = keys[i], .key_len = strlen(keys[i]),
						 .dst = malloc(LEN), .len = LEN };
	CHECK(run(r, GET, it, N) == 0);
	for (uint32_t i = 0; i < N; i++) {
		CHECK(it[i].result == LEN || it[i].result == KVT_REDIS_MISS);
		misses += it[i].result == KVT_REDIS_MISS;
		free(it[i].dst);
	}
	CHECK(misses > 0);
	cmd_ok(sync, "CONFIG SET maxmemory %d", 1024 * 1024 * 1024);
	redisFree(sync);
	free(val);
	printf("single: %u of %u values evicted by maxmemory read as misses: ok\n", misses, N);
}

/* ACL user, password-only AUTH, and wrong passwords (kind auth). */
static void test_auth(const struct test_redis *srv)
{
	redisContext *sync = test_redis_connect(srv);
	const char *ep[] = { endpoint(srv->port) };
	struct kvt_redis_item it = { .key = "auth:k", .key_len = 6, .val = "v", .len = 1 };
	struct kvt_redis *r;
	struct kvt_redis_stats st;

	cmd_ok(sync, "ACL SETUSER kv on >s3cret ~* +@all");
	r = client(ep, 1, "kv", "s3cret", 16);
	CHECK(run(r, SET, &it, 1) == 0 && it.result == 0);
	kvt_redis_close(r);

	r = client(ep, 1, "kv", "wrong", 16);
	CHECK(run(r, EXISTS, &it, 1) == -EACCES && it.result == -EACCES);
	CHECK(run(r, EXISTS, &it, 1) == -EACCES);
	st = stats(r);
	CHECK(st.errors[KVT_REDIS_ERR_AUTH] == 2 && st.degraded);
	kvt_redis_close(r);

	/* the default user's password (requirepass): AUTH <pass> */
	cmd_ok(sync, "CONFIG SET requirepass topsecret");
	r = client(ep, 1, NULL, "topsecret", 16);
	CHECK(run(r, EXISTS, &it, 1) == 0 && it.result == 1);
	kvt_redis_close(r);
	r = client(ep, 1, NULL, NULL, 16); /* none: the server says NOAUTH */
	CHECK(run(r, EXISTS, &it, 1) == -EACCES);
	CHECK(stats(r).errors[KVT_REDIS_ERR_AUTH] == 1);
	kvt_redis_close(r);
	cmd_ok(sync, "CONFIG SET requirepass %s", "");
	redisFree(sync);
	printf("single: AUTH user pass (ACL), AUTH pass, wrong password -> -EACCES (kind auth): ok\n");
}

/* Closing with a batch in flight: it completes with -ECANCELED within the
 * grace, before close returns. */
static void test_close_inflight(const struct test_redis *srv)
{
	const char *ep[] = { endpoint(srv->port) };
	struct kvt_redis *r = client(ep, 1, NULL, NULL, 16);
	redisContext *sync = test_redis_connect(srv);
	struct waiter w = WAITER_INIT;
	struct kvt_redis_item it = { .key = "x", .key_len = 1 };
	uint64_t t0, took;

	CHECK(run(r, EXISTS, &it, 1) == 0); /* connected */
	cmd_start(sync, "DEBUG SLEEP 0.8");
	CHECK(kvt_redis_exists(r, &it, 1, 0, done_cb, &w) == 0);
	t0 = now_ns();
	kvt_redis_close(r);
	took = now_ns() - t0;
	CHECK(took < 600 * MS);
	CHECK(w.calls == 1 && w.rc == -ECANCELED && it.result == -ECANCELED);
	cmd_finish(sync);
	redisFree(sync);
	printf("single: close with a batch in flight -> -ECANCELED, close took %llu ms: ok\n",
	       (unsigned long long)(took / MS));
}

/* A completion submits the next batch (the client's lock is not held). */
struct chain {
	struct kvt_redis *r;
	struct kvt_redis_item it;
	struct waiter w;
	int left;
};

static void chain_cb(void *arg, struct kvt_redis_item *items, uint32_t n, int rc)
{
	struct chain *ch = arg;

	CHECK(rc == 0);
	if (--ch->left > 0)
		CHECK(kvt_redis_exists(ch->r, &ch->it, 1, 0, chain_cb, ch) == 0);
	else
		done_cb(&ch->w, items, n, rc);
}

/* Four threads submit at once against a small queue_depth, retrying on
 * -EAGAIN: every batch completes once, with the right answers. */
struct submitter {
	struct kvt_redis *r;
	unsigned seed;
	uint32_t again;
};

static void *submitter_main(void *arg)
{
	struct submitter *s = arg;
	char keys[8][32];
	struct kvt_redis_item it[8];

	for (int b = 0; b < 50; b++) {
		struct waiter w = WAITER_INIT;
		int rc;

		for (int i = 0; i < 8; i++) {
			snprintf(keys[i], sizeof(keys[i]), "th:%u:%d", s->seed, (b + i) % 3);
			it[i] = (struct kvt_redis_item){ .key = keys[i], .key_len = strlen(keys[i]) };
		}
		while ((rc = kvt_redis_exists(s->r, it, 8, 0, done_cb, &w)) == -EAGAIN) {
			s->again++;
			usleep(100);
		}
		CHECK(rc == 0);
		CHECK(wait_done(&w) == 0);
		for (int i = 0; i < 8; i++) /* th:<seed>:0 was set, the others not */
			CHECK(it[i].result == ((b + i) % 3 == 0));
	}
	return NULL;
}

static void test_concurrency(const struct test_redis *srv)
{
	const char *ep[] = { endpoint(srv->port) };
	struct kvt_redis *r = client(ep, 1, NULL, NULL, 16);
	struct chain ch = { .r = r, .it = { .key = "th:0:0", .key_len = 6 }, .w = WAITER_INIT,
			    .left = 100 };
	struct submitter s[4];
	pthread_t t[4];
	uint32_t again = 0;

	for (unsigned i = 0; i < 4; i++) {
		char key[32];
		struct kvt_redis_item it = { .key = key, .val = "1", .len = 1 };

		snprintf(key, sizeof(key), "th:%u:0", i);
		it.key_len = strlen(key);
		CHECK(run(r, SET, &it, 1) == 0);
	}
	CHECK(kvt_redis_exists(r, &ch.it, 1, 0, chain_cb, &ch) == 0);
	CHECK(wait_done(&ch.w) == 0 && ch.left == 0);
	for (unsigned i = 0; i < 4; i++) {
		s[i] = (struct submitter){ .r = r, .seed = i };
		CHECK(pthread_create(&t[i], NULL, submitter_main, &s[i]) == 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		again += s[i].again;
	}
	CHECK(stats(r).requests == 4 + 100 + 4 * 50);
	kvt_redis_close(r);
	printf("single: 100 batches chained from completions; 4 threads x 50 batches (%u -EAGAIN retried): ok\n",
	       again);
}

static double gbps(uint64_t bytes, uint64_t ns)
{
	return (double)bytes / (double)ns;
}

/* CPU time of this process (its threads, the client's among them), ns. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Pipelined GET of N 2 MiB values: this client (one batch) against plain
 * synchronous hiredis (redisAppendCommand x N, then redisGetReply x N,
 * each value copied out as the client does), alternated, best of each;
 * and the CPU time this process spent per GiB (the server's is not in it).
 */
static void bench(const struct test_redis *srv)
{
	enum { N = 32, LEN = 2 << 20, ROUNDS = 3 };
	const char *ep[] = { endpoint(srv->port) };
	struct kvt_redis *r = client(ep, 1, NULL, NULL, N);
	redisContext *sync = test_redis_connect(srv);
	struct kvt_redis_item it[N];
	char keys[N][16];
	uint8_t *val = malloc(LEN), *dst[N];
	double best_client = 0, best_sync = 0;
	uint64_t cpu_client = 0, cpu_sync = 0;

	test_fill(val, LEN, 99);
	for (uint32_t i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "big:%u", i);
		dst[i] = malloc(LEN);
		memset(dst[i], 0, LEN);
		it[i] = (struct kvt_redis_item){ .key = keys[i], .key_len = strlen(keys[i]),
						 .val = val, .len = LEN };
	}
	CHECK(run(r, SET, it, N) == 0);
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t t0 = now_ns(), t1, c0 = cpu_ns();
		double g;

		for (uint32_t i = 0; i < N; i++)
			it[i] = (struct kvt_redis_item){ .key = keys[i], .key_len = strlen(keys[i]),
							 .dst = dst[i], .len = LEN };
		CHECK(run(r, GET, it, N) == 0);
		t1 = now_ns();
		cpu_client += cpu_ns() - c0;
		for (uint32_t i = 0; i < N; i++)
			CHECK(it[i].result == LEN);
		g = gbps((uint64_t)N * LEN, t1 - t0);
		best_client = g > best_client ? g : best_client;

		t0 = now_ns();
		c0 = cpu_ns();
		for (uint32_t i = 0; i < N; i++)
			CHECK(redisAppendCommand(sync, "GET %s", keys[i]) == REDIS_OK);
		for (uint32_t i = 0; i < N; i++) {
			redisReply *rep = NULL;

			CHECK(redisGetReply(sync, (void **)&rep) == REDIS_OK && rep &&
			      rep->type == REDIS_REPLY_STRING && rep->len == LEN);
			memcpy(dst[i], rep->str, LEN);
			freeReplyObject(rep);
		}
		t1 = now_ns();
		cpu_sync += cpu_ns() - c0;
		g = gbps((uint64_t)N * LEN, t1 - t0);
		best_sync = g > best_sync ? g : best_sync;
	}
	CHECK(memcmp(dst[N - 1], val, LEN) == 0);
	printf("bench: pipelined GET of %d x 2 MiB, best of %d: kvt_redis %.2f GB/s, "
	       "synchronous hiredis %.2f GB/s; client CPU per GiB: %.0f ms, %.0f ms\n", N,
	       ROUNDS, best_client, best_sync,
	       (double)cpu_client / 1e6 / (ROUNDS * N * 2.0 / 1024),
	       (double)cpu_sync / 1e6 / (ROUNDS * N * 2.0 / 1024));
	for (uint32_t i = 0; i < N; i++) {
		dst[i][0] ^= 1;
		free(dst[i]);
	}
	free(val);
	redisFree(sync);
	kvt_redis_close(r);
}

/* Writes go on a connection of their own: an EXISTS sent after 32 MiB of
 * SETs is answered before they are. (64 MiB ran past the client's 1 s
 * timeout under ASan with the suite running beside it.) */
static void test_write_lane(struct kvt_redis *r)
{
	enum { N = 16, LEN = 2 << 20 };
	struct kvt_redis_item sets[N], probe = { .key = "lane:0", .key_len = 6 };
	struct waiter ws = WAITER_INIT, wp = WAITER_INIT;
	char keys[N][16];
	uint8_t *val = malloc(LEN);
	bool sets_first;

	CHECK(val);
	test_fill(val, LEN, 5);
	CHECK(run(r, SET, &(struct kvt_redis_item){ .key = "lane:0", .key_len = 6,
						    .val = val, .len = 16 }, 1) == 0);
	for (uint32_t i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "lane:big:%u", i);
		sets[i] = (struct kvt_redis_item){ .key = keys[i], .key_len = strlen(keys[i]),
						   .val = val, .len = LEN };
	}
	CHECK(submit(r, SET, sets, N, 0, &ws) == 0);
	CHECK(submit(r, EXISTS, &probe, 1, 0, &wp) == 0);
	CHECK(wait_done(&wp) == 0 && probe.result == 1);
	pthread_mutex_lock(&ws.m);
	sets_first = ws.calls > 0;
	pthread_mutex_unlock(&ws.m);
	CHECK(wait_done(&ws) == 0);
	CHECK(!sets_first);
	free(val);
	printf("single: an EXISTS after 32 MiB of SETs is answered first (write lane): ok\n");
}

static void test_single(void)
{
	const char *extra[] = { "--enable-debug-command", "local", "--maxmemory", "1gb",
				"--maxmemory-policy", "allkeys-lru", NULL };
	struct test_redis srv = { 0 };
	int dead = redis_free_port();
	const char *ep[2];
	struct kvt_redis *r;

	test_redis_spawn(&srv, extra);
	/* the first endpoint answers nothing: the probe goes on to the next */
	ep[0] = endpoint(dead);
	ep[1] = endpoint(srv.port);
	quiet_log = true;
	r = client(ep, 2, NULL, NULL, 64);
	test_round_trip(r);
	quiet_log = false;
	test_write_lane(r);
	test_deadline(r, &srv);
	test_backpressure(r, 64, &srv);
	test_eviction(r, &srv);
	kvt_redis_close(r);
	test_close_inflight(&srv);
	test_concurrency(&srv);
	test_auth(&srv);
	if (!getenv("KVT_REDIS_NO_BENCH"))
		bench(&srv);
	test_redis_stop(&srv);
}

/* ---- a cluster ---- */

struct cluster_node {
	struct test_redis srv;
	char dir[64];
	char id[64];
	int bus;
};

static void node_start(struct cluster_node *n)
{
	char conf[96], bus[16];
	const char *extra[] = { "--cluster-enabled", "yes", "--cluster-config-file", conf,
				"--cluster-node-timeout", "2000", "--cluster-require-full-coverage",
				"no", "--cluster-port", bus, "--dir", n->dir,
				"--enable-debug-command", "local", NULL };

	snprintf(conf, sizeof(conf), "%s/nodes.conf", n->dir);
	snprintf(bus, sizeof(bus), "%d", n->bus);
	test_redis_spawn(&n->srv, extra);
}

static void run_cli(const char *const *argv)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		CHECK(freopen("/dev/null", "w", stdout));
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static bool cluster_ok(const struct cluster_node *nodes, int n)
{
	for (int i = 0; i < n; i++) {
		redisContext *c = test_redis_connect(&nodes[i].srv);
		redisReply *rep = cmd(c, "CLUSTER INFO");
		bool ok = rep->type == REDIS_REPLY_STRING && strstr(rep->str, "cluster_state:ok") &&
			  strstr(rep->str, "cluster_known_nodes:3");

		freeReplyObject(rep);
		redisFree(c);
		if (!ok)
			return false;
	}
	return true;
}

/* Which node (0..2) holds each slot, by the cluster's own map. */
static void slot_owners(const struct cluster_node *nodes, signed char own[16384])
{
	redisContext *c = test_redis_connect(&nodes[0].srv);
	redisReply *rep = cmd(c, "CLUSTER SLOTS");

	memset(own, -1, 16384);
	for (size_t i = 0; i < rep->elements; i++) {
		redisReply *e = rep->element[i];
		int port = (int)e->element[2]->element[1]->integer;

		for (int m = 0; m < 3; m++)
			for (long long s = e->element[0]->integer;
			     nodes[m].srv.port == port && s <= e->element[1]->integer; s++)
				own[s] = (signed char)m;
	}
	freeReplyObject(rep);
	redisFree(c);
}

static int owner(const struct cluster_node *nodes, int s)
{
	signed char own[16384];

	slot_owners(nodes, own);
	CHECK(own[s] >= 0);
	return own[s];
}

static void check_slots(const struct cluster_node *nodes)
{
	static const char *const keys[] = { "123456789", "foo", "{user1000}.following",
					     "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap",
					     "foo{bar}{zap}", "", "a{", "}{x}" };
	redisContext *c = test_redis_connect(&nodes[0].srv);

	CHECK(kvt_redis_slot("123456789", 9) == (0x31C3 & 16383));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		redisReply *rep = cmd(c, "CLUSTER KEYSLOT %b", keys[i], strlen(keys[i]));

		CHECK(rep->type == REDIS_REPLY_INTEGER);
		if (rep->integer != kvt_redis_slot(keys[i], strlen(keys[i])))
			fprintf(stderr, "slot of \"%s\": %lld, ours %u\n", keys[i], rep->integer,
				kvt_redis_slot(keys[i], strlen(keys[i])));
		CHECK(rep->integer == kvt_redis_slot(keys[i], strlen(keys[i])));
		freeReplyObject(rep);
	}
	redisFree(c);
}

/* 40 keys on each master: k[m] holds master m's. */
static void keys_by_master(const struct cluster_node *nodes, struct keyset k[3], size_t len)
{
	signed char own[16384];
	uint32_t i = 0;

	slot_owners(nodes, own);
	for (int m = 0; m < 3; m++)
		k[m].n = 0;
	while (k[0].n < 40 || k[1].n < 40 || k[2].n < 40) {
		char key[32];
		struct keyset *ks;

		snprintf(key, sizeof(key), "ck:%u", i++);
		CHECK(own[kvt_redis_slot(key, strlen(key))] >= 0);
		ks = &k[(int)own[kvt_redis_slot(key, strlen(key))]];
		if (ks->n == 40)
			continue;
		strcpy(ks->key[ks->n], key);
		ks->len[ks->n] = len;
		ks->val[ks->n] = malloc(len);
		test_fill(ks->val[ks->n], len, i);
		ks->n++;
	}
}

static void test_cluster_round_trip(struct kvt_redis *r, const struct cluster_node *nodes,
				    struct keyset k[3])
{
	for (int m = 0; m < 3; m++)
		CHECK(run(r, SET, items(&k[m], SET, 0, 40, 0), 40) == 0);
	/* each key is where the cluster says, and reads back */
	for (int m = 0; m < 3; m++) {
		redisContext *c = test_redis_connect(&nodes[m].srv);
		redisReply *rep = cmd(c, "GET %s", k[m].key[7]);

		CHECK(rep->type == REDIS_REPLY_STRING && (size_t)rep->len == k[m].len[7] &&
		      !memcmp(rep->str, k[m].val[7], k[m].len[7]));
		freeReplyObject(rep);
		redisFree(c);
		CHECK(run(r, GET, items(&k[m], GET, 0, 40, 4096), 40) == 0);
		check_values(&k[m], 0, 40);
		items_free(&k[m], GET, 0, 40);
	}
	printf("cluster: keys over 3 masters round trip, each on its slot's master: ok\n");
}

/* Slot migration from master a to b: -ASK while it moves, -MOVED after. */
static void test_redirects(struct kvt_redis *r, struct cluster_node *nodes)
{
	char k1[32], k2[32], tag[16];
	uint16_t slot;
	int a = 0, b = 1;
	uint32_t t = 0;
	struct kvt_redis_stats st0 = stats(r), st;
	redisContext *ca = test_redis_connect(&nodes[a].srv);
	redisContext *cb = test_redis_connect(&nodes[b].srv);
	uint8_t buf[64];
	struct kvt_redis_item it[2] = {
		{ .key = k1, .val = "one", .len = 3 },
		{ .key = k2, .val = "two", .len = 3 },
	};

	do {
		snprintf(tag, sizeof(tag), "{m%u}", t++);
		slot = kvt_redis_slot(tag, strlen(tag));
	} while (owner(nodes, slot) != a);
	snprintf(k1, sizeof(k1), "%s1", tag);
	snprintf(k2, sizeof(k2), "%s2", tag);
	it[0].key_len = strlen(k1);
	it[1].key_len = strlen(k2);
	CHECK(run(r, SET, it, 2) == 0);

	cmd_ok(cb, "CLUSTER SETSLOT %u IMPORTING %s", slot, nodes[a].id);
	cmd_ok(ca, "CLUSTER SETSLOT %u MIGRATING %s", slot, nodes[b].id);
	cmd_ok(ca, "MIGRATE 127.0.0.1 %d %s 0 5000", nodes[b].srv.port, k1);
	it[0] = (struct kvt_redis_item){ .key = k1, .key_len = strlen(k1), .dst = buf, .len = 64 };
	CHECK(run(r, GET, it, 1) == 0 && it[0].result == 3 && !memcmp(buf, "one", 3));
	st = stats(r);
	CHECK(st.errors[KVT_REDIS_ERR_ASK] - st0.errors[KVT_REDIS_ERR_ASK] == 1);
	CHECK(st.errors[KVT_REDIS_ERR_MOVED] == st0.errors[KVT_REDIS_ERR_MOVED]);

	cmd_ok(ca, "MIGRATE 127.0.0.1 %d %s 0 5000", nodes[b].srv.port, k2);
	for (int i = 0; i < 3; i++) { /* the new owner first, then the old one */
		redisContext *c = test_redis_connect(&nodes[(b + 3 - i) % 3].srv);

		cmd_ok(c, "CLUSTER SETSLOT %u NODE %s", slot, nodes[b].id);
		redisFree(c);
	}
	it[1] = (struct kvt_redis_item){ .key = k2, .key_len = strlen(k2), .dst = buf, .len = 64 };
	CHECK(run(r, GET, &it[1], 1) == 0 && it[1].result == 3 && !memcmp(buf, "two", 3));
	st = stats(r);
	CHECK(st.errors[KVT_REDIS_ERR_MOVED] - st0.errors[KVT_REDIS_ERR_MOVED] == 1);
	/* the map learnt it: no second MOVED */
	CHECK(run(r, GET, it, 1) == 0 && it[0].result == 3 && !memcmp(buf, "one", 3));
	CHECK(stats(r).errors[KVT_REDIS_ERR_MOVED] == st.errors[KVT_REDIS_ERR_MOVED]);
	/* and the map is read again after an interval */
	for (int i = 0; i < 50 && stats(r).refreshes == st0.refreshes; i++)
		usleep(20 * 1000);
	CHECK(stats(r).refreshes > st0.refreshes);
	redisFree(ca);
	redisFree(cb);
	printf("cluster: slot %u migrated: -ASK followed with ASKING, -MOVED followed and learnt, map refreshed: ok\n",
	       slot);
}

/*
 * Master `victim` is killed with requests in flight: only its keys fail,
 * the client is degraded, the others keep working; started again (same
 * port, same nodes.conf), it serves its keys again and degraded clears.
 */
static void test_kill(struct kvt_redis *r, struct kvt_redis *writer,
		      struct cluster_node *nodes, struct keyset k[3])
{
	const int victim = 2;
	struct kvt_redis_stats st0 = stats(r), st;
	struct waiter w[3] = { WAITER_INIT, WAITER_INIT, WAITER_INIT };
	uint64_t t0;
	int tries;

	/* writer only ever writes: its one connection to the victim is the
	 * write lane, never a read connection. */
	CHECK(run(writer, SET, items(&k[victim], SET, 0, 40, 0), 40) == 0);

	for (int m = 0; m < 3; m++)
		CHECK(submit(r, GET, items(&k[m], GET, 0, 40, 4096), 40, 0, &w[m]) == 0);
	test_redis_signal(&nodes[victim].srv, SIGKILL);
	for (int m = 0; m < 3; m++) {
		int rc = wait_done(&w[m]);

		if (m != victim) {
			CHECK(rc == 0);
			check_values(&k[m], 0, 40);
		}
		items_free(&k[m], GET, 0, 40);
	}
	/* a second of traffic with the master down */
	t0 = now_ns();
	while (now_ns() - t0 < 1000 * MS) {
		for (int m = 0; m < 3; m++) {
			int rc = run(r, m == 1 ? SET : GET,
				     items(&k[m], m == 1 ? SET : GET, 0, 40, 4096), 40);

			if (m == victim) {
				CHECK(rc == -EIO || rc == -ECONNRESET);
				for (uint32_t i = 0; i < 40; i++)
					CHECK(k[m].it[i].result == -EIO || k[m].it[i].result == -ECONNRESET);
			} else {
				CHECK(rc == 0);
				if (m == 0)
					check_values(&k[m], 0, 40);
			}
			items_free(&k[m], m == 1 ? SET : GET, 0, 40);
		}
		usleep(20 * 1000);
	}
	st = stats(r);
	CHECK(st.degraded);
	CHECK(st.errors[KVT_REDIS_ERR_CONN] - st0.errors[KVT_REDIS_ERR_CONN] >= 40);
	CHECK(st.errors[KVT_REDIS_ERR_TIMEOUT] == st0.errors[KVT_REDIS_ERR_TIMEOUT]);
	CHECK(st.nodes == 3);
	printf("cluster: master :%d killed: %llu errors (kind connection) on its keys only, degraded, the others work: ok\n",
	       nodes[victim].srv.port,
	       (unsigned long long)(st.errors[KVT_REDIS_ERR_CONN] - st0.errors[KVT_REDIS_ERR_CONN]));
	/* A client that only writes stays degraded while the master is down,
	 * past its error interval and the map refreshes its errors asked for. */
	CHECK(run(writer, SET, items(&k[victim], SET, 0, 40, 0), 40) < 0);
	usleep(2500 * 1000);
	CHECK(stats(writer).degraded);
	printf("cluster: a client that only writes: still degraded 2.5 s on: ok\n");

	node_start(&nodes[victim]); /* same port, dir and nodes.conf */
	t0 = now_ns();
	for (tries = 0;; tries++) {
		CHECK(now_ns() - t0 < 60000 * MS);
		if (run(r, SET, items(&k[victim], SET, 0, 40, 0), 40) == 0)
			break;
		usleep(100 * 1000);
	}
	CHECK(run(r, GET, items(&k[victim], GET, 0, 40, 4096), 40) == 0);
	check_values(&k[victim], 0, 40);
	items_free(&k[victim], GET, 0, 40);
	printf("cluster: master restarted: its keys work again after %.1f s\n",
	       (double)(now_ns() - t0) / 1e9);
	for (int i = 0; stats(r).degraded; i++) {
		CHECK(i < 100);
		usleep(50 * 1000);
	}
	for (int i = 0; run(writer, SET, items(&k[victim], SET, 0, 40, 0), 40) != 0; i++) {
		CHECK(i < 100);
		usleep(100 * 1000);
	}
	for (int i = 0; stats(writer).degraded; i++) {
		CHECK(i < 100);
		usleep(50 * 1000);
	}
	printf("cluster: degraded cleared: ok\n");
}

static bool info_has(const struct test_redis *srv, const char *cmdline, const char *what)
{
	redisContext *c = test_redis_connect(srv);
	redisReply *rep = cmd(c, cmdline);
	bool has = rep->type == REDIS_REPLY_STRING && strstr(rep->str, what);

	freeReplyObject(rep);
	redisFree(c);
	return has;
}

static void node_dir(struct cluster_node *n)
{
	snprintf(n->dir, sizeof(n->dir), "/tmp/kvt-redis-XXXXXX");
	CHECK(mkdtemp(n->dir));
	n->bus = redis_free_port();
}

/*
 * Failover: a fourth node joins as master `m`'s replica; m is killed; once
 * the cluster promotes the replica, the client finds it in the map and m's
 * keys read back (replicated) from it.
 */
static void test_failover(struct kvt_redis *r, struct cluster_node *nodes, struct keyset k[3],
			  struct cluster_node *rep)
{
	const int m = 1;
	struct kvt_redis_stats st0;
	redisContext *c;
	uint64_t t0;
	int i;

	node_dir(rep);
	node_start(rep);
	c = test_redis_connect(&rep->srv);
	cmd_ok(c, "CLUSTER MEET 127.0.0.1 %d %d", nodes[0].srv.port, nodes[0].bus);
	for (i = 0;; i++) { /* it must know m before it can follow it */
		redisReply *x = cmd(c, "CLUSTER REPLICATE %s", nodes[m].id);
		bool ok = x->type != REDIS_REPLY_ERROR;

		freeReplyObject(x);
		if (ok)
			break;
		CHECK(i < 200);
		usleep(50 * 1000);
	}
	redisFree(c);
	for (i = 0; !info_has(&rep->srv, "INFO replication", "master_link_status:up"); i++) {
		CHECK(i < 200);
		usleep(50 * 1000);
	}
	c = test_redis_connect(&nodes[m].srv);
	freeReplyObject(cmd(c, "WAIT 1 5000")); /* the replica has every write */
	redisFree(c);

	st0 = stats(r);
	test_redis_signal(&nodes[m].srv, SIGKILL);
	nodes[m].srv.pid = 0;
	t0 = now_ns();
	for (i = 0;; i++) {
		int rc;

		CHECK(now_ns() - t0 < 60000 * MS);
		rc = run(r, GET, items(&k[m], GET, 0, 40, 4096), 40);
		if (rc == 0)
			break;
		items_free(&k[m], GET, 0, 40);
		CHECK(run(r, GET, items(&k[0], GET, 0, 40, 4096), 40) == 0); /* the others */
		items_free(&k[0], GET, 0, 40);
		usleep(100 * 1000);
	}
	check_values(&k[m], 0, 40);
	items_free(&k[m], GET, 0, 40);
	CHECK(info_has(&rep->srv, "INFO replication", "role:master"));
	CHECK(stats(r).refreshes > st0.refreshes && stats(r).nodes == 3);
	printf("cluster: master killed, its replica promoted: its keys read back from the replica after %.1f s: ok\n",
	       (double)(now_ns() - t0) / 1e9);
}

static void rmdir_all(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char p[512];

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

static void test_cluster(void)
{
	struct cluster_node nodes[4]; /* the fourth: a replica, for the failover */
	const char *cli[12] = { "redis-cli", "--cluster", "create" };
	struct keyset k[3];
	struct kvt_redis *r, *writer;
	const char *ep[1];
	int argc = 3;

	memset(nodes, 0, sizeof(nodes));
	for (int i = 0; i < 3; i++) {
		redisContext *c;
		redisReply *rep;

		node_dir(&nodes[i]);
		node_start(&nodes[i]);
		cli[argc++] = endpoint(nodes[i].srv.port);
		c = test_redis_connect(&nodes[i].srv);
		rep = cmd(c, "CLUSTER MYID");
		snprintf(nodes[i].id, sizeof(nodes[i].id), "%s", rep->str);
		freeReplyObject(rep);
		redisFree(c);
	}
	cli[argc++] = "--cluster-replicas";
	cli[argc++] = "0";
	cli[argc++] = "--cluster-yes";
	cli[argc] = NULL;
	run_cli(cli);
	for (int i = 0; !cluster_ok(nodes, 3); i++) {
		CHECK(i < 300);
		usleep(50 * 1000);
	}
	check_slots(nodes);

	/* one endpoint: the rest of the cluster is found from it */
	ep[0] = endpoint(nodes[0].srv.port);
	r = client(ep, 1, NULL, NULL, 256);
	keys_by_master(nodes, k, 1000);
	test_cluster_round_trip(r, nodes, k);
	CHECK(stats(r).cluster && stats(r).nodes == 3 && !stats(r).degraded);
	test_redirects(r, nodes);
	writer = client(ep, 1, NULL, NULL, 256);
	test_kill(r, writer, nodes, k);
	kvt_redis_close(writer);
	test_failover(r, nodes, k, &nodes[3]);
	kvt_redis_close(r);
	for (int i = 0; i < 4; i++) {
		if (i < 3)
			keys_free(&k[i]);
		if (nodes[i].srv.pid)
			test_redis_stop(&nodes[i].srv);
		rmdir_all(nodes[i].dir);
	}
}

static bool on_path(const char *prog)
{
	char cmdline[128];

	snprintf(cmdline, sizeof(cmdline), "command -v %s >/dev/null 2>&1", prog);
	return system(cmdline) == 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!getenv("REDIS_SERVER") && !on_path("redis-server")) {
		printf("redis-server not found: skipped\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	test_single();
	if (on_path("redis-cli"))
		test_cluster();
	else
		printf("redis-cli not found: cluster part skipped\n");
	return 0;
}

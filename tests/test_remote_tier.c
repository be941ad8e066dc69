/*
 * The remote tier in the engine, against a real redis-server: committed
 * blocks are written behind as checked records; a block the host tier
 * evicts stays cached there (Lookup says REMOTE) and comes back into a
 * host slot byte for byte; a value corrupted in the store is a miss,
 * counted and deleted.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "bench/redis_util.h"
#include "engine.h"
#include "harness.h"
#include "remote_record.h"

#define PAGE 4096
#define SLOTS 64 /* the host tier: 4 segments of 16 pages */
#define FIRST 8  /* the blocks followed through the store */
#define NKEYS 400

static uint8_t key_bytes[NKEYS][16];
static const uint8_t *keys[NKEYS];
static uint32_t tenant, ns;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static struct kvt_engine_stats stats(struct kvt_engine *e)
{
	struct kvt_engine_stats st;

	kvt_engine_stats(e, &st);
	return st;
}

static struct kvt_req req(int first, int n)
{
	return (struct kvt_req){ .tenant = tenant, .ns = ns, .keys = &keys[first],
				 .n = (uint32_t)n };
}

/* Puts keys [first, first + n), each its own page (not chained: any may
 * be evicted), and waits for them to be written behind. */
static void put(struct kvt_engine *e, int first, int n)
{
	uint64_t before = stats(e).remote_writes_total;
	static uint8_t page[PAGE];
	const void *pages[1] = { page };
	struct kvt_err err;
	uint32_t stored;

	for (int i = first; i < first + n; i++) {
		struct kvt_req q = req(i, 1);

		test_fill(page, PAGE, (unsigned)i);
		CHECK(kvt_engine_put(e, &q, NULL, NULL, pages, &stored, &err) == 0 &&
		      stored == 1);
		/* A block is pinned while it is written: one at a time, so
		 * that the tier always has room to evict. */
		for (int k = 0; k < 5000 && stats(e).remote_writes_total <
					    before + (uint64_t)(i - first + 1); k++)
			sleep_ms(1);
		CHECK(stats(e).remote_writes_total == before + (uint64_t)(i - first + 1));
	}
}

/* A Lookup through kvt_engine_lookup_async, waited for. */
struct looked {
	_Atomic bool done;
	bool asked; /* the store was asked (not answered at once) */
	int rc;
	uint32_t ready, pending;
	enum kvt_tier where[FIRST];
};

static void on_looked(void *arg, int rc, uint32_t ready, uint32_t pending,
		      const enum kvt_tier *where)
{
	struct looked *l = arg;

	l->rc = rc;
	l->ready = ready;
	l->pending = pending;
	memcpy(l->where, where, sizeof(l->where[0]) * (ready < FIRST ? ready : FIRST));
	atomic_store(&l->done, true);
}

static struct looked *look_within(struct kvt_engine *e, struct kvt_req q,
				  uint64_t budget)
{
	static struct looked l;
	struct kvt_err err;
	int rc;

	memset(&l, 0, sizeof(l));
	rc = kvt_engine_lookup_async(e, &q, budget, &l.ready, &l.pending,
				     l.where, on_looked, &l, &err);
	CHECK(rc >= 0);
	l.asked = rc == 0;
	if (rc == 1) /* answered here: nothing to ask the store */
		return &l;
	for (int i = 0; i < 1000 && !atomic_load(&l.done); i++)
		sleep_ms(1);
	CHECK(atomic_load(&l.done) && l.rc == 0);
	return &l;
}

static struct looked *look(struct kvt_engine *e, struct kvt_req q)
{
	return look_within(e, q, 500 * KVT_MS);
}

/* Pins keys [0, n) once every one is back in host (Pin starts the
 * promotions); the count it got. */
static uint32_t pin_back(struct kvt_engine *e, int n, struct kvt_block **pinned)
{
	struct kvt_req q = req(0, n);
	uint32_t count = 0, ready = 0;
	struct kvt_err err;

	for (int i = 0; i < 300; i++) {
		CHECK(kvt_engine_pin(e, &q, (uint32_t)n, pinned, &count, &ready, &err) == 0);
		if (count == (uint32_t)n || ready < (uint32_t)n)
			return count;
		kvt_engine_unpin(e, pinned, count);
		sleep_ms(10);
	}
	return count;
}

int main(void)
{
	struct test_redis redis = { 0 };
	char endpoint[32];
	const char *endpoints[1] = { endpoint };
	struct kvt_engine_config cfg = {
		.host_bytes = 4 * 16 * PAGE, .segment_bytes = 16 * PAGE,
		.max_namespaces = 4, .default_priority = 35, .max_wait = 1000 * KVT_MS,
		.remote = { .endpoints = endpoints, .nendpoints = 1, .min_priority = 0 },
	};
	struct kvt_block *pinned[FIRST];
	enum kvt_tier where[FIRST];
	uint8_t want[PAGE];
	struct kvt_engine *e;
	struct kvt_err err;
	uint32_t ready, pending;
	uint64_t stride;
	bool created;
	redisContext *rc;
	redisReply *rep;
	char name[KVT_REMOTE_NAME_MAX];

	for (int i = 0; i < NKEYS; i++) {
		test_fill(key_bytes[i], 16, 1000 + (unsigned)i);
		keys[i] = key_bytes[i];
	}
	test_redis_start(&redis, 0);
	snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", redis.port);
	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	CHECK(stats(e).remote_enabled);
	CHECK(kvt_engine_tenant(e, 1000, "alice", &tenant) == 0);
	CHECK(kvt_engine_open_namespace(e, tenant, "rt:test", PAGE, 16, false, 0, &ns,
					&created, &stride, &err) == 0);

	/* Written behind, as a record any node can check. */
	put(e, 0, FIRST);
	rc = test_redis_connect(&redis);
	{
		struct kvt_remote_id id = { kvt_remote_fingerprint("rt:test", PAGE, 16),
					    "alice", keys[3] };
		const char *why;

		kvt_remote_name(&id, name);
		rep = redisCommand(rc, "GET %s", name);
		CHECK(rep && rep->type == REDIS_REPLY_STRING &&
		      rep->len == KVT_REMOTE_HEADER_BYTES + PAGE);
		CHECK(kvt_remote_record_check(&id, (const uint8_t *)rep->str,
					      rep->str + KVT_REMOTE_HEADER_BYTES,
					      (uint64_t)rep->len, PAGE, &why) == 0);
		test_fill(want, PAGE, 3);
		CHECK(memcmp(rep->str + KVT_REMOTE_HEADER_BYTES, want, PAGE) == 0);
		freeReplyObject(rep);
	}

	/* Evicted from host by newer blocks, they stay cached remotely. */
	put(e, FIRST, SLOTS + 16);
	{
		struct kvt_req q = req(0, FIRST);

		CHECK(kvt_engine_lookup(e, &q, &ready, &pending, where, &err) == 0);
		CHECK(ready == FIRST);
		for (int i = 0; i < FIRST; i++)
			CHECK(where[i] == KVT_TIER_REMOTE);
	}

	/* Read back into host slots, byte for byte. */
	CHECK(pin_back(e, FIRST, pinned) == FIRST);
	for (int i = 0; i < FIRST; i++) {
		test_fill(want, PAGE, (unsigned)i);
		CHECK(memcmp(kvt_engine_page(e, pinned[i]), want, PAGE) == 0);
	}
	kvt_engine_unpin(e, pinned, FIRST);
	CHECK(stats(e).remote_promotions_total >= FIRST);

	/* Node B, cold, shares the store: Lookup finds alice's blocks there
	 * (REMOTE) and an Acquire's promotions bring them, byte for byte;
	 * bob's scope holds none of them. */
	{
		struct kvt_engine *b;
		struct looked *l;
		uint32_t a_tenant = tenant, bob;

		CHECK(kvt_engine_create(&cfg, &b, &err) == 0);
		CHECK(kvt_engine_tenant(b, 2000, "bob", &bob) == 0);
		CHECK(kvt_engine_tenant(b, 1001, "alice", &tenant) == 0);
		CHECK(tenant != a_tenant || bob != a_tenant); /* other indices */
		CHECK(kvt_engine_open_namespace(b, tenant, "rt:test", PAGE, 16, false, 0,
						&ns, &created, &stride, &err) == 0);
		l = look(b, req(0, FIRST));
		CHECK(l->asked && l->ready == FIRST && l->pending == 0);
		for (int i = 0; i < FIRST; i++)
			CHECK(l->where[i] == KVT_TIER_REMOTE);
		CHECK(stats(b).lookup_hits_remote == FIRST);
		CHECK(pin_back(b, FIRST, pinned) == FIRST);
		for (int i = 0; i < FIRST; i++) {
			test_fill(want, PAGE, (unsigned)i);
			CHECK(memcmp(kvt_engine_page(b, pinned[i]), want, PAGE) == 0);
		}
		kvt_engine_unpin(b, pinned, FIRST);
		/* Found here now: no store asked (a second node-local hit). */
		l = look(b, req(0, FIRST));
		CHECK(!l->asked && l->ready == FIRST && l->where[0] == KVT_TIER_HOST);
		/* Keys nobody wrote end the prefix. */
		{
			const uint8_t *some[4] = { keys[6], keys[7], keys[NKEYS - 1],
						   keys[NKEYS - 2] };
			struct kvt_req q = req(0, 4);

			q.keys = some;
			l = look(b, q);
			CHECK(l->asked && l->ready == 2 && l->pending == 0);
		}

		tenant = bob;
		CHECK(kvt_engine_open_namespace(b, bob, "rt:test", PAGE, 16, false, 0,
						&ns, &created, &stride, &err) == 0);
		l = look(b, req(0, FIRST));
		CHECK(l->ready == 0);
		kvt_engine_destroy(b);
	}
	/* Back to node A, alice. */
	CHECK(kvt_engine_tenant(e, 1000, NULL, &tenant) == 0);
	CHECK(kvt_engine_open_namespace(e, tenant, "rt:test", PAGE, 16, false, 0, &ns,
					&created, &stride, &err) == 0);

	/* Corrupted in the store: a miss, counted, the value deleted. */
	put(e, 200, SLOTS + 16);
	kvt_remote_name(&(struct kvt_remote_id){ kvt_remote_fingerprint("rt:test", PAGE, 16),
						 "alice", keys[0] }, name);
	rep = redisCommand(rc, "SETRANGE %s %d x", name, KVT_REMOTE_HEADER_BYTES + 100);
	CHECK(rep && rep->type == REDIS_REPLY_INTEGER);
	freeReplyObject(rep);
	CHECK(pin_back(e, FIRST, pinned) == 0);
	CHECK(stats(e).remote_bad_records_total == 1);
	for (int i = 0; i < 300; i++) {
		rep = redisCommand(rc, "EXISTS %s", name);
		CHECK(rep && rep->type == REDIS_REPLY_INTEGER);
		bool gone = rep->integer == 0;

		freeReplyObject(rep);
		if (gone)
			break;
		CHECK(i < 299);
		sleep_ms(10);
	}
	{
		struct kvt_req q = req(0, FIRST);

		CHECK(kvt_engine_lookup(e, &q, &ready, &pending, NULL, &err) == 0 && ready == 0);
	}

	/* A budget the store cannot meet: the probe's keys count as expired
	 * (not as store errors), and Lookups then do not ask for 100 ms. */
	{
		struct kvt_engine_stats st0 = stats(e), st;

		CHECK(look_within(e, req(0, FIRST), 1000)->asked); /* 1 us */
		st = stats(e);
		CHECK(st.remote.budget_expired - st0.remote.budget_expired == FIRST);
		CHECK(st.remote.errors[KVT_REDIS_ERR_TIMEOUT] ==
		      st0.remote.errors[KVT_REDIS_ERR_TIMEOUT]);
		CHECK(!look(e, req(0, FIRST))->asked);
		CHECK(stats(e).remote_lookups_unasked_total == 1);
		sleep_ms(150);
		CHECK(look(e, req(0, FIRST))->asked);
		printf("a Lookup budget run out: counted apart, the next Lookups answered here for 100 ms: ok\n");
	}
	redisFree(rc);
	kvt_engine_destroy(e);
	test_redis_stop(&redis);
	return 0;
}

/*
 * Engine on real memfd segments, with a fake clock: LRU eviction, pins never
 * evicted, tenants kept apart, session end releases everything, ownership
 * checks, early reuse (waits completed by commit, abort, deadline, session
 * end), drop while pinned, drop scopes, lease TTL, husks, reclaim of another
 * namespace's segment, capacity bound.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "harness.h"

#define PAGE 4096
#define NKEYS 64

static uint8_t key_bytes[NKEYS][KVT_KEY_BYTES];
static const uint8_t *keys[NKEYS];
static uint8_t page[PAGE];
static uint64_t fake_now = 1000000;
static uint32_t me; /* the tenant these calls act for */

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static struct kvt_req req(const uint8_t *token, uint32_t ns, int first, int n)
{
	return (struct kvt_req){ .tenant = me, .session = token, .ns = ns,
				 .keys = &keys[first], .n = (uint32_t)n };
}

static uint32_t ready(struct kvt_engine *e, uint32_t ns, int i)
{
	struct kvt_req q = req(NULL, ns, i, 1);
	uint32_t r, p;
	struct kvt_err err;

	CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == 0);
	return r;
}

static void put(struct kvt_engine *e, uint32_t ns, int i)
{
	const void *pages[1] = { page };
	struct kvt_req q = req(NULL, ns, i, 1);
	uint32_t stored;
	struct kvt_err err;

	test_fill(page, PAGE, (unsigned)i);
	CHECK(kvt_engine_put(e, &q, NULL, NULL, pages, &stored, &err) == 0);
	CHECK(stored == 1);
}

/* An Acquire's outcome, as its callback saw it. */
struct got {
	int calls, rc;
	uint64_t lease;
	uint32_t count;
};

static void on_acquired(void *arg, int rc, const struct kvt_acquired *a)
{
	struct got *g = arg;

	g->calls++;
	g->rc = rc;
	g->lease = a->lease;
	g->count = a->count;
}

static struct got acquire(struct kvt_engine *e, const uint8_t *token,
			  uint32_t ns, int first, int n, uint64_t wait)
{
	struct kvt_req q = req(token, ns, first, n);
	struct got g = { 0 };
	struct kvt_err err;

	CHECK(kvt_engine_acquire(e, &q, wait, on_acquired, &g, &err) == 0);
	CHECK(g.calls == 1);
	return g;
}

int main(void)
{
	struct kvt_engine_config cfg = {
		.host_bytes = 4 * 16384, .segment_bytes = 16384, /* 16 slots */
		.max_namespaces = 4,
		.default_priority = 35, .max_wait = 10000 * KVT_MS,
		.lease_ttl = 60000 * KVT_MS, .clock = fake_clock,
	};
	struct kvt_engine *e;
	struct kvt_session *s1, *s2;
	uint8_t t1[16], t2[16];
	struct kvt_engine_stats st;
	struct kvt_location locs[NKEYS];
	enum kvt_reserve_state states[NKEYS];
	struct kvt_err err;
	struct kvt_req q;
	struct got g, w;
	uint32_t a, b, count, other;
	uint64_t stride, lease;
	bool created;

	for (int i = 0; i < NKEYS; i++) {
		test_fill(key_bytes[i], KVT_KEY_BYTES, 1000u + (unsigned)i);
		keys[i] = key_bytes[i];
	}
	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	CHECK(kvt_engine_tenant(e, 1000, "alice", &me) == 0 && me != KVT_TENANT_SHARED);
	CHECK(kvt_engine_tenant(e, 1000, "alice", &other) == 0 && other == me);
	CHECK(kvt_engine_tenant(e, 1001, "bob", &other) == 0 && other != me);
	CHECK(kvt_engine_open_namespace(e, 1, "a", PAGE, 16, false, 0, &a, &created, &stride, &err) == 0);
	CHECK(created && stride == PAGE);
	CHECK(kvt_engine_open_namespace(e, 1, "a", PAGE * 2, 16, false, 0, &b, &created, &stride, &err) == -EPERM);
	CHECK(strstr(err.msg, "page_bytes 4096"));
	CHECK(kvt_engine_open_namespace(e, 1, "b", PAGE, 16, false, 0, &b, &created, &stride, &err) == 0);
	CHECK(kvt_engine_open_namespace(e, 1, "bad name", PAGE, 16, false, 0, &b, &created, &stride, &err) == -EINVAL);
	CHECK(kvt_engine_open_namespace(e, 1, "c", 16385, 16, false, 0, &b, &created, &stride, &err) == -EINVAL);
	b = 1;

	/* LRU: fill 16 slots, touch key 0, add key 16: key 1 goes, key 0 stays. */
	for (int i = 0; i < 16; i++)
		put(e, a, i);
	CHECK(ready(e, a, 0) == 1);
	put(e, a, 16);
	CHECK(ready(e, a, 0) == 1 && ready(e, a, 1) == 0 && ready(e, a, 16) == 1);
	/* Namespaces are scoped by tenant: alice's id is unknown to bob, and
	 * bob's namespace of the same name is another one. */
	{
		uint32_t r, p, bob_a;

		q = (struct kvt_req){ .tenant = other, .ns = a, .keys = keys, .n = 1 };
		CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == -ENOENT);
		CHECK(strstr(err.msg, "unknown namespace_id"));
		CHECK(kvt_engine_open_namespace(e, other, "a", PAGE, 16, false, 0, &bob_a,
						&created, &stride, &err) == 0 &&
		      created && bob_a != a);
		q.ns = bob_a;
		CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == 0 && r == 0);
	}
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 1 && st.ready_blocks == 16);
	CHECK(st.host_used_bytes == st.host_capacity_bytes);

	/* The bytes read back are the bytes put. */
	{
		struct kvt_block *pinned[1];
		uint32_t n, r;

		test_fill(page, PAGE, 16);
		q = req(NULL, a, 16, 1);
		CHECK(kvt_engine_pin(e, &q, 1, pinned, &n, &r, &err) == 0 && n == 1);
		CHECK(memcmp(kvt_engine_page(e, pinned[0]), page, PAGE) == 0);
		kvt_engine_unpin(e, pinned, 1);
	}

	/* Pin everything: a reservation finds no space and evicts nothing. */
	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);
	{
		const uint8_t *all[16];
		int n = 0;

		for (int i = 0; i < 17; i++)
			if (i != 1)
				all[n++] = keys[i];
		q = (struct kvt_req){ .tenant = me, .session = t1, .ns = a, .keys = all, .n = 16 };
		g = (struct got){ 0 };
		CHECK(kvt_engine_acquire(e, &q, 0, on_acquired, &g, &err) == 0);
		CHECK(g.calls == 1 && g.rc == 0 && g.count == 16 && g.lease != 0);
		lease = g.lease;
	}
	q = req(t1, a, 20, 2);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == -ENOSPC);
	CHECK(states[0] == KVT_RESERVE_NO_SPACE && states[1] == KVT_RESERVE_NO_SPACE);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 1 && st.pinned_blocks == 16 && st.reserve_no_space_total == 2);
	/* Other namespaces cannot take a pinned segment either. */
	q = req(t1, b, 20, 1);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == -ENOSPC);

	/* Release: now a reservation evicts; a second session sees it BUSY. */
	CHECK(kvt_engine_release(e, me, t1, lease, &err) == 0);
	CHECK(kvt_engine_release(e, me, t1, lease, &err) == -ENOENT);
	q = req(t1, a, 20, 2);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	CHECK(states[0] == KVT_RESERVE_RESERVED && states[1] == KVT_RESERVE_RESERVED);
	CHECK(kvt_engine_session_open(e, me, t2, &s2) == 0);
	q = req(t2, a, 20, 1);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	CHECK(states[0] == KVT_RESERVE_BUSY);
	/* Another tenant cannot use alice's session token. */
	q = req(t1, a, 20, 1);
	q.tenant = other;
	CHECK(kvt_engine_commit(e, &q, &err) == -ENOENT);
	/* Not readable until committed; only the owner may commit. Lookup
	 * reports it pending. */
	CHECK(ready(e, a, 20) == 0);
	{
		uint32_t r, p;

		q = req(NULL, a, 20, 2);
		CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == 0 && r == 0 && p == 2);
	}
	q = req(t2, a, 20, 1);
	CHECK(kvt_engine_commit(e, &q, &err) == -EPERM);
	CHECK(strstr(err.msg, "keys[0]") && strstr(err.msg, "another session"));
	/* A reader waits for key 20; the commit completes its Acquire. */
	{
		struct got waiting = { 0 };

		q = req(t2, a, 20, 1);
		CHECK(kvt_engine_acquire(e, &q, 5000 * KVT_MS, on_acquired, &waiting, &err) == 0);
		CHECK(waiting.calls == 0);
		q = req(t1, a, 20, 1);
		CHECK(kvt_engine_commit(e, &q, &err) == 0);
		CHECK(waiting.calls == 1 && waiting.rc == 0 && waiting.count == 1);
		CHECK(kvt_engine_release(e, me, t2, waiting.lease, &err) == 0);
	}
	CHECK(ready(e, a, 20) == 1);
	CHECK(kvt_engine_commit(e, &q, &err) == -EPERM);
	/* A reader waiting for 21 gets a miss there when it is aborted. */
	w = (struct got){ 0 };
	q = req(t2, a, 20, 2);
	CHECK(kvt_engine_acquire(e, &q, 5000 * KVT_MS, on_acquired, &w, &err) == 0);
	CHECK(w.calls == 0);
	q = req(t1, a, 21, 1);
	CHECK(kvt_engine_abort(e, &q, &err) == 0);
	CHECK(w.calls == 1 && w.rc == 0 && w.count == 1);
	CHECK(kvt_engine_release(e, me, t2, w.lease, &err) == 0);
	CHECK(ready(e, a, 21) == 0);
	q = req((const uint8_t *)"0123456789abcdef", a, 20, 1);
	CHECK(kvt_engine_commit(e, &q, &err) == -ENOENT);
	/* A wait ends at its deadline with what is ready; waits beyond
	 * max_wait are refused. */
	q = req(t1, a, 22, 1);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	w = (struct got){ 0 };
	q = req(t2, a, 20, 3); /* 20 ready, 21 absent: no wait */
	CHECK(kvt_engine_acquire(e, &q, 100 * KVT_MS, on_acquired, &w, &err) == 0);
	CHECK(w.calls == 1 && w.count == 1);
	CHECK(kvt_engine_release(e, me, t2, w.lease, &err) == 0);
	w = (struct got){ 0 };
	q = req(t2, a, 22, 1);
	CHECK(kvt_engine_acquire(e, &q, 100 * KVT_MS, on_acquired, &w, &err) == 0);
	fake_now += 99 * KVT_MS;
	kvt_engine_tick(e);
	CHECK(w.calls == 0);
	fake_now += 2 * KVT_MS;
	kvt_engine_tick(e);
	CHECK(w.calls == 1 && w.rc == 0 && w.count == 0 && w.lease == 0);
	CHECK(kvt_engine_acquire(e, &q, 20000 * KVT_MS, on_acquired, &w, &err) == -EINVAL);
	CHECK(strstr(err.msg, "max_wait"));
	/* The producer's session ends while a reader waits: a miss, at once. */
	w = (struct got){ 0 };
	CHECK(kvt_engine_acquire(e, &q, 5000 * KVT_MS, on_acquired, &w, &err) == 0);
	CHECK(w.calls == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.waits_active == 1 && st.waits_completed_total == 1 &&
	      st.waits_missed_total == 1 && st.waits_timed_out_total == 1);
	kvt_engine_session_close(e, s1);
	CHECK(w.calls == 1 && w.rc == 0 && w.count == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.waits_active == 0 && st.waits_missed_total == 2);
	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);

	/* Session end: its pins and reservations go, and their slots. */
	g = acquire(e, t2, a, 20, 1, 0);
	CHECK(g.count == 1);
	q = req(t2, a, 30, 3);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.pinned_blocks == 1 && st.pending_blocks == 3 && st.leases_active == 1);
	kvt_engine_session_close(e, s2);
	kvt_engine_stats(e, &st);
	CHECK(st.pinned_blocks == 0 && st.pending_blocks == 0 && st.leases_active == 0);
	CHECK(st.sessions_active == 1 && st.aborted_total == 5);
	CHECK(ready(e, a, 30) == 0);

	/* Drop while pinned: gone from the index at once, slot freed at release. */
	g = acquire(e, t1, a, 20, 1, 0);
	kvt_engine_stats(e, &st);
	{
		uint64_t used = st.host_used_bytes;
		uint32_t dropped;

		q = req(NULL, a, 20, 1);
		CHECK(kvt_engine_drop(e, &q, KVT_DROP_KEYS, false, 0, &dropped, &err) == 0 && dropped == 1);
		CHECK(ready(e, a, 20) == 0);
		kvt_engine_stats(e, &st);
		CHECK(st.host_used_bytes == used);
		CHECK(kvt_engine_release(e, me, t1, g.lease, &err) == 0);
		kvt_engine_stats(e, &st);
		CHECK(st.host_used_bytes == used - PAGE);
	}

	/* Namespace b gets room by reclaiming one of a's unpinned segments. */
	put(e, b, 40);
	CHECK(ready(e, b, 40) == 1);
	kvt_engine_stats(e, &st);
	CHECK(st.host_used_bytes <= st.host_capacity_bytes);

	/* Writing far more than the capacity never exceeds it. */
	for (int i = 0; i < NKEYS; i++) {
		put(e, a, i);
		kvt_engine_stats(e, &st);
		CHECK(st.host_used_bytes <= st.host_capacity_bytes);
	}
	q = req(NULL, a, 0, 0);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_NAMESPACE, false, 0, &count, &err) == 0 && count > 0);
	CHECK(ready(e, a, NKEYS - 1) == 0);

	/* A lease outlives lease_ttl only until the timer: forced unpin. */
	put(e, a, 50);
	g = acquire(e, t1, a, 50, 1, 0);
	CHECK(g.count == 1);
	fake_now += 60001 * KVT_MS;
	kvt_engine_tick(e);
	kvt_engine_stats(e, &st);
	CHECK(st.leases_expired_total == 1 && st.forced_unpins_total == 1 && st.pinned_blocks == 0);
	CHECK(kvt_engine_release(e, me, t1, g.lease, &err) == -ENOENT);
	CHECK(strstr(err.msg, "expired"));

	/* Drop by tenant: bob may not drop alice's blocks; alice may. */
	me = other;
	q = req(NULL, a, 0, 0);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_TENANT, false, 1000, &count, &err) == -EACCES);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_TENANT, true, 1000, &count, &err) == 0 && count >= 1);
	kvt_engine_tenant(e, 1000, "alice", &me);
	CHECK(ready(e, a, 50) == 0);

	/* A parent dropped under a live child stays as a husk; the child's
	 * later eviction frees both (ASan checks the memory). */
	put(e, a, 51);
	{
		const void *pages[1] = { page };
		uint32_t stored, dropped;

		q = req(NULL, a, 52, 1);
		CHECK(kvt_engine_put(e, &q, keys[51], NULL, pages, &stored, &err) == 0);
		q = req(NULL, a, 51, 1);
		CHECK(kvt_engine_drop(e, &q, KVT_DROP_KEYS, false, 0, &dropped, &err) == 0 && dropped == 1);
		CHECK(ready(e, a, 52) == 1);
	}

	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);

	/* A namespace gone quiet gives its segments to a busy one, which then
	 * keeps all its blocks instead of evicting its own. */
	{
		uint32_t cold, busy;

		CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
		CHECK(kvt_engine_tenant(e, 1000, "alice", &me) == 0);
		CHECK(kvt_engine_open_namespace(e, 1, "cold", PAGE, 16, false, 0, &cold, &created, &stride, &err) == 0);
		CHECK(kvt_engine_open_namespace(e, 1, "busy", PAGE, 16, false, 0, &busy, &created, &stride, &err) == 0);
		for (int i = 0; i < 16; i++) /* the whole tier */
			put(e, cold, i);
		fake_now += 1000 * KVT_MS;
		for (int i = 16; i < 28; i++) {
			fake_now += KVT_MS;
			put(e, busy, i);
		}
		for (int i = 16; i < 28; i++)
			CHECK(ready(e, busy, i) == 1);
		int left = 0;
		for (int i = 0; i < 16; i++)
			left += (int)ready(e, cold, i);
		CHECK(left == 4);
		kvt_engine_destroy(e);

		/* Unless its blocks are kept at a higher priority. */
		CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
		CHECK(kvt_engine_tenant(e, 1000, "alice", &me) == 0);
		CHECK(kvt_engine_open_namespace(e, 1, "cold", PAGE, 16, false, 0, &cold, &created, &stride, &err) == 0);
		CHECK(kvt_engine_open_namespace(e, 1, "busy", PAGE, 16, false, 0, &busy, &created, &stride, &err) == 0);
		for (int i = 0; i < 16; i++) {
			const struct kvt_retention keep = { 90, 0 };
			const void *pages[1] = { page };
			uint32_t stored;

			q = req(NULL, cold, i, 1);
			CHECK(kvt_engine_put(e, &q, NULL, &keep, pages, &stored, &err) == 0);
		}
		fake_now += 1000 * KVT_MS;
		for (int i = 16; i < 28; i++) {
			fake_now += KVT_MS;
			put(e, busy, i);
		}
		left = 0;
		for (int i = 0; i < 16; i++)
			left += (int)ready(e, cold, i);
		CHECK(left == 12); /* one segment went to busy while it had none */
		kvt_engine_destroy(e);
	}
	/* Destroy closes the segments' memfds. */
	{
		long long blocks;

		CHECK(test_memfds(getpid(), "kvtier-host-", &blocks) == 0);
	}
	return 0;
}

/*
 * Engine on real memfd segments, with a fake clock; each behaviour on a
 * fresh engine of its own: namespace options checked, LRU eviction, tenants
 * kept apart, the bytes read back are the bytes put, pins never evicted,
 * a release lets a reservation evict (a second session sees it busy),
 * ownership checks, early reuse (waits completed by commit, abort,
 * deadline, session end), session end releases everything, drop while
 * pinned, reclaim of another namespace's segment, capacity bound, drop
 * scopes (namespace, tenant), lease TTL, husks, a quiet namespace's
 * segments going to a busy one unless kept by priority, destroy closing
 * the memfds, a promotion that fails while the engine is destroyed
 * forgetting its nvme record.
 */
#include <errno.h>
#include <fcntl.h>
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
static uint32_t me; /* the tenant these calls act for: alice, or bob */
static uint32_t alice, bob;

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

static const struct kvt_engine_config cfg = {
	.host_bytes = 4 * 16384, .segment_bytes = 16384, /* 16 slots */
	.max_namespaces = 4,
	.default_priority = 35, .max_wait = 10000 * KVT_MS,
	.lease_ttl = 60000 * KVT_MS, .clock = fake_clock,
};

/* A fresh engine with tenants alice (uid 1000) and bob (uid 1001); the
 * calls act for alice. */
static struct kvt_engine *engine(void)
{
	struct kvt_engine *e;
	struct kvt_err err;

	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	CHECK(kvt_engine_tenant(e, 1000, "alice", &alice) == 0 && alice != KVT_TENANT_SHARED);
	CHECK(kvt_engine_tenant(e, 1001, "bob", &bob) == 0 && bob != alice);
	me = alice;
	return e;
}

/* Opens alice's namespace name (4 KiB pages), new. */
static uint32_t open_ns(struct kvt_engine *e, const char *name)
{
	struct kvt_err err;
	uint64_t stride;
	uint32_t ns;
	bool created;

	CHECK(kvt_engine_open_namespace(e, alice, name, PAGE, 16, false, 0, &ns, &created, &stride, &err) == 0);
	CHECK(created && stride == PAGE);
	return ns;
}

/* Fills the whole tier: keys [first, first + 16) in ns. */
static void fill(struct kvt_engine *e, uint32_t ns, int first)
{
	for (int i = first; i < first + 16; i++)
		put(e, ns, i);
}

/* A fresh engine, alice's namespace "a", and two sessions of hers: s1
 * (token t1) produces, s2 (t2) reads. */
struct pair {
	struct kvt_engine *e;
	uint32_t a;
	struct kvt_session *s1, *s2;
	uint8_t t1[16], t2[16];
};

static void pair_open(struct pair *p)
{
	p->e = engine();
	p->a = open_ns(p->e, "a");
	CHECK(kvt_engine_session_open(p->e, me, p->t1, &p->s1) == 0);
	CHECK(kvt_engine_session_open(p->e, me, p->t2, &p->s2) == 0);
}

static void pair_close(struct pair *p)
{
	kvt_engine_session_close(p->e, p->s2);
	kvt_engine_session_close(p->e, p->s1);
	kvt_engine_destroy(p->e);
}

/* token's session reserves keys [first, first + n) of ns, all new. */
static void reserve(struct kvt_engine *e, const uint8_t *token, uint32_t ns,
		    int first, int n)
{
	struct kvt_req q = req(token, ns, first, n);
	enum kvt_reserve_state states[4];
	struct kvt_location locs[4];
	struct kvt_err err;

	CHECK(n <= 4 && kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	for (int i = 0; i < n; i++)
		CHECK(states[i] == KVT_RESERVE_RESERVED);
}

/* Starts an Acquire of [first, first + n) that may wait; its outcome
 * arrives in *g, now or later. */
static void acquire_start(struct kvt_engine *e, const uint8_t *token, uint32_t ns,
			  int first, int n, uint64_t wait, struct got *g)
{
	struct kvt_req q = req(token, ns, first, n);
	struct kvt_err err;

	*g = (struct got){ 0 };
	CHECK(kvt_engine_acquire(e, &q, wait, on_acquired, g, &err) == 0);
}

/* Reopening with other pages, bad names and pages over a segment are refused. */
static void test_namespace_options(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), b;
	uint64_t stride;
	struct kvt_err err;
	bool created;

	CHECK(kvt_engine_open_namespace(e, alice, "a", PAGE * 2, 16, false, 0, &b, &created, &stride, &err) == -EPERM);
	CHECK(strstr(err.msg, "page_bytes 4096"));
	CHECK(kvt_engine_open_namespace(e, alice, "b", PAGE, 16, false, 0, &b, &created, &stride, &err) == 0);
	CHECK(created && b != a);
	CHECK(kvt_engine_open_namespace(e, alice, "bad name", PAGE, 16, false, 0, &b, &created, &stride, &err) == -EINVAL);
	CHECK(kvt_engine_open_namespace(e, alice, "c", 16385, 16, false, 0, &b, &created, &stride, &err) == -EINVAL);
	kvt_engine_destroy(e);
}

/* LRU: fill 16 slots, touch key 0, add key 16: key 1 goes, key 0 stays. */
static void test_lru(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a");
	struct kvt_engine_stats st;

	fill(e, a, 0);
	CHECK(ready(e, a, 0) == 1);
	put(e, a, 16);
	CHECK(ready(e, a, 0) == 1 && ready(e, a, 1) == 0 && ready(e, a, 16) == 1);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 1 && st.ready_blocks == 16);
	CHECK(st.host_used_bytes == st.host_capacity_bytes);
	kvt_engine_destroy(e);
}

/* A uid is one tenant. Namespaces are scoped by tenant: alice's id is
 * unknown to bob, and bob's namespace of the same name is another one. */
static void test_tenants_apart(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), t, r, p, bob_a;
	struct kvt_err err;
	struct kvt_req q;
	uint64_t stride;
	bool created;

	CHECK(kvt_engine_tenant(e, 1000, "alice", &t) == 0 && t == alice);
	put(e, a, 0);
	CHECK(ready(e, a, 0) == 1);
	q = (struct kvt_req){ .tenant = bob, .ns = a, .keys = keys, .n = 1 };
	CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == -ENOENT);
	CHECK(strstr(err.msg, "unknown namespace_id"));
	CHECK(kvt_engine_open_namespace(e, bob, "a", PAGE, 16, false, 0, &bob_a,
					&created, &stride, &err) == 0 &&
	      created && bob_a != a);
	q.ns = bob_a;
	CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == 0 && r == 0);
	kvt_engine_destroy(e);
}

/* The bytes read back are the bytes put. */
static void test_read_back(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), n, r;
	struct kvt_block *pinned[1];
	struct kvt_err err;
	struct kvt_req q;

	put(e, a, 16);
	test_fill(page, PAGE, 16);
	q = req(NULL, a, 16, 1);
	CHECK(kvt_engine_pin(e, &q, 1, pinned, &n, &r, &err) == 0 && n == 1);
	CHECK(memcmp(kvt_engine_page(e, pinned[0]), page, PAGE) == 0);
	kvt_engine_unpin(e, pinned, 1);
	kvt_engine_destroy(e);
}

/* Pins the whole tier (keys 0..15 of a) under one lease of t1's session. */
static uint64_t pin_all(struct kvt_engine *e, const uint8_t *t1, uint32_t a)
{
	struct got g = acquire(e, t1, a, 0, 16, 0);

	CHECK(g.rc == 0 && g.count == 16 && g.lease != 0);
	return g.lease;
}

/* Pin everything: a reservation finds no space and evicts nothing; other
 * namespaces cannot take a pinned segment either. */
static void test_pins_never_evicted(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), b = open_ns(e, "b");
	enum kvt_reserve_state states[2];
	struct kvt_location locs[2];
	struct kvt_engine_stats st;
	struct kvt_session *s1;
	struct kvt_err err;
	struct kvt_req q;
	uint8_t t1[16];

	fill(e, a, 0);
	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);
	pin_all(e, t1, a);
	q = req(t1, a, 20, 2);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == -ENOSPC);
	CHECK(states[0] == KVT_RESERVE_NO_SPACE && states[1] == KVT_RESERVE_NO_SPACE);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 0 && st.pinned_blocks == 16 && st.reserve_no_space_total == 2);
	q = req(t1, b, 20, 1);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == -ENOSPC);
	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);
}

/* Release (once): now a reservation evicts; a second session sees it BUSY. */
static void test_release_then_reserve(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a");
	enum kvt_reserve_state states[2];
	struct kvt_location locs[2];
	struct kvt_engine_stats st;
	struct kvt_session *s1, *s2;
	uint8_t t1[16], t2[16];
	struct kvt_err err;
	struct kvt_req q;
	uint64_t lease;

	fill(e, a, 0);
	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);
	lease = pin_all(e, t1, a);
	CHECK(kvt_engine_release(e, me, t1, lease, &err) == 0);
	CHECK(kvt_engine_release(e, me, t1, lease, &err) == -ENOENT);
	q = req(t1, a, 20, 2);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	CHECK(states[0] == KVT_RESERVE_RESERVED && states[1] == KVT_RESERVE_RESERVED);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 2 && st.pinned_blocks == 0 && st.pending_blocks == 2);
	CHECK(kvt_engine_session_open(e, me, t2, &s2) == 0);
	q = req(t2, a, 20, 1);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	CHECK(states[0] == KVT_RESERVE_BUSY);
	kvt_engine_session_close(e, s2);
	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);
}

/* A reservation is its session's: another tenant cannot use alice's session
 * token, nor anyone an unknown one; not readable until committed (Lookup
 * reports it pending); only the owner may commit. */
static void test_ownership(void)
{
	struct pair p;
	struct kvt_err err;
	struct kvt_req q;
	uint32_t r, pend;

	pair_open(&p);
	reserve(p.e, p.t1, p.a, 20, 2);
	q = req(p.t1, p.a, 20, 1);
	q.tenant = bob;
	CHECK(kvt_engine_commit(p.e, &q, &err) == -ENOENT);
	q = req((const uint8_t *)"0123456789abcdef", p.a, 20, 1);
	CHECK(kvt_engine_commit(p.e, &q, &err) == -ENOENT);
	CHECK(ready(p.e, p.a, 20) == 0);
	q = req(NULL, p.a, 20, 2);
	CHECK(kvt_engine_lookup(p.e, &q, &r, &pend, NULL, &err) == 0 && r == 0 && pend == 2);
	q = req(p.t2, p.a, 20, 1);
	CHECK(kvt_engine_commit(p.e, &q, &err) == -EPERM);
	CHECK(strstr(err.msg, "keys[0]") && strstr(err.msg, "another session"));
	pair_close(&p);
}

/* Early reuse: a reader waits for key 20; the commit completes its Acquire.
 * A committed key cannot be committed again. */
static void test_wait_commit(void)
{
	struct kvt_engine_stats st;
	struct got waiting;
	struct kvt_err err;
	struct kvt_req q;
	struct pair p;

	pair_open(&p);
	reserve(p.e, p.t1, p.a, 20, 1);
	acquire_start(p.e, p.t2, p.a, 20, 1, 5000 * KVT_MS, &waiting);
	CHECK(waiting.calls == 0);
	q = req(p.t1, p.a, 20, 1);
	CHECK(kvt_engine_commit(p.e, &q, &err) == 0);
	CHECK(waiting.calls == 1 && waiting.rc == 0 && waiting.count == 1);
	CHECK(kvt_engine_release(p.e, me, p.t2, waiting.lease, &err) == 0);
	CHECK(ready(p.e, p.a, 20) == 1);
	CHECK(kvt_engine_commit(p.e, &q, &err) == -EPERM);
	kvt_engine_stats(p.e, &st);
	CHECK(st.waits_active == 0 && st.waits_completed_total == 1 &&
	      st.waits_missed_total == 0 && st.waits_timed_out_total == 0);
	pair_close(&p);
}

/* A reader waiting for 20 and 21 (20 ready) gets a miss at 21 when it is
 * aborted. */
static void test_wait_abort(void)
{
	struct kvt_engine_stats st;
	struct kvt_err err;
	struct kvt_req q;
	struct pair p;
	struct got w;

	pair_open(&p);
	put(p.e, p.a, 20);
	reserve(p.e, p.t1, p.a, 21, 1);
	acquire_start(p.e, p.t2, p.a, 20, 2, 5000 * KVT_MS, &w);
	CHECK(w.calls == 0);
	q = req(p.t1, p.a, 21, 1);
	CHECK(kvt_engine_abort(p.e, &q, &err) == 0);
	CHECK(w.calls == 1 && w.rc == 0 && w.count == 1);
	CHECK(kvt_engine_release(p.e, me, p.t2, w.lease, &err) == 0);
	CHECK(ready(p.e, p.a, 21) == 0);
	kvt_engine_stats(p.e, &st);
	CHECK(st.waits_active == 0 && st.waits_completed_total == 0 &&
	      st.waits_missed_total == 1 && st.waits_timed_out_total == 0);
	CHECK(st.aborted_total == 1);
	pair_close(&p);
}

/* A wait ends at its deadline with what is ready; an absent key ends the
 * prefix without a wait; waits beyond max_wait are refused. */
static void test_wait_deadline(void)
{
	struct kvt_engine_stats st;
	struct kvt_err err;
	struct kvt_req q;
	struct pair p;
	struct got w;

	pair_open(&p);
	put(p.e, p.a, 20);
	reserve(p.e, p.t1, p.a, 22, 1);
	/* 20 ready, 21 absent: no wait */
	acquire_start(p.e, p.t2, p.a, 20, 3, 100 * KVT_MS, &w);
	CHECK(w.calls == 1 && w.count == 1);
	CHECK(kvt_engine_release(p.e, me, p.t2, w.lease, &err) == 0);
	acquire_start(p.e, p.t2, p.a, 22, 1, 100 * KVT_MS, &w);
	fake_now += 99 * KVT_MS;
	kvt_engine_tick(p.e);
	CHECK(w.calls == 0);
	fake_now += 2 * KVT_MS;
	kvt_engine_tick(p.e);
	CHECK(w.calls == 1 && w.rc == 0 && w.count == 0 && w.lease == 0);
	q = req(p.t2, p.a, 22, 1);
	CHECK(kvt_engine_acquire(p.e, &q, 20000 * KVT_MS, on_acquired, &w, &err) == -EINVAL);
	CHECK(strstr(err.msg, "max_wait"));
	kvt_engine_stats(p.e, &st);
	CHECK(st.waits_active == 0 && st.waits_completed_total == 0 &&
	      st.waits_missed_total == 0 && st.waits_timed_out_total == 1);
	pair_close(&p);
}

/* The producer's session ends while a reader waits: a miss, at once. */
static void test_wait_session_end(void)
{
	struct kvt_engine_stats st;
	struct pair p;
	struct got w;

	pair_open(&p);
	reserve(p.e, p.t1, p.a, 22, 1);
	acquire_start(p.e, p.t2, p.a, 22, 1, 5000 * KVT_MS, &w);
	CHECK(w.calls == 0);
	kvt_engine_stats(p.e, &st);
	CHECK(st.waits_active == 1 && st.waits_missed_total == 0);
	kvt_engine_session_close(p.e, p.s1);
	CHECK(w.calls == 1 && w.rc == 0 && w.count == 0);
	kvt_engine_stats(p.e, &st);
	CHECK(st.waits_active == 0 && st.waits_missed_total == 1);
	CHECK(st.aborted_total == 1 && ready(p.e, p.a, 22) == 0);
	/* Its token can be used again for a new session. */
	CHECK(kvt_engine_session_open(p.e, me, p.t1, &p.s1) == 0);
	pair_close(&p);
}

/* Session end: its pins and reservations go, and their slots; the other
 * session stays. */
static void test_session_end_releases(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a");
	enum kvt_reserve_state states[3];
	struct kvt_location locs[3];
	struct kvt_engine_stats st;
	struct kvt_session *s1, *s2;
	uint8_t t1[16], t2[16];
	struct kvt_err err;
	struct kvt_req q;
	struct got g;

	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);
	CHECK(kvt_engine_session_open(e, me, t2, &s2) == 0);
	put(e, a, 20);
	g = acquire(e, t2, a, 20, 1, 0);
	CHECK(g.count == 1);
	q = req(t2, a, 30, 3);
	CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.pinned_blocks == 1 && st.pending_blocks == 3 && st.leases_active == 1);
	CHECK(st.host_used_bytes == 4 * PAGE);
	kvt_engine_session_close(e, s2);
	kvt_engine_stats(e, &st);
	CHECK(st.pinned_blocks == 0 && st.pending_blocks == 0 && st.leases_active == 0);
	CHECK(st.sessions_active == 1 && st.aborted_total == 3);
	CHECK(st.host_used_bytes == PAGE);
	CHECK(ready(e, a, 30) == 0 && ready(e, a, 20) == 1);
	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);
}

/* Drop while pinned: gone from the index at once, slot freed at release. */
static void test_drop_pinned(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), dropped;
	struct kvt_engine_stats st;
	struct kvt_session *s1;
	struct kvt_err err;
	struct kvt_req q;
	uint8_t t1[16];
	uint64_t used;
	struct got g;

	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);
	put(e, a, 20);
	g = acquire(e, t1, a, 20, 1, 0);
	CHECK(g.count == 1);
	kvt_engine_stats(e, &st);
	used = st.host_used_bytes;
	q = req(NULL, a, 20, 1);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_KEYS, false, 0, &dropped, &err) == 0 && dropped == 1);
	CHECK(ready(e, a, 20) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.host_used_bytes == used);
	CHECK(kvt_engine_release(e, me, t1, g.lease, &err) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.host_used_bytes == used - PAGE);
	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);
}

/* Namespace b gets room by reclaiming one of a's unpinned segments. */
static void test_reclaim_other_namespace(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), b = open_ns(e, "b"), left = 0;
	struct kvt_engine_stats st;

	fill(e, a, 0); /* the whole tier */
	put(e, b, 40);
	CHECK(ready(e, b, 40) == 1);
	kvt_engine_stats(e, &st);
	CHECK(st.host_used_bytes <= st.host_capacity_bytes);
	for (int i = 0; i < 16; i++)
		left += ready(e, a, i);
	CHECK(left < 16);
	kvt_engine_destroy(e);
}

/* Writing far more than the capacity never exceeds it. */
static void test_capacity_bound(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a");
	struct kvt_engine_stats st;

	for (int i = 0; i < NKEYS; i++) {
		put(e, a, i);
		kvt_engine_stats(e, &st);
		CHECK(st.host_used_bytes <= st.host_capacity_bytes);
	}
	kvt_engine_destroy(e);
}

/* Drop of a namespace's blocks: every one goes, the other namespace's stay. */
static void test_drop_namespace(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), b = open_ns(e, "b"), count;
	struct kvt_err err;
	struct kvt_req q;

	for (int i = NKEYS - 4; i < NKEYS; i++)
		put(e, a, i);
	put(e, b, 0);
	CHECK(ready(e, a, NKEYS - 1) == 1);
	q = req(NULL, a, 0, 0);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_NAMESPACE, false, 0, &count, &err) == 0 && count == 4);
	CHECK(ready(e, a, NKEYS - 1) == 0);
	CHECK(ready(e, b, 0) == 1);
	kvt_engine_destroy(e);
}

/* A lease outlives lease_ttl only until the timer: forced unpin. */
static void test_lease_ttl(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a");
	struct kvt_engine_stats st;
	struct kvt_session *s1;
	struct kvt_err err;
	uint8_t t1[16];
	struct got g;

	CHECK(kvt_engine_session_open(e, me, t1, &s1) == 0);
	put(e, a, 50);
	g = acquire(e, t1, a, 50, 1, 0);
	CHECK(g.count == 1);
	fake_now += 60001 * KVT_MS;
	kvt_engine_tick(e);
	kvt_engine_stats(e, &st);
	CHECK(st.leases_expired_total == 1 && st.forced_unpins_total == 1 && st.pinned_blocks == 0);
	CHECK(kvt_engine_release(e, me, t1, g.lease, &err) == -ENOENT);
	CHECK(strstr(err.msg, "expired"));
	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);
}

/* Drop by tenant: bob may not drop alice's blocks; an admin may. */
static void test_drop_tenant(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), count;
	struct kvt_err err;
	struct kvt_req q;

	put(e, a, 50);
	me = bob;
	q = req(NULL, a, 0, 0);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_TENANT, false, 1000, &count, &err) == -EACCES);
	me = alice;
	CHECK(ready(e, a, 50) == 1);
	me = bob;
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_TENANT, true, 1000, &count, &err) == 0 && count == 1);
	me = alice;
	CHECK(ready(e, a, 50) == 0);
	kvt_engine_destroy(e);
}

/* A parent dropped under a live child stays as a husk; the child's later
 * eviction frees both (ASan checks the memory). */
static void test_husk(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a"), stored, dropped;
	const void *pages[1] = { page };
	struct kvt_engine_stats st;
	struct kvt_err err;
	struct kvt_req q;

	put(e, a, 51);
	q = req(NULL, a, 52, 1);
	CHECK(kvt_engine_put(e, &q, keys[51], NULL, pages, &stored, &err) == 0);
	q = req(NULL, a, 51, 1);
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_KEYS, false, 0, &dropped, &err) == 0 && dropped == 1);
	CHECK(ready(e, a, 51) == 0 && ready(e, a, 52) == 1);
	fill(e, a, 0); /* evicts the child */
	CHECK(ready(e, a, 52) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 1 && st.ready_blocks == 16);
	kvt_engine_destroy(e);
}

/* Namespaces cold and busy: cold's 16 blocks (retention keep; NULL: the
 * default) fill the tier, then a second later busy writes 12 blocks.
 * Returns how many of cold's are left. */
static int cold_and_busy(const struct kvt_retention *keep)
{
	struct kvt_engine *e = engine();
	uint32_t cold = open_ns(e, "cold"), busy = open_ns(e, "busy");
	const void *pages[1] = { page };
	struct kvt_err err;
	struct kvt_req q;
	uint32_t stored;
	int left = 0;

	for (int i = 0; i < 16; i++) { /* the whole tier */
		q = req(NULL, cold, i, 1);
		CHECK(kvt_engine_put(e, &q, NULL, keep, pages, &stored, &err) == 0);
	}
	fake_now += 1000 * KVT_MS;
	for (int i = 16; i < 28; i++) {
		fake_now += KVT_MS;
		put(e, busy, i);
	}
	if (!keep)
		for (int i = 16; i < 28; i++)
			CHECK(ready(e, busy, i) == 1);
	for (int i = 0; i < 16; i++)
		left += (int)ready(e, cold, i);
	kvt_engine_destroy(e);
	return left;
}

/* A namespace gone quiet gives its segments to a busy one, which then keeps
 * all its blocks instead of evicting its own. */
static void test_quiet_namespace_gives_segments(void)
{
	CHECK(cold_and_busy(NULL) == 4);
}

/* Unless its blocks are kept at a higher priority: one segment went to busy
 * while it had none. */
static void test_priority_keeps_segments(void)
{
	const struct kvt_retention keep = { 90, 0 };

	CHECK(cold_and_busy(&keep) == 12);
}

/* Destroy closes the segments' memfds. */
static void test_destroy_closes_memfds(void)
{
	struct kvt_engine *e = engine();
	uint32_t a = open_ns(e, "a");
	long long blocks;

	put(e, a, 0);
	CHECK(test_memfds(getpid(), "kvtier-host-", &blocks) > 0);
	kvt_engine_destroy(e);
	CHECK(test_memfds(getpid(), "kvtier-host-", &blocks) == 0);
}

/* An engine of cfg with an nvme tier on path (1 MiB regions, one I/O at a
 * time), for alice, and her namespace "cold" (created or recovered). */
static struct kvt_engine *nvme_engine(const char *const *path, uint32_t *ns)
{
	struct kvt_engine_config c = cfg;
	struct kvt_engine *e;
	struct kvt_err err;
	uint64_t stride;
	bool created;

	c.nvme = (struct kvt_engine_nvme){ path, 1, 8 << 20, 1 << 20, 1,
					   30000 * KVT_MS };
	CHECK(kvt_engine_create(&c, &e, &err) == 0);
	CHECK(kvt_engine_tenant(e, 1000, "alice", &alice) == 0);
	me = alice;
	CHECK(kvt_engine_open_namespace(e, alice, "cold", PAGE, 16, false, 0, ns,
					&created, &stride, &err) == 0);
	return e;
}

static struct kvt_engine_stats engine_stats(struct kvt_engine *e)
{
	struct kvt_engine_stats st;

	kvt_engine_stats(e, &st);
	return st;
}

/*
 * Promotions still in flight when the engine is destroyed complete while
 * the nvme tier stops; one that fails (a corrupt page) takes its block out
 * of the cache, and its record off nvme, as at any other time: the next
 * start does not bring the corrupt block back.
 */
static void test_nvme_promotion_fails_at_destroy(void)
{
	char dir[] = "/tmp/kvtier-engine-XXXXXX", path[64], hdr[4096];
	const char *paths[1] = { path };
	struct kvt_block *pinned[8];
	struct kvt_engine *e;
	struct kvt_req q;
	struct kvt_err err;
	uint32_t ns, count, r;
	int fd, flipped = 0;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/nvme.kvt", dir);
	e = nvme_engine(paths, &ns);
	CHECK(engine_stats(e).nvme_enabled);
	for (int i = 0; i < 16; i++) {
		put(e, ns, i);
		for (int t = 0; engine_stats(e).demotions_total < (uint64_t)i + 1; t++) {
			CHECK(t < 2000);
			usleep(1000);
		}
	}
	kvt_engine_destroy(e);

	/* Flip a byte of the pages of keys 0..7: each record is a 4 KiB
	 * header (its key at byte 44), then its page. */
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	for (off_t at = 0; pread(fd, hdr, sizeof(hdr), at) == (ssize_t)sizeof(hdr);
	     at += sizeof(hdr)) {
		uint8_t byte;

		if (memcmp(hdr, "\0KVTREC1", 8) != 0)
			continue;
		for (int i = 0; i < 8; i++) {
			if (memcmp(hdr + 44, keys[i], KVT_KEY_BYTES) != 0)
				continue;
			CHECK(pread(fd, &byte, 1, at + 4096 + 100) == 1);
			byte ^= 0x5a;
			CHECK(pwrite(fd, &byte, 1, at + 4096 + 100) == 1);
			flipped++;
		}
	}
	close(fd);
	CHECK(flipped == 8);

	/* Back from nvme only; a Get starts reading the first 8 back, and the
	 * engine goes at once, their reads still under way. */
	e = nvme_engine(paths, &ns);
	CHECK(engine_stats(e).nvme_recovered_blocks == 16);
	q = req(NULL, ns, 0, 8);
	CHECK(kvt_engine_pin(e, &q, 8, pinned, &count, &r, &err) == 0);
	CHECK(count == 0 && r == 8);
	kvt_engine_destroy(e);

	e = nvme_engine(paths, &ns);
	CHECK(engine_stats(e).nvme_recovered_blocks == 8);
	CHECK(ready(e, ns, 0) == 0 && ready(e, ns, 8) == 1);
	kvt_engine_destroy(e);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	for (int i = 0; i < NKEYS; i++) {
		test_fill(key_bytes[i], KVT_KEY_BYTES, 1000u + (unsigned)i);
		keys[i] = key_bytes[i];
	}
	test_namespace_options();
	test_lru();
	test_tenants_apart();
	test_read_back();
	test_pins_never_evicted();
	test_release_then_reserve();
	test_ownership();
	test_wait_commit();
	test_wait_abort();
	test_wait_deadline();
	test_wait_session_end();
	test_session_end_releases();
	test_drop_pinned();
	test_reclaim_other_namespace();
	test_capacity_bound();
	test_drop_namespace();
	test_lease_ttl();
	test_drop_tenant();
	test_husk();
	test_quiet_namespace_gives_segments();
	test_priority_keeps_segments();
	test_destroy_closes_memfds();
	test_nvme_promotion_fails_at_destroy();
	return 0;
}

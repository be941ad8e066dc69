/*
 * Engine on real shm segments: LRU eviction, pins never evicted, session end
 * releases everything, ownership checks, drop while pinned, reclaim of
 * another namespace's segment, capacity bound.
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

static uint32_t ready(struct kvt_engine *e, uint32_t ns, int i)
{
	uint32_t r;
	struct kvt_err err;

	CHECK(kvt_engine_lookup(e, ns, &keys[i], 1, &r, &err) == 0);
	return r;
}

static void put(struct kvt_engine *e, uint32_t ns, int i)
{
	const void *pages[1] = { page };
	uint32_t stored;
	struct kvt_err err;

	test_fill(page, PAGE, (unsigned)i);
	CHECK(kvt_engine_put(e, ns, NULL, &keys[i], pages, 1, &stored, &err) == 0);
	CHECK(stored == 1);
}

int main(void)
{
	struct kvt_engine_config cfg = {
		.host_bytes = 4 * 16384, .segment_bytes = 16384, /* 16 slots */
		.shm_mode = 0600, .shm_gid = (gid_t)-1, .max_namespaces = 4,
	};
	char prefix[64];
	struct kvt_engine *e;
	struct kvt_session *s1, *s2;
	uint8_t t1[16], t2[16];
	struct kvt_engine_stats st;
	struct kvt_location locs[NKEYS];
	enum kvt_reserve_state states[NKEYS];
	struct kvt_err err;
	uint32_t a, b, count;
	uint64_t stride, lease;
	bool created;

	snprintf(prefix, sizeof(prefix), "/kvtier-test-engine-%d-", (int)getpid());
	cfg.shm_prefix = prefix;
	for (int i = 0; i < NKEYS; i++) {
		test_fill(key_bytes[i], KVT_KEY_BYTES, 1000u + (unsigned)i);
		keys[i] = key_bytes[i];
	}
	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	CHECK(kvt_engine_open_namespace(e, "a", PAGE, 16, &a, &created, &stride, &err) == 0);
	CHECK(created && stride == PAGE);
	CHECK(kvt_engine_open_namespace(e, "a", PAGE * 2, 16, &b, &created, &stride, &err) == -EPERM);
	CHECK(strstr(err.msg, "page_bytes 4096"));
	CHECK(kvt_engine_open_namespace(e, "b", PAGE, 16, &b, &created, &stride, &err) == 0);
	CHECK(kvt_engine_open_namespace(e, "bad name", PAGE, 16, &b, &created, &stride, &err) == -EINVAL);
	CHECK(kvt_engine_open_namespace(e, "c", 16385, 16, &b, &created, &stride, &err) == -EINVAL);
	b = 1;

	/* LRU: fill 16 slots, touch key 0, add key 16: key 1 goes, key 0 stays. */
	for (int i = 0; i < 16; i++)
		put(e, a, i);
	CHECK(ready(e, a, 0) == 1);
	put(e, a, 16);
	CHECK(ready(e, a, 0) == 1 && ready(e, a, 1) == 0 && ready(e, a, 16) == 1);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 1 && st.ready_blocks == 16);
	CHECK(st.host_used_bytes == st.host_capacity_bytes);

	/* The bytes read back are the bytes put. */
	{
		struct kvt_block *pinned[1];
		uint32_t n, r;

		test_fill(page, PAGE, 16);
		CHECK(kvt_engine_pin(e, a, &keys[16], 1, 1, pinned, &n, &r, &err) == 0 && n == 1);
		CHECK(memcmp(kvt_engine_page(e, pinned[0]), page, PAGE) == 0);
		kvt_engine_unpin(e, pinned, 1);
	}

	/* Pin everything: a reservation finds no space and evicts nothing. */
	CHECK(kvt_engine_session_open(e, t1, &s1) == 0);
	{
		const uint8_t *all[16];
		int n = 0;

		for (int i = 0; i < 17; i++)
			if (i != 1)
				all[n++] = keys[i];
		CHECK(kvt_engine_acquire(e, t1, a, all, 16, &lease, locs, &count, &err) == 0);
		CHECK(count == 16 && lease != 0);
	}
	CHECK(kvt_engine_reserve(e, t1, a, NULL, &keys[20], 2, states, locs, &err) == -ENOSPC);
	CHECK(states[0] == KVT_RESERVE_NO_SPACE && states[1] == KVT_RESERVE_NO_SPACE);
	kvt_engine_stats(e, &st);
	CHECK(st.evictions_total == 1 && st.pinned_blocks == 16 && st.reserve_no_space_total == 2);
	/* Other namespaces cannot take a pinned segment either. */
	CHECK(kvt_engine_reserve(e, t1, b, NULL, &keys[20], 1, states, locs, &err) == -ENOSPC);

	/* Release: now a reservation evicts; a second session sees it BUSY. */
	CHECK(kvt_engine_release(e, t1, lease, &err) == 0);
	CHECK(kvt_engine_release(e, t1, lease, &err) == -ENOENT);
	CHECK(kvt_engine_reserve(e, t1, a, NULL, &keys[20], 2, states, locs, &err) == 0);
	CHECK(states[0] == KVT_RESERVE_RESERVED && states[1] == KVT_RESERVE_RESERVED);
	CHECK(kvt_engine_session_open(e, t2, &s2) == 0);
	CHECK(kvt_engine_reserve(e, t2, a, NULL, &keys[20], 1, states, locs, &err) == 0);
	CHECK(states[0] == KVT_RESERVE_BUSY);
	/* Not readable until committed; only the owner may commit. */
	CHECK(ready(e, a, 20) == 0);
	CHECK(kvt_engine_commit(e, t2, a, &keys[20], 1, &err) == -EPERM);
	CHECK(strstr(err.msg, "keys[0]") && strstr(err.msg, "another session"));
	CHECK(kvt_engine_commit(e, t1, a, &keys[20], 1, &err) == 0);
	CHECK(ready(e, a, 20) == 1);
	CHECK(kvt_engine_commit(e, t1, a, &keys[20], 1, &err) == -EPERM);
	CHECK(kvt_engine_abort(e, t1, a, &keys[21], 1, &err) == 0);
	CHECK(ready(e, a, 21) == 0);
	CHECK(kvt_engine_commit(e, (const uint8_t *)"0123456789abcdef", a, &keys[20], 1, &err) == -ENOENT);

	/* Session end: its pins and reservations go, and their slots. */
	CHECK(kvt_engine_acquire(e, t2, a, &keys[20], 1, &lease, locs, &count, &err) == 0 && count == 1);
	CHECK(kvt_engine_reserve(e, t2, a, NULL, &keys[30], 3, states, locs, &err) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.pinned_blocks == 1 && st.pending_blocks == 3 && st.leases_active == 1);
	kvt_engine_session_close(e, s2);
	kvt_engine_stats(e, &st);
	CHECK(st.pinned_blocks == 0 && st.pending_blocks == 0 && st.leases_active == 0);
	CHECK(st.sessions_active == 1 && st.aborted_total == 4);
	CHECK(ready(e, a, 30) == 0);

	/* Drop while pinned: gone from the index at once, slot freed at release. */
	CHECK(kvt_engine_acquire(e, t1, a, &keys[20], 1, &lease, locs, &count, &err) == 0);
	kvt_engine_stats(e, &st);
	{
		uint64_t used = st.host_used_bytes;
		uint32_t dropped;

		CHECK(kvt_engine_drop(e, a, &keys[20], 1, false, &dropped, &err) == 0 && dropped == 1);
		CHECK(ready(e, a, 20) == 0);
		kvt_engine_stats(e, &st);
		CHECK(st.host_used_bytes == used);
		CHECK(kvt_engine_release(e, t1, lease, &err) == 0);
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
	CHECK(kvt_engine_drop(e, a, NULL, 0, true, &count, &err) == 0 && count > 0);
	CHECK(ready(e, a, NKEYS - 1) == 0);

	kvt_engine_session_close(e, s1);
	kvt_engine_destroy(e);
	/* Destroy unlinks the segments. */
	{
		char path[128];

		snprintf(path, sizeof(path), "/dev/shm%s0", prefix);
		CHECK(access(path, F_OK) != 0);
	}
	return 0;
}

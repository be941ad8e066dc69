/*
 * kvtier-indexbench: what a cached block costs in daemon memory, and what a
 * Lookup costs inside the engine as the index grows to 1k, 100k and 10M
 * blocks. Blocks are reserved and committed without writing their pages,
 * in a host tier left sparse (10M blocks would need 40 GB committed), so
 * only metadata is built.
 * Heap bytes are read from jemalloc, the daemon's allocator, when this is
 * built with it; else from glibc's mallinfo2.
 *
 *   kvtier-indexbench [max_blocks]   (default 10000000)
 */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef KVT_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "engine.h"
#include "harness.h"

#define PAGE 4096
#define SEGMENT (64u << 20)
#define BATCH 4096
#define LOOKUP_KEYS 64
#define LOOKUPS 200000

static size_t heap_bytes(void)
{
#ifdef KVT_HAVE_JEMALLOC
	uint64_t epoch = 1;
	size_t allocated, len = sizeof(allocated), elen = sizeof(epoch);

	mallctl("epoch", &epoch, &elen, &epoch, elen);
	mallctl("stats.allocated", &allocated, &len, NULL, 0);
	return allocated;
#else
	return mallinfo2().uordblks;
#endif
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Block i's key: unique, uniformly spread, as a BLAKE2b chain would be. */
static void key_of(uint64_t i, uint8_t key[KVT_KEY_BYTES])
{
	uint64_t a = (i + 1) * 0x9e3779b97f4a7c15ull, b = a ^ (a >> 31);

	b *= 0xbf58476d1ce4e5b9ull;
	memcpy(key, &b, 8);
	memcpy(key + 8, &a, 8);
}

static void run(uint64_t blocks)
{
	struct kvt_engine_config cfg = {
		.segment_bytes = SEGMENT,
		.max_namespaces = 1, .default_priority = 35,
		.huge_pages = KVT_HUGE_OFF, .sparse_host = true,
	};
	static uint8_t kb[BATCH][KVT_KEY_BYTES];
	static const uint8_t *keys[BATCH];
	static enum kvt_reserve_state states[BATCH];
	static struct kvt_location locs[BATCH];
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	struct kvt_engine *e;
	struct kvt_session *s;
	struct kvt_err err;
	uint32_t ns, tenant, ready, pending;
	uint64_t stride;
	size_t before, after;
	double t0, t1, sink = 0;
	bool created;

	cfg.host_bytes = (blocks * PAGE + SEGMENT - 1) / SEGMENT * SEGMENT;
	before = heap_bytes();
	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	CHECK(kvt_engine_tenant(e, 0, "root", &tenant) == 0);
	CHECK(kvt_engine_open_namespace(e, 1, "bench", PAGE, 16, false, 0, &ns,
					&created, &stride, &err) == 0);
	CHECK(kvt_engine_session_open(e, tenant, token, &s) == 0);
	for (int i = 0; i < BATCH; i++)
		keys[i] = kb[i];
	t0 = now_s();
	for (uint64_t done = 0; done < blocks; done += BATCH) {
		uint32_t n = blocks - done < BATCH ? (uint32_t)(blocks - done) : BATCH;
		struct kvt_req q = { .tenant = tenant, .session = token, .ns = ns,
				     .keys = keys, .n = n };

		for (uint32_t i = 0; i < n; i++)
			key_of(done + i, kb[i]);
		CHECK(kvt_engine_reserve(e, &q, NULL, NULL, states, locs, &err) == 0);
		CHECK(kvt_engine_commit(e, &q, &err) == 0);
	}
	t1 = now_s();
	after = heap_bytes();

	/* Lookups of 64 random resident keys each (chains of a real workload
	 * would hit the same buckets no more often). */
	{
		double l0, l1;
		uint64_t r = 12345;

		l0 = now_s();
		for (int i = 0; i < LOOKUPS; i++) {
			struct kvt_req q = { .tenant = tenant, .ns = ns,
					     .keys = keys, .n = LOOKUP_KEYS };

			for (int k = 0; k < LOOKUP_KEYS; k++) {
				r = r * 6364136223846793005ull + 1442695040888963407ull;
				key_of((r >> 11) % blocks, kb[k]);
			}
			CHECK(kvt_engine_lookup(e, &q, &ready, &pending, NULL, &err) == 0);
			sink += ready;
		}
		l1 = now_s();
		CHECK(sink == (double)LOOKUPS * LOOKUP_KEYS);
		printf("%10" PRIu64 " blocks: %6.1f bytes/block (struct %zu), insert %.0f ns/block, Lookup(64) %.2f us (%.1f ns/key)\n",
		       blocks, (double)(after - before) / (double)blocks,
		       sizeof(struct kvt_block), (t1 - t0) / (double)blocks * 1e9,
		       (l1 - l0) / LOOKUPS * 1e6,
		       (l1 - l0) / LOOKUPS / LOOKUP_KEYS * 1e9);
	}
	kvt_engine_session_close(e, s);
	kvt_engine_destroy(e);
}

int main(int argc, char **argv)
{
	uint64_t max = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;

	printf("heap bytes per block from %s; key generation is inside the Lookup time\n",
#ifdef KVT_HAVE_JEMALLOC
	       "jemalloc stats.allocated"
#else
	       "glibc mallinfo2"
#endif
	);
	for (uint64_t n = 1000; n <= max; n *= 100)
		run(n);
	return 0;
}

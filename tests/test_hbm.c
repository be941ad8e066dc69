/*
 * The hbm tier's logic in the engine: copies made on a GPU worker's first
 * Acquire and served from its pool after; other sessions read the host
 * tier; a full pool drops its least recently used unpinned copy; a failed
 * copy leaves none; a copy goes with its host slot; nothing leaks.
 *
 * No GPU here, so the device is a stand-in that keeps pools in host memory
 * and copies on its own thread, as the CUDA one does on its stream
 * (tests/test_gpu_path.c runs the real one where there is a GPU).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "harness.h"

#define PAGE 4096
#define NKEYS 16

/* ---- the stand-in device ---- */

struct job {
	struct job *next;
	void *dst;
	const void *src;
	uint64_t len;
	int rc;
	kvt_hbm_done done;
	void *arg;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, **tail;
	pthread_t thread;
	bool stop, paused; /* paused: copies wait in the queue */
	int fail_next; /* the next copies to fail */
	int submitted, completed, registered;
} dev = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void *dev_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&dev.lock);
	for (;;) {
		struct job *j = dev.paused ? NULL : dev.head;

		if (!j) {
			if (dev.stop)
				break;
			pthread_cond_wait(&dev.cond, &dev.lock);
			continue;
		}
		dev.head = j->next;
		if (!dev.head)
			dev.tail = &dev.head;
		pthread_mutex_unlock(&dev.lock);
		if (j->rc == 0)
			memcpy(j->dst, j->src, j->len);
		j->done(j->arg, j->rc);
		free(j);
		pthread_mutex_lock(&dev.lock);
		dev.completed++;
		pthread_cond_broadcast(&dev.cond);
	}
	pthread_mutex_unlock(&dev.lock);
	return NULL;
}

static int dev_open(void *ctx, int device, uint64_t bytes,
		    struct kvt_hbm_pool *pool, char *err, size_t errlen)
{
	(void)ctx;
	if (device > 0) {
		snprintf(err, errlen, "no GPU %d", device);
		return -ENODEV;
	}
	memset(pool, 0, sizeof(*pool));
	pool->device = 0;
	memcpy(pool->uuid, "GPU-test-0000000", KVT_GPU_UUID_BYTES);
	pool->bytes = bytes;
	pool->base = aligned_alloc(4096, bytes);
	memset(pool->base, 0, bytes);
	return 0;
}

static void dev_wait(int completed);

static void dev_close(void *ctx, struct kvt_hbm_pool *pool)
{
	(void)ctx;
	dev_wait(dev.submitted);
	free(pool->base);
}

static int dev_register(void *ctx, void *base, uint64_t len)
{
	(void)ctx, (void)base, (void)len;
	dev.registered++;
	return 0;
}

static void dev_unregister(void *ctx, void *base)
{
	(void)ctx, (void)base;
	dev.registered--;
}

static int dev_copy_in(void *ctx, struct kvt_hbm_pool *pool, uint64_t off,
		       const void *src, uint64_t len, kvt_hbm_done done,
		       void *arg)
{
	struct job *j = calloc(1, sizeof(*j));

	(void)ctx;
	CHECK(j && off + len <= pool->bytes);
	*j = (struct job){ NULL, (char *)pool->base + off, src, len, 0, done, arg };
	pthread_mutex_lock(&dev.lock);
	if (dev.fail_next > 0) {
		dev.fail_next--;
		j->rc = -EIO;
	}
	*dev.tail = j;
	dev.tail = &j->next;
	dev.submitted++;
	pthread_cond_signal(&dev.cond);
	pthread_mutex_unlock(&dev.lock);
	return 0;
}

static void dev_wait(int completed)
{
	pthread_mutex_lock(&dev.lock);
	while (dev.completed < completed)
		pthread_cond_wait(&dev.cond, &dev.lock);
	pthread_mutex_unlock(&dev.lock);
}

static const struct kvt_hbm_ops dev_ops = {
	dev_open, dev_close, dev_register, dev_unregister, dev_copy_in, NULL,
};

/* ---- engine calls ---- */

static uint8_t key_bytes[NKEYS][KVT_KEY_BYTES];
static const uint8_t *keys[NKEYS];
static uint32_t me;

struct got {
	int calls;
	uint64_t lease;
	uint32_t count;
	struct kvt_location locs[NKEYS];
};

static void on_acquired(void *arg, int rc, const struct kvt_acquired *a)
{
	struct got *g = arg;

	CHECK(rc == 0);
	g->calls++;
	g->lease = a->lease;
	g->count = a->count;
	memcpy(g->locs, a->locs, a->count * sizeof(*a->locs));
}

static struct got acquire(struct kvt_engine *e, const uint8_t *token,
			  uint32_t ns, int first, int n)
{
	struct kvt_req q = { me, token, ns, &keys[first], (uint32_t)n };
	struct got g = { 0 };
	struct kvt_err err;

	CHECK(kvt_engine_acquire(e, &q, 0, on_acquired, &g, &err) == 0);
	CHECK(g.calls == 1 && g.count == (uint32_t)n);
	return g;
}

static void release(struct kvt_engine *e, const uint8_t *token, uint64_t lease)
{
	struct kvt_err err;

	CHECK(kvt_engine_release(e, me, token, lease, &err) == 0);
}

static struct kvt_hbm_stats hbm_stats(struct kvt_engine *e)
{
	struct kvt_engine_stats st;

	kvt_engine_stats(e, &st);
	CHECK(st.hbm_enabled);
	return st.hbm;
}

int main(void)
{
	struct kvt_engine_config cfg = {
		.host_bytes = 4 * 16384, .segment_bytes = 16384, /* 16 host slots */
		.max_namespaces = 4,
		.default_priority = 35, .max_wait = 1000 * KVT_MS,
		.lease_ttl = 60000 * KVT_MS,
		/* one pool of 2 segments: 8 copies */
		.hbm = { &dev_ops, NULL, 1, 2 * 16384 },
	};
	uint8_t page[PAGE], gpu[16], cpu[16], other_gpu[16];
	struct kvt_session *s_gpu, *s_cpu;
	struct kvt_engine *e;
	struct kvt_err err;
	struct kvt_hbm_stats hs;
	uint32_t ns, stored, dropped;
	uint64_t stride;
	bool created;
	int done = 0;

	dev.tail = &dev.head;
	CHECK(pthread_create(&dev.thread, NULL, dev_main, NULL) == 0);
	for (int i = 0; i < NKEYS; i++) {
		test_fill(key_bytes[i], KVT_KEY_BYTES, 500u + (unsigned)i);
		keys[i] = key_bytes[i];
	}
	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	CHECK(dev.registered == 4); /* every host segment */
	CHECK(kvt_engine_hbm_pools(e) == 1);
	const struct kvt_hbm_pool *pool = kvt_engine_hbm_pool(e, 0);
	CHECK(pool->bytes == 2 * 16384);
	CHECK(kvt_engine_tenant(e, 1000, "alice", &me) == 0);
	CHECK(kvt_engine_open_namespace(e, 1, "m", PAGE, 16, false, 0, &ns, &created,
					&stride, &err) == 0);
	for (int i = 0; i < 12; i++) {
		struct kvt_req q = { me, NULL, ns, &keys[i], 1 };
		const void *pages[1] = { page };

		test_fill(page, PAGE, 7u + (unsigned)i);
		CHECK(kvt_engine_put(e, &q, i ? keys[i - 1] : NULL, NULL, pages,
				     &stored, &err) == 0 && stored == 1);
	}

	/* A session names its GPU; one the daemon has no pool on gets none. */
	CHECK(kvt_engine_session_open(e, me, gpu, &s_gpu) == 0);
	CHECK(kvt_engine_session_open(e, me, cpu, &s_cpu) == 0);
	CHECK(kvt_engine_session_gpu(e, s_gpu, (const uint8_t *)"GPU-test-0000000") == 0);
	memcpy(other_gpu, "GPU-elsewhere-00", 16);
	CHECK(kvt_engine_session_gpu(e, s_cpu, other_gpu) == -1);

	/* First Acquire on the GPU: host locations, copies started. */
	struct got g = acquire(e, gpu, ns, 0, 4);
	for (int i = 0; i < 4; i++)
		CHECK(g.locs[i].tier == KVT_TIER_HOST);
	release(e, gpu, g.lease);
	dev_wait(done += 4);
	hs = hbm_stats(e);
	CHECK(hs.loads_total == 4 && hs.blocks == 4 && hs.used_bytes == 4 * stride);

	/* Second: from the pool, the same bytes as the host page. */
	g = acquire(e, gpu, ns, 0, 4);
	for (int i = 0; i < 4; i++) {
		CHECK(g.locs[i].tier == KVT_TIER_HBM && g.locs[i].segment == 0);
		CHECK(g.locs[i].offset + PAGE <= pool->bytes);
		test_fill(page, PAGE, 7u + (unsigned)i);
		CHECK(memcmp((char *)pool->base + g.locs[i].offset, page, PAGE) == 0);
	}
	hs = hbm_stats(e);
	CHECK(hs.hits_total == 4 && hs.out_bytes_total == 4 * PAGE);

	/* A session on no pool reads the host tier and copies nothing. */
	struct got c = acquire(e, cpu, ns, 0, 6);
	for (int i = 0; i < 6; i++)
		CHECK(c.locs[i].tier == KVT_TIER_HOST);
	release(e, cpu, c.lease);
	CHECK(hbm_stats(e).loads_total == 4);

	/* Filling the pool (8 copies) while 0..3 are pinned: 4..11 take the
	 * 4 free slots, then drop the least recent unpinned copies, never 0..3. */
	for (int i = 4; i < 12; i++) {
		struct got h = acquire(e, gpu, ns, i, 1);

		release(e, gpu, h.lease);
		dev_wait(++done);
	}
	hs = hbm_stats(e);
	CHECK(hs.blocks == 8 && hs.evictions_total == 4 && hs.loads_total == 12);
	release(e, gpu, g.lease);
	g = acquire(e, gpu, ns, 0, 4); /* still there */
	for (int i = 0; i < 4; i++)
		CHECK(g.locs[i].tier == KVT_TIER_HBM);
	release(e, gpu, g.lease);

	/* A failed copy leaves no copy, and the next Acquire tries again: on
	 * one of the 4 blocks of 4..11 that lost theirs. */
	pthread_mutex_lock(&dev.lock);
	dev.fail_next = 1;
	pthread_mutex_unlock(&dev.lock);
	int k = 4;
	for (;; k++) {
		CHECK(k < 12);
		g = acquire(e, gpu, ns, k, 1);
		if (g.locs[0].tier == KVT_TIER_HOST)
			break;
		release(e, gpu, g.lease);
	}
	uint64_t before = hbm_stats(e).blocks;
	release(e, gpu, g.lease);
	dev_wait(++done);
	hs = hbm_stats(e);
	CHECK(hs.load_failures_total == 1 && hs.blocks == before);
	g = acquire(e, gpu, ns, k, 1);
	CHECK(g.locs[0].tier == KVT_TIER_HOST);
	release(e, gpu, g.lease);
	dev_wait(++done);
	g = acquire(e, gpu, ns, k, 1);
	CHECK(g.locs[0].tier == KVT_TIER_HBM);
	release(e, gpu, g.lease);

	/* A copy goes with its block: dropping 0..3 takes their copies. */
	struct kvt_req q = { me, NULL, ns, &keys[0], 4 };
	uint64_t blocks = hbm_stats(e).blocks;
	CHECK(kvt_engine_drop(e, &q, KVT_DROP_KEYS, false, 0, &dropped, &err) == 0);
	CHECK(dropped == 4);
	hs = hbm_stats(e);
	CHECK(hs.blocks == blocks - 4 && hs.drops_total == 4);

	/* A block dropped while its copy is being made keeps none, and is
	 * freed when the copy completes (ASan checks the memory). */
	{
		struct kvt_req put = { me, NULL, ns, &keys[12], 1 };
		const void *pages[1] = { page };
		struct kvt_engine_stats st;

		CHECK(kvt_engine_put(e, &put, NULL, NULL, pages, &stored, &err) == 0);
		pthread_mutex_lock(&dev.lock);
		dev.paused = true;
		pthread_mutex_unlock(&dev.lock);
		g = acquire(e, gpu, ns, 12, 1); /* new: from the host tier */
		CHECK(g.locs[0].tier == KVT_TIER_HOST);
		release(e, gpu, g.lease);
		blocks = hbm_stats(e).blocks;
		CHECK(kvt_engine_drop(e, &put, KVT_DROP_KEYS, false, 0, &dropped, &err) == 0);
		CHECK(dropped == 1);
		kvt_engine_stats(e, &st);
		CHECK(st.pinned_blocks == 1); /* the copy holds it */
		pthread_mutex_lock(&dev.lock);
		dev.paused = false;
		pthread_cond_signal(&dev.cond);
		pthread_mutex_unlock(&dev.lock);
		dev_wait(++done);
		kvt_engine_stats(e, &st);
		CHECK(st.pinned_blocks == 0 && hbm_stats(e).blocks == blocks);
		CHECK(hbm_stats(e).loads_total == hbm_stats(e).blocks + hbm_stats(e).evictions_total +
		      hbm_stats(e).drops_total + hbm_stats(e).load_failures_total + 1);
	}

	kvt_engine_session_close(e, s_gpu);
	kvt_engine_session_close(e, s_cpu);
	kvt_engine_destroy(e);
	CHECK(dev.registered == 0);

	/* A device that cannot be opened: the engine serves without hbm. */
	cfg.hbm.devices = (const int[]){ 3 };
	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	struct kvt_engine_stats st;
	kvt_engine_stats(e, &st);
	CHECK(!st.hbm_enabled && kvt_engine_hbm_pools(e) == 0);
	kvt_engine_destroy(e);

	pthread_mutex_lock(&dev.lock);
	dev.stop = true;
	pthread_cond_signal(&dev.cond);
	pthread_mutex_unlock(&dev.lock);
	pthread_join(dev.thread, NULL);
	printf("hbm tier: copies, hits, eviction, failures, drops ok\n");
	return 0;
}

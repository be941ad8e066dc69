/*
 * kvtier microbenchmarks against a real kvtierd on a unix socket, next to
 * a real redis-server on loopback and memcpy, all in the same run:
 *   lookup: Lookup of 64 keys, p50/p99 latency and ops/s, 1 and 4 clients
 *           (separate processes), vs a pipelined EXISTS of the same 64 keys;
 *   read:   onload of 2 MiB pages through shared memory (Acquire, copy out,
 *           Release) in GB/s, vs memcpy of the same pages from private
 *           memory and vs Redis GET of them.
 * Usage: kvtier-microbench [lookup-iterations] (needs $KVTIERD, and
 * redis-server on PATH or in $REDIS_SERVER).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"
#include "redis_util.h"

#define KEYS 64
#define BIG_PAGE (2u << 20)
#define READ_PAGES 256 /* 512 MiB */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void make_keys(struct kvt_key *keys, int n, unsigned base)
{
	for (int i = 0; i < n; i++)
		test_fill(keys[i].bytes, KVT_KEY_SIZE, base + (unsigned)i);
}

/* One Redis client: a pipelined EXISTS of the 64 keys per iteration. */
static void exists_client(const struct test_redis *r, int iters, double *out)
{
	struct kvt_key keys[KEYS];
	redisContext *c = test_redis_connect(r);
	redisReply *rep;

	make_keys(keys, KEYS, 1);
	for (int i = -1000; i < iters; i++) {
		double t = now();
		long long found = 0;

		for (int k = 0; k < KEYS; k++)
			redisAppendCommand(c, "EXISTS %b", keys[k].bytes, (size_t)KVT_KEY_SIZE);
		for (int k = 0; k < KEYS; k++) {
			CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK);
			found += rep->integer;
			freeReplyObject(rep);
		}
		if (i >= 0)
			out[i] = now() - t;
		CHECK(found == KEYS);
	}
	redisFree(c);
}

/* One lookup client: writes its latencies (seconds) to out[iters]. */
static void lookup_client(const char *addr, int iters, double *out)
{
	struct kvt_key keys[KEYS];
	struct kvt_namespace ns;
	kvt_client *c;
	size_t ready;

	make_keys(keys, KEYS, 1);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_open_namespace(c, "bench-lookup", 4096, 16, 0, &ns), 0);
	for (int i = 0; i < 1000; i++)
		CHECK_RC(c, kvt_lookup(c, &ns, keys, KEYS, &ready, NULL), 0);
	for (int i = 0; i < iters; i++) {
		double t = now();

		CHECK_RC(c, kvt_lookup(c, &ns, keys, KEYS, &ready, NULL), 0);
		out[i] = now() - t;
	}
	CHECK(ready == KEYS);
	kvt_close(c);
}

/* p50 of each run, for the ratio line. */
static double lookup_p50[2][2]; /* [kvtier|redis][1 client|4 clients] */

static void bench_lookup(const char *addr, const struct test_redis *redis,
			 int clients, int iters)
{
	size_t total = (size_t)clients * (size_t)iters;
	double *lat = mmap(NULL, total * sizeof(double), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	double t0, elapsed;
	int status;

	CHECK(lat != MAP_FAILED);
	t0 = now();
	for (int k = 0; k < clients; k++) {
		pid_t pid = fork();

		CHECK(pid >= 0);
		if (pid == 0) {
			if (redis)
				exists_client(redis, iters, lat + (size_t)k * (size_t)iters);
			else
				lookup_client(addr, iters, lat + (size_t)k * (size_t)iters);
			_exit(0);
		}
	}
	for (int k = 0; k < clients; k++) {
		CHECK(wait(&status) > 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	elapsed = now() - t0;
	qsort(lat, total, sizeof(double), cmp_double);
	lookup_p50[redis != NULL][clients > 1] = lat[total / 2];
	printf("%-26s clients=%d  p50=%.1f us  p99=%.1f us  %.0f ops/s "
	       "(%.0f keys/s)\n", redis ? "redis EXISTS x64 pipelined" : "kvtier Lookup(64 keys)",
	       clients, lat[total / 2] * 1e6,
	       lat[total * 99 / 100] * 1e6, (double)total / elapsed,
	       (double)total * KEYS / elapsed);
	munmap(lat, total * sizeof(double));
}

static void seed_lookup(const char *addr)
{
	struct kvt_key keys[KEYS];
	struct kvt_namespace ns;
	static uint8_t page[4096];
	const void *pages[KEYS];
	kvt_client *c;
	size_t n;
	pid_t pid = fork();
	int status;

	CHECK(pid >= 0);
	if (pid > 0) {
		CHECK(waitpid(pid, &status, 0) == pid && WEXITSTATUS(status) == 0);
		return;
	}
	make_keys(keys, KEYS, 1);
	for (int i = 0; i < KEYS; i++)
		pages[i] = page;
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_open_namespace(c, "bench-lookup", 4096, 16, 0, &ns), 0);
	CHECK_RC(c, kvt_put(c, &ns, NULL, keys, pages, KEYS, NULL, &n), 0);
	kvt_close(c);
	_exit(0);
}

static void seed_redis(const struct test_redis *r)
{
	struct kvt_key keys[KEYS];
	redisContext *c = test_redis_connect(r);
	static uint8_t page[4096];
	redisReply *rep;

	make_keys(keys, KEYS, 1);
	for (int i = 0; i < KEYS; i++) {
		rep = redisCommand(c, "SET %b %b", keys[i].bytes, (size_t)KVT_KEY_SIZE,
				   page, sizeof(page));
		CHECK(rep && rep->type == REDIS_REPLY_STATUS);
		freeReplyObject(rep);
	}
	redisFree(c);
}

/* GET of the pages (set first): best of 5, seconds. */
static double redis_read(const struct test_redis *r, const struct kvt_key *keys,
			 const uint8_t *src, uint8_t *dst)
{
	redisContext *c = test_redis_connect(r);
	redisReply *rep;
	double best = 1e9;

	for (int i = 0; i < READ_PAGES; i++) {
		rep = redisCommand(c, "SET %b %b", keys[i].bytes, (size_t)KVT_KEY_SIZE,
				   src + (size_t)i * BIG_PAGE, (size_t)BIG_PAGE);
		CHECK(rep && rep->type == REDIS_REPLY_STATUS);
		freeReplyObject(rep);
	}
	for (int rep_i = 0; rep_i < 5; rep_i++) {
		double t = now();

		for (int i = 0; i < READ_PAGES; i++)
			redisAppendCommand(c, "GET %b", keys[i].bytes, (size_t)KVT_KEY_SIZE);
		for (int i = 0; i < READ_PAGES; i++) {
			CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK);
			CHECK(rep->type == REDIS_REPLY_STRING && rep->len == BIG_PAGE);
			memcpy(dst + (size_t)i * BIG_PAGE, rep->str, BIG_PAGE);
			freeReplyObject(rep);
		}
		t = now() - t;
		best = t < best ? t : best;
	}
	CHECK(memcmp(dst, src, (size_t)READ_PAGES * BIG_PAGE) == 0);
	redisFree(c);
	return best;
}

/* Offload READ_PAGES pages, then time onload through shm vs memcpy and
 * Redis GET. */
static void bench_read(const char *addr, const struct test_redis *redis)
{
	static struct kvt_key keys[READ_PAGES];
	static struct kvt_slot slots[READ_PAGES];
	uint8_t *src = malloc((size_t)READ_PAGES * BIG_PAGE);
	uint8_t *dst = malloc((size_t)READ_PAGES * BIG_PAGE);
	struct kvt_namespace ns;
	struct kvt_lease lease;
	double t, shm_best = 1e9, shm_rpc_best = 1e9, mem_best = 1e9;
	double bytes = (double)READ_PAGES * BIG_PAGE;
	kvt_client *c;

	CHECK(src && dst);
	make_keys(keys, READ_PAGES, 5000);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "bench-read"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "bench-read", BIG_PAGE, 16, 0, &ns), 0);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, READ_PAGES, NULL, slots), 0);
	for (int i = 0; i < READ_PAGES; i++) {
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
		test_fill(slots[i].page, BIG_PAGE, (unsigned)i);
		memcpy(src + (size_t)i * BIG_PAGE, slots[i].page, BIG_PAGE);
	}
	CHECK_RC(c, kvt_commit(c, &ns, keys, READ_PAGES), 0);
	memset(dst, 1, (size_t)READ_PAGES * BIG_PAGE);

	for (int rep = 0; rep < 5; rep++) {
		/* memcpy ceiling: the same bytes from private memory. */
		t = now();
		for (int i = 0; i < READ_PAGES; i++)
			memcpy(dst + (size_t)i * BIG_PAGE, src + (size_t)i * BIG_PAGE, BIG_PAGE);
		t = now() - t;
		mem_best = t < mem_best ? t : mem_best;

		/* Onload: Acquire (RPC), copy out of shm, Release (RPC). */
		t = now();
		CHECK_RC(c, kvt_acquire(c, &ns, keys, READ_PAGES, 0, &lease), 0);
		CHECK(lease.count == READ_PAGES);
		{
			double tc = now();

			for (int i = 0; i < READ_PAGES; i++)
				memcpy(dst + (size_t)i * BIG_PAGE, lease.pages[i], BIG_PAGE);
			tc = now() - tc;
			shm_best = tc < shm_best ? tc : shm_best;
		}
		CHECK_RC(c, kvt_release(c, &lease), 0);
		t = now() - t;
		shm_rpc_best = t < shm_rpc_best ? t : shm_rpc_best;
	}
	CHECK(memcmp(dst, src, (size_t)READ_PAGES * BIG_PAGE) == 0);
	double redis_best = redis_read(redis, keys, src, dst);
	printf("read 2 MiB pages x %d (%.0f MiB), best of 5:\n", READ_PAGES, bytes / 1048576);
	printf("  memcpy private->private      %.2f GB/s\n", bytes / mem_best / 1e9);
	printf("  shm copy-out (pinned pages)  %.2f GB/s  (%.0f%% of memcpy)\n",
	       bytes / shm_best / 1e9, 100.0 * mem_best / shm_best);
	printf("  acquire+copy-out+release     %.2f GB/s  (%.0f%% of memcpy; goal >= 80%%)\n",
	       bytes / shm_rpc_best / 1e9, 100.0 * mem_best / shm_rpc_best);
	printf("  redis GET x%d pipelined     %.2f GB/s  (kvtier onload %.1fx redis; goal >= 5x)\n",
	       READ_PAGES, bytes / redis_best / 1e9, redis_best / shm_rpc_best);
	kvt_close(c);
	free(src);
	free(dst);
}

int main(int argc, char **argv)
{
	const char *sets[] = { "host.size=1G", "host.segment_size=64M", NULL };
	int iters = argc > 1 ? atoi(argv[1]) : 20000;
	struct test_daemon d;
	pid_t pid;
	int status;

	struct test_redis redis;

	test_daemon_start(&d, sets);
	test_redis_start(&redis, 2ull << 30);
	seed_lookup(d.addr);
	seed_redis(&redis);
	bench_lookup(d.addr, NULL, 1, iters);
	bench_lookup(d.addr, &redis, 1, iters);
	bench_lookup(d.addr, NULL, 4, iters);
	bench_lookup(d.addr, &redis, 4, iters);
	printf("lookup p50 kvtier/redis: 1 client %.2fx, 4 clients %.2fx (goal: <= 1x and <= 30 us)\n",
	       lookup_p50[0][0] / lookup_p50[1][0], lookup_p50[0][1] / lookup_p50[1][1]);
	/* gRPC must not be initialized in this process before the forks above. */
	fflush(stdout);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		bench_read(d.addr, &redis);
		fflush(stdout);
		_exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid && WEXITSTATUS(status) == 0);
	test_redis_stop(&redis);
	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

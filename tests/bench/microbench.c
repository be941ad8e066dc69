/*
 * kvtier microbenchmarks against a real kvtierd on a unix socket, next to
 * a real redis-server on loopback and memcpy, all in the same run:
 *   lookup: Lookup of 64 keys, p50/p99 latency and ops/s, 1 and 4 clients
 *           (separate processes), vs a pipelined EXISTS of the same 64 keys;
 *           with the CPU time each operation costs the client and the
 *           daemon (redis-server for Redis), from getrusage and /proc;
 *   acquire: Acquire + Release of 64 ready blocks, p50/p99;
 *   chain:  Lookup of a 1000-block chain, p50, and daemon CPU per key;
 *   idle:   CPU the daemon and an attached, idle client use in 2 s;
 *   read:   onload of 2 MiB pages through shared memory (Acquire, copy out,
 *           Release) in GB/s, vs memcpy of the same pages from private
 *           memory and vs Redis GET of them.
 * Usage: kvtier-microbench [--json] [lookup-iterations] (needs $KVTIERD,
 * and redis-server on PATH or in $REDIS_SERVER). --json: one JSON object
 * with every figure on stdout (the report goes to stderr).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "bench_util.h"
#include "harness.h"
#include "redis_util.h"

#define KEYS 64
#define BIG_PAGE (2u << 20)
#define READ_PAGES 256 /* 512 MiB */

/* The report: stdout, or stderr with --json. */
static FILE *out;

/* Every figure, for --json, in shared memory: the benches that use
 * libkvtier run in child processes (no gRPC before a fork). */
#define FIGURES_MAX 64
static struct figures {
	int n;
	struct figure {
		char name[64];
		double value;
	} f[FIGURES_MAX];
} *figs;

__attribute__((format(printf, 2, 3)))
static void figure(double value, const char *fmt, ...)
{
	va_list ap;

	CHECK(figs->n < FIGURES_MAX);
	va_start(ap, fmt);
	vsnprintf(figs->f[figs->n].name, sizeof(figs->f[0].name), fmt, ap);
	va_end(ap);
	figs->f[figs->n++].value = value;
}

static void figures_json(void)
{
	printf("{");
	for (int i = 0; i < figs->n; i++)
		printf("%s\"%s\": %.4g", i ? ", " : "", figs->f[i].name, figs->f[i].value);
	printf("}\n");
}

/* The daemon under test, whose CPU the benches read. */
static pid_t daemon_pid;

/* Runs fn(addr) in a child process (where it may use libkvtier), waits. */
static void in_child(void (*fn)(const char *addr), const char *addr)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = test_spawn(fn, addr);
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	      WEXITSTATUS(status) == 0);
}

/* CPU seconds (user + system) a process has used, all its threads. */
static double proc_cpu(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	CHECK(f && fgets(buf, sizeof(buf), f));
	fclose(f);
	p = strrchr(buf, ')'); /* the name may hold spaces */
	CHECK(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			  &ut, &st) == 2);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds this process has used. */
static double self_cpu(void)
{
	struct rusage ru;

	CHECK(getrusage(RUSAGE_SELF, &ru) == 0);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* One Redis client: a pipelined EXISTS of the 64 keys per iteration;
 * latencies (seconds) to lat[iters], its CPU seconds in the loop to *cpu. */
static void exists_client(const struct test_redis *r, int iters, double *lat, double *cpu)
{
	struct kvt_key keys[KEYS];
	redisContext *c = test_redis_connect(r);
	redisReply *rep;

	bench_keys(keys, KEYS, 1);
	for (int i = -1000; i < iters; i++) {
		double t = bench_now();
		long long found = 0;

		for (int k = 0; k < KEYS; k++)
			redisAppendCommand(c, "EXISTS %b", keys[k].bytes, (size_t)KVT_KEY_SIZE);
		for (int k = 0; k < KEYS; k++) {
			CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK);
			found += rep->integer;
			freeReplyObject(rep);
		}
		if (i >= 0)
			lat[i] = bench_now() - t;
		if (i == -1)
			*cpu = self_cpu();
		CHECK(found == KEYS);
	}
	*cpu = self_cpu() - *cpu;
	redisFree(c);
}

/* Whether kvtier's clients use the fast lane (else gRPC); set per bench. */
static bool lane = true;

/* A client attached as a worker is, on the path `lane` says. */
static kvt_client *worker(const char *addr, const char *name)
{
	kvt_client *c;

	CHECK(kvt_connect(addr, &c) == 0);
	kvt_set_fast_lane(c, lane);
	CHECK_RC(c, kvt_attach(c, name), 0);
	CHECK(kvt_fast_lane(c, NULL) == lane);
	return c;
}

/* One lookup client: its latencies (seconds) to lat[iters], its CPU
 * seconds in the timed loop to *cpu. */
static void lookup_client(const char *addr, int iters, double *lat, double *cpu)
{
	struct kvt_key keys[KEYS];
	struct kvt_namespace ns;
	kvt_client *c;
	size_t ready;

	bench_keys(keys, KEYS, 1);
	c = worker(addr, "bench-lookup");
	CHECK_RC(c, kvt_open_namespace(c, "bench-lookup", 4096, 16, 0, &ns), 0);
	for (int i = 0; i < 1000; i++)
		CHECK_RC(c, kvt_lookup(c, &ns, keys, KEYS, &ready, NULL), 0);
	*cpu = self_cpu();
	for (int i = 0; i < iters; i++) {
		double t = bench_now();

		CHECK_RC(c, kvt_lookup(c, &ns, keys, KEYS, &ready, NULL), 0);
		lat[i] = bench_now() - t;
	}
	*cpu = self_cpu() - *cpu;
	CHECK(ready == KEYS);
	kvt_close(c);
}

/* p50 of each run, for the ratio line. */
static double lookup_ops[3][2]; /* [lane|gRPC|redis][1 client|4 clients] */

static void bench_lookup(const char *addr, pid_t daemon, const struct test_redis *redis,
			 int clients, int iters)
{
	size_t total = (size_t)clients * (size_t)iters;
	size_t bytes = (total + (size_t)clients) * sizeof(double);
	double *lat = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			   -1, 0);
	double *cpu = lat + total, t0, elapsed, server_cpu, client_cpu = 0, p50, p99;
	pid_t server = redis ? redis->pid : daemon;
	const char *name = redis ? "redis_exists64" : lane ? "kvtier_lookup64" :
			   "kvtier_grpc_lookup64";
	int status;

	CHECK(lat != MAP_FAILED);
	server_cpu = proc_cpu(server);
	t0 = bench_now();
	for (int k = 0; k < clients; k++) {
		pid_t pid = fork();

		CHECK(pid >= 0);
		if (pid == 0) {
			if (redis)
				exists_client(redis, iters, lat + (size_t)k * (size_t)iters,
					      &cpu[k]);
			else
				lookup_client(addr, iters, lat + (size_t)k * (size_t)iters,
					      &cpu[k]);
			_exit(0);
		}
	}
	for (int k = 0; k < clients; k++) {
		CHECK(wait(&status) > 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	elapsed = bench_now() - t0;
	/* The server's CPU includes its warm-up calls: a slight overcount. */
	server_cpu = proc_cpu(server) - server_cpu;
	for (int k = 0; k < clients; k++)
		client_cpu += cpu[k];
	p99 = bench_percentile(lat, total, 0.99) * 1e6;
	p50 = lat[total / 2] * 1e6; /* sorted now */
	lookup_ops[redis ? 2 : !lane][clients > 1] = (double)total / elapsed;
	fprintf(out, "%-26s clients=%d  p50=%.1f us  p99=%.1f us  %.0f ops/s "
		"(%.0f keys/s)  CPU per op: client %.1f us, %s %.1f us\n",
		redis ? "redis EXISTS x64 pipelined" : lane ? "kvtier Lookup(64) lane" :
		"kvtier Lookup(64) gRPC",
		clients, p50, p99,
		(double)total / elapsed, (double)total * KEYS / elapsed,
		client_cpu / (double)total * 1e6, redis ? "redis-server" : "kvtierd",
		server_cpu / (double)total * 1e6);
	figure(p50, "%s_%dc_p50_us", name, clients);
	figure(p99, "%s_%dc_p99_us", name, clients);
	figure((double)total / elapsed, "%s_%dc_ops_per_s", name, clients);
	figure(client_cpu / (double)total * 1e6, "%s_%dc_client_cpu_us_per_op", name, clients);
	figure(server_cpu / (double)total * 1e6, "%s_%dc_server_cpu_us_per_op", name, clients);
	munmap(lat, bytes);
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
	bench_keys(keys, KEYS, 1);
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

	bench_keys(keys, KEYS, 1);
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
		double t = bench_now();

		for (int i = 0; i < READ_PAGES; i++)
			redisAppendCommand(c, "GET %b", keys[i].bytes, (size_t)KVT_KEY_SIZE);
		for (int i = 0; i < READ_PAGES; i++) {
			CHECK(redisGetReply(c, (void **)&rep) == REDIS_OK);
			CHECK(rep->type == REDIS_REPLY_STRING && rep->len == BIG_PAGE);
			memcpy(dst + (size_t)i * BIG_PAGE, rep->str, BIG_PAGE);
			freeReplyObject(rep);
		}
		t = bench_now() - t;
		best = t < best ? t : best;
	}
	CHECK(memcmp(dst, src, (size_t)READ_PAGES * BIG_PAGE) == 0);
	redisFree(c);
	return best;
}

static struct test_redis redis_srv;

/* Offload READ_PAGES pages, then time onload through shm vs memcpy and
 * Redis GET. */
static void bench_read(const char *addr)
{
	const struct test_redis *redis = &redis_srv;
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
	bench_keys(keys, READ_PAGES, 5000);
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
		t = bench_now();
		for (int i = 0; i < READ_PAGES; i++)
			memcpy(dst + (size_t)i * BIG_PAGE, src + (size_t)i * BIG_PAGE, BIG_PAGE);
		t = bench_now() - t;
		mem_best = t < mem_best ? t : mem_best;

		/* Onload: Acquire (RPC), copy out of shm, Release (RPC). */
		t = bench_now();
		CHECK_RC(c, kvt_acquire(c, &ns, keys, READ_PAGES, 0, &lease), 0);
		CHECK(lease.count == READ_PAGES);
		{
			double tc = bench_now();

			for (int i = 0; i < READ_PAGES; i++)
				memcpy(dst + (size_t)i * BIG_PAGE, lease.pages[i], BIG_PAGE);
			tc = bench_now() - tc;
			shm_best = tc < shm_best ? tc : shm_best;
		}
		CHECK_RC(c, kvt_release(c, &lease), 0);
		t = bench_now() - t;
		shm_rpc_best = t < shm_rpc_best ? t : shm_rpc_best;
	}
	CHECK(memcmp(dst, src, (size_t)READ_PAGES * BIG_PAGE) == 0);
	double redis_best = redis_read(redis, keys, src, dst);
	fprintf(out, "read 2 MiB pages x %d (%.0f MiB), best of 5:\n", READ_PAGES, bytes / 1048576);
	fprintf(out, "  memcpy private->private      %.2f GB/s\n", bytes / mem_best / 1e9);
	fprintf(out, "  shm copy-out (pinned pages)  %.2f GB/s  (%.0f%% of memcpy)\n",
		bytes / shm_best / 1e9, 100.0 * mem_best / shm_best);
	fprintf(out, "  acquire+copy-out+release     %.2f GB/s  (%.0f%% of memcpy; goal >= 80%%)\n",
		bytes / shm_rpc_best / 1e9, 100.0 * mem_best / shm_rpc_best);
	fprintf(out, "  redis GET x%d pipelined     %.2f GB/s  (kvtier onload %.1fx redis; goal >= 5x)\n",
		READ_PAGES, bytes / redis_best / 1e9, redis_best / shm_rpc_best);
	figure(bytes / mem_best / 1e9, "read_memcpy_gbps");
	figure(bytes / shm_best / 1e9, "read_shm_copy_gbps");
	figure(bytes / shm_rpc_best / 1e9, "read_acquire_copy_release_gbps");
	figure(bytes / redis_best / 1e9, "read_redis_get_gbps");
	kvt_close(c);
	free(src);
	free(dst);
}

/* p50 and p99 of n latencies (seconds), in microseconds; sorts them. */
static void percentiles(double *lat, int n, double *p50, double *p99)
{
	*p99 = bench_percentile(lat, (size_t)n, 0.99) * 1e6;
	*p50 = lat[n / 2] * 1e6; /* sorted now */
}

static int acquire_iters = 5000, chain_iters = 2000;

/* Acquire + Release of the 64 blocks seed_lookup put. */
static void bench_acquire(const char *addr)
{
	struct kvt_key keys[KEYS];
	struct kvt_namespace ns;
	struct kvt_lease lease;
	double *lat = malloc(sizeof(double) * (size_t)acquire_iters), p50, p99, cpu = 0, dcpu = 0;
	kvt_client *c;

	CHECK(lat);
	bench_keys(keys, KEYS, 1);
	c = worker(addr, "bench-acquire");
	CHECK_RC(c, kvt_open_namespace(c, "bench-lookup", 4096, 16, 0, &ns), 0);
	for (int i = -500; i < acquire_iters; i++) {
		double t = bench_now();

		if (i == 0) {
			cpu = self_cpu();
			dcpu = proc_cpu(daemon_pid);
		}
		CHECK_RC(c, kvt_acquire(c, &ns, keys, KEYS, 0, &lease), 0);
		CHECK(lease.count == KEYS);
		CHECK_RC(c, kvt_release(c, &lease), 0);
		if (i >= 0)
			lat[i] = bench_now() - t;
	}
	cpu = self_cpu() - cpu;
	dcpu = proc_cpu(daemon_pid) - dcpu;
	percentiles(lat, acquire_iters, &p50, &p99);
	fprintf(out, "kvtier Acquire+Release(64) %s  p50=%.1f us  p99=%.1f us  CPU per pair: client %.1f us, kvtierd %.1f us\n",
		lane ? "lane" : "gRPC", p50, p99, cpu / acquire_iters * 1e6,
		dcpu / acquire_iters * 1e6);
	figure(p50, "kvtier_%sacquire_release64_p50_us", lane ? "" : "grpc_");
	figure(p99, "kvtier_%sacquire_release64_p99_us", lane ? "" : "grpc_");
	figure(cpu / acquire_iters * 1e6, "kvtier_%sacquire_release64_client_cpu_us",
	       lane ? "" : "grpc_");
	figure(dcpu / acquire_iters * 1e6, "kvtier_%sacquire_release64_server_cpu_us",
	       lane ? "" : "grpc_");
	kvt_close(c);
	free(lat);
}

/* Lookup of a chain of 1000 blocks: p50, and the daemon's CPU per key. */
static void bench_chain(const char *addr)
{
	enum { CHAIN = 1000 };
	static struct kvt_key keys[CHAIN];
	static uint8_t page[4096];
	const void *pages[CHAIN];
	double *lat = malloc(sizeof(double) * (size_t)chain_iters), p50, p99, dcpu = 0;
	struct kvt_namespace ns;
	size_t n, ready;
	kvt_client *c;

	CHECK(lat);
	bench_keys(keys, CHAIN, 100000);
	for (int i = 0; i < CHAIN; i++)
		pages[i] = page;
	c = worker(addr, "bench-chain");
	CHECK_RC(c, kvt_open_namespace(c, "bench-chain", 4096, 16, 0, &ns), 0);
	for (int i = 0; i < CHAIN; i += 100)
		CHECK_RC(c, kvt_put(c, &ns, i ? &keys[i - 1] : NULL, keys + i, pages + i, 100,
				    NULL, &n), 0);
	for (int i = -200; i < chain_iters; i++) {
		double t = bench_now();

		if (i == 0)
			dcpu = proc_cpu(daemon_pid);
		CHECK_RC(c, kvt_lookup(c, &ns, keys, CHAIN, &ready, NULL), 0);
		CHECK(ready == CHAIN);
		if (i >= 0)
			lat[i] = bench_now() - t;
	}
	dcpu = proc_cpu(daemon_pid) - dcpu;
	percentiles(lat, chain_iters, &p50, &p99);
	fprintf(out, "kvtier Lookup(1000-block chain)  p50=%.1f us  p99=%.1f us  kvtierd CPU %.3f us per key\n",
		p50, p99, dcpu / chain_iters / CHAIN * 1e6);
	figure(p50, "kvtier_lookup1000_p50_us");
	figure(dcpu / chain_iters / CHAIN * 1e6, "kvtier_lookup1000_server_cpu_us_per_key");
	kvt_close(c);
	free(lat);
}

/* CPU the daemon, and an attached client making no calls, use in 2 s. */
static void bench_idle(const char *addr)
{
	kvt_client *c;
	double cpu, dcpu;

	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "bench-idle"), 0);
	usleep(200 * 1000); /* past any poll window after the attach */
	cpu = self_cpu();
	dcpu = proc_cpu(daemon_pid);
	sleep(2);
	cpu = self_cpu() - cpu;
	dcpu = proc_cpu(daemon_pid) - dcpu;
	fprintf(out, "idle 2 s: kvtierd %.1f ms CPU, an attached client %.1f ms CPU\n",
		dcpu * 1e3, cpu * 1e3);
	figure(dcpu * 1e3 / 2, "idle_server_cpu_ms_per_s");
	figure(cpu * 1e3 / 2, "idle_client_cpu_ms_per_s");
	kvt_close(c);
}

int main(int argc, char **argv)
{
	const char *sets[] = { "host.size=1G", "host.segment_size=64M", NULL };
	bool json = argc > 1 && strcmp(argv[1], "--json") == 0;
	int iters = argc > 1 + json ? atoi(argv[1 + json]) : 20000;
	struct test_daemon d;

	out = json ? stderr : stdout;
	figs = mmap(NULL, sizeof(*figs), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		    -1, 0);
	CHECK(figs != MAP_FAILED && iters > 0);
	acquire_iters = iters / 4 > 100 ? iters / 4 : 100;
	chain_iters = iters / 10 > 100 ? iters / 10 : 100;
	test_daemon_start(&d, sets);
	test_redis_start(&redis_srv, 2ull << 30);
	seed_lookup(d.addr);
	seed_redis(&redis_srv);
	for (int clients = 1; clients <= 4; clients += 3) {
		lane = true;
		bench_lookup(d.addr, d.pid, NULL, clients, iters);
		lane = false;
		bench_lookup(d.addr, d.pid, NULL, clients, iters);
		bench_lookup(d.addr, d.pid, &redis_srv, clients, iters);
	}
	lane = true;
	for (int k = 0; k < 2; k++) {
		fprintf(out, "lookup throughput, %d client%s: lane %.2fx redis, gRPC %.2fx redis\n",
			k ? 4 : 1, k ? "s" : "", lookup_ops[0][k] / lookup_ops[2][k],
			lookup_ops[1][k] / lookup_ops[2][k]);
		figure(lookup_ops[0][k] / lookup_ops[2][k], "kvtier_lookup64_%dc_x_redis",
		       k ? 4 : 1);
	}
	/* gRPC never starts in this process: each bench is a child. */
	daemon_pid = d.pid;
	in_child(bench_acquire, d.addr);
	lane = false;
	in_child(bench_acquire, d.addr);
	lane = true;
	in_child(bench_chain, d.addr);
	in_child(bench_idle, d.addr);
	in_child(bench_read, d.addr);
	test_redis_stop(&redis_srv);
	CHECK(test_daemon_stop(&d) == 0);
	if (json)
		figures_json();
	return 0;
}

/*
 * The GPU data path end to end, against the real daemon with an hbm pool:
 * a worker offloads blocks from its GPU's paged cache (gather kernel into
 * the host tier, committed when its stream passes the copy); another
 * process onloads them into its own cache (scatter), first from the host
 * tier, then, once the daemon has copied them into its pool, device to
 * device through the pool's IPC handle; bytes compared with the CPU
 * reference every time. A worker killed with -9 while it holds the pool
 * open and blocks pinned leaves nothing that stops the next one.
 * Exits 77 (skipped) without a GPU.
 */
#include <cuda_runtime_api.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_util.h"
#include "kvtier/cuda.h"

enum { L = 4, NB = 64, T = 16, H = 8, D = 128, N = 24 }; /* bf16 */
#define TENSOR ((size_t)2 * NB * T * H * D * 2)

static const char *addr;

struct cache {
	void *dev[L];
	char *host[L];
	struct kvt_kv_layout dl, hl;
};

static void cache_init(struct cache *c, bool fill)
{
	const void *db[L], *hb[L];
	const char *why;

	for (int l = 0; l < L; l++) {
		c->host[l] = aligned_alloc(64, TENSOR);
		CHECK(c->host[l]);
		memset(c->host[l], 0, TENSOR);
		if (fill)
			test_fill(c->host[l], TENSOR, 100u + (unsigned)l);
		CHECK(cudaMalloc(&c->dev[l], TENSOR) == cudaSuccess);
		CHECK(cudaMemcpy(c->dev[l], c->host[l], TENSOR, cudaMemcpyHostToDevice) == cudaSuccess);
		db[l] = c->dev[l];
		hb[l] = c->host[l];
	}
	CHECK(kvt_kv_layout_init(&c->dl, KVT_KV_PER_LAYER, db, L, NB, T, H, D, 2, &why) == 0);
	CHECK(kvt_kv_layout_init(&c->hl, KVT_KV_PER_LAYER, hb, L, NB, T, H, D, 2, &why) == 0);
}

static uint32_t src_block(int i) { return (uint32_t)(i * 5 + 1) % NB; }

static kvt_cuda *worker(const char *name, kvt_client **c, struct kvt_namespace *ns)
{
	kvt_cuda *g;

	CHECK(kvt_connect(addr, c) == 0);
	CHECK(kvt_cuda_bind(*c, 0, 1u << 20, &g) == 0); /* staging: 4 pages */
	CHECK_RC(*c, kvt_cuda_attach(g, name), 0);
	CHECK_RC(*c, kvt_open_namespace(*c, "gpu-path", (uint64_t)L * 2 * T * H * D * 2,
					T, 0, ns), 0);
	return g;
}

static void keys_init(struct kvt_key *keys)
{
	for (int i = 0; i < N; i++)
		keys[i] = test_key("gpupath", (unsigned)i);
}

static int producer(void)
{
	struct kvt_key keys[N];
	struct kvt_slot slots[N];
	uint32_t ids[N];
	struct kvt_namespace ns;
	struct cache cache;
	kvt_client *c;
	kvt_cuda *g = worker("producer", &c, &ns);
	cudaStream_t s;

	keys_init(keys);
	cache_init(&cache, true);
	CHECK(cudaStreamCreate(&s) == cudaSuccess);
	for (int i = 0; i < N; i++)
		ids[i] = src_block(i);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, N, NULL, slots), 0);
	for (int i = 0; i < N; i++)
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
	CHECK(kvt_cuda_offload(g, &ns, &cache.dl, ids, keys, slots, N, s) == 0);
	CHECK(kvt_cuda_sync(g) == 0);
	kvt_cuda_close(g);
	kvt_close(c);
	return 0;
}

/* Onloads all N blocks into blocks 0..N-1 of an empty cache and compares
 * with the CPU reference; want_hbm: every page must come from the pool. */
static int consumer(bool want_hbm, bool die)
{
	struct kvt_key keys[N];
	struct kvt_namespace ns;
	struct kvt_lease lease;
	struct cache src, dst;
	uint32_t ids[N], to[N];
	void *pages[N];
	kvt_client *c;
	kvt_cuda *g = worker("consumer", &c, &ns);
	cudaStream_t s;
	int from_hbm = 0;

	keys_init(keys);
	cache_init(&src, true);
	cache_init(&dst, false);
	CHECK(cudaStreamCreate(&s) == cudaSuccess);
	if (want_hbm) {
		CHECK(kvt_cuda_hbm_open(g));
		for (int t = 0; t < 1000 && test_stat(c, "hbm_blocks") < N; t++)
			usleep(10000);
	}
	CHECK_RC(c, kvt_acquire(c, &ns, keys, N, 0, &lease), 0);
	CHECK(lease.count == N);
	for (int i = 0; i < N; i++)
		from_hbm += lease.hbm[i];
	printf("%s: %d of %d pages from the hbm pool, host pages %s\n",
	       die ? "killed worker" : "consumer", from_hbm, N,
	       kvt_cuda_host_direct(g) ? "read in place" : "staged");
	if (die)
		raise(SIGKILL);
	CHECK(!want_hbm || from_hbm == N);
	for (int i = 0; i < N; i++) {
		to[i] = (uint32_t)i;
		ids[i] = src_block(i);
		pages[i] = aligned_alloc(64, (size_t)L * 2 * T * H * D * 2);
	}
	CHECK(kvt_cuda_onload(g, &dst.dl, to, &lease, s) == 0);
	CHECK(lease.id == 0); /* taken over */
	CHECK(cudaStreamSynchronize(s) == cudaSuccess);
	CHECK(kvt_cuda_sync(g) == 0);
	kvt_kv_gather_cpu(&src.hl, ids, pages, N);
	kvt_kv_scatter_cpu(&dst.hl, to, (const void *const *)pages, N);
	for (int l = 0; l < L; l++) {
		char *back = malloc(TENSOR);
		CHECK(cudaMemcpy(back, dst.dev[l], TENSOR, cudaMemcpyDeviceToHost) == cudaSuccess);
		CHECK(memcmp(back, dst.host[l], TENSOR) == 0);
		free(back);
	}
	for (int i = 0; i < N; i++)
		free(pages[i]);
	CHECK(test_stat(c, "leases_active") == 0); /* released after the copy */
	kvt_cuda_close(g);
	kvt_close(c);
	return 0;
}

static int run(int (*fn)(bool, bool), bool a, bool b)
{
	int status;
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0)
		_exit(fn(a, b));
	CHECK(waitpid(pid, &status, 0) == pid);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static int producer_fn(bool a, bool b) { (void)a, (void)b; return producer(); }

static int has_gpu(bool a, bool b)
{
	int n = 0;

	(void)a, (void)b;
	return cudaGetDeviceCount(&n) == cudaSuccess && n > 0 ? 0 : 77;
}

int main(void)
{
	struct test_daemon d;
	const char *sets[] = { "hbm.size=64M", "host.size=256M", NULL };

	/* CUDA, like gRPC, must not be initialized before a fork: ask a child. */
	if (run(has_gpu, false, false) == 77) {
		printf("no CUDA device: skipped\n");
		return 77;
	}
	test_daemon_start(&d, sets);
	addr = d.addr;
	CHECK(run(producer_fn, false, false) == 0);
	CHECK(run(consumer, false, false) == 0);      /* host tier; copies start */
	CHECK(run(consumer, true, false) == 0);       /* from the pool */
	CHECK(run(consumer, true, true) == 128 + SIGKILL);
	CHECK(run(consumer, true, false) == 0);       /* the pool opens again */
	CHECK(test_daemon_stop(&d) == 0);
	printf("gpu path: offload, onload from host and hbm, kill -9 ok\n");
	return 0;
}

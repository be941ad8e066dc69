/*
 * The CUDA gather/scatter kernels against their CPU reference versions, bit
 * for bit: a Llama-3-8B-shaped layer slice (16-token blocks, bf16), more
 * blocks than one launch takes, both cache formats, an odd chunk size that
 * takes the kernel's tail loop, and pages read in place from mapped host
 * memory (the GH200 path; any GPU with unified addressing runs it).
 * Exits 77 (skipped) without a GPU.
 */
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kv_copy.h"

#define CUDA_OK(expr)                                                        \
	do {                                                                 \
		cudaError_t e_ = (expr);                                     \
		if (e_ != cudaSuccess) {                                     \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, \
				#expr, cudaGetErrorString(e_));              \
			exit(1);                                             \
		}                                                            \
	} while (0)

struct shape {
	const char *name;
	enum kvt_kv_format format;
	uint32_t layers, blocks, tokens, heads, dim, dtype;
	uint32_t n;       /* blocks moved */
	bool host_pages;  /* scatter reads mapped host pages in place */
};

static void run(const struct shape *s)
{
	const void *dbases[KVT_KV_LAYERS_MAX], *hbases[KVT_KV_LAYERS_MAX];
	struct kvt_kv_layout dl, hl;
	const char *why = NULL;
	uint32_t ntensors = s->format == KVT_KV_PER_LAYER ? s->layers : 1;
	uint64_t chunk = (uint64_t)s->tokens * s->heads * s->dim * s->dtype;
	uint64_t tensor = (uint64_t)s->blocks * 2 * chunk *
			  (s->format == KVT_KV_PER_LAYER ? 1 : s->layers);
	uint64_t page = (uint64_t)s->layers * 2 * chunk;
	void *dpages, *hpages_dev = NULL;
	char *hpages = NULL;

	for (uint32_t t = 0; t < ntensors; t++) {
		void *d, *h = aligned_alloc(64, tensor);
		CHECK(h);
		test_fill(h, tensor, t + 1);
		CUDA_OK(cudaMalloc(&d, tensor));
		CUDA_OK(cudaMemcpy(d, h, tensor, cudaMemcpyHostToDevice));
		dbases[t] = d;
		hbases[t] = h;
	}
	CHECK(kvt_kv_layout_init(&dl, s->format, dbases, s->layers, s->blocks, s->tokens,
				 s->heads, s->dim, s->dtype, &why) == 0);
	CHECK(kvt_kv_layout_init(&hl, s->format, hbases, s->layers, s->blocks, s->tokens,
				 s->heads, s->dim, s->dtype, &why) == 0);

	uint32_t *ids = malloc(s->n * sizeof(*ids)), *to = malloc(s->n * sizeof(*to));
	void **dp = malloc(s->n * sizeof(*dp)), **hp = malloc(s->n * sizeof(*hp));
	char *want = aligned_alloc(64, s->n * page), *got = aligned_alloc(64, s->n * page);
	CHECK(ids && to && dp && hp && want && got);
	for (uint32_t i = 0; i < s->n; i++) { /* a permutation, reversed for to */
		ids[i] = (uint32_t)((i * 7919ull + 3) % s->blocks);
		to[i] = (uint32_t)((s->n - 1 - i) * 7919ull % s->blocks);
	}
	CUDA_OK(cudaMalloc(&dpages, s->n * page));
	for (uint32_t i = 0; i < s->n; i++) {
		dp[i] = (char *)dpages + i * page;
		hp[i] = want + i * page;
	}

	/* Gather: GPU pages == CPU pages. */
	CHECK(kvt_kv_gather_cuda(&dl, ids, dp, s->n, 0) == 0);
	CUDA_OK(cudaDeviceSynchronize());
	kvt_kv_gather_cpu(&hl, ids, hp, s->n);
	CUDA_OK(cudaMemcpy(got, dpages, s->n * page, cudaMemcpyDeviceToHost));
	CHECK(memcmp(got, want, s->n * page) == 0);

	/* Scatter the pages to other ids: GPU cache == CPU cache. */
	const void *const *src = (const void *const *)dp;
	if (s->host_pages) {
		CUDA_OK(cudaHostAlloc((void **)&hpages, s->n * page, cudaHostAllocMapped));
		memcpy(hpages, want, s->n * page);
		CUDA_OK(cudaHostGetDevicePointer(&hpages_dev, hpages, 0));
		for (uint32_t i = 0; i < s->n; i++)
			dp[i] = (char *)hpages_dev + i * page;
	}
	CHECK(kvt_kv_scatter_cuda(&dl, to, src, s->n, 0) == 0);
	CUDA_OK(cudaDeviceSynchronize());
	kvt_kv_scatter_cpu(&hl, to, (const void *const *)hp, s->n);
	for (uint32_t t = 0; t < ntensors; t++) {
		char *back = malloc(tensor);
		CHECK(back);
		CUDA_OK(cudaMemcpy(back, dbases[t], tensor, cudaMemcpyDeviceToHost));
		CHECK(memcmp(back, hbases[t], tensor) == 0);
		free(back);
	}

	/* A bad block id launches nothing. */
	uint32_t past = s->blocks;
	CHECK(kvt_kv_gather_cuda(&dl, &past, dp, 1, 0) == -EINVAL);

	printf("%-28s %u blocks of %llu KiB: gather and scatter match the CPU reference\n",
	       s->name, s->n, (unsigned long long)(page >> 10));
	for (uint32_t t = 0; t < ntensors; t++) {
		CUDA_OK(cudaFree((void *)dbases[t]));
		free((void *)hbases[t]);
	}
	CUDA_OK(cudaFree(dpages));
	if (hpages)
		CUDA_OK(cudaFreeHost(hpages));
	free(ids); free(to); free(dp); free(hp); free(want); free(got);
}

int main(void)
{
	int count = 0;

	if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
		printf("no CUDA device: skipped\n");
		return 77;
	}
	/* Llama-3-8B per layer: 8 kv heads, head_dim 128, bf16; 8 of its 32
	 * layers keep the test small, 300 blocks span two launches. */
	const struct shape shapes[] = {
		{ "llama-3-8b per-layer", KVT_KV_PER_LAYER, 8, 512, 16, 8, 128, 2, 300, false },
		{ "llama-3-8b layer-major", KVT_KV_LAYER_MAJOR, 8, 512, 16, 8, 128, 2, 300, false },
		{ "odd chunk (tail loop)", KVT_KV_PER_LAYER, 3, 64, 2, 1, 24, 2, 50, false },
		{ "host pages in place", KVT_KV_PER_LAYER, 4, 128, 16, 8, 128, 2, 64, true },
	};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		run(&shapes[i]);
	return 0;
}

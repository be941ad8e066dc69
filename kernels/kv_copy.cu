/* Gather/scatter between a paged KV cache and kvtier pages on the GPU. */
#include "kv_copy.h"

#include <errno.h>

namespace {

struct batch {
	uint32_t n;
	uint32_t ids[KVT_KV_BATCH];
	uintptr_t pages[KVT_KV_BATCH];
};

constexpr int kThreads = 256;
constexpr int kUnroll = 4; /* loads in flight per thread */
constexpr unsigned kMaxCtas = 8192;

/*
 * One CTA per (block, chunk) at a time, grid-stride over all of them; each
 * thread moves kUnroll 16-byte words per step, loading all before storing
 * so that the loads overlap. to_pages: gather (cache -> page).
 * __grid_constant__: the layout math takes the layout's address, which
 * would otherwise copy its 1 KiB into every thread's local memory.
 */
template <bool to_pages>
__global__ void __launch_bounds__(kThreads)
copy_chunks(const __grid_constant__ kvt_kv_layout l,
	    const __grid_constant__ batch b)
{
	const uint32_t chunks = 2 * l.num_layers;
	const uint64_t words = l.chunk_bytes / 16;
	const uint64_t work = (uint64_t)b.n * chunks;

	for (uint64_t w = blockIdx.x; w < work; w += gridDim.x) {
		const uint32_t i = (uint32_t)(w / chunks), c = (uint32_t)(w % chunks);
		uint4 *cache = (uint4 *)kvt_kv_cache_chunk(&l, c, b.ids[i]);
		uint4 *page = (uint4 *)(b.pages[i] + kvt_kv_page_chunk(&l, c));
		const uint4 *__restrict__ src = to_pages ? cache : page;
		uint4 *__restrict__ dst = to_pages ? page : cache;
		const uint64_t step = (uint64_t)kThreads * kUnroll;
		uint64_t k = threadIdx.x;

		for (; k + (kUnroll - 1) * kThreads < words; k += step) {
			uint4 v[kUnroll];
#pragma unroll
			for (int u = 0; u < kUnroll; u++)
				v[u] = src[k + u * kThreads];
#pragma unroll
			for (int u = 0; u < kUnroll; u++)
				dst[k + u * kThreads] = v[u];
		}
		for (; k < words; k += kThreads)
			dst[k] = src[k];
	}
}

template <bool to_pages>
int launch(const kvt_kv_layout *l, const uint32_t *ids,
	   const void *const *pages, uint32_t n, cudaStream_t stream)
{
	uint32_t bad;

	if (kvt_kv_check_blocks(l, ids, pages, n, &bad))
		return -EINVAL;
	for (uint32_t done = 0; done < n;) {
		batch b;
		b.n = n - done < KVT_KV_BATCH ? n - done : KVT_KV_BATCH;
		for (uint32_t i = 0; i < b.n; i++) {
			b.ids[i] = ids[done + i];
			b.pages[i] = (uintptr_t)pages[done + i];
		}
		uint64_t work = (uint64_t)b.n * 2 * l->num_layers;
		unsigned ctas = work < kMaxCtas ? (unsigned)work : kMaxCtas;
		copy_chunks<to_pages><<<ctas, kThreads, 0, stream>>>(*l, b);
		if (cudaGetLastError() != cudaSuccess)
			return -EIO;
		done += b.n;
	}
	return 0;
}

} // namespace

extern "C" int kvt_kv_gather_cuda(const struct kvt_kv_layout *l,
				  const uint32_t *block_ids, void *const *pages,
				  uint32_t n, cudaStream_t stream)
{
	return launch<true>(l, block_ids, (const void *const *)pages, n, stream);
}

extern "C" int kvt_kv_scatter_cuda(const struct kvt_kv_layout *l,
				   const uint32_t *block_ids,
				   const void *const *pages, uint32_t n,
				   cudaStream_t stream)
{
	return launch<false>(l, block_ids, pages, n, stream);
}

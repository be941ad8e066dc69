/*
 * Where a block's KV bytes sit in a worker's paged KV cache, and where they
 * sit in a kvtier page: the layout math that the CUDA kernels (kv_copy.cu)
 * and their CPU reference versions (kv_layout.c) share, so that a test of
 * one is a test of the other.
 *
 * A paged cache holds, per layer, K and V for num_blocks blocks; one
 * (layer, K|V, block) is a "chunk" of block_tokens * kv_heads * head_dim
 * elements, contiguous in every layout we support. Two layouts:
 *   - per layer (vLLM): one tensor per layer, [2, num_blocks, block_tokens,
 *     kv_heads, head_dim]: K of every block, then V of every block;
 *   - layer-major: one tensor [num_layers, num_blocks, 2, block_tokens,
 *     kv_heads, head_dim]: a block's K and V side by side within its layer.
 * A kvtier page is [num_layers, 2, chunk]: layer by layer, K then V, so a
 * page is the same bytes whichever layout produced it and a block offloaded
 * by one engine can be onloaded by another.
 *
 * This header is C and CUDA: the offset math is compiled for both.
 */
#ifndef KVT_KV_LAYOUT_H
#define KVT_KV_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define KVT_HD __host__ __device__
#else
#define KVT_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Llama-3-70B has 80 layers; the layer table travels as a kernel argument. */
#define KVT_KV_LAYERS_MAX 128
/* The kernels move 16 bytes per access: chunks and bases must be aligned. */
#define KVT_KV_ALIGN 16

enum kvt_kv_format {
	KVT_KV_PER_LAYER = 1,   /* vLLM: per layer [2, blocks, tokens, heads, dim] */
	KVT_KV_LAYER_MAJOR = 2, /* [layers, blocks, 2, tokens, heads, dim] */
};

struct kvt_kv_layout {
	uint32_t num_layers;
	uint32_t num_blocks; /* blocks in the paged cache: bounds block ids */
	uint64_t chunk_bytes; /* one (layer, K|V, block) */
	uint64_t kv_stride;   /* bytes from a block's K to its V */
	uint64_t block_stride; /* bytes from block b to block b + 1 */
	uintptr_t layers[KVT_KV_LAYERS_MAX]; /* base of each layer's tensor */
};

/*
 * Fills l for a cache of the given shape. For KVT_KV_PER_LAYER, bases has
 * num_layers entries (one tensor each); for KVT_KV_LAYER_MAJOR, bases[0] is
 * the one tensor. 0, or -EINVAL with the reason in why: a zero dimension,
 * too many layers, a chunk that is not a multiple of 16 bytes or a base that
 * is not 16-byte aligned.
 */
int kvt_kv_layout_init(struct kvt_kv_layout *l, enum kvt_kv_format format,
		       const void *const *bases, uint32_t num_layers,
		       uint32_t num_blocks, uint32_t block_tokens,
		       uint32_t kv_heads, uint32_t head_dim,
		       uint32_t dtype_bytes, const char **why);

/* Bytes of a kvtier page for this layout. */
static inline KVT_HD uint64_t kvt_kv_page_bytes(const struct kvt_kv_layout *l)
{
	return (uint64_t)l->num_layers * 2 * l->chunk_bytes;
}

/* Chunk c (= layer * 2 + kv) of block block_id in the paged cache. */
static inline KVT_HD uintptr_t kvt_kv_cache_chunk(const struct kvt_kv_layout *l,
						  uint32_t c, uint32_t block_id)
{
	return l->layers[c >> 1] + (c & 1) * l->kv_stride +
	       (uint64_t)block_id * l->block_stride;
}

/* Chunk c of a page. */
static inline KVT_HD uint64_t kvt_kv_page_chunk(const struct kvt_kv_layout *l,
						uint32_t c)
{
	return (uint64_t)c * l->chunk_bytes;
}

/*
 * CPU reference versions: n blocks, block_ids[i] in the cache <-> pages[i].
 * Gather copies cache -> pages (offload), scatter pages -> cache (onload).
 * The caller has checked the block ids against num_blocks
 * (kvt_kv_check_blocks).
 */
void kvt_kv_gather_cpu(const struct kvt_kv_layout *l,
		       const uint32_t *block_ids, void *const *pages,
		       uint32_t n);
void kvt_kv_scatter_cpu(const struct kvt_kv_layout *l,
			const uint32_t *block_ids, const void *const *pages,
			uint32_t n);

/* 0, or -EINVAL when a block id is out of range or a page is misaligned;
 * *bad is the index of the first bad entry. */
int kvt_kv_check_blocks(const struct kvt_kv_layout *l,
			const uint32_t *block_ids, const void *const *pages,
			uint32_t n, uint32_t *bad);

#ifdef __cplusplus
}
#endif

#endif

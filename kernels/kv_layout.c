/* The layout descriptor and the CPU reference gather/scatter. */
#include "kv_layout.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static int invalid(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -EINVAL;
}

static bool aligned(uintptr_t p)
{
	return p % KVT_KV_ALIGN == 0;
}

int kvt_kv_layout_init(struct kvt_kv_layout *l, enum kvt_kv_format format,
		       const void *const *bases, uint32_t num_layers,
		       uint32_t num_blocks, uint32_t block_tokens,
		       uint32_t kv_heads, uint32_t head_dim,
		       uint32_t dtype_bytes, const char **why)
{
	memset(l, 0, sizeof(*l));
	if (!num_layers || !num_blocks || !block_tokens || !kv_heads ||
	    !head_dim || !dtype_bytes)
		return invalid(why, "every dimension must be at least 1");
	if (num_layers > KVT_KV_LAYERS_MAX)
		return invalid(why, "more layers than KVT_KV_LAYERS_MAX (128)");
	if (!bases)
		return invalid(why, "no tensor base");
	l->num_layers = num_layers;
	l->num_blocks = num_blocks;
	l->chunk_bytes = (uint64_t)block_tokens * kv_heads * head_dim * dtype_bytes;
	if (l->chunk_bytes % KVT_KV_ALIGN)
		return invalid(why, "block_tokens * kv_heads * head_dim * dtype_bytes "
				    "must be a multiple of 16 bytes");
	switch (format) {
	case KVT_KV_PER_LAYER:
		l->kv_stride = (uint64_t)num_blocks * l->chunk_bytes;
		l->block_stride = l->chunk_bytes;
		for (uint32_t i = 0; i < num_layers; i++)
			l->layers[i] = (uintptr_t)bases[i];
		break;
	case KVT_KV_LAYER_MAJOR:
		l->kv_stride = l->chunk_bytes;
		l->block_stride = 2 * l->chunk_bytes;
		for (uint32_t i = 0; i < num_layers; i++)
			l->layers[i] = (uintptr_t)bases[0] +
				       (uint64_t)i * num_blocks * l->block_stride;
		break;
	default:
		return invalid(why, "unknown cache format");
	}
	for (uint32_t i = 0; i < num_layers; i++)
		if (!l->layers[i] || !aligned(l->layers[i]))
			return invalid(why, "a layer tensor is NULL or not 16-byte aligned");
	return 0;
}

int kvt_kv_check_blocks(const struct kvt_kv_layout *l,
			const uint32_t *block_ids, const void *const *pages,
			uint32_t n, uint32_t *bad)
{
	for (uint32_t i = 0; i < n; i++) {
		if (block_ids[i] >= l->num_blocks || !pages[i] ||
		    !aligned((uintptr_t)pages[i])) {
			*bad = i;
			return -EINVAL;
		}
	}
	return 0;
}

void kvt_kv_gather_cpu(const struct kvt_kv_layout *l,
		       const uint32_t *block_ids, void *const *pages,
		       uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t c = 0; c < 2 * l->num_layers; c++)
			memcpy((char *)pages[i] + kvt_kv_page_chunk(l, c),
			       (const void *)kvt_kv_cache_chunk(l, c, block_ids[i]),
			       l->chunk_bytes);
}

void kvt_kv_scatter_cpu(const struct kvt_kv_layout *l,
			const uint32_t *block_ids, const void *const *pages,
			uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t c = 0; c < 2 * l->num_layers; c++)
			memcpy((void *)kvt_kv_cache_chunk(l, c, block_ids[i]),
			       (const char *)pages[i] + kvt_kv_page_chunk(l, c),
			       l->chunk_bytes);
}

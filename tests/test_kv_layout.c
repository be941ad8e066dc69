/*
 * The layout math of the gather/scatter kernels, through their CPU
 * reference versions: every element lands where an index formula written
 * out here independently says, for both cache formats; pages do not depend
 * on the format; bad shapes and block ids are refused.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kv_layout.h"

enum { L = 3, NB = 7, T = 4, H = 2, D = 8 }; /* uint16 elements */
#define CHUNK_ELEMS (T * H * D)
#define PAGE_ELEMS (L * 2 * CHUNK_ELEMS)
#define TENSOR_ELEMS (L * 2 * NB * CHUNK_ELEMS)

static uint16_t value(int l, int kv, int b, int e)
{
	uint32_t x = (uint32_t)(((l * 2 + kv) * NB + b) * CHUNK_ELEMS + e) * 2654435761u;
	return (uint16_t)(x >> 16);
}

/* Element index of (l, kv, b, e) in each format, from the shapes in
 * kv_layout.h: per layer [2, NB, T, H, D]; layer-major [L, NB, 2, T, H, D]. */
static size_t per_layer_index(int kv, int b, int e)
{
	return ((size_t)kv * NB + b) * CHUNK_ELEMS + e;
}

static size_t layer_major_index(int l, int kv, int b, int e)
{
	return (((size_t)l * NB + b) * 2 + kv) * CHUNK_ELEMS + e;
}

static size_t page_index(int l, int kv, int e)
{
	return ((size_t)l * 2 + kv) * CHUNK_ELEMS + e;
}

struct cache {
	uint16_t *layers[L]; /* per layer */
	uint16_t *tensor;    /* layer-major */
	struct kvt_kv_layout per_layer, layer_major;
};

static void cache_init(struct cache *c, bool fill)
{
	const void *bases[L];
	const char *why = NULL;

	for (int l = 0; l < L; l++) {
		c->layers[l] = aligned_alloc(64, 2 * NB * CHUNK_ELEMS * 2);
		CHECK(c->layers[l]);
		memset(c->layers[l], 0, 2 * NB * CHUNK_ELEMS * 2);
		bases[l] = c->layers[l];
	}
	c->tensor = aligned_alloc(64, TENSOR_ELEMS * 2);
	CHECK(c->tensor);
	memset(c->tensor, 0, TENSOR_ELEMS * 2);
	for (int l = 0; fill && l < L; l++)
		for (int kv = 0; kv < 2; kv++)
			for (int b = 0; b < NB; b++)
				for (int e = 0; e < CHUNK_ELEMS; e++) {
					c->layers[l][per_layer_index(kv, b, e)] = value(l, kv, b, e);
					c->tensor[layer_major_index(l, kv, b, e)] = value(l, kv, b, e);
				}
	CHECK(kvt_kv_layout_init(&c->per_layer, KVT_KV_PER_LAYER, bases, L, NB,
				 T, H, D, 2, &why) == 0);
	bases[0] = c->tensor;
	CHECK(kvt_kv_layout_init(&c->layer_major, KVT_KV_LAYER_MAJOR, bases, L,
				 NB, T, H, D, 2, &why) == 0);
	CHECK(kvt_kv_page_bytes(&c->per_layer) == PAGE_ELEMS * 2);
	CHECK(kvt_kv_page_bytes(&c->layer_major) == PAGE_ELEMS * 2);
}

static void cache_free(struct cache *c)
{
	for (int l = 0; l < L; l++)
		free(c->layers[l]);
	free(c->tensor);
}

static void check_pages_hold(uint16_t *const *pages, const uint32_t *ids, int n)
{
	for (int i = 0; i < n; i++)
		for (int l = 0; l < L; l++)
			for (int kv = 0; kv < 2; kv++)
				for (int e = 0; e < CHUNK_ELEMS; e++)
					CHECK(pages[i][page_index(l, kv, e)] ==
					      value(l, kv, (int)ids[i], e));
}

/* Scattered blocks hold their page; every other element is still 0. */
static void check_scattered(const struct cache *c, bool layer_major,
			    const uint32_t *ids, const uint32_t *from, int n)
{
	for (int l = 0; l < L; l++)
		for (int kv = 0; kv < 2; kv++)
			for (int b = 0; b < NB; b++) {
				int src = -1;
				for (int i = 0; i < n; i++)
					if ((int)ids[i] == b)
						src = (int)from[i];
				for (int e = 0; e < CHUNK_ELEMS; e++) {
					uint16_t got = layer_major ?
						c->tensor[layer_major_index(l, kv, b, e)] :
						c->layers[l][per_layer_index(kv, b, e)];
					CHECK(got == (src < 0 ? 0 : value(l, kv, src, e)));
				}
			}
}

int main(void)
{
	struct cache src, dst;
	uint16_t *pages[3], *pages2[3];
	const uint32_t ids[3] = { 5, 0, 6 }, to[3] = { 2, 4, 1 };
	const char *why;
	uint32_t bad;

	for (int i = 0; i < 3; i++) {
		pages[i] = aligned_alloc(64, PAGE_ELEMS * 2);
		pages2[i] = aligned_alloc(64, PAGE_ELEMS * 2);
		CHECK(pages[i] && pages2[i]);
	}
	cache_init(&src, true);

	/* Gather from either format gives the same pages, element for element. */
	CHECK(kvt_kv_check_blocks(&src.per_layer, ids, (const void *const *)pages, 3, &bad) == 0);
	kvt_kv_gather_cpu(&src.per_layer, ids, (void *const *)pages, 3);
	check_pages_hold(pages, ids, 3);
	kvt_kv_gather_cpu(&src.layer_major, ids, (void *const *)pages2, 3);
	for (int i = 0; i < 3; i++)
		CHECK(memcmp(pages[i], pages2[i], PAGE_ELEMS * 2) == 0);

	/* Scatter into other block ids of an empty cache, both formats. */
	cache_init(&dst, false);
	kvt_kv_scatter_cpu(&dst.per_layer, to, (const void *const *)pages, 3);
	check_scattered(&dst, false, to, ids, 3);
	kvt_kv_scatter_cpu(&dst.layer_major, to, (const void *const *)pages, 3);
	check_scattered(&dst, true, to, ids, 3);

	/* Round trip through the other format: the same bytes come back. */
	memset(pages2[0], 0, PAGE_ELEMS * 2);
	kvt_kv_gather_cpu(&dst.layer_major, &to[1], (void *const *)pages2, 1);
	CHECK(memcmp(pages2[0], pages[1], PAGE_ELEMS * 2) == 0);

	/* Refused: a block id past the cache, a misaligned page, bad shapes. */
	const uint32_t past[2] = { 1, NB };
	CHECK(kvt_kv_check_blocks(&src.per_layer, past, (const void *const *)pages, 2, &bad) == -EINVAL);
	CHECK(bad == 1);
	const void *odd[1] = { (char *)pages[0] + 8 };
	CHECK(kvt_kv_check_blocks(&src.per_layer, ids, odd, 1, &bad) == -EINVAL && bad == 0);

	struct kvt_kv_layout l;
	const void *bases[L] = { src.layers[0], src.layers[1], src.layers[2] };
	why = NULL;
	CHECK(kvt_kv_layout_init(&l, KVT_KV_PER_LAYER, bases, L, NB, 1, 1, 3, 2, &why) == -EINVAL);
	CHECK(why && strstr(why, "multiple of 16"));
	CHECK(kvt_kv_layout_init(&l, KVT_KV_PER_LAYER, bases, KVT_KV_LAYERS_MAX + 1, NB, T, H, D, 2, &why) == -EINVAL);
	CHECK(strstr(why, "layers"));
	CHECK(kvt_kv_layout_init(&l, KVT_KV_PER_LAYER, bases, L, 0, T, H, D, 2, &why) == -EINVAL);
	bases[1] = (char *)src.layers[1] + 2;
	CHECK(kvt_kv_layout_init(&l, KVT_KV_PER_LAYER, bases, L, NB, T, H, D, 2, &why) == -EINVAL);
	CHECK(strstr(why, "aligned"));
	CHECK(kvt_kv_layout_init(&l, (enum kvt_kv_format)9, bases, L, NB, T, H, D, 2, &why) == -EINVAL);

	cache_free(&src);
	cache_free(&dst);
	for (int i = 0; i < 3; i++) {
		free(pages[i]);
		free(pages2[i]);
	}
	printf("kv layout: gather/scatter CPU reference ok\n");
	return 0;
}

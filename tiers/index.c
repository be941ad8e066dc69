/*
 * Chained hash table with a power-of-two bucket array (in huge pages once
 * it passes 2 MiB, huge_alloc.h) that doubles when the load factor passes
 * 1. Chaining (rather than open addressing) keeps block addresses stable,
 * which leases and LRU links depend on.
 */
#include "index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "huge_alloc.h"

struct kvt_index {
	struct kvt_block **buckets;
	size_t mask;
	size_t count;
};

static uint64_t key_hash(uint32_t ns, uint32_t tenant,
			 const uint8_t key[KVT_KEY_BYTES])
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return h ^ (((uint64_t)ns << 16 | tenant) * 0x9e3779b97f4a7c15ull);
}

struct kvt_index *kvt_index_create(void)
{
	struct kvt_index *idx = calloc(1, sizeof(*idx));

	if (!idx)
		return NULL;
	idx->mask = 1023;
	idx->buckets = kvt_huge_calloc((idx->mask + 1) * sizeof(*idx->buckets));
	if (!idx->buckets) {
		free(idx);
		return NULL;
	}
	return idx;
}

void kvt_index_destroy(struct kvt_index *idx)
{
	if (!idx)
		return;
	free(idx->buckets);
	free(idx);
}

struct kvt_block *kvt_index_find(const struct kvt_index *idx, uint32_t ns,
				 uint32_t tenant,
				 const uint8_t key[KVT_KEY_BYTES])
{
	struct kvt_block *b = idx->buckets[key_hash(ns, tenant, key) & idx->mask];

	for (; b; b = b->hash_next)
		if (b->ns == ns && b->tenant == tenant &&
		    memcmp(b->key, key, KVT_KEY_BYTES) == 0)
			return b;
	return NULL;
}

void kvt_index_prefetch(const struct kvt_index *idx, uint32_t ns,
			uint32_t tenant, const uint8_t key[KVT_KEY_BYTES])
{
	__builtin_prefetch(&idx->buckets[key_hash(ns, tenant, key) & idx->mask]);
}

void kvt_index_prefetch_block(const struct kvt_index *idx, uint32_t ns,
			      uint32_t tenant, const uint8_t key[KVT_KEY_BYTES])
{
	const char *b = (const char *)idx->buckets[key_hash(ns, tenant, key) & idx->mask];

	/* 96 bytes span two lines: find reads the key from one and ns,
	 * tenant (and the caller state) from the other. */
	if (b) {
		__builtin_prefetch(b);
		__builtin_prefetch(b + sizeof(struct kvt_block) - 1);
	}
}

static int grow(struct kvt_index *idx)
{
	size_t new_mask = idx->mask * 2 + 1;
	struct kvt_block **nb = kvt_huge_calloc((new_mask + 1) * sizeof(*nb));

	if (!nb)
		return -ENOMEM;
	for (size_t i = 0; i <= idx->mask; i++) {
		struct kvt_block *b = idx->buckets[i], *next;

		for (; b; b = next) {
			size_t j = key_hash(b->ns, b->tenant, b->key) & new_mask;

			next = b->hash_next;
			b->hash_next = nb[j];
			nb[j] = b;
		}
	}
	free(idx->buckets);
	idx->buckets = nb;
	idx->mask = new_mask;
	return 0;
}

int kvt_index_insert(struct kvt_index *idx, struct kvt_block *b)
{
	size_t i;

	if (kvt_index_find(idx, b->ns, b->tenant, b->key))
		return -EEXIST;
	/* A failed grow only costs longer chains; the insert still succeeds. */
	if (idx->count > idx->mask)
		(void)grow(idx);
	i = key_hash(b->ns, b->tenant, b->key) & idx->mask;
	b->hash_next = idx->buckets[i];
	idx->buckets[i] = b;
	idx->count++;
	return 0;
}

void kvt_index_remove(struct kvt_index *idx, struct kvt_block *b)
{
	struct kvt_block **p = &idx->buckets[key_hash(b->ns, b->tenant, b->key) & idx->mask];

	for (; *p; p = &(*p)->hash_next) {
		if (*p == b) {
			*p = b->hash_next;
			b->hash_next = NULL;
			idx->count--;
			return;
		}
	}
}

size_t kvt_index_count(const struct kvt_index *idx)
{
	return idx->count;
}

void kvt_index_foreach(struct kvt_index *idx,
		       void (*fn)(struct kvt_block *b, void *arg), void *arg)
{
	for (size_t i = 0; i <= idx->mask; i++) {
		struct kvt_block *b = idx->buckets[i], *next;

		for (; b; b = next) {
			next = b->hash_next;
			fn(b, arg);
		}
	}
}

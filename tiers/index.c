/*
 * Open addressing with linear probing over a power-of-two array of 8-byte
 * entries (in huge pages once it passes 2 MiB, huge_alloc.h), kept at most
 * three quarters full. An entry holds a block's address in its low 48 bits
 * and 16 bits of the block's key above them, so a probe compares keys in
 * the array itself and reads only the block it wants: a chained table read
 * a wrong block first for a third of its finds at 10M blocks, one more
 * cache miss each. Entries point at blocks rather than hold them, which
 * keeps block addresses stable (leases and lists depend on that).
 * Removal shifts the rest of the cluster back: no tombstones.
 */
#include "index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "huge_alloc.h"

#define ADDR_BITS 48
#define ADDR_MASK ((UINT64_C(1) << ADDR_BITS) - 1)

struct kvt_index {
	uint64_t *slots; /* 0: empty; else tag << ADDR_BITS | block address */
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

/* Key bytes the slot number does not come from. */
static uint64_t key_tag(const uint8_t key[KVT_KEY_BYTES])
{
	uint16_t t;

	memcpy(&t, key + 8, sizeof(t));
	return (uint64_t)t << ADDR_BITS;
}

static struct kvt_block *entry_block(uint64_t e)
{
	return (struct kvt_block *)(uintptr_t)(e & ADDR_MASK);
}

static size_t home_of(const struct kvt_index *idx, const struct kvt_block *b)
{
	return key_hash(b->ns, b->tenant, b->key) & idx->mask;
}

struct kvt_index *kvt_index_create(void)
{
	struct kvt_index *idx = calloc(1, sizeof(*idx));

	if (!idx)
		return NULL;
	idx->mask = 1023;
	idx->slots = kvt_huge_calloc((idx->mask + 1) * sizeof(*idx->slots));
	if (!idx->slots) {
		free(idx);
		return NULL;
	}
	return idx;
}

void kvt_index_destroy(struct kvt_index *idx)
{
	if (!idx)
		return;
	free(idx->slots);
	free(idx);
}

/* The slot holding the block of (ns, tenant, key), or the empty slot
 * that ends its probe. */
static size_t probe(const struct kvt_index *idx, uint32_t ns, uint32_t tenant,
		    const uint8_t key[KVT_KEY_BYTES])
{
	uint64_t tag = key_tag(key);
	size_t i = key_hash(ns, tenant, key) & idx->mask;

	for (;; i = (i + 1) & idx->mask) {
		uint64_t e = idx->slots[i];
		const struct kvt_block *b;

		if (!e)
			return i;
		if ((e & ~ADDR_MASK) != tag)
			continue;
		b = entry_block(e);
		if (b->ns == ns && b->tenant == tenant &&
		    memcmp(b->key, key, KVT_KEY_BYTES) == 0)
			return i;
	}
}

struct kvt_block *kvt_index_find(const struct kvt_index *idx, uint32_t ns,
				 uint32_t tenant,
				 const uint8_t key[KVT_KEY_BYTES])
{
	return entry_block(idx->slots[probe(idx, ns, tenant, key)]);
}

void kvt_index_prefetch(const struct kvt_index *idx, uint32_t ns,
			uint32_t tenant, const uint8_t key[KVT_KEY_BYTES])
{
	__builtin_prefetch(&idx->slots[key_hash(ns, tenant, key) & idx->mask]);
}

void kvt_index_prefetch_block(const struct kvt_index *idx, uint32_t ns,
			      uint32_t tenant, const uint8_t key[KVT_KEY_BYTES])
{
	uint64_t tag = key_tag(key);
	size_t i = key_hash(ns, tenant, key) & idx->mask;

	/* The first entry with the key's tag: the block itself but for one
	 * probe in 65536. 96 bytes span two lines, both read by a Lookup. */
	for (; idx->slots[i]; i = (i + 1) & idx->mask) {
		if ((idx->slots[i] & ~ADDR_MASK) == tag) {
			const char *b = (const char *)entry_block(idx->slots[i]);

			__builtin_prefetch(b);
			__builtin_prefetch(b + sizeof(struct kvt_block) - 1);
			return;
		}
	}
}

static void place(struct kvt_index *idx, struct kvt_block *b)
{
	size_t i = home_of(idx, b);

	while (idx->slots[i])
		i = (i + 1) & idx->mask;
	idx->slots[i] = key_tag(b->key) | (uint64_t)(uintptr_t)b;
}

static int grow(struct kvt_index *idx)
{
	uint64_t *old = idx->slots;
	size_t old_mask = idx->mask;
	uint64_t *ns = kvt_huge_calloc((old_mask + 1) * 2 * sizeof(*ns));

	if (!ns)
		return -ENOMEM;
	idx->slots = ns;
	idx->mask = old_mask * 2 + 1;
	for (size_t i = 0; i <= old_mask; i++)
		if (old[i])
			place(idx, entry_block(old[i]));
	free(old);
	return 0;
}

int kvt_index_insert(struct kvt_index *idx, struct kvt_block *b)
{
	if ((uint64_t)(uintptr_t)b & ~ADDR_MASK)
		return -EFAULT; /* no user address is above 2^48 on Linux */
	if (kvt_index_find(idx, b->ns, b->tenant, b->key))
		return -EEXIST;
	/* Past three quarters full, probes lengthen fast. A failed grow
	 * only costs longer probes until one slot is left: it ends them. */
	if ((idx->count + 1) * 4 > (idx->mask + 1) * 3 && grow(idx) < 0 &&
	    idx->count + 2 > idx->mask + 1)
		return -ENOMEM;
	place(idx, b);
	idx->count++;
	return 0;
}

void kvt_index_remove(struct kvt_index *idx, struct kvt_block *b)
{
	size_t hole = probe(idx, b->ns, b->tenant, b->key), i = hole;

	if (entry_block(idx->slots[hole]) != b)
		return;
	/* Move back each later entry of the cluster whose home is not
	 * between the hole and itself, so that no probe meets the hole
	 * before the entry it looks for. */
	for (;;) {
		size_t home;

		i = (i + 1) & idx->mask;
		if (!idx->slots[i])
			break;
		home = home_of(idx, entry_block(idx->slots[i]));
		if (((i - home) & idx->mask) >= ((i - hole) & idx->mask)) {
			idx->slots[hole] = idx->slots[i];
			hole = i;
		}
	}
	idx->slots[hole] = 0;
	idx->count--;
}

size_t kvt_index_count(const struct kvt_index *idx)
{
	return idx->count;
}

void kvt_index_foreach(struct kvt_index *idx,
		       void (*fn)(struct kvt_block *b, void *arg), void *arg)
{
	size_t start = 0, n = idx->mask + 1;

	/* From just past an empty slot, so that no cluster wraps past the
	 * start: removing the block fn is given only moves later entries of
	 * its cluster back into the slot just visited, which is then looked
	 * at again. */
	while (idx->slots[start])
		start++;
	for (size_t k = 1; k <= n;) {
		size_t i = (start + k) & idx->mask;
		uint64_t e = idx->slots[i];

		if (!e) {
			k++;
			continue;
		}
		fn(entry_block(e), arg);
		if (idx->slots[i] == e)
			k++;
	}
}

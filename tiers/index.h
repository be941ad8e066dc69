/*
 * Block index: a hash table of cache blocks keyed by (namespace, 16-byte key).
 *
 * The index only finds blocks; it owns neither their memory nor their slots
 * (the engine does). Keys are outputs of a keyed cryptographic hash, so their
 * first bytes are already uniformly distributed and serve as the hash value.
 * Not thread-safe: the engine calls it under its lock.
 */
#ifndef KVT_INDEX_H
#define KVT_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define KVT_KEY_BYTES 16

enum kvt_block_state {
	KVT_BLOCK_PENDING = 1, /* reserved, being written by its owner */
	KVT_BLOCK_READY = 2,   /* committed, readable */
};

struct kvt_block {
	uint8_t key[KVT_KEY_BYTES];
	uint8_t parent[KVT_KEY_BYTES]; /* all zero: first block of a chain */
	struct kvt_block *hash_next;
	struct kvt_block *lru_prev, *lru_next; /* ready and unpinned blocks only */
	void *owner;                           /* producing session while pending */
	uint32_t ns;
	uint32_t segment, slot;
	uint32_t pins;
	uint8_t state;
	uint8_t indexed; /* 0 once dropped while pinned: freed at the last unpin */
};

struct kvt_index;

struct kvt_index *kvt_index_create(void);
void kvt_index_destroy(struct kvt_index *idx);

/* The block of (ns, key), or NULL. */
struct kvt_block *kvt_index_find(const struct kvt_index *idx, uint32_t ns,
				 const uint8_t key[KVT_KEY_BYTES]);

/* Adds b (its key and ns set). 0, -EEXIST if the key is there, -ENOMEM. */
int kvt_index_insert(struct kvt_index *idx, struct kvt_block *b);

/* Removes b, which must be in the index. */
void kvt_index_remove(struct kvt_index *idx, struct kvt_block *b);

size_t kvt_index_count(const struct kvt_index *idx);

/* Calls fn for every block; fn may remove the block it is given. */
void kvt_index_foreach(struct kvt_index *idx,
		       void (*fn)(struct kvt_block *b, void *arg), void *arg);

#endif

/*
 * Block index: a hash table of cache blocks keyed by (namespace, tenant,
 * 16-byte key).
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

struct kvt_waiter;

/*
 * One cached block: 96 bytes, the bulk of the daemon's metadata (BENCHMARKS.md
 * measures it). The engine and the policy own the fields; the index reads
 * key, ns and tenant.
 */
struct kvt_block {
	uint8_t key[KVT_KEY_BYTES];
	/* Keeps the block at 96 bytes: in 2 MiB chunks a block then starts 0
	 * or 32 bytes into a cache line and never spans three lines. */
	uint64_t unused;
	/* PENDING: the producer's list. READY: the policy's class list, while
	 * the block is an eviction candidate (on_list). */
	struct kvt_block *prev, *next;
	/* The resident block this one chains from; it counts us in children
	 * and outlives us (a dropped parent stays as a husk until then). */
	struct kvt_block *parent;
	union {
		struct {
			void *owner;               /* producing session */
			struct kvt_waiter *waiters; /* readers waiting for it */
		} pending;
		struct {
			uint64_t atime; /* READY: last use, engine clock */
			/* has_disk: its nvme record (a kvt_nvme_loc) */
			uint32_t disk_region, disk_slot;
		};
	} u;
	uint16_t ns, tenant;
	uint32_t segment, slot;
	uint32_t pins;
	uint32_t children; /* resident blocks whose parent this is */
	uint32_t heap_pos; /* 1-based slot in the retention heap; 0: none */
	uint8_t priority;  /* retention priority, 0..100 */
	uint8_t state;
	uint8_t indexed : 1; /* findable; 0 once dropped or evicted */
	uint8_t has_slot : 1;  /* holds a host slot */
	uint8_t on_list : 1;
	uint8_t has_disk : 1;  /* READY: a copy on nvme (u.disk_*) */
	uint8_t demoting : 1;  /* being written to nvme */
	uint8_t promoting : 1; /* host slot being read back from nvme */
	uint8_t has_hbm : 1;     /* a copy in an hbm pool (hbm.h knows where) */
	uint8_t hbm_loading : 1; /* that copy is being made */
	uint8_t has_remote : 1;  /* READY: a record in the remote store */
	uint8_t remote_saving : 1; /* that record is being written */
	/* Children that hold a host slot: leaf-first eviction in the host
	 * tier looks at these, not at children kept on nvme only. */
	uint32_t host_children;
};

_Static_assert(sizeof(struct kvt_block) == 96,
	       "struct kvt_block is the daemon's bulk metadata: keep it at 96 bytes");

struct kvt_index;

struct kvt_index *kvt_index_create(void);
void kvt_index_destroy(struct kvt_index *idx);

/* The block of (ns, tenant, key), or NULL. */
struct kvt_block *kvt_index_find(const struct kvt_index *idx, uint32_t ns,
				 uint32_t tenant,
				 const uint8_t key[KVT_KEY_BYTES]);

/*
 * A batch of finds overlaps its cache misses: prefetch a key's slot
 * (kvt_index_prefetch), later the block it leads to, both of its cache
 * lines (kvt_index_prefetch_block: it reads the slot, which the first call
 * brought in), later find. The block pass took a 64-key Lookup at 10M
 * blocks from 13.2-13.5 to 10.7-10.8 us, runs alternated with the slot
 * pass alone.
 */
void kvt_index_prefetch(const struct kvt_index *idx, uint32_t ns,
			uint32_t tenant, const uint8_t key[KVT_KEY_BYTES]);

void kvt_index_prefetch_block(const struct kvt_index *idx, uint32_t ns,
			      uint32_t tenant, const uint8_t key[KVT_KEY_BYTES]);

/* Adds b (its key, ns and tenant set). 0, -EEXIST if the key is there,
 * -ENOMEM. */
int kvt_index_insert(struct kvt_index *idx, struct kvt_block *b);

/* Removes b, which must be in the index. */
void kvt_index_remove(struct kvt_index *idx, struct kvt_block *b);

size_t kvt_index_count(const struct kvt_index *idx);

/* Calls fn for every block; fn may remove the block it is given, and no
 * other. */
void kvt_index_foreach(struct kvt_index *idx,
		       void (*fn)(struct kvt_block *b, void *arg), void *arg);

#endif

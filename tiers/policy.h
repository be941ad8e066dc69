/*
 * Eviction policy: which block goes next.
 *
 * Candidates are READY, indexed, unpinned blocks; in leaf-first mode also
 * without resident children, so that a chain is eaten from its leaves and a
 * shared system prompt outlives the conversations hanging off it. Candidates
 * sit in pools, one per (namespace, tenant); a pool has one list per
 * retention priority 0..100, each ordered by last use (head = most recent).
 * A pool's victim is the tail of its lowest non-empty class.
 *
 * A retention priority may come with a deadline, after which the block falls
 * back to its namespace's default; deadlines sit in a min-heap.
 *
 * Not thread-safe: the engine calls it under its lock.
 */
#ifndef KVT_POLICY_H
#define KVT_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "index.h"

#define KVT_PRIORITY_MAX 100

enum kvt_eviction {
	KVT_EVICT_LEAF_FIRST = 0, /* leaves first, then priority, then LRU */
	KVT_EVICT_LRU = 1,        /* plain LRU: ignores children and priority */
};

struct kvt_policy;

struct kvt_policy *kvt_policy_create(enum kvt_eviction mode, uint32_t max_ns);
void kvt_policy_destroy(struct kvt_policy *p);

/* Makes sure the pool of (ns, tenant) exists, so that update cannot fail. */
int kvt_policy_prepare(struct kvt_policy *p, uint32_t ns, uint32_t tenant);

/*
 * Puts b on its pool's lists, or takes it off, to match whether it is a
 * candidate now. Call after any change of state, pins, children or index.
 */
void kvt_policy_update(struct kvt_policy *p, struct kvt_block *b);

/* Records a use of b at time now. */
void kvt_policy_touch(struct kvt_policy *p, struct kvt_block *b, uint64_t now);

/*
 * Starts loading what touching b will write: its neighbours on its list.
 * In a large cache they are random blocks, two cache misses per touch that
 * a batch of touches can overlap by calling this a few blocks ahead.
 */
static inline void kvt_policy_prefetch_touch(const struct kvt_block *b)
{
	if (b->on_list) {
		__builtin_prefetch(b->prev, 1);
		__builtin_prefetch(b->next, 1);
	}
}

/* Takes b off the lists and the heap: it is going away. */
void kvt_policy_forget(struct kvt_policy *p, struct kvt_block *b);

/*
 * Sets b's priority; until (engine clock) is when it falls back, 0 for
 * never. -ENOMEM when the deadline could not be recorded (priority set).
 */
int kvt_policy_set_priority(struct kvt_policy *p, struct kvt_block *b,
			    uint8_t priority, uint64_t until);

/* A block whose priority deadline is at or before now, or NULL. */
struct kvt_block *kvt_policy_expired_priority(struct kvt_policy *p,
					      uint64_t now);
/* Earliest priority deadline, or UINT64_MAX. */
uint64_t kvt_policy_next_deadline(const struct kvt_policy *p);

/*
 * The best victim of namespace ns among pools whose tenant eligible()
 * accepts (eligible NULL: all), or NULL.
 */
struct kvt_block *kvt_policy_victim(struct kvt_policy *p, uint32_t ns,
				    bool (*eligible)(void *arg, uint32_t tenant),
				    void *arg);

/* A candidate of ns last used before `before`, or NULL. */
struct kvt_block *kvt_policy_idle(struct kvt_policy *p, uint32_t ns,
				  uint64_t before);

#endif

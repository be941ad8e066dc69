/*
 * Pools are found by a short walk of their namespace's pool list: a
 * namespace has one pool per tenant that ever wrote to it, a handful.
 *
 * A block that becomes a candidate long after its last use (a parent whose
 * last child just left) is inserted by its last-use time, walking from the
 * tail; the walk is bounded, which at worst places it a little early.
 */
#include "policy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block_list.h"

#define CLASSES (KVT_PRIORITY_MAX + 1)
#define INSERT_WALK_MAX 64

struct pool {
	struct pool *next;
	uint32_t tenant;
	uint64_t nonempty[2]; /* bit c: cls[c] has blocks */
	struct kvt_block_list cls[CLASSES];
};

struct heap_entry {
	uint64_t until;
	struct kvt_block *b;
};

struct kvt_policy {
	enum kvt_eviction mode;
	uint32_t max_ns;
	struct pool **pools; /* per namespace: list of pools */
	struct heap_entry *heap;
	uint32_t heap_len, heap_cap;
};

struct kvt_policy *kvt_policy_create(enum kvt_eviction mode, uint32_t max_ns)
{
	struct kvt_policy *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->mode = mode;
	p->max_ns = max_ns;
	p->pools = calloc(max_ns ? max_ns : 1, sizeof(*p->pools));
	if (!p->pools) {
		free(p);
		return NULL;
	}
	return p;
}

void kvt_policy_destroy(struct kvt_policy *p)
{
	if (!p)
		return;
	for (uint32_t i = 0; i < p->max_ns; i++) {
		while (p->pools[i]) {
			struct pool *next = p->pools[i]->next;

			free(p->pools[i]);
			p->pools[i] = next;
		}
	}
	free(p->pools);
	free(p->heap);
	free(p);
}

static struct pool *pool_find(const struct kvt_policy *p, uint32_t ns,
			      uint32_t tenant)
{
	struct pool *pl = p->pools[ns];

	while (pl && pl->tenant != tenant)
		pl = pl->next;
	return pl;
}

int kvt_policy_prepare(struct kvt_policy *p, uint32_t ns, uint32_t tenant)
{
	struct pool *pl;

	if (pool_find(p, ns, tenant))
		return 0;
	pl = calloc(1, sizeof(*pl));
	if (!pl)
		return -ENOMEM;
	pl->tenant = tenant;
	pl->next = p->pools[ns];
	p->pools[ns] = pl;
	return 0;
}

static bool is_candidate(const struct kvt_policy *p, const struct kvt_block *b)
{
	return b->state == KVT_BLOCK_READY && b->indexed && b->has_slot &&
	       b->pins == 0 && (p->mode == KVT_EVICT_LRU || b->host_children == 0);
}

static unsigned class_of(const struct kvt_policy *p, const struct kvt_block *b)
{
	return p->mode == KVT_EVICT_LRU ? 0 : b->priority;
}

static void unlink_block(struct kvt_policy *p, struct kvt_block *b)
{
	struct pool *pl = pool_find(p, b->ns, b->tenant);
	unsigned c = class_of(p, b);
	struct kvt_block_list *l = &pl->cls[c];

	kvt_block_list_unlink(l, b);
	b->on_list = 0;
	if (!l->head)
		pl->nonempty[c / 64] &= ~(1ull << (c % 64));
}

static void link_block(struct kvt_policy *p, struct kvt_block *b)
{
	struct pool *pl = pool_find(p, b->ns, b->tenant);
	unsigned c = class_of(p, b);
	struct kvt_block_list *l = &pl->cls[c];
	struct kvt_block *after = l->tail;

	if (!l->head || b->u.atime >= l->head->u.atime) {
		after = NULL;
	} else {
		/* Older than the head: find its place from the tail. */
		for (int i = 0; after && after->u.atime < b->u.atime &&
				i < INSERT_WALK_MAX; i++)
			after = after->prev;
	}
	kvt_block_list_insert(l, after, b);
	b->on_list = 1;
	pl->nonempty[c / 64] |= 1ull << (c % 64);
}

void kvt_policy_update(struct kvt_policy *p, struct kvt_block *b)
{
	bool want = is_candidate(p, b);

	if (b->on_list && !want)
		unlink_block(p, b);
	else if (!b->on_list && want)
		link_block(p, b);
}

void kvt_policy_touch(struct kvt_policy *p, struct kvt_block *b, uint64_t now)
{
	if (b->state != KVT_BLOCK_READY)
		return;
	b->u.atime = now;
	if (b->on_list) {
		unlink_block(p, b);
		link_block(p, b);
	}
}

/* ---- retention deadlines: a binary min-heap on until ---- */

static void heap_place(struct kvt_policy *p, uint32_t i, struct heap_entry e)
{
	p->heap[i] = e;
	e.b->heap_pos = i + 1;
}

static void heap_sift_up(struct kvt_policy *p, uint32_t i)
{
	struct heap_entry e = p->heap[i];

	while (i > 0 && p->heap[(i - 1) / 2].until > e.until) {
		heap_place(p, i, p->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_place(p, i, e);
}

static void heap_sift_down(struct kvt_policy *p, uint32_t i)
{
	struct heap_entry e = p->heap[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= p->heap_len)
			break;
		if (c + 1 < p->heap_len && p->heap[c + 1].until < p->heap[c].until)
			c++;
		if (p->heap[c].until >= e.until)
			break;
		heap_place(p, i, p->heap[c]);
		i = c;
	}
	heap_place(p, i, e);
}

static void heap_remove(struct kvt_policy *p, struct kvt_block *b)
{
	uint32_t i = b->heap_pos - 1;

	b->heap_pos = 0;
	if (i == --p->heap_len)
		return;
	heap_place(p, i, p->heap[p->heap_len]);
	heap_sift_down(p, i);
	heap_sift_up(p, p->heap[i].b->heap_pos - 1);
}

static int heap_set(struct kvt_policy *p, struct kvt_block *b, uint64_t until)
{
	if (b->heap_pos) {
		p->heap[b->heap_pos - 1].until = until;
		heap_sift_down(p, b->heap_pos - 1);
		heap_sift_up(p, b->heap_pos - 1);
		return 0;
	}
	if (p->heap_len == p->heap_cap) {
		uint32_t cap = p->heap_cap ? p->heap_cap * 2 : 256;
		struct heap_entry *h = realloc(p->heap, sizeof(*h) * cap);

		if (!h)
			return -ENOMEM;
		p->heap = h;
		p->heap_cap = cap;
	}
	p->heap[p->heap_len] = (struct heap_entry){ until, b };
	b->heap_pos = ++p->heap_len;
	heap_sift_up(p, p->heap_len - 1);
	return 0;
}

void kvt_policy_forget(struct kvt_policy *p, struct kvt_block *b)
{
	if (b->on_list)
		unlink_block(p, b);
	if (b->heap_pos)
		heap_remove(p, b);
}

int kvt_policy_set_priority(struct kvt_policy *p, struct kvt_block *b,
			    uint8_t priority, uint64_t until)
{
	bool listed = b->on_list;

	if (listed)
		unlink_block(p, b);
	b->priority = priority > KVT_PRIORITY_MAX ? KVT_PRIORITY_MAX : priority;
	if (listed)
		link_block(p, b);
	if (until == 0) {
		if (b->heap_pos)
			heap_remove(p, b);
		return 0;
	}
	return heap_set(p, b, until);
}

struct kvt_block *kvt_policy_expired_priority(struct kvt_policy *p,
					      uint64_t now)
{
	struct kvt_block *b;

	if (p->heap_len == 0 || p->heap[0].until > now)
		return NULL;
	b = p->heap[0].b;
	heap_remove(p, b);
	return b;
}

uint64_t kvt_policy_next_deadline(const struct kvt_policy *p)
{
	return p->heap_len ? p->heap[0].until : UINT64_MAX;
}

/* ---- victims ---- */

static struct kvt_block *pool_tail(const struct pool *pl)
{
	for (unsigned w = 0; w < 2; w++)
		if (pl->nonempty[w])
			return pl->cls[w * 64 + (unsigned)__builtin_ctzll(pl->nonempty[w])].tail;
	return NULL;
}

struct kvt_block *kvt_policy_victim(struct kvt_policy *p, uint32_t ns,
				    bool (*eligible)(void *arg, uint32_t tenant),
				    void *arg)
{
	struct kvt_block *best = NULL;

	for (struct pool *pl = p->pools[ns]; pl; pl = pl->next) {
		struct kvt_block *b;

		if (eligible && !eligible(arg, pl->tenant))
			continue;
		b = pool_tail(pl);
		if (b && (!best || class_of(p, b) < class_of(p, best) ||
			  (class_of(p, b) == class_of(p, best) &&
			   b->u.atime < best->u.atime)))
			best = b;
	}
	return best;
}

struct kvt_block *kvt_policy_idle(struct kvt_policy *p, uint32_t ns,
				  uint64_t before)
{
	for (struct pool *pl = p->pools[ns]; pl; pl = pl->next)
		for (unsigned c = 0; c < CLASSES; c++)
			if (pl->cls[c].tail && pl->cls[c].tail->u.atime < before)
				return pl->cls[c].tail;
	return NULL;
}

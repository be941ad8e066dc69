/* The hbm tier's pools, their slots and the copies they hold; see hbm.h. */
#include "hbm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slots.h"

#define SAMPLE 16 /* copies looked at to pick the one to drop */

/* Where a block's copy is: the engine's block has only two bits for hbm. */
struct copy {
	struct kvt_block *b; /* NULL: an empty entry */
	uint32_t dev, segment, slot;
	uint64_t stride;
};

struct pool {
	struct kvt_hbm_pool dev;
	struct kvt_slots *slots;
	uint32_t hand; /* segment the next eviction sample starts at */
};

struct kvt_hbm {
	struct kvt_hbm_ops ops;
	uint32_t n;
	struct pool pools[KVT_HBM_DEVICES_MAX];
	struct copy *map; /* open addressing, linear probing */
	size_t cap, count;
	struct kvt_hbm_stats st;
};

/* ---- block -> copy map ---- */

static size_t home(const struct kvt_hbm *h, const struct kvt_block *b)
{
	return (size_t)(((uintptr_t)b >> 4) * 0x9e3779b97f4a7c15ull) & (h->cap - 1);
}

static struct copy *map_find(const struct kvt_hbm *h, const struct kvt_block *b)
{
	for (size_t i = home(h, b);; i = (i + 1) & (h->cap - 1)) {
		if (h->map[i].b == b)
			return &h->map[i];
		if (!h->map[i].b)
			return NULL;
	}
}

static int map_put(struct kvt_hbm *h, const struct copy *c)
{
	if ((h->count + 1) * 2 > h->cap) {
		struct copy *old = h->map;
		size_t oldcap = h->cap;

		h->map = calloc(oldcap * 2, sizeof(*h->map));
		if (!h->map) {
			h->map = old;
			return -ENOMEM;
		}
		h->cap = oldcap * 2;
		h->count = 0;
		for (size_t i = 0; i < oldcap; i++)
			if (old[i].b)
				map_put(h, &old[i]);
		free(old);
	}
	size_t i = home(h, c->b);
	while (h->map[i].b)
		i = (i + 1) & (h->cap - 1);
	h->map[i] = *c;
	h->count++;
	return 0;
}

/* Removes *c, shifting back the entries its slot kept from their home. */
static void map_del(struct kvt_hbm *h, struct copy *c)
{
	size_t hole = (size_t)(c - h->map);

	for (size_t i = (hole + 1) & (h->cap - 1); h->map[i].b;
	     i = (i + 1) & (h->cap - 1)) {
		size_t want = home(h, h->map[i].b);

		/* Moves back when its home is not in (hole, i]. */
		if (((i - want) & (h->cap - 1)) >= ((i - hole) & (h->cap - 1))) {
			h->map[hole] = h->map[i];
			hole = i;
		}
	}
	h->map[hole].b = NULL;
	h->count--;
}

/* ---- pools ---- */

int kvt_hbm_create(const struct kvt_hbm_ops *ops, const int *devices,
		   uint32_t n, uint64_t bytes, uint64_t segment_bytes,
		   uint32_t max_namespaces, struct kvt_hbm **out, char *err,
		   size_t errlen)
{
	struct kvt_hbm *h;

	if (n == 0 || n > KVT_HBM_DEVICES_MAX) {
		snprintf(err, errlen, "hbm tier: %u devices (1..%d)", n, KVT_HBM_DEVICES_MAX);
		return -EINVAL;
	}
	if (bytes < segment_bytes) {
		snprintf(err, errlen, "hbm tier: size %llu is smaller than one segment (%llu)",
			 (unsigned long long)bytes, (unsigned long long)segment_bytes);
		return -EINVAL;
	}
	h = calloc(1, sizeof(*h));
	if (!h || !(h->map = calloc(64, sizeof(*h->map)))) {
		free(h);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	h->cap = 64;
	h->ops = *ops;
	for (uint32_t i = 0; i < n; i++) {
		struct pool *p = &h->pools[i];
		uint64_t usable = bytes - bytes % segment_bytes;
		int rc = ops->open(ops->ctx, devices ? devices[i] : -1, usable,
				   &p->dev, err, errlen);

		if (rc < 0) {
			kvt_hbm_destroy(h);
			return rc;
		}
		h->n++;
		p->slots = kvt_slots_create((uint32_t)(usable / segment_bytes),
					    segment_bytes, max_namespaces);
		if (!p->slots) {
			kvt_hbm_destroy(h);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		h->st.capacity_bytes += usable;
	}
	h->st.devices = n;
	*out = h;
	return 0;
}

void kvt_hbm_destroy(struct kvt_hbm *h)
{
	if (!h)
		return;
	/* Closing waits for copies in flight, whose completions still find
	 * every pool's slots. */
	for (uint32_t i = 0; i < h->n; i++)
		h->ops.close(h->ops.ctx, &h->pools[i].dev);
	for (uint32_t i = 0; i < h->n; i++)
		kvt_slots_destroy(h->pools[i].slots);
	free(h->map);
	free(h);
}

const struct kvt_hbm_ops *kvt_hbm_ops(const struct kvt_hbm *h)
{
	return &h->ops;
}

uint32_t kvt_hbm_devices(const struct kvt_hbm *h)
{
	return h->n;
}

const struct kvt_hbm_pool *kvt_hbm_pool(const struct kvt_hbm *h, uint32_t i)
{
	return &h->pools[i].dev;
}

int kvt_hbm_find(const struct kvt_hbm *h, const uint8_t uuid[KVT_GPU_UUID_BYTES])
{
	for (uint32_t i = 0; i < h->n; i++)
		if (memcmp(h->pools[i].dev.uuid, uuid, KVT_GPU_UUID_BYTES) == 0)
			return (int)i;
	return -1;
}

bool kvt_hbm_hit(struct kvt_hbm *h, const struct kvt_block *b, uint32_t dev,
		 uint64_t page_bytes, uint64_t *offset)
{
	const struct copy *c;

	if (!b->has_hbm || !(c = map_find(h, b)) || c->dev != dev)
		return false;
	*offset = kvt_slots_offset(h->pools[dev].slots, c->segment, c->slot);
	h->st.hits_total++;
	h->st.out_bytes_total += page_bytes;
	return true;
}

static void copy_free(struct kvt_hbm *h, struct kvt_block *b, struct copy *c)
{
	struct kvt_slots *slots = h->pools[c->dev].slots;

	kvt_slots_set_user(slots, c->segment, c->slot, NULL);
	kvt_slots_free(slots, c->segment, c->slot);
	if (b->has_hbm) {
		h->st.blocks--;
		h->st.used_bytes -= c->stride;
		b->has_hbm = 0;
	}
	map_del(h, c);
}

/*
 * Drops the least recently used of SAMPLE copies of namespace ns in pool
 * dev that nobody has pinned (a pinned block's reader may be copying from
 * it). false: none found.
 */
static bool evict_one(struct kvt_hbm *h, uint32_t dev, uint32_t ns)
{
	struct pool *p = &h->pools[dev];
	uint32_t nseg = kvt_slots_segments(p->slots), seen = 0, start = p->hand;
	struct kvt_block *victim = NULL;

	for (uint32_t k = 0; k < nseg && seen < SAMPLE; k++) {
		uint32_t g = (start + k) % nseg;

		if (kvt_slots_segment_owner(p->slots, g) != ns)
			continue;
		for (uint32_t s = 0; s < kvt_slots_segment_slots(p->slots, g); s++) {
			struct kvt_block *b = kvt_slots_user(p->slots, g, s);

			if (!b || !b->has_hbm || b->pins)
				continue;
			if (!victim || b->u.atime < victim->u.atime)
				victim = b;
			seen++;
		}
		p->hand = (g + 1) % nseg;
	}
	if (!victim)
		return false;
	copy_free(h, victim, map_find(h, victim));
	h->st.evictions_total++;
	return true;
}

int kvt_hbm_load(struct kvt_hbm *h, struct kvt_block *b, uint32_t dev,
		 uint64_t stride, const void *src, uint64_t len,
		 kvt_hbm_done done, void *arg)
{
	struct pool *p = &h->pools[dev];
	struct copy c = { .b = b, .dev = dev, .stride = stride };
	bool retagged; /* pools are the daemon's own: tags do not matter */
	int rc;

	if (b->has_hbm || b->hbm_loading)
		return -EBUSY;
	rc = kvt_slots_alloc(p->slots, b->ns, stride, 0, &c.segment, &c.slot,
			     &retagged);
	if (rc == -ENOSPC && evict_one(h, dev, b->ns))
		rc = kvt_slots_alloc(p->slots, b->ns, stride, 0, &c.segment, &c.slot,
			     &retagged);
	if (rc == -ENOSPC)
		h->st.loads_skipped_total++;
	if (rc < 0)
		return rc;
	if ((rc = map_put(h, &c)) < 0) {
		kvt_slots_free(p->slots, c.segment, c.slot);
		return rc;
	}
	kvt_slots_set_user(p->slots, c.segment, c.slot, b);
	rc = h->ops.copy_in(h->ops.ctx, &p->dev,
			    kvt_slots_offset(p->slots, c.segment, c.slot), src,
			    len, done, arg);
	if (rc < 0) {
		h->st.load_failures_total++;
		copy_free(h, b, map_find(h, b));
		return rc;
	}
	b->hbm_loading = 1;
	h->st.loads_total++;
	h->st.in_bytes_total += len;
	return 0;
}

void kvt_hbm_loaded(struct kvt_hbm *h, struct kvt_block *b, int rc, bool keep)
{
	struct copy *c = map_find(h, b);

	b->hbm_loading = 0;
	if (rc < 0)
		h->st.load_failures_total++;
	if (rc == 0 && keep) {
		b->has_hbm = 1;
		h->st.blocks++;
		h->st.used_bytes += c->stride;
		return;
	}
	copy_free(h, b, c);
}

void kvt_hbm_drop(struct kvt_hbm *h, struct kvt_block *b)
{
	if (!b->has_hbm)
		return;
	copy_free(h, b, map_find(h, b));
	h->st.drops_total++;
}

void kvt_hbm_stats(const struct kvt_hbm *h, struct kvt_hbm_stats *st)
{
	*st = h->st;
}

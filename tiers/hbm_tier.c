/*
 * The hbm tier behind struct kvt_tier_ops (tier.h): copies of hot host
 * blocks in a pool on each GPU (hbm.c). When a worker whose GPU has a pool
 * acquires a block, it is located there if it has a copy, and a copy is
 * started if not; a copy goes with its block's host slot. The host tier's
 * segments are registered with the device for the copies' DMA.
 *
 * Every op is called with the engine lock held; a copy completes on the
 * device's thread, which takes the lock (hbm_loaded).
 */
#include <errno.h>
#include <stdlib.h>

#include "engine_int.h"
#include "hbm.h"

struct hbm_tier {
	struct kvt_lower_tier base;
	struct kvt_hbm *hbm;
	/* Per host segment: the base it was registered at, or NULL. A
	 * segment that cannot be registered is not copied from. */
	void **registered;
};

static struct hbm_tier *hbm_of(struct kvt_lower_tier *t)
{
	return (struct hbm_tier *)t;
}

static void hbm_segment(struct kvt_lower_tier *lt, uint32_t seg, void *base)
{
	struct hbm_tier *t = hbm_of(lt);
	const struct kvt_hbm_ops *ops = lt->e->cfg.hbm.ops;

	if (t->registered[seg] == base)
		return;
	if (t->registered[seg]) {
		ops->host_unregister(ops->ctx, t->registered[seg]);
		t->registered[seg] = NULL;
	}
	if (base && ops->host_register(ops->ctx, base, lt->e->cfg.segment_bytes) == 0)
		t->registered[seg] = base;
}

struct hbm_job {
	struct kvt_engine *e;
	struct hbm_tier *t;
	struct kvt_block *b;
};

/* A copy into hbm is done (on the device's thread). */
static void hbm_loaded(void *arg, int rc)
{
	struct hbm_job *j = arg;
	struct kvt_engine *e = j->e;
	struct kvt_block *b = j->b;

	pthread_mutex_lock(&e->lock);
	/* A block dropped meanwhile keeps no copy. */
	kvt_hbm_loaded(j->t->hbm, b, rc, b->indexed && b->has_slot);
	io_unpin(e, b);
	pthread_mutex_unlock(&e->lock);
	free(j);
}

/* Starts copying host block b into pool `pool`, pinned until done. */
static void hbm_load(struct hbm_tier *t, struct kvt_block *b, uint32_t pool)
{
	struct kvt_engine *e = t->base.e;
	const struct namespace *n = &e->ns[b->ns];
	struct hbm_job *j;

	if (b->has_hbm || b->hbm_loading || !b->has_slot || b->promoting ||
	    !t->registered[b->segment] || !(j = malloc(sizeof(*j))))
		return;
	*j = (struct hbm_job){ e, t, b };
	if (kvt_hbm_load(t->hbm, b, pool, n->stride,
			 kvt_host_ptr(e->host, b->segment, slot_offset(e, b)),
			 n->page_bytes, hbm_loaded, j) < 0) {
		free(j);
		return;
	}
	block_pin(e, b);
}

static bool hbm_locate(struct kvt_lower_tier *lt, struct kvt_block *b,
		       uint32_t pool, struct kvt_location *loc)
{
	struct hbm_tier *t = hbm_of(lt);

	if (kvt_hbm_hit(t->hbm, b, pool, lt->e->ns[b->ns].page_bytes,
			&loc->offset)) {
		loc->tier = KVT_TIER_HBM;
		loc->segment = pool;
		return true;
	}
	hbm_load(t, b, pool);
	return false;
}

static void hbm_host_leave(struct kvt_lower_tier *lt, struct kvt_block *b)
{
	if (b->has_hbm)
		kvt_hbm_drop(hbm_of(lt)->hbm, b);
}

static void hbm_stats(struct kvt_lower_tier *lt, struct kvt_engine_stats *st)
{
	st->hbm_enabled = true;
	kvt_hbm_stats(hbm_of(lt)->hbm, &st->hbm);
}

/* Closes the pools (copies in flight complete first) and then unregisters
 * the host tier. */
static void hbm_destroy(struct kvt_lower_tier *lt)
{
	struct hbm_tier *t = hbm_of(lt);

	kvt_hbm_destroy(t->hbm);
	pthread_mutex_lock(&lt->e->lock);
	for (uint32_t i = 0; i < KVT_HOST_SEGMENTS_MAX; i++)
		hbm_segment(lt, i, NULL);
	pthread_mutex_unlock(&lt->e->lock);
	free(t->registered);
	free(t);
}

static const struct kvt_tier_ops hbm_tier_ops = {
	.name = "hbm",
	.tier = KVT_TIER_HBM,
	.host_leave = hbm_host_leave,
	.segment = hbm_segment,
	.locate = hbm_locate,
	.stats = hbm_stats,
	.destroy = hbm_destroy,
};

/* Opens the pools and registers the host tier with them. */
struct kvt_lower_tier *kvt_hbm_tier_open(struct kvt_engine *e,
					 struct kvt_err *err)
{
	const struct kvt_engine_hbm *c = &e->cfg.hbm;
	struct hbm_tier *t = calloc(1, sizeof(*t));

	if (t)
		t->registered = calloc(KVT_HOST_SEGMENTS_MAX, sizeof(*t->registered));
	if (!t || !t->registered) {
		free(t);
		kvt_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	t->base.ops = &hbm_tier_ops;
	t->base.e = e;
	if (kvt_hbm_create(c->ops, c->devices, c->ndevices, c->bytes,
			   e->cfg.segment_bytes, e->cfg.max_namespaces, &t->hbm,
			   err->msg, sizeof(err->msg)) < 0) {
		free(t->registered);
		free(t);
		return NULL;
	}
	for (uint32_t i = 0; i < kvt_slots_active(e->slots); i++)
		hbm_segment(&t->base, i, e->segments[i]);
	return &t->base;
}

/* ---- the engine calls that are the hbm tier's ---- */

static struct hbm_tier *hbm_in(const struct kvt_engine *e)
{
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops == &hbm_tier_ops)
			return hbm_of(e->lower[i]);
	return NULL;
}

int kvt_engine_session_gpu(struct kvt_engine *e, struct kvt_session *s,
			   const uint8_t uuid[KVT_GPU_UUID_BYTES])
{
	struct hbm_tier *t;

	pthread_mutex_lock(&e->lock);
	t = hbm_in(e);
	s->gpu_pool = t ? kvt_hbm_find(t->hbm, uuid) : -1;
	pthread_mutex_unlock(&e->lock);
	return s->gpu_pool;
}

uint32_t kvt_engine_hbm_pools(const struct kvt_engine *e)
{
	const struct hbm_tier *t = hbm_in(e);

	return t ? kvt_hbm_devices(t->hbm) : 0;
}

const struct kvt_hbm_pool *kvt_engine_hbm_pool(const struct kvt_engine *e,
					       uint32_t i)
{
	const struct hbm_tier *t = hbm_in(e);

	return t ? kvt_hbm_pool(t->hbm, i) : NULL;
}

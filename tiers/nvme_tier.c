/*
 * The nvme tier behind struct kvt_tier_ops (tier.h): committed blocks are
 * written behind to nvme.c's regions, a block evicted from host stays
 * cached there, and an Acquire reads it back (promotion) with its checksum
 * verified. At start it brings back the namespaces and blocks the regions
 * hold (recovery).
 *
 * nvme.c's mover reports with the engine lock held (it is handed that
 * mutex), so its callbacks here act on blocks directly; every op is called
 * with the lock held as well.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "index.h"
#include "nvme.h"
#include "policy.h"

/* A recovered block whose parent is linked once every record is in. */
struct recovered {
	struct kvt_block *b;
	uint8_t parent[KVT_KEY_BYTES];
};

struct nvme_tier {
	struct kvt_lower_tier base;
	struct kvt_nvme *nv;
	uint64_t demoting_bytes; /* host bytes pinned until written */
	struct recovered *recovered;
	size_t nrecovered, recovered_cap;
};

static struct nvme_tier *nvme_of(struct kvt_lower_tier *t)
{
	return (struct nvme_tier *)t;
}

static struct kvt_nvme_loc disk_loc(const struct kvt_block *b)
{
	return (struct kvt_nvme_loc){ b->u.disk_region, b->u.disk_slot };
}

static void disk_set(struct kvt_engine *e, struct kvt_block *b,
		     struct kvt_nvme_loc loc)
{
	b->u.disk_region = loc.region;
	b->u.disk_slot = loc.slot;
	b->has_disk = 1;
	e->ns[b->ns].nvme_blocks++;
	e->st.nvme_blocks++;
}

/* b no longer has its nvme copy; forget: drop the record too. */
static void disk_clear(struct nvme_tier *t, struct kvt_block *b, bool forget)
{
	struct kvt_engine *e = t->base.e;

	if (!b->has_disk)
		return;
	if (forget)
		kvt_nvme_forget(t->nv, disk_loc(b));
	b->has_disk = 0;
	e->ns[b->ns].nvme_blocks--;
	e->st.nvme_blocks--;
}

/* ---- the ops ---- */

/*
 * Queues b for writing, pinned until written, so that by the time the host
 * tier evicts it its copy is (usually) there.
 */
static bool nvme_save(struct kvt_lower_tier *lt, struct kvt_block *b)
{
	struct nvme_tier *t = nvme_of(lt);
	struct kvt_engine *e = lt->e;
	const struct tenant *owner = &e->tenants[b->tenant];
	struct kvt_nvme_block blk = { .uid = owner->uid };
	uint64_t stride = e->ns[b->ns].stride;

	if (b->has_disk || b->demoting)
		return b->demoting;
	/* Pinned blocks cannot make room: let the disk hold up at most a
	 * quarter of the host tier, and the rest is not demoted. */
	if (t->demoting_bytes + stride > e->st.host_capacity_bytes / 4) {
		e->st.demotions_skipped_total++;
		return false;
	}
	memcpy(blk.key, b->key, KVT_KEY_BYTES);
	if (b->parent) {
		memcpy(blk.parent, b->parent->key, KVT_KEY_BYTES);
		blk.has_parent = true;
	}
	snprintf(blk.tenant, sizeof(blk.tenant), "%s", owner->name);
	if (kvt_nvme_write(t->nv, b, b->ns, &blk, b->segment,
			   slot_offset(e, b)) < 0) {
		e->st.demotions_skipped_total++;
		return false;
	}
	b->demoting = 1;
	t->demoting_bytes += stride;
	block_pin(e, b);
	return true;
}

static bool nvme_holds(const struct kvt_lower_tier *lt, const struct kvt_block *b)
{
	(void)lt;
	return b->has_disk;
}

static void nvme_forget(struct kvt_lower_tier *lt, struct kvt_block *b)
{
	disk_clear(nvme_of(lt), b, true);
}

static void nvme_segment(struct kvt_lower_tier *lt, uint32_t seg, void *base)
{
	kvt_nvme_segment(nvme_of(lt)->nv, seg, base);
}

static int nvme_promote(struct kvt_lower_tier *lt, struct kvt_block *b,
			void *job, uint32_t seg, uint64_t offset)
{
	return kvt_nvme_read(nvme_of(lt)->nv, job, disk_loc(b), seg, offset);
}

static void nvme_namespace(struct kvt_lower_tier *lt, uint32_t ns, bool open)
{
	struct kvt_engine *e = lt->e;
	const struct namespace *n = &e->ns[ns];
	struct kvt_nvme_ns d = { .page_bytes = n->page_bytes,
				 .stride = n->stride,
				 .block_tokens = n->block_tokens,
				 .shared = n->shared,
				 .uid = e->tenants[n->tenant].uid };

	if (!open) {
		kvt_nvme_namespace_close(nvme_of(lt)->nv, ns);
		return;
	}
	snprintf(d.name, sizeof(d.name), "%s", n->name);
	snprintf(d.tenant, sizeof(d.tenant), "%s", e->tenants[n->tenant].name);
	kvt_nvme_namespace(nvme_of(lt)->nv, ns, &d);
}

static void nvme_stats(struct kvt_lower_tier *lt, struct kvt_engine_stats *st)
{
	struct kvt_nvme_stats n;

	kvt_nvme_stats(nvme_of(lt)->nv, &n);
	st->nvme_enabled = true;
	st->nvme_fixed_buffers = n.fixed_buffers;
	st->nvme_paths_failed = n.paths_failed;
	st->nvme_capacity_bytes = n.capacity_bytes;
	st->nvme_used_bytes = n.used_bytes;
	st->nvme_write_bytes_total = n.write_bytes_total;
	st->nvme_read_bytes_total = n.read_bytes_total;
	st->nvme_write_errors_total = n.write_errors_total;
	st->nvme_read_errors_total = n.read_errors_total;
	st->nvme_bad_checksum_total = n.bad_checksum_total;
	st->nvme_queued = n.queued;
	st->nvme_inflight = n.inflight;
	st->nvme_recovery_ms = n.recovery_ms;
}

static void nvme_destroy(struct kvt_lower_tier *lt)
{
	struct nvme_tier *t = nvme_of(lt);

	kvt_nvme_close(t->nv); /* writes out what is queued */
	free(t->recovered);
	free(t);
}

static const struct kvt_tier_ops nvme_tier_ops = {
	.name = "nvme",
	.tier = KVT_TIER_NVME,
	.save = nvme_save,
	.holds = nvme_holds,
	.forget = nvme_forget,
	.segment = nvme_segment,
	.promote = nvme_promote,
	.namespace = nvme_namespace,
	.stats = nvme_stats,
	.destroy = nvme_destroy,
};

/* ---- the mover's reports (engine lock held) ---- */

static void nvme_written(void *arg, void *user, int rc, struct kvt_nvme_loc loc)
{
	struct nvme_tier *t = arg;
	struct kvt_engine *e = t->base.e;
	struct kvt_block *b = user;

	b->demoting = 0;
	t->demoting_bytes -= e->ns[b->ns].stride;
	if (rc == 0 && b->indexed) {
		disk_set(e, b, loc);
		e->st.demotions_total++;
	} else if (rc == 0) {
		kvt_nvme_forget(t->nv, loc); /* dropped while being written */
	}
	io_unpin(e, b);
}

static void nvme_read(void *arg, void *user, int rc)
{
	struct nvme_tier *t = arg;

	engine_promoted(t->base.e, user, rc);
}

/* A region is reused: b's record goes. */
static void nvme_reclaimed(void *arg, void *user)
{
	struct nvme_tier *t = arg;
	struct kvt_block *b = user;

	disk_clear(t, b, false);
	if (!b->has_slot)
		t->base.e->st.nvme_evictions_total++;
	block_copy_lost(t->base.e, b);
}

static void nvme_unlocked(void *arg)
{
	struct nvme_tier *t = arg;

	engine_run_io_done(t->base.e);
}

static void nvme_log(void *arg, bool error, const char *msg)
{
	struct nvme_tier *t = arg;

	engine_log(t->base.e, error, msg);
}

/* ---- recovery ---- */

static int recover_ns(void *arg, const struct kvt_nvme_ns *d)
{
	struct nvme_tier *t = arg;
	struct kvt_engine *e = t->base.e;
	struct kvt_err err;
	uint32_t ns, tenant = KVT_TENANT_SHARED;
	bool created;

	if (!ns_name_valid(d->name) || d->page_bytes > e->cfg.segment_bytes ||
	    d->block_tokens == 0 || d->block_tokens > KVT_BLOCK_TOKENS_MAX ||
	    (!d->shared && tenant_locked(e, d->uid, d->tenant, &tenant) < 0) ||
	    ns_open_locked(e, d->name, d->page_bytes, d->block_tokens, tenant,
			   tenant, true, 0, &ns, &created, &err) < 0 ||
	    e->ns[ns].stride != d->stride)
		return -1;
	return (int)ns;
}

static void *recover_record(void *arg, const struct kvt_nvme_record *r)
{
	struct nvme_tier *t = arg;
	struct kvt_engine *e = t->base.e;
	uint32_t tenant = KVT_TENANT_SHARED;
	struct kvt_block *b;

	if (!e->ns[r->ns].shared &&
	    (tenant_locked(e, r->block.uid, r->block.tenant, &tenant) < 0 ||
	     tenant != e->ns[r->ns].tenant))
		return NULL;
	if (kvt_policy_prepare(e->policy, r->ns, tenant) < 0)
		return NULL;
	b = kvt_index_find(e->index, r->ns, tenant, r->block.key);
	if (b) { /* an older record of the same key: this one is newer */
		disk_clear(t, b, true);
		disk_set(e, b, r->loc);
		return b;
	}
	if (t->nrecovered == t->recovered_cap) {
		size_t cap = t->recovered_cap ? 2 * t->recovered_cap : 1024;
		struct recovered *v = realloc(t->recovered, cap * sizeof(*v));

		if (!v)
			return NULL;
		t->recovered = v;
		t->recovered_cap = cap;
	}
	b = block_kept_new(e, r->ns, tenant, r->block.key);
	if (!b)
		return NULL;
	disk_set(e, b, r->loc);
	/* Its own key for a parent means none. */
	t->recovered[t->nrecovered].b = b;
	memcpy(t->recovered[t->nrecovered].parent,
	       r->block.has_parent ? r->block.parent : b->key, KVT_KEY_BYTES);
	t->nrecovered++;
	return b;
}

/* Takes in what the paths hold, and links each chain to its parent. */
static int recover(struct nvme_tier *t)
{
	struct kvt_engine *e = t->base.e;
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = kvt_nvme_recover(t->nv, recover_ns, recover_record, t);
	for (size_t i = 0; i < t->nrecovered; i++) {
		struct kvt_block *b = t->recovered[i].b;
		struct kvt_block *p = kvt_index_find(e->index, b->ns, b->tenant,
						     t->recovered[i].parent);

		if (p && p != b) {
			b->parent = p;
			p->children++;
		}
	}
	free(t->recovered);
	t->recovered = NULL;
	e->st.nvme_recovered_blocks = t->nrecovered;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Opens the paths, takes in what they hold, starts the mover. */
struct kvt_lower_tier *kvt_nvme_tier_open(struct kvt_engine *e,
					  struct kvt_err *err)
{
	const struct kvt_engine_nvme *c = &e->cfg.nvme;
	struct nvme_tier *t = calloc(1, sizeof(*t));
	struct kvt_nvme_config nc = {
		.paths = c->paths, .npaths = c->npaths,
		.path_bytes = c->path_bytes, .region_bytes = c->region_bytes,
		.queue_depth = c->queue_depth, .retry_ns = c->retry,
		.max_namespaces = e->cfg.max_namespaces,
		.segments = e->segments,
		.nsegments = kvt_slots_segments(e->slots),
		.segment_bytes = e->cfg.segment_bytes,
		.lock = &e->lock, .arg = t,
		.ops = { nvme_written, nvme_read, nvme_reclaimed, nvme_unlocked,
			 nvme_log },
	};
	int rc;

	if (!t) {
		kvt_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	t->base.ops = &nvme_tier_ops;
	t->base.e = e;
	if (kvt_nvme_open(&nc, &t->nv, err->msg, sizeof(err->msg)) < 0)
		goto fail;
	if ((rc = recover(t)) < 0) {
		kvt_errf(err, rc, "nvme recovery: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = kvt_nvme_start(t->nv)) < 0) {
		kvt_errf(err, rc, "cannot start the nvme mover thread");
		goto fail;
	}
	return &t->base;
fail:
	kvt_nvme_close(t->nv);
	free(t->recovered);
	free(t);
	return NULL;
}

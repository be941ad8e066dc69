/*
 * The block life cycle and the host tier's room: a block's host slot
 * (taken, freed, its tenant charged), pins, eviction through the policy,
 * reclaiming segments across namespaces, resizing the tier, segments a
 * worker damaged, and what the lower tiers are told of it all (tier.h).
 * Everything here runs under the engine lock (engine_int.h).
 */
#include "engine_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "policy.h"

static bool over_quota(const struct tenant *t, uint64_t extra)
{
	return t->quota && t->used + extra > t->quota;
}

/* ---- blocks ---- */

static void charge(struct kvt_engine *e, struct kvt_block *b, bool add)
{
	uint64_t stride = e->ns[b->ns].stride;

	if (add) {
		e->st.host_used_bytes += stride;
		e->tenants[b->tenant].used += stride;
	} else {
		e->st.host_used_bytes -= stride;
		e->tenants[b->tenant].used -= stride;
	}
}

uint64_t slot_offset(const struct kvt_engine *e,
			    const struct kvt_block *b)
{
	return kvt_slots_offset(e->slots, b->segment, b->slot);
}

/* b takes host slot (seg, slot), which its parent already counts (see
 * block_reserve and promote). */
void host_attach(struct kvt_engine *e, struct kvt_block *b,
			uint32_t seg, uint32_t slot)
{
	b->segment = seg;
	b->slot = slot;
	b->has_slot = 1;
	kvt_slots_set_user(e->slots, seg, slot, b);
	charge(e, b, true);
}

/* Counts (or uncounts) a host slot being taken for a child of parent. */
void host_child(struct kvt_engine *e, struct kvt_block *parent, bool add)
{
	if (!parent)
		return;
	if (add)
		parent->host_children++;
	else
		parent->host_children--;
	kvt_policy_update(e->policy, parent);
}

/* Gives back the memory of a retired segment that has emptied. */
void segment_release(struct kvt_engine *e, uint32_t seg)
{
	tiers_segment(e, seg, NULL);
	kvt_host_release(e->host, seg);
}

/*
 * Segment seg was just carved for another tenant than the one it last
 * held blocks of: if a worker may have mapped it, it gets a new memfd, so
 * that worker cannot see or touch the new tenant's pages. With no memory
 * for that, the carve is undone and the caller finds no slot.
 */
/* Gives segment seg a new memfd (kvt_host_renew) with its io_uring and
 * CUDA registrations redone in step; on failure, those of whatever memory
 * it still has. */
static int segment_renew(struct kvt_engine *e, uint32_t seg, struct kvt_err *why)
{
	int rc;

	tiers_segment(e, seg, NULL);
	rc = kvt_host_renew(e->host, seg, why->msg, sizeof(why->msg));
	if (kvt_host_backed(e->host, seg))
		tiers_segment(e, seg, e->segments[seg]);
	return rc;
}

static int segment_handover(struct kvt_engine *e, uint32_t seg, uint32_t slot)
{
	struct kvt_err why;
	int rc;

	if (!kvt_host_shared(e->host, seg))
		return 0;
	rc = segment_renew(e, seg, &why);
	if (rc == 0) {
		e->st.host_segments_renewed_total++;
		return 0;
	}
	engine_log(e, true, why.msg);
	kvt_slots_free(e->slots, seg, slot);
	/* The old memfd stays, and with it the old tenant's claim. */
	kvt_slots_set_tag(e->slots, seg, KVT_SLOTS_NO_TAG);
	return -ENOSPC;
}

void host_slot_free(struct kvt_engine *e, uint32_t seg, uint32_t slot)
{
	if (kvt_slots_free(e->slots, seg, slot))
		segment_release(e, seg);
}

/* b's host slot is freed; lower tiers hear of it first (hbm drops its
 * copy: it holds copies of host blocks only). */
static void host_detach(struct kvt_engine *e, struct kvt_block *b)
{
	tiers_host_leave(e, b);
	kvt_slots_set_user(e->slots, b->segment, b->slot, NULL);
	host_slot_free(e, b->segment, b->slot);
	charge(e, b, false);
	b->has_slot = 0;
	host_child(e, b->parent, false);
}

/*
 * Frees what b no longer needs: its slot once unindexed and unpinned, its
 * memory once childless as well, and then the same for its parent. Also
 * keeps b's place among eviction candidates up to date.
 */
void block_settle(struct kvt_engine *e, struct kvt_block *b)
{
	for (;;) {
		struct kvt_block *parent;

		kvt_policy_update(e->policy, b);
		if (b->indexed || b->pins)
			return;
		if (b->has_slot)
			host_detach(e, b);
		if (b->children)
			return;
		parent = b->parent;
		ns_block_gone(e, b->ns);
		kvt_block_pool_free(e->blocks, b);
		if (!parent)
			return;
		parent->children--;
		b = parent;
	}
}

/* Takes a READY block out of the index, and off nvme; see block_settle. */
void block_unindex(struct kvt_engine *e, struct kvt_block *b)
{
	kvt_index_remove(e->index, b);
	b->indexed = 0;
	e->ns[b->ns].ready--;
	tiers_forget(e, b);
	kvt_policy_forget(e->policy, b);
	block_settle(e, b);
}

/* Makes room in the host tier: a block that a lower tier keeps stays
 * cached there; any other leaves the cache. */
void block_evict(struct kvt_engine *e, struct kvt_block *b)
{
	kvt_histogram_observe(&e->eviction_age, engine_now_locked(e) - b->u.atime);
	e->ns[b->ns].evictions++;
	e->tenants[b->tenant].evictions++;
	e->st.evictions_total++;
	if (tier_holding(e, b)) {
		e->st.evictions_to_nvme_total++;
		host_detach(e, b);
		kvt_policy_update(e->policy, b);
		return;
	}
	block_unindex(e, b);
}

/* A lease or an I/O holds b in place. */
void block_pin(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->pins++ == 0) {
		e->st.pinned_blocks++;
		kvt_policy_update(e->policy, b);
	}
}

/* The end of an I/O's pin, which is no use of the block. */
void io_unpin(struct kvt_engine *e, struct kvt_block *b)
{
	if (--b->pins > 0)
		return;
	e->st.pinned_blocks--;
	block_settle(e, b);
}

/* A use of b now, for its eviction order and its namespace's. */
void block_touch(struct kvt_engine *e, struct kvt_block *b, uint64_t now)
{
	kvt_policy_touch(e->policy, b, now);
	if (e->ns[b->ns].last_use < now)
		e->ns[b->ns].last_use = now;
}

/* The end of a lease's pin is a use: the block was read just now. */
void block_unpin(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->pins == 1)
		block_touch(e, b, engine_now_locked(e));
	io_unpin(e, b);
}

/* Sets b's retention; ret NULL: the default priority. */
void block_retain(struct kvt_engine *e, struct kvt_block *b,
			 const struct kvt_retention *ret, uint64_t now)
{
	/* Without a heap entry the priority is only kept for good: fine. */
	if (ret)
		(void)kvt_policy_set_priority(e->policy, b, ret->priority,
					      ret->duration ? now + ret->duration : 0);
	else
		(void)kvt_policy_set_priority(e->policy, b,
					      e->cfg.default_priority, 0);
}
/* ---- slots and eviction ---- */

struct eligible_arg {
	struct kvt_engine *e;
	uint32_t tenant;
};

static bool only_tenant(void *arg, uint32_t t)
{
	return t == ((struct eligible_arg *)arg)->tenant;
}

/* Whose blocks may a tenant's write evict: its own, and those of tenants
 * without a quota or above it. */
static bool evictable_by(void *arg, uint32_t t)
{
	struct eligible_arg *a = arg;
	const struct tenant *owner = &a->e->tenants[t];

	return t == a->tenant || owner->quota == 0 || owner->used > owner->quota;
}

/*
 * Evicts every block of a segment carved for another namespace (owner, or
 * any with KVT_SLOTS_FREE_SEGMENT), if all of them are unpinned READY
 * blocks that tenant may evict, of retention priority at most max_priority,
 * so that the segment can be carved anew.
 * This is how a new namespace gets room once older ones have filled the
 * tier.
 */
static bool reclaim_segment(struct kvt_engine *e, uint32_t for_ns,
			    uint32_t tenant, uint32_t only_owner,
			    uint8_t max_priority)
{
	struct eligible_arg ea = { e, tenant };
	uint32_t nseg = kvt_slots_active(e->slots);

	for (uint32_t g = 0; g < nseg; g++) {
		uint32_t owner = kvt_slots_segment_owner(e->slots, g);
		uint32_t nslots = kvt_slots_segment_slots(e->slots, g);
		bool evictable = owner != KVT_SLOTS_FREE_SEGMENT && owner != for_ns &&
				 (only_owner == KVT_SLOTS_FREE_SEGMENT || owner == only_owner);

		for (uint32_t s = 0; evictable && s < nslots; s++) {
			struct kvt_block *b = kvt_slots_user(e->slots, g, s);

			if (b && (b->state != KVT_BLOCK_READY || b->pins ||
				  !b->indexed || !evictable_by(&ea, b->tenant) ||
				  b->priority > max_priority))
				evictable = false;
		}
		if (!evictable)
			continue;
		/* The last eviction returns the segment to the pool: stop there. */
		for (uint32_t s = 0; s < nslots &&
		     kvt_slots_segment_owner(e->slots, g) == owner; s++) {
			struct kvt_block *b = kvt_slots_user(e->slots, g, s);

			if (b)
				block_evict(e, b);
		}
		return true;
	}
	return false;
}

/*
 * Takes a segment from a namespace whose latest use is older than ns's own
 * next victim, and whose blocks retain no higher priority: segments are
 * carved per namespace, so without this a namespace that went quiet would
 * keep its share of the tier while a busy one evicts its own newer blocks
 * (kvtier-bench found rag hitting 13.5% after burst and chat, 55% alone).
 */
static bool reclaim_colder(struct kvt_engine *e, uint32_t ns, uint32_t tenant,
			   const struct kvt_block *victim)
{
	for (uint32_t j = 0; j < e->nns; j++)
		if (j != ns && e->ns[j].ready && e->ns[j].last_use < victim->u.atime &&
		    reclaim_segment(e, ns, tenant, j, victim->priority))
			return true;
	return false;
}

/*
 * Finds a slot for a block of tenant in ns: a free one; else by taking a
 * segment of a namespace gone colder than the policy's victim; else by
 * evicting that victim (the tenant's own first when it is over its quota);
 * else by reclaiming any other namespace's segment.
 */
int host_slot_alloc(struct kvt_engine *e, uint32_t ns, uint32_t tenant,
		      uint32_t *seg, uint32_t *slot)
{
	struct eligible_arg ea = { e, tenant };
	uint64_t stride = e->ns[ns].stride;

	for (;;) {
		bool retagged;
		int rc = kvt_slots_alloc(e->slots, ns, stride, ns_scope(e, ns), seg,
					 slot, &retagged);
		struct kvt_block *victim = NULL;

		if (rc == 0 && retagged)
			rc = segment_handover(e, *seg, *slot);
		if (rc != -ENOSPC)
			return rc;
		if (over_quota(&e->tenants[tenant], stride))
			victim = kvt_policy_victim(e->policy, ns, only_tenant, &ea);
		if (!victim)
			victim = kvt_policy_victim(e->policy, ns, evictable_by, &ea);
		if (victim && reclaim_colder(e, ns, tenant, victim))
			continue;
		if (victim)
			block_evict(e, victim);
		else if (!reclaim_segment(e, ns, tenant, KVT_SLOTS_FREE_SEGMENT,
					  KVT_PRIORITY_MAX))
			return -ENOSPC;
	}
}

/* ---- resizing the host tier ---- */

/*
 * Empties the retired host segments: a block with no nvme copy is demoted
 * first when it can be, any other leaves the host tier. Pinned and pending
 * blocks, and blocks being written, stay until a later sweep. Returns how
 * many retired segments still hold blocks.
 */
uint32_t retire_sweep(struct kvt_engine *e)
{
	uint32_t busy = 0;

	for (uint32_t g = kvt_slots_active(e->slots);
	     g < kvt_slots_segments(e->slots); g++) {
		uint32_t nslots = kvt_slots_segment_slots(e->slots, g);

		for (uint32_t s = 0; s < nslots &&
		     kvt_slots_segment_owner(e->slots, g) != KVT_SLOTS_FREE_SEGMENT; s++) {
			struct kvt_block *b = kvt_slots_user(e->slots, g, s);

			if (!b || b->state != KVT_BLOCK_READY || !b->indexed || b->pins)
				continue;
			if (!tiers_save(e, b))
				block_evict(e, b);
		}
		if (kvt_slots_segment_owner(e->slots, g) != KVT_SLOTS_FREE_SEGMENT)
			busy++;
	}
	return busy;
}

/* ---- host segments a worker punched ---- */

/* Segment g was found damaged: says so once, and it takes no new blocks. */
static void damage_found(struct kvt_engine *e, uint32_t g)
{
	uint32_t tag = kvt_slots_segment_tag(e->slots, g);
	char who[96], msg[384];

	if (tag == KVT_TENANT_SHARED)
		snprintf(who, sizeof(who), "a tenant writing a shared namespace");
	else if (tag < e->ntenants)
		snprintf(who, sizeof(who), "tenant %s (uid %u)", e->tenants[tag].name,
			 e->tenants[tag].uid);
	else
		snprintf(who, sizeof(who), "its tenant");
	snprintf(msg, sizeof(msg),
		 "host segment %u (generation %u): a worker of %s punched holes in it and the daemon found no memory there (it reads zeros); the blocks it held are dropped and it is made anew",
		 g, kvt_host_generation(e->host, g), who);
	engine_log(e, true, msg);
	e->damaged[g] = 1;
	e->ndamaged++;
	kvt_slots_hold(e->slots, g, true);
}

/*
 * Empties damaged segment g: its blocks are its tenant's own, destroyed by
 * that tenant's worker; they leave the index (pinned ones free their slot
 * at their last unpin). Once empty, it is given back and, if still in the
 * tier, made anew; until then, a later sweep tries again.
 */
static void damage_repair(struct kvt_engine *e, uint32_t g)
{
	uint32_t nslots = kvt_slots_segment_slots(e->slots, g);
	struct kvt_err why;
	char msg[sizeof(why.msg) + 96];

	for (uint32_t s = 0; s < nslots &&
	     kvt_slots_segment_owner(e->slots, g) != KVT_SLOTS_FREE_SEGMENT; s++) {
		struct kvt_block *b = kvt_slots_user(e->slots, g, s);

		if (b && b->indexed && b->state == KVT_BLOCK_READY)
			block_unindex(e, b);
	}
	if (kvt_slots_segment_owner(e->slots, g) != KVT_SLOTS_FREE_SEGMENT)
		return; /* pinned or PENDING blocks: a later sweep */
	segment_release(e, g);
	if (g < kvt_slots_active(e->slots) && segment_renew(e, g, &why) < 0) {
		if (e->damaged[g] == 1) {
			snprintf(msg, sizeof(msg), "host segment %u stays out of use until it can be made anew: %s",
				 g, why.msg);
			engine_log(e, true, msg);
			e->damaged[g] = 2;
		}
		return;
	}
	kvt_slots_hold(e->slots, g, false);
	e->damaged[g] = 0;
	e->ndamaged--;
}

/*
 * Acts on the segments the host tier's SIGBUS guard found damaged (a
 * worker punched holes in them, then the daemon touched one): see
 * damage_found and damage_repair.
 */
void damage_sweep(struct kvt_engine *e)
{
	uint32_t n = kvt_host_segments(e->host);

	if (n > kvt_slots_segments(e->slots))
		n = kvt_slots_segments(e->slots);
	e->faults_seen = kvt_host_faults(e->host);
	for (uint32_t g = 0; g < n; g++) {
		if (!e->damaged[g] && kvt_host_damaged(e->host, g))
			damage_found(e, g);
		if (e->damaged[g])
			damage_repair(e, g);
	}
}

int host_resize(struct kvt_engine *e, uint64_t bytes, struct kvt_err *err)
{
	uint64_t seg_bytes = e->cfg.segment_bytes;
	uint32_t want, had = kvt_host_segments(e->host);
	uint32_t active = kvt_slots_active(e->slots);
	int rc;

	if (bytes < seg_bytes || bytes / seg_bytes > KVT_HOST_SEGMENTS_MAX)
		return kvt_errf(err, -EINVAL, "host tier size %llu is outside one to %u segments of %llu bytes",
				   (unsigned long long)bytes, KVT_HOST_SEGMENTS_MAX,
				   (unsigned long long)seg_bytes);
	want = (uint32_t)(bytes / seg_bytes);
	rc = kvt_host_grow(e->host, want, err->msg, sizeof(err->msg));
	for (uint32_t i = had; i < kvt_host_segments(e->host); i++)
		e->segments[i] = kvt_host_ptr(e->host, i, 0);
	if (rc < 0)
		return rc;
	if (kvt_slots_resize(e->slots, want) < 0)
		return kvt_errf(err, -ENOMEM, "out of memory");
	/* Returning and new segments join the nvme buffer table; retired
	 * ones that are already empty give their memory back now. */
	for (uint32_t i = active; i < want; i++)
		tiers_segment(e, i, e->segments[i]);
	for (uint32_t i = want; i < active; i++)
		if (kvt_slots_segment_owner(e->slots, i) == KVT_SLOTS_FREE_SEGMENT)
			segment_release(e, i);
	e->st.host_capacity_bytes = (uint64_t)want * seg_bytes;
	e->retiring = retire_sweep(e);
	return 0;
}


/*
 * A READY block of key in namespace ns (tenant's scope) with no host slot:
 * one that a lower tier keeps (recovered from nvme, found in the remote
 * store). Indexed, retained at the default priority and counted; the
 * caller marks which tier keeps it. NULL when it cannot be had.
 */
struct kvt_block *block_kept_new(struct kvt_engine *e, uint32_t ns,
				 uint32_t tenant, const uint8_t *key)
{
	struct kvt_block *b;

	if (kvt_policy_prepare(e->policy, ns, tenant) < 0 ||
	    !(b = kvt_block_pool_alloc(e->blocks)))
		return NULL;
	memcpy(b->key, key, KVT_KEY_BYTES);
	b->ns = (uint16_t)ns;
	b->tenant = (uint16_t)tenant;
	b->state = KVT_BLOCK_READY;
	b->indexed = 1;
	b->u.atime = engine_now_locked(e);
	if (kvt_index_insert(e->index, b) < 0) {
		kvt_block_pool_free(e->blocks, b);
		return NULL;
	}
	block_retain(e, b, NULL, 0);
	e->ns[ns].blocks++;
	e->ns[ns].ready++;
	return b;
}

/* ---- the tiers below host (tier.h), asked in turn ---- */

struct kvt_lower_tier *tier_holding(const struct kvt_engine *e,
				    const struct kvt_block *b)
{
	for (uint32_t i = 0; i < e->nlower; i++) {
		struct kvt_lower_tier *t = e->lower[i];

		if (t->ops->holds && t->ops->holds(t, b))
			return t;
	}
	return NULL;
}

/* Where Lookup says READY block b is: host, or the tier that keeps it. */
enum kvt_tier tiers_where(const struct kvt_engine *e, const struct kvt_block *b)
{
	const struct kvt_lower_tier *t;

	if (b->has_slot || !(t = tier_holding(e, b)))
		return KVT_TIER_HOST;
	return t->ops->tier;
}

/* Write-behind of b, if it is READY in a host slot of its own. true while
 * a tier is writing it. */
bool tiers_save(struct kvt_engine *e, struct kvt_block *b)
{
	bool busy = false;

	if (b->state != KVT_BLOCK_READY || !b->indexed || !b->has_slot ||
	    b->promoting)
		return false;
	for (uint32_t i = 0; i < e->nlower; i++) {
		struct kvt_lower_tier *t = e->lower[i];

		if (t->ops->save && t->ops->save(t, b))
			busy = true;
	}
	return busy;
}

void tiers_forget(struct kvt_engine *e, struct kvt_block *b)
{
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops->forget)
			e->lower[i]->ops->forget(e->lower[i], b);
}

void tiers_host_leave(struct kvt_engine *e, struct kvt_block *b)
{
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops->host_leave)
			e->lower[i]->ops->host_leave(e->lower[i], b);
}

void tiers_segment(struct kvt_engine *e, uint32_t seg, void *base)
{
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops->segment)
			e->lower[i]->ops->segment(e->lower[i], seg, base);
}

void tiers_namespace(struct kvt_engine *e, uint32_t ns, bool open)
{
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops->namespace)
			e->lower[i]->ops->namespace(e->lower[i], ns, open);
}

/* A lower tier lost its copy of b (it reused the space): kept in host, b
 * is saved anew; kept nowhere else, it leaves the cache. */
void block_copy_lost(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->has_slot) {
		tiers_save(e, b);
		return;
	}
	if (!b->indexed || tier_holding(e, b))
		return;
	e->ns[b->ns].evictions++;
	block_unindex(e, b);
}

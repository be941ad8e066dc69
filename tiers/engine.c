/*
 * Engine state lives under one mutex (e->lock). Blocks are linked several
 * ways: the index finds them by (namespace, tenant, key); READY candidates
 * sit on the policy's lists; PENDING blocks sit on their producer's pending
 * list instead (the same link fields, since a block is never on both); a
 * block points at its resident parent, which counts its children.
 *
 * A block leaves in steps. Unindexed (evicted, expired, dropped, aborted),
 * it can no longer be found; unpinned as well, its slot is freed; without
 * children as well, its memory is freed and its parent loses a child. So a
 * parent dropped while its chain lives on stays as a slotless husk until
 * its last child goes, and no child ever points at freed memory.
 *
 * Waits complete under the lock into a local list; their callbacks run after
 * the lock is dropped (run_done), so a callback may call back in.
 */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "block_list.h"
#include "histogram.h"
#include "host.h"
#include "nvme.h"
#include "slots.h"

#define TIMER_PERIOD (1000 * KVT_MS) /* idle and lease TTL sweeps */
#define RETIRE_PERIOD (100 * KVT_MS) /* sweeps of a shrinking host tier */
#define SHARED_UID UINT32_MAX
/* How long an Acquire waits for promotions past its own wait: a disk that
 * does not answer in this time is treated as a miss. */
#define PROMOTE_TIMEOUT (10000 * KVT_MS)

/* A namespace table entry: in use, dropped (its id unknown, its blocks
 * going), or free for the next namespace once the dropped one is empty. */
enum ns_state { NS_FREE, NS_LIVE, NS_DROPPED };

struct namespace {
	enum ns_state state;
	uint16_t generation; /* times the entry was reused: the id's high half */
	char name[KVT_NAMESPACE_NAME_MAX + 1];
	uint64_t page_bytes, stride, idle_ttl;
	uint32_t block_tokens;
	uint32_t tenant; /* its owner; KVT_TENANT_SHARED for a shared one */
	bool shared, own_ttl; /* own_ttl: idle_ttl is not the daemon default */
	uint64_t ready, pending, lookup_keys, lookup_hits, evictions, expired;
	uint64_t lookup_hits_nvme, nvme_blocks;
	uint64_t last_use; /* the latest use of any of its blocks */
	uint32_t creator; /* the tenant it counts against (max_tenant_namespaces) */
	uint64_t blocks;  /* struct kvt_block of it, in any state */
};


struct tenant {
	uint32_t uid;
	char name[KVT_TENANT_NAME_MAX];
	uint64_t used, quota;
	uint64_t lookup_keys, lookup_hits, evictions;
	/* Against max_sessions, max_leases: leases held, and Acquires that
	 * may become one (waiting, promoting). */
	uint32_t sessions, leases, acquiring;
};

struct lease {
	struct lease *next;               /* the session's leases */
	struct lease *older, *newer;      /* all leases, by age */
	struct kvt_session *session;
	uint64_t id, born;
	uint32_t n;
	struct kvt_block *blocks[];
};

struct kvt_waiter {
	struct kvt_waiter *next_on_block; /* the PENDING block's waiters */
	struct kvt_waiter *prev, *next;   /* e->waiters by deadline; done list */
	struct kvt_session *session;
	/* The waiters of what it waits for (a PENDING block or a promotion). */
	struct kvt_waiter **list;
	uint64_t wait_deadline; /* for PENDING blocks: the caller's wait */
	uint64_t deadline;      /* in e->waiters: promotions may extend it */
	uint32_t ns, tenant, n, got;
	bool waited, queued, counted;
	int rc;
	kvt_acquire_done done;
	void *arg;
	struct kvt_acquired result;
	struct kvt_block **pinned;
	struct kvt_location *locs;
	uint8_t (*keys)[KVT_KEY_BYTES];
};

/* A block being read back from nvme, and the Acquires waiting for it. */
struct promotion {
	struct promotion *prev, *next;
	struct kvt_block *b;
	struct kvt_waiter *waiters;
};

struct done_list {
	struct kvt_waiter *head;
};

struct kvt_session {
	struct kvt_session *prev, *next;
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	uint32_t tenant;
	int hbm_pool; /* the pool on the worker's GPU, or -1 */
	struct kvt_block_list pending;
	struct lease *leases;
};

struct kvt_engine {
	pthread_mutex_t lock;
	struct kvt_engine_config cfg;
	struct kvt_quota *quotas;
	struct kvt_index *index;
	struct kvt_slots *slots;
	struct kvt_host *host;
	struct kvt_policy *policy;
	struct namespace *ns;
	uint32_t nns;
	struct tenant *tenants;
	uint32_t ntenants;
	struct kvt_session *sessions;
	struct lease *oldest_lease, *newest_lease;
	struct kvt_waiter *waiters; /* waiting ones, earliest deadline first */
	struct kvt_block **found;    /* the last ready prefix walked */
	uint32_t found_cap;
	bool stop_waiting;
	uint64_t next_lease, last_now;
	struct kvt_engine_stats st; /* counters; gauges are filled in on read */

	struct kvt_hbm *hbm;       /* NULL: no hbm tier */
	uint8_t *hbm_registered;   /* host segments registered for its copies */
	struct kvt_nvme *nvme;     /* NULL: no nvme tier */
	uint64_t demoting_bytes;   /* host bytes pinned until written */
	void **segments;           /* the host segments' base addresses */
	uint32_t retiring;         /* retired host segments still in use */
	/* Per host segment: 0 whole, else damaged (see damage_sweep): 1, 2
	 * when a remake failed and was logged. */
	uint8_t *damaged;
	uint32_t ndamaged;
	uint64_t faults_seen;      /* kvt_host_faults at the last sweep */
	struct kvt_histogram eviction_age; /* since last use, at host eviction */
	struct promotion *promotions;
	struct done_list io_done;  /* waits the mover completed */
	struct recovered *recovered; /* chains to link after recovery */
	size_t nrecovered, recovered_cap;

	pthread_t timer;
	pthread_cond_t timer_cond;
	bool timer_running, timer_stop, timer_kick;
};

static int fail(struct kvt_err *err, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* A namespace's id: its entry in the low half, the entry's generation in
 * the high one, so that a dropped namespace's id never names the next. */
static uint32_t ns_id(const struct kvt_engine *e, uint32_t i)
{
	return (uint32_t)e->ns[i].generation << 16 | i;
}

/* A block of namespace i is freed: the last of a dropped one frees its
 * entry for reuse. */
static void ns_block_gone(struct kvt_engine *e, uint32_t i)
{
	if (--e->ns[i].blocks == 0 && e->ns[i].state == NS_DROPPED)
		e->ns[i].state = NS_FREE;
}

static const char *key_hex(const uint8_t *key, char buf[17])
{
	for (int i = 0; i < 8; i++)
		sprintf(buf + 2 * i, "%02x", key[i]);
	return buf;
}

static uint64_t monotonic_ns(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Strictly increasing, so that last-use times order every use. Locked. */
static uint64_t now_locked(struct kvt_engine *e)
{
	uint64_t t = e->cfg.clock(e->cfg.clock_arg);

	if (t <= e->last_now)
		t = e->last_now + 1;
	return e->last_now = t;
}

uint64_t kvt_engine_now(struct kvt_engine *e)
{
	uint64_t t;

	pthread_mutex_lock(&e->lock);
	t = now_locked(e);
	pthread_mutex_unlock(&e->lock);
	return t;
}

/* ---- create / destroy ---- */

static void *timer_main(void *arg);
static int nvme_start(struct kvt_engine *e, struct kvt_err *err);
static void nvme_log(void *arg, bool error, const char *msg);
static void run_done(struct done_list *done);
static void hbm_start(struct kvt_engine *e);
static void hbm_stop(struct kvt_engine *e);

int kvt_engine_create(const struct kvt_engine_config *cfg,
		      struct kvt_engine **out, struct kvt_err *err)
{
	struct kvt_engine *e;
	pthread_condattr_t ca;
	uint32_t segments;
	int rc;

	if (cfg->segment_bytes < KVT_SLOT_ALIGN ||
	    cfg->segment_bytes % KVT_SLOT_ALIGN)
		return fail(err, -EINVAL,
			    "segment size %llu is not a positive multiple of %d",
			    (unsigned long long)cfg->segment_bytes,
			    KVT_SLOT_ALIGN);
	if (cfg->host_bytes < cfg->segment_bytes)
		return fail(err, -EINVAL,
			    "host tier size %llu is smaller than one segment (%llu)",
			    (unsigned long long)cfg->host_bytes,
			    (unsigned long long)cfg->segment_bytes);
	if (cfg->host_bytes / cfg->segment_bytes > KVT_HOST_SEGMENTS_MAX)
		return fail(err, -EINVAL, "the host tier may have at most %u segments",
			    KVT_HOST_SEGMENTS_MAX);
	if (cfg->timer_thread && cfg->clock)
		return fail(err, -EINVAL, "the timer thread needs the default clock");
	if (cfg->max_namespaces == 0 || cfg->max_namespaces > UINT16_MAX)
		return fail(err, -EINVAL, "max_namespaces %u is outside 1..%u",
			    cfg->max_namespaces, UINT16_MAX);
	segments = (uint32_t)(cfg->host_bytes / cfg->segment_bytes);

	e = calloc(1, sizeof(*e));
	if (!e)
		return fail(err, -ENOMEM, "out of memory");
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->timer_cond, &ca);
	pthread_condattr_destroy(&ca);
	e->cfg = *cfg;
	if (!e->cfg.clock)
		e->cfg.clock = monotonic_ns;
	if (e->cfg.default_priority > KVT_PRIORITY_MAX)
		e->cfg.default_priority = KVT_PRIORITY_MAX;
	e->next_lease = 1;
	kvt_histogram_init(&e->eviction_age, &kvt_age_bounds);
	e->index = kvt_index_create();
	e->slots = kvt_slots_create(segments, cfg->segment_bytes,
				    cfg->max_namespaces);
	e->policy = kvt_policy_create(cfg->eviction, cfg->max_namespaces);
	e->ns = calloc(cfg->max_namespaces, sizeof(*e->ns));
	e->tenants = calloc(KVT_TENANTS_MAX, sizeof(*e->tenants));
	e->quotas = calloc(cfg->nquotas ? cfg->nquotas : 1, sizeof(*e->quotas));
	if (!e->index || !e->slots || !e->policy || !e->ns || !e->tenants ||
	    !e->quotas) {
		kvt_engine_destroy(e);
		return fail(err, -ENOMEM, "out of memory");
	}
	if (cfg->nquotas)
		memcpy(e->quotas, cfg->quotas, sizeof(*e->quotas) * cfg->nquotas);
	e->cfg.quotas = e->quotas;
	e->tenants[KVT_TENANT_SHARED].uid = SHARED_UID;
	strcpy(e->tenants[KVT_TENANT_SHARED].name, "shared");
	e->ntenants = 1;
	{
		struct kvt_host_config hc = { .segment_bytes = cfg->segment_bytes,
					      .huge_pages = cfg->huge_pages,
					      .lock = cfg->lock_host };

		rc = kvt_host_create(&hc, segments, &e->host, err->msg,
				     sizeof(err->msg));
	}
	if (rc < 0) {
		kvt_engine_destroy(e);
		return rc;
	}
	e->st.host_capacity_bytes = (uint64_t)segments * cfg->segment_bytes;
	e->segments = calloc(KVT_HOST_SEGMENTS_MAX, sizeof(*e->segments));
	e->damaged = calloc(KVT_HOST_SEGMENTS_MAX, sizeof(*e->damaged));
	if (!e->segments || !e->damaged) {
		kvt_engine_destroy(e);
		return fail(err, -ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < segments; i++)
		e->segments[i] = kvt_host_ptr(e->host, i, 0);
	if (cfg->hbm.ops)
		hbm_start(e);
	e->st.nvme_paths = cfg->nvme.npaths;
	if (cfg->nvme.npaths && nvme_start(e, err) < 0) {
		char msg[sizeof(err->msg) + 64];

		/* The host tier serves on; stats show the tier as failed. */
		snprintf(msg, sizeof(msg), "nvme tier unavailable: %s; serving from the host tier only",
			 err->msg);
		nvme_log(e, true, msg);
		kvt_nvme_close(e->nvme);
		e->nvme = NULL;
	}
	if (cfg->timer_thread) {
		if (pthread_create(&e->timer, NULL, timer_main, e)) {
			kvt_engine_destroy(e);
			return fail(err, -EAGAIN, "cannot start the timer thread");
		}
		e->timer_running = true;
	}
	*out = e;
	return 0;
}

/* Husks are reachable only through their children: free them first. */
static void free_husks_cb(struct kvt_block *b, void *arg)
{
	struct kvt_block *p = b->parent;

	(void)arg;
	b->parent = NULL;
	while (p && !p->indexed && --p->children == 0) {
		struct kvt_block *up = p->parent;

		free(p);
		p = up;
	}
}

static void free_block_cb(struct kvt_block *b, void *arg)
{
	(void)arg;
	free(b);
}

void kvt_engine_destroy(struct kvt_engine *e)
{
	if (!e)
		return;
	if (e->timer_running) {
		pthread_mutex_lock(&e->lock);
		e->timer_stop = true;
		pthread_cond_signal(&e->timer_cond);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->timer, NULL);
	}
	kvt_engine_stop_waiting(e);
	hbm_stop(e);
	/* Writes out what is queued, so that a clean stop keeps it. */
	kvt_nvme_close(e->nvme);
	e->nvme = NULL;
	run_done(&e->io_done);
	while (e->sessions)
		kvt_engine_session_close(e, e->sessions);
	if (e->index) {
		kvt_index_foreach(e->index, free_husks_cb, NULL);
		kvt_index_foreach(e->index, free_block_cb, NULL);
		kvt_index_destroy(e->index);
	}
	kvt_policy_destroy(e->policy);
	kvt_slots_destroy(e->slots);
	kvt_host_destroy(e->host);
	free(e->ns);
	free(e->tenants);
	free(e->quotas);
	free(e->found);
	free(e->segments);
	free(e->damaged);
	free(e->recovered);
	pthread_cond_destroy(&e->timer_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

const char *kvt_engine_host_describe(const struct kvt_engine *e)
{
	return kvt_host_describe(e->host);
}

uint32_t kvt_engine_host_segments(const struct kvt_engine *e)
{
	return kvt_slots_segments(e->slots);
}

uint64_t kvt_engine_segment_bytes(const struct kvt_engine *e)
{
	return e->cfg.segment_bytes;
}

/* ---- tenants ---- */

static uint64_t quota_of(const struct kvt_engine *e, uint32_t uid)
{
	for (uint32_t i = 0; i < e->cfg.nquotas; i++)
		if (e->quotas[i].uid == uid)
			return e->quotas[i].host_bytes;
	return e->cfg.default_host_quota;
}

static int tenant_locked(struct kvt_engine *e, uint32_t uid, const char *name,
			 uint32_t *tenant)
{
	uint32_t i;

	for (i = 1; i < e->ntenants; i++)
		if (e->tenants[i].uid == uid) {
			*tenant = i;
			return 0;
		}
	if (!name)
		return -ENOENT;
	if (e->ntenants == KVT_TENANTS_MAX)
		return -ENOSPC;
	i = e->ntenants++;
	e->tenants[i].uid = uid;
	snprintf(e->tenants[i].name, sizeof(e->tenants[i].name), "%s", name);
	e->tenants[i].quota = quota_of(e, uid);
	*tenant = i;
	return 0;
}

int kvt_engine_tenant(struct kvt_engine *e, uint32_t uid, const char *name,
		      uint32_t *tenant)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = tenant_locked(e, uid, name, tenant);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* The tenant that a namespace's keys belong to. */
static uint32_t scope(const struct kvt_engine *e, uint32_t ns)
{
	return e->ns[ns].tenant;
}

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

static uint64_t slot_offset(const struct kvt_engine *e,
			    const struct kvt_block *b)
{
	return kvt_slots_offset(e->slots, b->segment, b->slot);
}

/* b takes host slot (seg, slot), which its parent already counts (see
 * block_reserve and promote). */
static void host_attach(struct kvt_engine *e, struct kvt_block *b,
			uint32_t seg, uint32_t slot)
{
	b->segment = seg;
	b->slot = slot;
	b->has_slot = 1;
	kvt_slots_set_user(e->slots, seg, slot, b);
	charge(e, b, true);
}

/* Counts (or uncounts) a host slot being taken for a child of parent. */
static void host_child(struct kvt_engine *e, struct kvt_block *parent, bool add)
{
	if (!parent)
		return;
	if (add)
		parent->host_children++;
	else
		parent->host_children--;
	kvt_policy_update(e->policy, parent);
}

/* Registers host segment seg for the hbm tier's copies (or unregisters
 * it); a segment that cannot be registered is not copied from. */
static void hbm_register(struct kvt_engine *e, uint32_t seg, bool on)
{
	const struct kvt_hbm_ops *ops = e->cfg.hbm.ops;

	if (!e->hbm_registered || e->hbm_registered[seg] == on)
		return;
	if (!on)
		ops->host_unregister(ops->ctx, e->segments[seg]);
	else if (ops->host_register(ops->ctx, e->segments[seg], e->cfg.segment_bytes) < 0)
		return;
	e->hbm_registered[seg] = on;
}

/* Gives back the memory of a retired segment that has emptied. */
static void segment_release(struct kvt_engine *e, uint32_t seg)
{
	hbm_register(e, seg, false);
	kvt_nvme_segment(e->nvme, seg, NULL);
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

	hbm_register(e, seg, false);
	kvt_nvme_segment(e->nvme, seg, NULL);
	rc = kvt_host_renew(e->host, seg, why->msg, sizeof(why->msg));
	if (kvt_host_backed(e->host, seg)) {
		kvt_nvme_segment(e->nvme, seg, e->segments[seg]);
		hbm_register(e, seg, true);
	}
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
	nvme_log(e, true, why.msg);
	kvt_slots_free(e->slots, seg, slot);
	/* The old memfd stays, and with it the old tenant's claim. */
	kvt_slots_set_tag(e->slots, seg, KVT_SLOTS_NO_TAG);
	return -ENOSPC;
}

static void slot_free(struct kvt_engine *e, uint32_t seg, uint32_t slot)
{
	if (kvt_slots_free(e->slots, seg, slot))
		segment_release(e, seg);
}

/* Its hbm copy goes with it: hbm holds copies of host blocks only. */
static void host_detach(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->has_hbm)
		kvt_hbm_drop(e->hbm, b);
	kvt_slots_set_user(e->slots, b->segment, b->slot, NULL);
	slot_free(e, b->segment, b->slot);
	charge(e, b, false);
	b->has_slot = 0;
	host_child(e, b->parent, false);
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
static void disk_clear(struct kvt_engine *e, struct kvt_block *b, bool forget)
{
	if (!b->has_disk)
		return;
	if (forget)
		kvt_nvme_forget(e->nvme, disk_loc(b));
	b->has_disk = 0;
	e->ns[b->ns].nvme_blocks--;
	e->st.nvme_blocks--;
}

/*
 * Frees what b no longer needs: its slot once unindexed and unpinned, its
 * memory once childless as well, and then the same for its parent. Also
 * keeps b's place among eviction candidates up to date.
 */
static void block_settle(struct kvt_engine *e, struct kvt_block *b)
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
		free(b);
		if (!parent)
			return;
		parent->children--;
		b = parent;
	}
}

/* Takes a READY block out of the index, and off nvme; see block_settle. */
static void block_unindex(struct kvt_engine *e, struct kvt_block *b)
{
	kvt_index_remove(e->index, b);
	b->indexed = 0;
	e->ns[b->ns].ready--;
	disk_clear(e, b, true);
	kvt_policy_forget(e->policy, b);
	block_settle(e, b);
}

/* Makes room in the host tier: a block with a copy on nvme stays cached
 * there; any other leaves the cache. */
static void block_evict(struct kvt_engine *e, struct kvt_block *b)
{
	kvt_histogram_observe(&e->eviction_age, now_locked(e) - b->u.atime);
	e->ns[b->ns].evictions++;
	e->tenants[b->tenant].evictions++;
	e->st.evictions_total++;
	if (b->has_disk) {
		e->st.evictions_to_nvme_total++;
		host_detach(e, b);
		kvt_policy_update(e->policy, b);
		return;
	}
	block_unindex(e, b);
}

/* A lease or an I/O holds b in place. */
static void block_pin(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->pins++ == 0) {
		e->st.pinned_blocks++;
		kvt_policy_update(e->policy, b);
	}
}

/* The end of an I/O's pin, which is no use of the block. */
static void io_unpin(struct kvt_engine *e, struct kvt_block *b)
{
	if (--b->pins > 0)
		return;
	e->st.pinned_blocks--;
	block_settle(e, b);
}

/*
 * Queues a READY host block for writing to nvme, pinned until written, so
 * that by the time the host tier evicts it its copy is (usually) there.
 */
static void demote(struct kvt_engine *e, struct kvt_block *b)
{
	const struct tenant *t = &e->tenants[b->tenant];
	struct kvt_nvme_block blk = { .uid = t->uid };

	uint64_t stride = e->ns[b->ns].stride;

	if (!e->nvme || b->has_disk || b->demoting || !b->has_slot ||
	    b->promoting || !b->indexed)
		return;
	/* Pinned blocks cannot make room: let the disk hold up at most a
	 * quarter of the host tier, and the rest is not demoted. */
	if (e->demoting_bytes + stride > e->st.host_capacity_bytes / 4) {
		e->st.demotions_skipped_total++;
		return;
	}
	memcpy(blk.key, b->key, KVT_KEY_BYTES);
	if (b->parent) {
		memcpy(blk.parent, b->parent->key, KVT_KEY_BYTES);
		blk.has_parent = true;
	}
	snprintf(blk.tenant, sizeof(blk.tenant), "%s", t->name);
	if (kvt_nvme_write(e->nvme, b, b->ns, &blk, b->segment,
			   slot_offset(e, b)) < 0) {
		e->st.demotions_skipped_total++;
		return;
	}
	b->demoting = 1;
	e->demoting_bytes += stride;
	block_pin(e, b);
}

/* A use of b now, for its eviction order and its namespace's. */
static void block_touch(struct kvt_engine *e, struct kvt_block *b, uint64_t now)
{
	kvt_policy_touch(e->policy, b, now);
	if (e->ns[b->ns].last_use < now)
		e->ns[b->ns].last_use = now;
}

/* The end of a lease's pin is a use: the block was read just now. */
static void block_unpin(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->pins == 1)
		block_touch(e, b, now_locked(e));
	io_unpin(e, b);
}

/* Sets b's retention; ret NULL: the default priority. */
static void block_retain(struct kvt_engine *e, struct kvt_block *b,
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

/* ---- hbm tier ---- */

struct hbm_job {
	struct kvt_engine *e;
	struct kvt_block *b;
};

/* A copy into hbm is done (on the device's thread). */
static void hbm_loaded(void *arg, int rc)
{
	struct hbm_job *j = arg;
	struct kvt_engine *e = j->e;
	struct kvt_block *b = j->b;

	free(j);
	pthread_mutex_lock(&e->lock);
	/* A block dropped meanwhile keeps no copy. */
	kvt_hbm_loaded(e->hbm, b, rc, b->indexed && b->has_slot);
	io_unpin(e, b);
	pthread_mutex_unlock(&e->lock);
}

/* Starts copying host block b into hbm pool `pool`, pinned until done. */
static void hbm_load(struct kvt_engine *e, struct kvt_block *b, uint32_t pool)
{
	const struct namespace *n = &e->ns[b->ns];
	struct hbm_job *j;

	if (b->has_hbm || b->hbm_loading || !b->has_slot || b->promoting ||
	    !e->hbm_registered[b->segment] || !(j = malloc(sizeof(*j))))
		return;
	j->e = e;
	j->b = b;
	if (kvt_hbm_load(e->hbm, b, pool, n->stride,
			 kvt_host_ptr(e->host, b->segment, slot_offset(e, b)),
			 n->page_bytes, hbm_loaded, j) < 0) {
		free(j);
		return;
	}
	block_pin(e, b);
}

/* Opens the pools and registers the host tier with them; a failure leaves
 * the daemon serving without hbm, and says why. */
static void hbm_start(struct kvt_engine *e)
{
	const struct kvt_engine_hbm *c = &e->cfg.hbm;
	char why[256], msg[320];

	e->hbm_registered = calloc(KVT_HOST_SEGMENTS_MAX, 1);
	if (!e->hbm_registered) {
		nvme_log(e, true, "hbm tier unavailable: out of memory");
		return;
	}
	if (kvt_hbm_create(c->ops, c->devices, c->ndevices, c->bytes,
			   e->cfg.segment_bytes, e->cfg.max_namespaces, &e->hbm,
			   why, sizeof(why)) < 0) {
		snprintf(msg, sizeof(msg), "hbm tier unavailable: %s; serving from the host tier only", why);
		nvme_log(e, true, msg);
		e->hbm = NULL;
		free(e->hbm_registered);
		e->hbm_registered = NULL;
		return;
	}
	for (uint32_t i = 0; i < kvt_slots_active(e->slots); i++)
		hbm_register(e, i, true);
}

/* Closes the pools (copies in flight complete first, into e->hbm) and
 * then unregisters the host tier. */
static void hbm_stop(struct kvt_engine *e)
{
	kvt_hbm_destroy(e->hbm);
	e->hbm = NULL;
	for (uint32_t i = 0; e->hbm_registered && i < KVT_HOST_SEGMENTS_MAX; i++)
		hbm_register(e, i, false);
	free(e->hbm_registered);
	e->hbm_registered = NULL;
}

int kvt_engine_session_gpu(struct kvt_engine *e, struct kvt_session *s,
			   const uint8_t uuid[KVT_GPU_UUID_BYTES])
{
	pthread_mutex_lock(&e->lock);
	s->hbm_pool = e->hbm ? kvt_hbm_find(e->hbm, uuid) : -1;
	pthread_mutex_unlock(&e->lock);
	return s->hbm_pool;
}

uint32_t kvt_engine_hbm_pools(const struct kvt_engine *e)
{
	return e->hbm ? kvt_hbm_devices(e->hbm) : 0;
}

const struct kvt_hbm_pool *kvt_engine_hbm_pool(const struct kvt_engine *e,
					       uint32_t i)
{
	return kvt_hbm_pool(e->hbm, i);
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
static int slot_alloc(struct kvt_engine *e, uint32_t ns, uint32_t tenant,
		      uint32_t *seg, uint32_t *slot)
{
	struct eligible_arg ea = { e, tenant };
	uint64_t stride = e->ns[ns].stride;

	for (;;) {
		bool retagged;
		int rc = kvt_slots_alloc(e->slots, ns, stride, scope(e, ns), seg,
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
static uint32_t retire_sweep(struct kvt_engine *e)
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
			demote(e, b);
			if (!b->demoting)
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
	nvme_log(e, true, msg);
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
			nvme_log(e, true, msg);
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
static void damage_sweep(struct kvt_engine *e)
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

static int host_resize(struct kvt_engine *e, uint64_t bytes, struct kvt_err *err)
{
	uint64_t seg_bytes = e->cfg.segment_bytes;
	uint32_t want, had = kvt_host_segments(e->host);
	uint32_t active = kvt_slots_active(e->slots);
	int rc;

	if (bytes < seg_bytes || bytes / seg_bytes > KVT_HOST_SEGMENTS_MAX)
		return fail(err, -EINVAL, "host tier size %llu is outside one to %u segments of %llu bytes",
			    (unsigned long long)bytes, KVT_HOST_SEGMENTS_MAX,
			    (unsigned long long)seg_bytes);
	want = (uint32_t)(bytes / seg_bytes);
	rc = kvt_host_grow(e->host, want, err->msg, sizeof(err->msg));
	for (uint32_t i = had; i < kvt_host_segments(e->host); i++)
		e->segments[i] = kvt_host_ptr(e->host, i, 0);
	if (rc < 0)
		return rc;
	if (kvt_slots_resize(e->slots, want) < 0)
		return fail(err, -ENOMEM, "out of memory");
	/* Returning and new segments join the nvme buffer table; retired
	 * ones that are already empty give their memory back now. */
	for (uint32_t i = active; i < want; i++) {
		kvt_nvme_segment(e->nvme, i, e->segments[i]);
		hbm_register(e, i, true);
	}
	for (uint32_t i = want; i < active; i++)
		if (kvt_slots_segment_owner(e->slots, i) == KVT_SLOTS_FREE_SEGMENT)
			segment_release(e, i);
	e->st.host_capacity_bytes = (uint64_t)want * seg_bytes;
	e->retiring = retire_sweep(e);
	return 0;
}

int kvt_engine_reconfigure(struct kvt_engine *e,
			   const struct kvt_engine_config *cfg,
			   struct kvt_err *err)
{
	struct kvt_quota *quotas = calloc(cfg->nquotas ? cfg->nquotas : 1,
					  sizeof(*quotas));
	int rc;

	if (!quotas)
		return fail(err, -ENOMEM, "out of memory");
	memcpy(quotas, cfg->quotas, sizeof(*quotas) * cfg->nquotas);
	pthread_mutex_lock(&e->lock);
	rc = host_resize(e, cfg->host_bytes, err);
	if (rc < 0) {
		pthread_mutex_unlock(&e->lock);
		free(quotas);
		return rc;
	}
	e->cfg.default_priority = cfg->default_priority < KVT_PRIORITY_MAX ?
				  cfg->default_priority : KVT_PRIORITY_MAX;
	e->cfg.lease_ttl = cfg->lease_ttl;
	e->cfg.max_wait = cfg->max_wait;
	e->cfg.max_sessions = cfg->max_sessions;
	e->cfg.max_tenant_namespaces = cfg->max_tenant_namespaces;
	e->cfg.max_leases = cfg->max_leases;
	e->cfg.idle_ttl = cfg->idle_ttl;
	for (uint32_t i = 0; i < e->nns; i++)
		if (!e->ns[i].own_ttl)
			e->ns[i].idle_ttl = cfg->idle_ttl;
	free(e->quotas);
	e->quotas = quotas;
	e->cfg.quotas = quotas;
	e->cfg.nquotas = cfg->nquotas;
	e->cfg.default_host_quota = cfg->default_host_quota;
	for (uint32_t i = 1; i < e->ntenants; i++)
		e->tenants[i].quota = quota_of(e, e->tenants[i].uid);
	/* New TTLs and a shrinking tier are the timer's to act on now. */
	e->timer_kick = true;
	pthread_cond_signal(&e->timer_cond);
	pthread_mutex_unlock(&e->lock);
	return 0;
}

/* ---- sessions ---- */

static struct kvt_session *session_find(struct kvt_engine *e,
					const uint8_t *token, uint32_t tenant)
{
	if (!token)
		return NULL;
	for (struct kvt_session *s = e->sessions; s; s = s->next)
		if (memcmp(s->token, token, KVT_SESSION_TOKEN_BYTES) == 0)
			return s->tenant == tenant ? s : NULL;
	return NULL;
}

int kvt_engine_session_open(struct kvt_engine *e, uint32_t tenant,
			    uint8_t token[KVT_SESSION_TOKEN_BYTES],
			    struct kvt_session **out)
{
	struct kvt_session *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	if (getrandom(s->token, sizeof(s->token), 0) != sizeof(s->token)) {
		free(s);
		return -EIO;
	}
	s->tenant = tenant;
	s->hbm_pool = -1;
	memcpy(token, s->token, sizeof(s->token));
	pthread_mutex_lock(&e->lock);
	if (e->cfg.max_sessions && e->tenants[tenant].sessions >= e->cfg.max_sessions) {
		e->st.sessions_refused_total++;
		pthread_mutex_unlock(&e->lock);
		free(s);
		return -EDQUOT;
	}
	e->tenants[tenant].sessions++;
	s->next = e->sessions;
	if (s->next)
		s->next->prev = s;
	e->sessions = s;
	e->st.sessions_active++;
	e->st.sessions_total++;
	pthread_mutex_unlock(&e->lock);
	*out = s;
	return 0;
}

/* ---- leases ---- */

static void lease_unlink_age(struct kvt_engine *e, struct lease *l)
{
	if (l->older)
		l->older->newer = l->newer;
	else
		e->oldest_lease = l->newer;
	if (l->newer)
		l->newer->older = l->older;
	else
		e->newest_lease = l->older;
}

/* A lease over blocks (already pinned) for session s, or NULL. */
static struct lease *lease_new(struct kvt_engine *e, struct kvt_session *s,
			       struct kvt_block *const *blocks, uint32_t n)
{
	struct lease *l = malloc(sizeof(*l) + sizeof(l->blocks[0]) * n);

	if (!l)
		return NULL;
	memcpy(l->blocks, blocks, sizeof(l->blocks[0]) * n);
	l->n = n;
	l->id = e->next_lease++;
	l->born = now_locked(e);
	l->session = s;
	l->next = s->leases;
	s->leases = l;
	l->newer = NULL;
	l->older = e->newest_lease;
	if (l->older)
		l->older->newer = l;
	else
		e->oldest_lease = l;
	e->newest_lease = l;
	e->st.leases_active++;
	e->tenants[s->tenant].leases++;
	e->st.pins_total += n;
	if (n)
		e->st.host_out_bytes_total += n * e->ns[blocks[0]->ns].page_bytes;
	return l;
}

/* Unpins and frees l, which the caller took off its session's list. */
static void lease_free(struct kvt_engine *e, struct lease *l)
{
	lease_unlink_age(e, l);
	for (uint32_t i = 0; i < l->n; i++)
		block_unpin(e, l->blocks[i]);
	e->st.leases_active--;
	e->tenants[l->session->tenant].leases--;
	free(l);
}

static bool lease_remove(struct kvt_engine *e, struct kvt_session *s,
			 uint64_t id)
{
	for (struct lease **p = &s->leases; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct lease *l = *p;

			*p = l->next;
			lease_free(e, l);
			return true;
		}
	}
	return false;
}

/* ---- waits (early reuse) ---- */

static void deadline_unlink(struct kvt_engine *e, struct kvt_waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		e->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->queued = false;
}

static void waiter_detach(struct kvt_engine *e, struct kvt_waiter *w)
{
	if (w->list) {
		struct kvt_waiter **p = w->list;

		while (*p != w)
			p = &(*p)->next_on_block;
		*p = w->next_on_block;
		w->list = NULL;
	}
	if (w->queued)
		deadline_unlink(e, w);
	if (w->counted) {
		w->counted = false;
		e->st.waits_active--;
	}
}

/*
 * Where the reader of pinned block i of w finds it: the pool of its GPU when
 * the block has a copy there, else the host tier (and a copy is started, so
 * that the next reader finds one).
 */
static void locate(struct kvt_engine *e, struct kvt_waiter *w, uint32_t i)
{
	struct kvt_block *b = w->pinned[i];
	struct kvt_location *loc = &w->locs[i];
	int pool = w->session ? w->session->hbm_pool : -1;

	loc->tier = KVT_TIER_HOST;
	loc->segment = b->segment;
	loc->generation = kvt_host_generation(e->host, b->segment);
	loc->offset = slot_offset(e, b);
	if (pool < 0)
		return;
	if (kvt_hbm_hit(e->hbm, b, (uint32_t)pool, e->ns[b->ns].page_bytes,
			&loc->offset)) {
		loc->tier = KVT_TIER_HBM;
		loc->segment = (uint32_t)pool;
		return;
	}
	hbm_load(e, b, (uint32_t)pool);
}

static void waiter_finish(struct kvt_engine *e, struct kvt_waiter *w, int rc,
			  struct done_list *done)
{
	waiter_detach(e, w);
	if (w->session)
		e->tenants[w->session->tenant].acquiring--;
	w->rc = rc;
	if (rc == 0 && w->got) {
		struct lease *l = lease_new(e, w->session, w->pinned, w->got);

		if (l) {
			w->result.lease = l->id;
			w->result.count = w->got;
			for (uint32_t i = 0; i < w->got; i++)
				locate(e, w, i);
		} else {
			w->rc = -ENOMEM;
		}
	}
	if (w->rc < 0)
		for (uint32_t i = 0; i < w->got; i++)
			block_unpin(e, w->pinned[i]);
	if (w->waited && w->rc == 0) {
		if (w->got == w->n)
			e->st.waits_completed_total++;
		else if (w->wait_deadline <= e->last_now || e->stop_waiting)
			e->st.waits_timed_out_total++;
		else
			e->st.waits_missed_total++;
	}
	w->next = done->head;
	done->head = w;
}

static void run_done(struct done_list *done)
{
	while (done->head) {
		struct kvt_waiter *w = done->head;

		done->head = w->next;
		w->done(w->arg, w->rc, &w->result);
		free(w);
	}
}

/*
 * Puts w on list (the waiters of a PENDING block, or of a promotion) and in
 * e->waiters by deadline. Only waits for a PENDING block count as waits.
 */
static void waiter_queue(struct kvt_engine *e, struct kvt_waiter *w,
			 struct kvt_waiter **list, bool pending)
{
	struct kvt_waiter **p = &e->waiters, *prev = NULL;

	w->list = list;
	w->next_on_block = *list;
	*list = w;
	if (w->queued) /* its deadline may have moved: queue it anew */
		deadline_unlink(e, w);
	/* Linear, but the waits in flight are a few per worker. */
	while (*p && (*p)->deadline <= w->deadline) {
		prev = *p;
		p = &prev->next;
	}
	w->prev = prev;
	w->next = *p;
	if (w->next)
		w->next->prev = w;
	*p = w;
	w->queued = true;
	if (pending && !w->counted) {
		w->counted = true;
		e->st.waits_active++;
		if (!w->waited) {
			w->waited = true;
			e->st.waits_total++;
		}
	}
	if (e->waiters == w && e->timer_running) {
		e->timer_kick = true;
		pthread_cond_signal(&e->timer_cond);
	}
}

static struct promotion *promotion_of(struct kvt_engine *e,
				      const struct kvt_block *b)
{
	for (struct promotion *p = e->promotions; p; p = p->next)
		if (p->b == b)
			return p;
	return NULL;
}

/*
 * Reads b back from nvme into a new host slot. Its parent counts the slot
 * first, as in block_reserve. false when no slot or no I/O could be had.
 */
static bool promote(struct kvt_engine *e, struct kvt_block *b)
{
	struct promotion *p = calloc(1, sizeof(*p));
	uint32_t seg, slot;

	if (!p)
		return false;
	host_child(e, b->parent, true);
	block_pin(e, b); /* not a victim of its own slot_alloc */
	if (slot_alloc(e, b->ns, b->tenant, &seg, &slot) < 0)
		goto fail;
	if (kvt_nvme_read(e->nvme, p, disk_loc(b), seg,
			  kvt_slots_offset(e->slots, seg, slot)) < 0) {
		slot_free(e, seg, slot);
		goto fail;
	}
	host_attach(e, b, seg, slot);
	b->promoting = 1;
	p->b = b;
	p->next = e->promotions;
	if (p->next)
		p->next->prev = p;
	e->promotions = p;
	return true;
fail:
	host_child(e, b->parent, false);
	io_unpin(e, b);
	free(p);
	return false;
}

/* Starts promoting the blocks of w's ready prefix from w->got on. */
static void promote_prefix(struct kvt_engine *e, struct kvt_waiter *w)
{
	for (uint32_t i = w->got; i < w->n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, w->ns, w->tenant,
						     w->keys[i]);

		if (!b || b->state != KVT_BLOCK_READY)
			return;
		if (!b->has_slot && !promote(e, b))
			return;
	}
}

/*
 * Pins w's keys from where it stopped: READY host blocks are pinned, blocks
 * on nvme are promoted and waited for, a PENDING one is waited for (until
 * the deadline), an absent one ends the prefix.
 */
static void waiter_advance(struct kvt_engine *e, struct kvt_waiter *w,
			   struct done_list *done)
{
	uint64_t now = now_locked(e);

	w->list = NULL;
	/* A dropped namespace's blocks are no longer to be had. */
	while (w->got < w->n && e->ns[w->ns].state == NS_LIVE) {
		struct kvt_block *b = kvt_index_find(e->index, w->ns, w->tenant,
						     w->keys[w->got]);
		struct promotion *p;

		if (!b)
			break;
		if (b->state == KVT_BLOCK_READY && b->has_slot && !b->promoting) {
			block_pin(e, b);
			w->pinned[w->got++] = b;
			continue;
		}
		if (b->state == KVT_BLOCK_READY) {
			if (e->stop_waiting)
				break;
			if (!b->has_slot)
				promote_prefix(e, w);
			if (!(p = promotion_of(e, b)))
				break; /* no room to promote into: a miss */
			w->deadline = w->wait_deadline;
			if (w->deadline < now + PROMOTE_TIMEOUT)
				w->deadline = now + PROMOTE_TIMEOUT;
			waiter_queue(e, w, &p->waiters, false);
			return;
		}
		if (e->stop_waiting || now >= w->wait_deadline)
			break;
		w->deadline = w->wait_deadline;
		waiter_queue(e, w, &b->u.pending.waiters, true);
		return;
	}
	waiter_finish(e, w, 0, done);
}

/* Wakes the waiters of b, which was just committed or taken away. */
static void wake_waiters(struct kvt_engine *e, struct kvt_waiter *list,
			 struct done_list *done)
{
	while (list) {
		struct kvt_waiter *w = list;

		list = w->next_on_block;
		w->list = NULL;
		waiter_advance(e, w, done);
	}
}

/* Removes a PENDING block of a session (or of an inline Put). */
static void pending_abort(struct kvt_engine *e, struct kvt_block_list *pending,
			  struct kvt_block *b, struct done_list *done)
{
	struct kvt_waiter *waiters = b->u.pending.waiters;

	kvt_block_list_unlink(pending, b);
	kvt_index_remove(e->index, b);
	b->indexed = 0;
	e->ns[b->ns].pending--;
	e->st.aborted_total++;
	kvt_policy_forget(e->policy, b);
	b->u.pending.waiters = NULL;
	block_settle(e, b);
	wake_waiters(e, waiters, done);
}

void kvt_engine_session_close(struct kvt_engine *e, struct kvt_session *s)
{
	struct done_list done = { 0 };

	pthread_mutex_lock(&e->lock);
	for (struct kvt_waiter *w = e->waiters, *next; w; w = next) {
		next = w->next;
		if (w->session == s)
			waiter_finish(e, w, -ENOENT, &done);
	}
	while (s->leases) {
		struct lease *l = s->leases;

		s->leases = l->next;
		lease_free(e, l);
	}
	while (s->pending.head)
		pending_abort(e, &s->pending, s->pending.head, &done);
	if (s->prev)
		s->prev->next = s->next;
	else
		e->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	e->st.sessions_active--;
	e->tenants[s->tenant].sessions--;
	pthread_mutex_unlock(&e->lock);
	run_done(&done);
	free(s);
}

int kvt_engine_segment_fd(struct kvt_engine *e, uint32_t tenant,
			  const uint8_t token[KVT_SESSION_TOKEN_BYTES],
			  uint32_t segment, uint32_t *generation,
			  struct kvt_err *err)
{
	struct kvt_session *s;
	uint32_t tag;
	int rc;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token, tenant);
	if (!s) {
		rc = fail(err, -ENOENT, "no such session");
		goto out;
	}
	/* Retiring segments too: their blocks are readable until they go. */
	if (segment >= kvt_slots_segments(e->slots)) {
		rc = fail(err, -ENOENT, "no host segment %u (the tier has %u)",
			  segment, kvt_slots_segments(e->slots));
		goto out;
	}
	tag = kvt_slots_segment_tag(e->slots, segment);
	if (tag != tenant && tag != KVT_TENANT_SHARED) {
		rc = fail(err, -EACCES,
			  "host segment %u holds none of tenant %s's blocks",
			  segment, e->tenants[tenant].name);
		goto out;
	}
	rc = kvt_host_share(e->host, segment, generation);
	if (rc < 0)
		fail(err, rc, "cannot share host segment %u: %s", segment,
		     strerror(-rc));
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- namespaces ---- */

static bool name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > KVT_NAMESPACE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* Namespaces the tenant created and has not dropped. */
static uint32_t ns_created_by(const struct kvt_engine *e, uint32_t tenant)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < e->nns; i++)
		n += e->ns[i].state == NS_LIVE && e->ns[i].creator == tenant;
	return n;
}

/* The tenant's own namespaces it dropped whose entries still wait for
 * their last blocks: only it can hold those (by its leases and
 * reservations), so they count against it too, separately. */
static uint32_t ns_dropped_by(const struct kvt_engine *e, uint32_t tenant)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < e->nns; i++)
		n += e->ns[i].state == NS_DROPPED && !e->ns[i].shared &&
		     e->ns[i].creator == tenant;
	return n;
}

/* A table entry for a new namespace: a free one (its generation moves on),
 * else the next unused one. */
static struct namespace *ns_entry(struct kvt_engine *e, struct kvt_err *err)
{
	uint32_t dropped = 0;

	for (uint32_t i = 0; i < e->nns; i++) {
		struct namespace *n = &e->ns[i];
		uint16_t generation = (uint16_t)(n->generation + 1);

		if (n->state == NS_FREE) {
			memset(n, 0, sizeof(*n));
			n->generation = generation;
			return n;
		}
		dropped += n->state == NS_DROPPED;
	}
	if (e->nns < e->cfg.max_namespaces)
		return &e->ns[e->nns++];
	fail(err, -ENOSPC, "limits.max_namespaces (%u) reached: the daemon holds that many namespaces%s",
	     e->cfg.max_namespaces,
	     dropped ? ", some of them dropped and waiting for their last pinned or reserved blocks" : "");
	return NULL;
}

/*
 * Namespaces are the tenant's own, like keys, unless shared: tenant is
 * KVT_TENANT_SHARED for a shared one. A new one counts against creator's
 * max_tenant_namespaces (KVT_TENANT_SHARED: against nobody), which bounds
 * it unless recovering (what the nvme tier holds comes back regardless).
 * *ns: its entry.
 */
static int ns_open_locked(struct kvt_engine *e, const char *name,
			  uint64_t page_bytes, uint32_t block_tokens,
			  uint32_t tenant, uint32_t creator, bool recovering,
			  uint64_t idle_ttl, uint32_t *ns, bool *created,
			  struct kvt_err *err)
{
	bool shared = tenant == KVT_TENANT_SHARED;
	struct namespace *n;
	uint32_t i;

	for (i = 0; i < e->nns; i++) {
		n = &e->ns[i];
		if (n->state != NS_LIVE || n->tenant != tenant ||
		    strcmp(n->name, name) != 0)
			continue;
		if (n->page_bytes != page_bytes || n->block_tokens != block_tokens)
			return fail(err, -EPERM,
				    "namespace %s is open with page_bytes %llu and block_tokens %u, not %llu and %u",
				    name, (unsigned long long)n->page_bytes,
				    n->block_tokens,
				    (unsigned long long)page_bytes, block_tokens);
		if (idle_ttl) {
			n->idle_ttl = idle_ttl;
			n->own_ttl = true;
		}
		*ns = i;
		*created = false;
		return 0;
	}
	if (!recovering && e->cfg.max_tenant_namespaces &&
	    ns_created_by(e, creator) >= e->cfg.max_tenant_namespaces) {
		e->st.namespaces_refused_total++;
		return fail(err, -EDQUOT,
			    "tenants.max_namespaces (%u) reached for tenant %s: drop a namespace first (DropNamespace)",
			    e->cfg.max_tenant_namespaces, e->tenants[creator].name);
	}
	/* Nor may its dropped ones, which hold their entries while it keeps
	 * their leases and reservations, fill the daemon's table. */
	if (!recovering && e->cfg.max_tenant_namespaces &&
	    ns_dropped_by(e, creator) >= e->cfg.max_tenant_namespaces) {
		e->st.namespaces_refused_total++;
		return fail(err, -EDQUOT,
			    "tenants.max_namespaces (%u) reached for tenant %s: that many namespaces it dropped still wait for their last leased or reserved blocks (release the leases; commit, abort or close the sessions of the reservations)",
			    e->cfg.max_tenant_namespaces, e->tenants[creator].name);
	}
	if (!(n = ns_entry(e, err)))
		return -ENOSPC;
	i = (uint32_t)(n - e->ns);
	n->state = NS_LIVE;
	strcpy(n->name, name);
	n->page_bytes = page_bytes;
	n->block_tokens = block_tokens;
	n->shared = shared;
	n->tenant = tenant;
	n->creator = creator;
	n->idle_ttl = idle_ttl ? idle_ttl : e->cfg.idle_ttl;
	n->own_ttl = idle_ttl != 0;
	n->stride = (page_bytes + KVT_SLOT_ALIGN - 1) / KVT_SLOT_ALIGN *
		    KVT_SLOT_ALIGN;
	if (e->nvme) {
		struct kvt_nvme_ns d = { .page_bytes = page_bytes,
					 .stride = n->stride,
					 .block_tokens = block_tokens,
					 .shared = shared,
					 .uid = e->tenants[tenant].uid };

		snprintf(d.name, sizeof(d.name), "%s", name);
		snprintf(d.tenant, sizeof(d.tenant), "%s", e->tenants[tenant].name);
		kvt_nvme_namespace(e->nvme, i, &d);
	}
	*ns = i;
	*created = true;
	return 0;
}

int kvt_engine_open_namespace(struct kvt_engine *e, uint32_t tenant,
			      const char *name,
			      uint64_t page_bytes, uint32_t block_tokens,
			      bool shared, uint64_t idle_ttl, uint32_t *ns,
			      bool *created, uint64_t *stride,
			      struct kvt_err *err)
{
	int rc;

	if (!name_valid(name))
		return fail(err, -EINVAL,
			    "namespace name must be 1..%d characters of [A-Za-z0-9._:-]",
			    KVT_NAMESPACE_NAME_MAX);
	if (page_bytes == 0 || page_bytes > e->cfg.segment_bytes)
		return fail(err, -EINVAL,
			    "page_bytes %llu is outside 1..%llu (the host segment size)",
			    (unsigned long long)page_bytes,
			    (unsigned long long)e->cfg.segment_bytes);
	if (block_tokens == 0 || block_tokens > KVT_BLOCK_TOKENS_MAX)
		return fail(err, -EINVAL, "block_tokens %u is outside 1..%d",
			    block_tokens, KVT_BLOCK_TOKENS_MAX);

	pthread_mutex_lock(&e->lock);
	rc = ns_open_locked(e, name, page_bytes, block_tokens,
			    shared ? KVT_TENANT_SHARED : tenant, tenant, false,
			    idle_ttl, ns, created, err);
	if (rc == 0) {
		*stride = e->ns[*ns].stride;
		*ns = ns_id(e, *ns);
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/*
 * The entry of namespace id `id`, if tenant may use it. Another tenant's
 * namespace is as unknown as one that does not exist: its id says nothing.
 * A dropped one is -ENOENT too, saying so, unless dropped_ok. Caller holds
 * the lock.
 */
static int ns_index(struct kvt_engine *e, uint32_t id, uint32_t tenant,
		    bool dropped_ok, struct kvt_err *err)
{
	uint32_t i = id & 0xffff;
	const struct namespace *n = i < e->nns ? &e->ns[i] : NULL;

	if (!n || n->generation != id >> 16 ||
	    (n->tenant != tenant && n->tenant != KVT_TENANT_SHARED))
		return fail(err, -ENOENT, "unknown namespace_id %u", id);
	/* A free entry of the same generation is a dropped one, emptied. */
	if (n->state == NS_FREE || (n->state == NS_DROPPED && !dropped_ok))
		return fail(err, -ENOENT, "namespace %s (namespace_id %u) was dropped",
			    n->name, id);
	return (int)i;
}

/* q with its namespace id resolved to the entry (see ns_index): what the
 * engine's own functions take. */
static int req_resolve(struct kvt_engine *e, const struct kvt_req *q,
		       struct kvt_req *r, bool dropped_ok, struct kvt_err *err)
{
	int i = ns_index(e, q->ns, q->tenant, dropped_ok, err);

	*r = *q;
	if (i < 0)
		return i;
	r->ns = (uint32_t)i;
	return 0;
}

int kvt_engine_page_bytes(struct kvt_engine *e, uint32_t tenant, uint32_t ns,
			  uint64_t *page_bytes, struct kvt_err *err)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = ns_index(e, ns, tenant, false, err);
	if (rc >= 0) {
		*page_bytes = e->ns[rc].page_bytes;
		rc = 0;
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

static struct kvt_block *find(struct kvt_engine *e, const struct kvt_req *q,
			      uint32_t i)
{
	return kvt_index_find(e->index, q->ns, scope(e, q->ns),
			      q->keys[i]);
}

/*
 * Walks the READY prefix of q's keys into e->found[0..*len), so that
 * callers need not look its blocks up again. Caller holds the lock.
 */
static int ready_prefix(struct kvt_engine *e, const struct kvt_req *q,
			uint32_t *len, struct kvt_err *err)
{
	uint32_t i, tenant = scope(e, q->ns);

	if (q->n > e->found_cap) {
		struct kvt_block **f = realloc(e->found, sizeof(*f) * q->n);

		if (!f)
			return fail(err, -ENOMEM, "out of memory");
		e->found = f;
		e->found_cap = q->n;
	}
	/* In a large index every probe misses the cache: overlap them. */
	for (i = 0; i < q->n; i++)
		kvt_index_prefetch(e->index, q->ns, tenant, q->keys[i]);
	for (i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (!b || b->state != KVT_BLOCK_READY)
			break;
		e->found[i] = b;
	}
	*len = i;
	return 0;
}

int kvt_engine_lookup(struct kvt_engine *e, const struct kvt_req *q,
		      uint32_t *ready, uint32_t *pending, struct kvt_err *err)
{
	uint32_t r, p, on_nvme = 0;
	struct kvt_req rq;
	int rc;

	pthread_mutex_lock(&e->lock);
	if ((rc = req_resolve(e, q, &rq, false, err)) < 0)
		goto out;
	q = &rq;
	if ((rc = ready_prefix(e, q, &r, err)) < 0)
		goto out;
	for (p = r; p < q->n && find(e, q, p); p++)
		;
	/* Touch leaf first so that the chain's root is the most recent. */
	for (uint32_t i = r; i-- > 0;) {
		block_touch(e, e->found[i], now_locked(e));
		on_nvme += !e->found[i]->has_slot;
	}
	e->ns[q->ns].lookup_hits_nvme += on_nvme;
	e->st.lookup_hits_nvme += on_nvme;
	*ready = r;
	*pending = p - r;
	e->ns[q->ns].lookup_keys += q->n;
	e->ns[q->ns].lookup_hits += r;
	e->tenants[q->tenant].lookup_keys += q->n;
	e->tenants[q->tenant].lookup_hits += r;
	e->st.lookup_keys += q->n;
	e->st.lookup_hits += r;
	e->st.lookup_pending += p - r;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- reserve / commit / abort ---- */

/*
 * A new PENDING block for owner in a free slot, or NULL (rc in *rc). Its
 * parent counts it as a child before the slot is sought, so that making
 * room never evicts the block the chain is being extended from.
 */
static struct kvt_block *block_reserve(struct kvt_engine *e,
				       struct kvt_block_list *pending, void *owner,
				       uint32_t ns, uint32_t tenant,
				       const uint8_t *key, const uint8_t *parent,
				       const struct kvt_retention *ret,
				       uint64_t now, int *rc)
{
	struct kvt_block *b = calloc(1, sizeof(*b));
	uint32_t seg, slot;

	if (!b) {
		*rc = -ENOMEM;
		return NULL;
	}
	if ((*rc = kvt_policy_prepare(e->policy, ns, tenant)) < 0) {
		free(b);
		return NULL;
	}
	b->parent = parent ? kvt_index_find(e->index, ns, tenant, parent) : NULL;
	if (b->parent)
		b->parent->children++;
	host_child(e, b->parent, true);
	if ((*rc = slot_alloc(e, ns, tenant, &seg, &slot)) < 0) {
		if (b->parent) {
			b->parent->children--;
			host_child(e, b->parent, false);
			block_settle(e, b->parent);
		}
		free(b);
		return NULL;
	}
	memcpy(b->key, key, KVT_KEY_BYTES);
	b->ns = (uint16_t)ns;
	b->tenant = (uint16_t)tenant;
	b->state = KVT_BLOCK_PENDING;
	b->u.pending.owner = owner;
	b->indexed = 1;
	kvt_index_insert(e->index, b);
	host_attach(e, b, seg, slot);
	kvt_block_list_insert(pending, NULL, b);
	block_retain(e, b, ret, now);
	e->ns[ns].blocks++;
	e->ns[ns].pending++;
	e->st.reserved_total++;
	return b;
}

/*
 * Reserves q's keys for owner, whose PENDING blocks go on `pending` (a
 * session's list, or a Put call's own). Stops taking slots at the first key
 * that finds none. Caller holds the lock.
 */
static int reserve_locked(struct kvt_engine *e, struct kvt_block_list *pending,
			  void *owner, const struct kvt_req *q,
			  const uint8_t *parent,
			  const struct kvt_retention *ret,
			  enum kvt_reserve_state *states,
			  struct kvt_location *locs, struct kvt_err *err)
{
	uint32_t tenant = scope(e, q->ns);
	uint32_t reserved = 0, no_space = 0;
	uint64_t now = now_locked(e);
	int rc = 0;

	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		memset(&locs[i], 0, sizeof(locs[i]));
		if (b && b->state == KVT_BLOCK_READY) {
			states[i] = KVT_RESERVE_PRESENT;
			if (ret)
				block_retain(e, b, ret, now);
			continue;
		}
		if (b && b->u.pending.owner != owner) {
			states[i] = KVT_RESERVE_BUSY;
			continue;
		}
		if (!b && no_space == 0) {
			b = block_reserve(e, pending, owner, q->ns, tenant,
					  q->keys[i], i ? q->keys[i - 1] : parent,
					  ret, now, &rc);
			if (!b && rc != -ENOSPC)
				return fail(err, rc, "slot allocation: %s",
					    strerror(-rc));
			reserved += b != NULL;
		}
		if (!b) {
			states[i] = KVT_RESERVE_NO_SPACE;
			no_space++;
			continue;
		}
		/* Reserved now, or earlier by the same owner: same slot. */
		states[i] = KVT_RESERVE_RESERVED;
		locs[i].segment = b->segment;
		locs[i].generation = kvt_host_generation(e->host, b->segment);
		locs[i].offset = kvt_slots_offset(e->slots, b->segment, b->slot);
	}
	if (no_space) {
		e->st.reserve_no_space_total += no_space;
		if (reserved == 0)
			return fail(err, -ENOSPC,
				    "host tier full: nothing this tenant may evict for %u of %u keys",
				    no_space, q->n);
	}
	return 0;
}

int kvt_engine_reserve(struct kvt_engine *e, const struct kvt_req *q,
		       const uint8_t *parent,
		       const struct kvt_retention *retention,
		       enum kvt_reserve_state *states,
		       struct kvt_location *locs, struct kvt_err *err)
{
	struct kvt_session *s;
	struct kvt_req rq;
	int rc;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, q->session, q->tenant);
	if (!s)
		rc = fail(err, -ENOENT, "unknown session");
	else if ((rc = req_resolve(e, q, &rq, false, err)) == 0)
		rc = reserve_locked(e, &s->pending, s, &rq, parent, retention,
				    states, locs, err);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Checks that every key is PENDING and owned by owner. Caller holds the lock. */
static int check_owned(struct kvt_engine *e, void *owner,
		       const struct kvt_req *q, struct kvt_err *err)
{
	char hex[17];

	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (!b || b->state != KVT_BLOCK_PENDING ||
		    b->u.pending.owner != owner)
			return fail(err, -EPERM,
				    "keys[%u] (%s...) is not reserved by this session (%s)",
				    i, key_hex(q->keys[i], hex),
				    !b ? "absent" :
				    b->state == KVT_BLOCK_READY ? "already committed" :
								  "reserved by another session");
	}
	return 0;
}

/* Publishes PENDING blocks and wakes their readers. Caller holds the lock. */
static void commit_locked(struct kvt_engine *e, struct kvt_block_list *pending,
			  const struct kvt_req *q, struct done_list *done)
{
	struct namespace *nsp = &e->ns[q->ns];

	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);
		struct kvt_waiter *waiters;

		if (b->state == KVT_BLOCK_READY)
			continue; /* listed twice */
		waiters = b->u.pending.waiters;
		kvt_block_list_unlink(pending, b);
		b->state = KVT_BLOCK_READY;
		b->u.atime = nsp->last_use = now_locked(e);
		kvt_policy_update(e->policy, b);
		nsp->pending--;
		nsp->ready++;
		e->st.committed_total++;
		e->st.host_in_bytes_total += nsp->page_bytes;
		wake_waiters(e, waiters, done);
		demote(e, b);
	}
}

static void abort_locked(struct kvt_engine *e, struct kvt_block_list *pending,
			 const struct kvt_req *q, struct done_list *done)
{
	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (b) /* NULL when listed twice */
			pending_abort(e, pending, b, done);
	}
}

typedef void (*owned_op)(struct kvt_engine *e, struct kvt_block_list *pending,
			 const struct kvt_req *q, struct done_list *done);

/*
 * Commit and Abort: all keys must be this session's reservations. In a
 * namespace dropped since they were made, both abort them, and a Commit
 * says it could not publish them.
 */
static int owned_call(struct kvt_engine *e, const struct kvt_req *q,
		      owned_op op, struct kvt_err *err)
{
	struct done_list done = { 0 };
	struct kvt_session *s;
	struct kvt_req rq;
	int rc;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, q->session, q->tenant);
	if (!s)
		rc = fail(err, -ENOENT, "unknown session");
	else if ((rc = req_resolve(e, q, &rq, true, err)) == 0 &&
		 (rc = check_owned(e, s, &rq, err)) == 0) {
		if (e->ns[rq.ns].state == NS_DROPPED) {
			if (op == commit_locked)
				rc = fail(err, -ENOENT,
					  "namespace %s (namespace_id %u) was dropped: its reservations are aborted",
					  e->ns[rq.ns].name, q->ns);
			op = abort_locked;
		}
		op(e, &s->pending, &rq, &done);
	}
	pthread_mutex_unlock(&e->lock);
	run_done(&done);
	return rc;
}

int kvt_engine_commit(struct kvt_engine *e, const struct kvt_req *q,
		      struct kvt_err *err)
{
	return owned_call(e, q, commit_locked, err);
}

int kvt_engine_abort(struct kvt_engine *e, const struct kvt_req *q,
		     struct kvt_err *err)
{
	return owned_call(e, q, abort_locked, err);
}

/* ---- acquire / release / pin ---- */

int kvt_engine_acquire(struct kvt_engine *e, const struct kvt_req *q,
		       uint64_t wait, kvt_acquire_done done_fn, void *arg,
		       struct kvt_err *err)
{
	struct done_list done = { 0 };
	struct kvt_waiter *w;
	struct kvt_session *s;
	size_t per_key = sizeof(*w->pinned) + sizeof(*w->locs) + KVT_KEY_BYTES;
	int rc = 0;

	if (wait > e->cfg.max_wait)
		return fail(err, -EINVAL, "wait_ms %llu exceeds max_wait (%llu ms)",
			    (unsigned long long)(wait / KVT_MS),
			    (unsigned long long)(e->cfg.max_wait / KVT_MS));
	w = calloc(1, sizeof(*w) + per_key * q->n);
	if (!w)
		return fail(err, -ENOMEM, "out of memory");
	w->pinned = (struct kvt_block **)(w + 1);
	w->locs = (struct kvt_location *)(w->pinned + q->n);
	w->keys = (uint8_t(*)[KVT_KEY_BYTES])(w->locs + q->n);
	w->result.locs = w->locs;
	w->n = q->n;
	w->done = done_fn;
	w->arg = arg;
	for (uint32_t i = 0; i < q->n; i++)
		memcpy(w->keys[i], q->keys[i], KVT_KEY_BYTES);

	pthread_mutex_lock(&e->lock);
	s = session_find(e, q->session, q->tenant);
	if (!s)
		rc = fail(err, -ENOENT, "unknown session");
	else if ((rc = ns_index(e, q->ns, q->tenant, false, err)) >= 0)
		w->ns = (uint32_t)rc;
	if (rc >= 0 && e->cfg.max_leases) {
		struct tenant *t = &e->tenants[s->tenant];

		if (t->leases + t->acquiring >= e->cfg.max_leases) {
			e->st.leases_refused_total++;
			rc = fail(err, -EDQUOT,
				  "tenants.max_leases (%u) reached for tenant %s: release leases first",
				  e->cfg.max_leases, t->name);
		}
	}
	if (rc >= 0) {
		rc = 0;
		e->tenants[s->tenant].acquiring++;
		w->session = s;
		w->tenant = scope(e, w->ns);
		w->wait_deadline = now_locked(e) + wait;
		waiter_advance(e, w, &done);
	}
	pthread_mutex_unlock(&e->lock);
	if (rc < 0)
		free(w);
	run_done(&done);
	return rc;
}

int kvt_engine_release(struct kvt_engine *e, uint32_t tenant,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES],
		       uint64_t lease, struct kvt_err *err)
{
	struct kvt_session *s;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token, tenant);
	if (!s)
		rc = fail(err, -ENOENT, "unknown session");
	else if (!lease_remove(e, s, lease))
		rc = fail(err, -ENOENT,
			  "lease %llu is not held by this session (released, or expired after lease_ttl)",
			  (unsigned long long)lease);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_pin(struct kvt_engine *e, const struct kvt_req *q,
		   uint32_t max_pins, struct kvt_block **pinned,
		   uint32_t *count, uint32_t *ready, struct kvt_err *err)
{
	struct kvt_req rq;
	int rc;

	*count = 0;
	pthread_mutex_lock(&e->lock);
	if ((rc = req_resolve(e, q, &rq, false, err)) == 0)
		rc = ready_prefix(e, &rq, ready, err);
	if (rc == 0) {
		q = &rq;
		for (; *count < *ready && *count < max_pins; (*count)++) {
			struct kvt_block *b = e->found[*count];

			if (!b->has_slot || b->promoting)
				break;
			pinned[*count] = b;
			block_pin(e, b);
			e->st.host_out_bytes_total += e->ns[q->ns].page_bytes;
		}
		/* Blocks on nvme are read back for the next call. Found anew:
		 * making room for one may evict the next. */
		for (uint32_t i = *count; i < *ready && e->nvme; i++) {
			struct kvt_block *b = find(e, q, i);

			if (!b || b->state != KVT_BLOCK_READY ||
			    (!b->has_slot && !promote(e, b)))
				break;
		}
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

void kvt_engine_unpin(struct kvt_engine *e, struct kvt_block **blocks,
		      uint32_t n)
{
	pthread_mutex_lock(&e->lock);
	for (uint32_t i = 0; i < n; i++)
		block_unpin(e, blocks[i]);
	pthread_mutex_unlock(&e->lock);
}

const void *kvt_engine_page(const struct kvt_engine *e,
			    const struct kvt_block *b)
{
	return kvt_host_ptr(e->host, b->segment,
			    kvt_slots_offset(e->slots, b->segment, b->slot));
}

/* ---- put ---- */

int kvt_engine_put(struct kvt_engine *e, const struct kvt_req *q,
		   const uint8_t *parent, const struct kvt_retention *retention,
		   const void *const *pages, uint32_t *stored,
		   struct kvt_err *err)
{
	enum kvt_reserve_state *states = malloc(sizeof(*states) * q->n);
	struct kvt_location *locs = malloc(sizeof(*locs) * q->n);
	/* The reservations of this call, owned by nobody else. */
	struct kvt_block_list mine = { 0 };
	struct done_list done = { 0 };
	uint64_t page_bytes = 0;
	struct kvt_req rq;
	int rc;

	*stored = 0;
	if (!states || !locs) {
		rc = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&e->lock);
	rc = req_resolve(e, q, &rq, false, err);
	if (rc == 0) {
		q = &rq;
		page_bytes = e->ns[q->ns].page_bytes;
		rc = reserve_locked(e, &mine, &mine, q, parent, retention,
				    states, locs, err);
	}
	if (rc < 0) {
		while (mine.head)
			pending_abort(e, &mine, mine.head, &done);
		pthread_mutex_unlock(&e->lock);
		goto out;
	}
	pthread_mutex_unlock(&e->lock);

	/* The slots are PENDING and ours: copy without the lock. */
	for (uint32_t i = 0; i < q->n; i++)
		if (states[i] == KVT_RESERVE_RESERVED)
			memcpy(kvt_host_ptr(e->host, locs[i].segment,
					    locs[i].offset),
			       pages[i], page_bytes);

	pthread_mutex_lock(&e->lock);
	if (e->ns[q->ns].state == NS_DROPPED) {
		rc = fail(err, -ENOENT, "namespace %s was dropped during the Put",
			  e->ns[q->ns].name);
		while (mine.head)
			pending_abort(e, &mine, mine.head, &done);
	}
	for (uint32_t i = 0; i < q->n && rc == 0; i++) {
		struct kvt_req one = *q;

		if (states[i] != KVT_RESERVE_RESERVED)
			continue;
		one.keys = &q->keys[i];
		one.n = 1;
		if (find(e, &one, 0)->state == KVT_BLOCK_PENDING) /* once per key */
			(*stored)++;
		commit_locked(e, &mine, &one, &done);
	}
	pthread_mutex_unlock(&e->lock);
out:
	run_done(&done);
	free(states);
	free(locs);
	return rc;
}

/* ---- nvme tier: the mover's reports, recovery ---- */

static void nvme_written(void *arg, void *user, int rc, struct kvt_nvme_loc loc)
{
	struct kvt_engine *e = arg;
	struct kvt_block *b = user;

	b->demoting = 0;
	e->demoting_bytes -= e->ns[b->ns].stride;
	if (rc == 0 && b->indexed) {
		disk_set(e, b, loc);
		e->st.demotions_total++;
	} else if (rc == 0) {
		kvt_nvme_forget(e->nvme, loc); /* dropped while being written */
	}
	io_unpin(e, b);
}

static void nvme_read(void *arg, void *user, int rc)
{
	struct kvt_engine *e = arg;
	struct promotion *p = user;
	struct kvt_block *b = p->b;

	if (p->prev)
		p->prev->next = p->next;
	else
		e->promotions = p->next;
	if (p->next)
		p->next->prev = p->prev;
	b->promoting = 0;
	if (rc == 0) {
		e->st.promotions_total++;
		e->st.host_in_bytes_total += e->ns[b->ns].page_bytes;
	} else {
		/* A corrupt or unreadable page is a miss, never served. */
		e->st.promotion_failures_total++;
		if (b->indexed)
			block_unindex(e, b);
	}
	wake_waiters(e, p->waiters, &e->io_done);
	free(p);
	io_unpin(e, b);
}

/* A region is reused: b's record goes. Kept in host, it is written anew. */
static void nvme_reclaimed(void *arg, void *user)
{
	struct kvt_engine *e = arg;
	struct kvt_block *b = user;

	disk_clear(e, b, false);
	if (b->has_slot) {
		demote(e, b);
		return;
	}
	e->st.nvme_evictions_total++;
	e->ns[b->ns].evictions++;
	block_unindex(e, b);
}

static void nvme_unlocked(void *arg)
{
	struct kvt_engine *e = arg;
	struct done_list done;

	pthread_mutex_lock(&e->lock);
	done = e->io_done;
	e->io_done.head = NULL;
	pthread_mutex_unlock(&e->lock);
	run_done(&done);
}

static void nvme_log(void *arg, bool error, const char *msg)
{
	struct kvt_engine *e = arg;

	if (e->cfg.log)
		e->cfg.log(error, msg);
}

/* A recovered block whose parent is linked once every record is in. */
struct recovered {
	struct kvt_block *b;
	uint8_t parent[KVT_KEY_BYTES];
};

static int recover_ns(void *arg, const struct kvt_nvme_ns *d)
{
	struct kvt_engine *e = arg;
	struct kvt_err err;
	uint32_t ns, tenant = KVT_TENANT_SHARED;
	bool created;

	if (!name_valid(d->name) || d->page_bytes > e->cfg.segment_bytes ||
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
	struct kvt_engine *e = arg;
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
		disk_clear(e, b, true);
		disk_set(e, b, r->loc);
		return b;
	}
	if (e->nrecovered == e->recovered_cap) {
		size_t cap = e->recovered_cap ? 2 * e->recovered_cap : 1024;
		struct recovered *v = realloc(e->recovered, cap * sizeof(*v));

		if (!v)
			return NULL;
		e->recovered = v;
		e->recovered_cap = cap;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	memcpy(b->key, r->block.key, KVT_KEY_BYTES);
	b->ns = (uint16_t)r->ns;
	b->tenant = (uint16_t)tenant;
	b->state = KVT_BLOCK_READY;
	b->indexed = 1;
	b->u.atime = now_locked(e);
	if (kvt_index_insert(e->index, b) < 0) {
		free(b);
		return NULL;
	}
	disk_set(e, b, r->loc);
	block_retain(e, b, NULL, 0);
	e->ns[r->ns].blocks++;
	e->ns[r->ns].ready++;
	/* Its own key for a parent means none. */
	e->recovered[e->nrecovered].b = b;
	memcpy(e->recovered[e->nrecovered].parent,
	       r->block.has_parent ? r->block.parent : b->key, KVT_KEY_BYTES);
	e->nrecovered++;
	return b;
}

/* Opens the nvme tier, takes in what it holds, starts its mover. */
static int nvme_start(struct kvt_engine *e, struct kvt_err *err)
{
	const struct kvt_engine_nvme *c = &e->cfg.nvme;
	uint32_t nseg = kvt_slots_segments(e->slots);
	struct kvt_nvme_config nc = {
		.paths = c->paths, .npaths = c->npaths,
		.path_bytes = c->path_bytes, .region_bytes = c->region_bytes,
		.queue_depth = c->queue_depth, .retry_ns = c->retry,
		.max_namespaces = e->cfg.max_namespaces,
		.nsegments = nseg, .segment_bytes = e->cfg.segment_bytes,
		.lock = &e->lock, .arg = e,
		.ops = { nvme_written, nvme_read, nvme_reclaimed, nvme_unlocked,
			 nvme_log },
	};
	int rc;

	nc.segments = e->segments;
	rc = kvt_nvme_open(&nc, &e->nvme, err->msg, sizeof(err->msg));
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&e->lock);
	rc = kvt_nvme_recover(e->nvme, recover_ns, recover_record, e);
	for (size_t i = 0; i < e->nrecovered; i++) {
		struct kvt_block *b = e->recovered[i].b;
		struct kvt_block *p = kvt_index_find(e->index, b->ns, b->tenant,
						     e->recovered[i].parent);

		if (p && p != b) {
			b->parent = p;
			p->children++;
		}
	}
	free(e->recovered);
	e->recovered = NULL;
	e->st.nvme_recovered_blocks = e->nrecovered;
	pthread_mutex_unlock(&e->lock);
	if (rc < 0)
		return fail(err, rc, "nvme recovery: %s", strerror(-rc));
	if ((rc = kvt_nvme_start(e->nvme)) < 0)
		return fail(err, rc, "cannot start the nvme mover thread");
	return 0;
}

/* ---- drop ---- */

struct drop_all {
	struct kvt_engine *e;
	uint32_t ns, tenant, dropped, pending;
	bool any_ns, any_tenant; /* any_tenant: every namespace of ns's name */
};

static void drop_all_cb(struct kvt_block *b, void *arg)
{
	struct drop_all *d = arg;
	const struct namespace *n = d->e->ns;
	bool ns_match = d->any_ns || b->ns == d->ns ||
			(d->any_tenant && strcmp(n[b->ns].name, n[d->ns].name) == 0);

	if (b->state == KVT_BLOCK_READY && ns_match &&
	    (d->any_tenant || b->tenant == d->tenant)) {
		block_unindex(d->e, b);
		d->dropped++;
	} else if (ns_match && b->state == KVT_BLOCK_PENDING) {
		d->pending++; /* left to its producer */
	}
}

static int drop_tenant(struct kvt_engine *e, const struct kvt_req *q,
		       bool admin, uint32_t uid, struct drop_all *d,
		       struct kvt_err *err)
{
	uint32_t t;

	if (!admin && uid != e->tenants[q->tenant].uid)
		return fail(err, -EACCES,
			    "only an admin may drop another tenant's blocks (uid %u)",
			    uid);
	for (t = 1; t < e->ntenants && e->tenants[t].uid != uid; t++)
		;
	if (t == e->ntenants)
		return 0; /* a tenant never seen has no blocks */
	d->any_ns = true;
	d->tenant = t;
	kvt_index_foreach(e->index, drop_all_cb, d);
	return 0;
}

int kvt_engine_drop(struct kvt_engine *e, const struct kvt_req *q,
		    enum kvt_drop_scope scope_kind, bool admin,
		    uint32_t target_uid, uint32_t *dropped, struct kvt_err *err)
{
	struct drop_all d = { .e = e };
	struct kvt_req rq;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (scope_kind == KVT_DROP_TENANT) {
		rc = drop_tenant(e, q, admin, target_uid, &d, err);
		goto out;
	}
	if ((rc = req_resolve(e, q, &rq, false, err)) < 0)
		goto out;
	q = &rq;
	d.ns = q->ns;
	if (scope_kind == KVT_DROP_NAMESPACE) {
		if (e->ns[q->ns].shared && !admin) {
			rc = fail(err, -EACCES,
				  "namespace %s is shared: only an admin may drop all of it",
				  e->ns[q->ns].name);
			goto out;
		}
		d.tenant = scope(e, q->ns);
		d.any_tenant = admin;
		kvt_index_foreach(e->index, drop_all_cb, &d);
		goto out;
	}
	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (b && b->state == KVT_BLOCK_READY) {
			block_unindex(e, b);
			d.dropped++;
		}
	}
out:
	e->st.dropped_total += d.dropped;
	*dropped = d.dropped;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_drop_namespace(struct kvt_engine *e, uint32_t tenant,
			      uint32_t ns, bool admin, uint32_t *dropped,
			      uint32_t *pending, struct kvt_err *err)
{
	struct drop_all d = { .e = e };
	struct namespace *n;
	int rc;

	pthread_mutex_lock(&e->lock);
	/* An admin may name any tenant's namespace: as its owner would. */
	if (admin && (ns & 0xffff) < e->nns)
		tenant = e->ns[ns & 0xffff].tenant;
	if ((rc = ns_index(e, ns, tenant, false, err)) < 0)
		goto out;
	n = &e->ns[rc];
	if (n->shared && !admin) {
		rc = fail(err, -EACCES,
			  "namespace %s is shared: only an admin may drop it",
			  n->name);
		goto out;
	}
	d.ns = (uint32_t)rc;
	d.tenant = n->tenant;
	kvt_index_foreach(e->index, drop_all_cb, &d);
	n->state = n->blocks ? NS_DROPPED : NS_FREE;
	if (e->nvme)
		kvt_nvme_namespace_close(e->nvme, d.ns);
	e->st.dropped_total += d.dropped;
	e->st.namespaces_dropped_total++;
	rc = 0;
out:
	*dropped = d.dropped;
	*pending = d.pending;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- deadlines ---- */

static void expire_leases(struct kvt_engine *e, uint64_t now)
{
	while (e->cfg.lease_ttl && e->oldest_lease &&
	       e->oldest_lease->born + e->cfg.lease_ttl <= now) {
		struct lease *l = e->oldest_lease;

		e->st.leases_expired_total++;
		e->st.forced_unpins_total += l->n;
		lease_remove(e, l->session, l->id);
	}
}

static void expire_idle(struct kvt_engine *e, uint64_t now)
{
	for (uint32_t i = 0; i < e->nns; i++) {
		struct namespace *n = &e->ns[i];
		struct kvt_block *b;

		if (!n->idle_ttl || now < n->idle_ttl)
			continue;
		while ((b = kvt_policy_idle(e->policy, i, now - n->idle_ttl))) {
			n->expired++;
			e->st.expired_total++;
			block_unindex(e, b);
		}
	}
}

uint64_t kvt_engine_tick(struct kvt_engine *e)
{
	struct done_list done = { 0 };
	struct kvt_block *b;
	uint64_t now, next;

	pthread_mutex_lock(&e->lock);
	now = now_locked(e);
	while (e->waiters && e->waiters->deadline <= now)
		waiter_finish(e, e->waiters, 0, &done);
	while ((b = kvt_policy_expired_priority(e->policy, now))) {
		e->st.priority_fallbacks_total++;
		(void)kvt_policy_set_priority(e->policy, b,
					      e->cfg.default_priority, 0);
	}
	expire_idle(e, now);
	expire_leases(e, now);
	next = now + TIMER_PERIOD;
	if (e->retiring && (e->retiring = retire_sweep(e)))
		next = now + RETIRE_PERIOD;
	if (e->ndamaged || kvt_host_faults(e->host) != e->faults_seen)
		damage_sweep(e);
	if (e->ndamaged)
		next = now + RETIRE_PERIOD;
	if (e->waiters && e->waiters->deadline < next)
		next = e->waiters->deadline;
	if (kvt_policy_next_deadline(e->policy) < next)
		next = kvt_policy_next_deadline(e->policy);
	pthread_mutex_unlock(&e->lock);
	run_done(&done);
	return next;
}

void kvt_engine_stop_waiting(struct kvt_engine *e)
{
	struct done_list done = { 0 };

	pthread_mutex_lock(&e->lock);
	e->stop_waiting = true;
	while (e->waiters)
		waiter_finish(e, e->waiters, 0, &done);
	pthread_mutex_unlock(&e->lock);
	run_done(&done);
}

static void *timer_main(void *arg)
{
	struct kvt_engine *e = arg;

	pthread_mutex_lock(&e->lock);
	while (!e->timer_stop) {
		uint64_t next, now;
		struct timespec ts;

		pthread_mutex_unlock(&e->lock);
		next = kvt_engine_tick(e);
		pthread_mutex_lock(&e->lock);
		now = e->cfg.clock(e->cfg.clock_arg);
		/* A wait queued since the tick set timer_kick. */
		if (next > now && !e->timer_kick && !e->timer_stop) {
			/* The engine clock is CLOCK_MONOTONIC, as is the cond's. */
			ts.tv_sec = (time_t)(next / 1000000000ull);
			ts.tv_nsec = (long)(next % 1000000000ull);
			pthread_cond_timedwait(&e->timer_cond, &e->lock, &ts);
		}
		e->timer_kick = false;
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/* ---- stats ---- */

void kvt_engine_stats(struct kvt_engine *e, struct kvt_engine_stats *st)
{
	pthread_mutex_lock(&e->lock);
	*st = e->st;
	st->ready_blocks = st->pending_blocks = st->namespaces = 0;
	for (uint32_t i = 0; i < e->nns; i++) {
		st->ready_blocks += e->ns[i].ready;
		st->pending_blocks += e->ns[i].pending;
		st->namespaces += e->ns[i].state == NS_LIVE;
	}
	st->tenants = e->ntenants;
	st->host_segments = kvt_slots_active(e->slots);
	st->host_segments_retiring = e->retiring;
	st->host_segments_used = kvt_slots_segments_carved(e->slots);
	st->host_segment_faults_total = kvt_host_faults(e->host);
	if (e->nvme) {
		struct kvt_nvme_stats n;

		kvt_nvme_stats(e->nvme, &n);
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
	} else {
		st->nvme_paths_failed = st->nvme_paths;
	}
	if (e->hbm) {
		st->hbm_enabled = true;
		kvt_hbm_stats(e->hbm, &st->hbm);
	}
	pthread_mutex_unlock(&e->lock);
}

int kvt_engine_namespace_stats(struct kvt_engine *e, uint32_t ns,
			       struct kvt_namespace_stats *st)
{
	struct namespace *n;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (ns >= e->nns) {
		rc = -ENOENT;
		goto out;
	}
	n = &e->ns[ns];
	st->live = n->state == NS_LIVE;
	if (!st->live)
		goto out;
	st->id = ns_id(e, ns);
	memcpy(st->name, n->name, sizeof(st->name));
	st->tenant = n->tenant;
	memcpy(st->tenant_name, e->tenants[n->tenant].name, sizeof(st->tenant_name));
	st->page_bytes = n->page_bytes;
	st->block_tokens = n->block_tokens;
	st->shared = n->shared;
	st->idle_ttl = n->idle_ttl;
	st->ready_blocks = n->ready;
	st->pending_blocks = n->pending;
	st->lookup_keys = n->lookup_keys;
	st->lookup_hits = n->lookup_hits;
	st->evictions = n->evictions;
	st->expired = n->expired;
	st->lookup_hits_nvme = n->lookup_hits_nvme;
	st->nvme_blocks = n->nvme_blocks;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_tenant_stats(struct kvt_engine *e, uint32_t tenant,
			    struct kvt_tenant_stats *st)
{
	struct tenant *t;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (tenant >= e->ntenants) {
		rc = -ENOENT;
		goto out;
	}
	t = &e->tenants[tenant];
	st->uid = t->uid;
	memcpy(st->name, t->name, sizeof(st->name));
	st->host_used_bytes = t->used;
	st->host_quota_bytes = t->quota;
	st->lookup_keys = t->lookup_keys;
	st->lookup_hits = t->lookup_hits;
	st->evictions = t->evictions;
	st->sessions = t->sessions;
	st->leases = t->leases;
	st->namespaces = ns_created_by(e, tenant);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

void kvt_engine_eviction_ages(struct kvt_engine *e,
			      struct kvt_histogram_snapshot *out)
{
	kvt_histogram_read(&e->eviction_age, out);
}

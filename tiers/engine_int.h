/*
 * The engine's private header: its state, shared by the files that make up
 * the engine (one job each) and the lower tiers' glue. Not for callers of
 * the engine: they use engine.h.
 *
 *   engine.c        create, destroy, clock, reconfigure, stats
 *   engine_ns.c     tenants and namespaces
 *   engine_room.c   the block life cycle, host slots, eviction, resize,
 *                   segments a worker damaged
 *   engine_wait.c   sessions, leases, waits (early reuse), promotions,
 *                   deadlines and the timer thread
 *   engine_ops.c    the public keyed operations: lookup, reserve, commit,
 *                   abort, acquire, release, pin, put, drop
 *   nvme_tier.c     the nvme tier behind struct kvt_tier_ops (tier.h)
 *   hbm_tier.c      the hbm tier behind struct kvt_tier_ops
 *
 * Engine state lives under one mutex (e->lock); every function here that
 * does not take it expects the caller to hold it. README.md, "Threads and
 * locks", lists the threads that call in (nvme.h and hbm.h say how the
 * nvme mover, handed this same mutex, and the hbm copier call back) and
 * the lock order.
 *
 * Blocks are linked several ways: the index finds them by (namespace,
 * tenant, key); READY candidates sit on the policy's lists; PENDING blocks
 * sit on their producer's pending list instead (the same link fields, since
 * a block is never on both); a block points at its resident parent, which
 * counts its children.
 *
 * A block leaves in steps. Unindexed (evicted, expired, dropped, aborted),
 * it can no longer be found; unpinned as well, its slot is freed; without
 * children as well, its memory is freed and its parent loses a child. So a
 * parent dropped while its chain lives on stays as a slotless husk until
 * its last child goes, and no child ever points at freed memory.
 *
 * Waits complete under the lock into a local list; their callbacks run after
 * the lock is dropped (done_run), so a callback may call back in.
 */
#ifndef KVT_ENGINE_INT_H
#define KVT_ENGINE_INT_H

#include <pthread.h>

#include "block_list.h"
#include "block_pool.h"
#include "engine.h"
#include "histogram.h"
#include "host.h"
#include "slots.h"
#include "tier.h"

#define TIMER_PERIOD (1000 * KVT_MS) /* idle and lease TTL sweeps */
#define RETIRE_PERIOD (100 * KVT_MS) /* sweeps of a shrinking host tier */
#define SHARED_UID UINT32_MAX
/* How long an Acquire waits for promotions past its own wait: a tier that
 * does not answer in this time is treated as a miss. */
#define PROMOTE_TIMEOUT (10000 * KVT_MS)
#define LOWER_TIERS_MAX 4

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
	uint64_t lookup_hits_nvme, lookup_hits_remote, nvme_blocks;
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

/* A block being read back from a lower tier, and the Acquires waiting for
 * it. */
struct promotion {
	struct promotion *prev, *next;
	struct kvt_block *b;
	struct kvt_lower_tier *tier; /* reading it back */
	struct kvt_waiter *waiters;
};

struct done_list {
	struct kvt_waiter *head;
};

struct kvt_session {
	struct kvt_session *prev, *next;
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	uint32_t tenant;
	int gpu_pool; /* the hbm pool on the worker's GPU, or -1 */
	struct kvt_block_list pending;
	struct lease *leases;
};

struct kvt_engine {
	pthread_mutex_t lock;
	struct kvt_engine_config cfg;
	struct kvt_quota *quotas;
	struct kvt_index *index;
	struct kvt_block_pool *blocks; /* every struct kvt_block's memory */
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

	/* The tiers below host, in the order they are asked (tier.h). */
	struct kvt_lower_tier *lower[LOWER_TIERS_MAX];
	uint32_t nlower;
	void **segments;           /* the host segments' base addresses */
	uint32_t retiring;         /* retired host segments still in use */
	/* Per host segment: 0 whole, else damaged (see damage_sweep): 1, 2
	 * when a remake failed and was logged. */
	uint8_t *damaged;
	uint32_t ndamaged;
	uint64_t faults_seen;      /* kvt_host_faults at the last sweep */
	struct kvt_histogram eviction_age; /* since last use, at host eviction */
	struct promotion *promotions;
	struct done_list io_done;  /* waits a lower tier's thread completed */

	pthread_t timer;
	pthread_cond_t timer_cond;
	bool timer_running, timer_stop, timer_kick;
};

/* engine.c */
uint64_t engine_now_locked(struct kvt_engine *e);
/* The first of n ticks after every earlier one, from one clock read:
 * a Lookup's 64 touches each reading the clock cost 1.3 us of its 3. */
uint64_t engine_ticks_locked(struct kvt_engine *e, uint32_t n);
void engine_log(struct kvt_engine *e, bool error, const char *msg);
const char *key_hex(const uint8_t *key, char buf[17]);

/* engine_ns.c */
uint32_t ns_id(const struct kvt_engine *e, uint32_t i);
void ns_block_gone(struct kvt_engine *e, uint32_t i);
/* The tenant that a namespace's keys belong to. */
static inline uint32_t ns_scope(const struct kvt_engine *e, uint32_t ns)
{
	return e->ns[ns].tenant;
}
bool ns_name_valid(const char *name);
uint32_t ns_created_by(const struct kvt_engine *e, uint32_t tenant);
int ns_open_locked(struct kvt_engine *e, const char *name,
		   uint64_t page_bytes, uint32_t block_tokens, uint32_t tenant,
		   uint32_t creator, bool recovering, uint64_t idle_ttl,
		   uint32_t *ns, bool *created, struct kvt_err *err);
int ns_index(struct kvt_engine *e, uint32_t id, uint32_t tenant,
	     bool dropped_ok, struct kvt_err *err);
int req_resolve(struct kvt_engine *e, const struct kvt_req *q,
		struct kvt_req *r, bool dropped_ok, struct kvt_err *err);
uint64_t tenant_quota(const struct kvt_engine *e, uint32_t uid);
int tenant_locked(struct kvt_engine *e, uint32_t uid, const char *name,
		  uint32_t *tenant);

/* engine_room.c */
uint64_t slot_offset(const struct kvt_engine *e, const struct kvt_block *b);
void host_attach(struct kvt_engine *e, struct kvt_block *b, uint32_t seg,
		 uint32_t slot);
void host_child(struct kvt_engine *e, struct kvt_block *parent, bool add);
void host_slot_free(struct kvt_engine *e, uint32_t seg, uint32_t slot);
int host_slot_alloc(struct kvt_engine *e, uint32_t ns, uint32_t tenant,
		    uint32_t *seg, uint32_t *slot);
int host_resize(struct kvt_engine *e, uint64_t bytes, struct kvt_err *err);
void segment_release(struct kvt_engine *e, uint32_t seg);
uint32_t retire_sweep(struct kvt_engine *e);
void damage_sweep(struct kvt_engine *e);
void block_settle(struct kvt_engine *e, struct kvt_block *b);
void block_unindex(struct kvt_engine *e, struct kvt_block *b);
void block_evict(struct kvt_engine *e, struct kvt_block *b);
void block_pin(struct kvt_engine *e, struct kvt_block *b);
void io_unpin(struct kvt_engine *e, struct kvt_block *b);
void block_touch(struct kvt_engine *e, struct kvt_block *b, uint64_t now);
void block_unpin(struct kvt_engine *e, struct kvt_block *b);
void block_retain(struct kvt_engine *e, struct kvt_block *b,
		  const struct kvt_retention *ret, uint64_t now);
void block_copy_lost(struct kvt_engine *e, struct kvt_block *b);
struct kvt_block *block_kept_new(struct kvt_engine *e, uint32_t ns,
				 uint32_t tenant, const uint8_t *key);

/* engine_wait.c */
struct kvt_session *session_find(struct kvt_engine *e, const uint8_t *token,
				 uint32_t tenant);
bool lease_remove(struct kvt_engine *e, struct kvt_session *s, uint64_t id);
void waiter_advance(struct kvt_engine *e, struct kvt_waiter *w,
		    struct done_list *done);
void waiter_finish(struct kvt_engine *e, struct kvt_waiter *w, int rc,
		   struct done_list *done);
void wake_waiters(struct kvt_engine *e, struct kvt_waiter *list,
		  struct done_list *done);
void done_run(struct done_list *done);
void pending_abort(struct kvt_engine *e, struct kvt_block_list *pending,
		   struct kvt_block *b, struct done_list *done);
bool block_promote(struct kvt_engine *e, struct kvt_block *b);
void *timer_main(void *arg);

/* The tiers below host, asked in turn (tier.h has what each op means). */
struct kvt_lower_tier *tier_holding(const struct kvt_engine *e,
				    const struct kvt_block *b);
bool tiers_save(struct kvt_engine *e, struct kvt_block *b);
void tiers_forget(struct kvt_engine *e, struct kvt_block *b);
void tiers_host_leave(struct kvt_engine *e, struct kvt_block *b);
void tiers_segment(struct kvt_engine *e, uint32_t seg, void *base);
void tiers_namespace(struct kvt_engine *e, uint32_t ns, bool open);
enum kvt_tier tiers_where(const struct kvt_engine *e, const struct kvt_block *b);

#endif

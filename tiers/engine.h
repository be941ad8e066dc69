/*
 * The cache engine: namespaces, tenants, blocks and their life cycle
 * (absent -> PENDING -> READY -> evicted/expired/dropped), sessions with
 * their reservations and leases, early reuse (readers waiting for PENDING
 * blocks), eviction through the policy, quotas, TTLs, and the host tier's
 * slots.
 *
 * Thread-safe: every call takes the engine's one mutex, so callers (the
 * daemon's completion-queue threads) need no locking of their own. Page bytes
 * are copied outside the lock: a slot is either PENDING (only its producer
 * writes it) or pinned (nobody frees it) while it is copied. Nothing here
 * blocks on anything but that mutex: a waiting Acquire is a record that a
 * Commit, an Abort, a session's end or the timer completes.
 *
 * Every call acts for a tenant (from kvt_engine_tenant); keys are scoped by
 * tenant unless the namespace is shared. Keys are passed as arrays of
 * pointers to 16-byte keys; the caller has checked their length. Errors are
 * -errno with a message in *err:
 *   -EINVAL  a bad argument              -ENOENT  unknown namespace/session/lease
 *   -EPERM   not allowed in this state   -ENOSPC  no slot or no room
 *   -ENOMEM  out of memory               -EACCES  not this tenant's to do
 *   -EDQUOT  the tenant holds max_sessions / max_leases already
 */
#ifndef KVT_ENGINE_H
#define KVT_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hbm.h"
#include "histogram.h"
#include "host.h"
#include "index.h"
#include "policy.h"
#include "redis.h"

#define KVT_NAMESPACE_NAME_MAX 128
#define KVT_BLOCK_TOKENS_MAX 4096
#define KVT_SESSION_TOKEN_BYTES 16
#define KVT_SLOT_ALIGN 4096
#define KVT_TENANTS_MAX 1024
#define KVT_TENANT_NAME_MAX 32
/* Tenant 0 owns the blocks of shared namespaces. */
#define KVT_TENANT_SHARED 0
#define KVT_MS 1000000ull /* engine clock units (ns) per millisecond */
/* The longest duration (TTL, retention) the engine takes, in ms: 10 years.
 * Deadlines are now + duration in ns; with this bound they never wrap. */
#define KVT_DURATION_MS_MAX (3650ull * 86400000)

/* The nvme tier; npaths 0: none. */
struct kvt_engine_nvme {
	const char *const *paths;
	uint32_t npaths;
	uint64_t path_bytes, region_bytes;
	uint32_t queue_depth;
	uint64_t retry; /* a failed path takes no writes this long */
};

/* The hbm tier; ops NULL: none. See hbm.h. */
struct kvt_engine_hbm {
	const struct kvt_hbm_ops *ops;
	const int *devices; /* ndevices CUDA ordinals; NULL: the first ndevices */
	uint32_t ndevices;
	uint64_t bytes; /* per device */
};

/* The remote tier: a Redis or Redis Cluster that nodes share; nendpoints
 * 0: none. See remote_tier.c. */
struct kvt_engine_remote {
	const char *const *endpoints; /* "host:port" */
	uint32_t nendpoints;
	const char *username, *password; /* NULL: no AUTH (or no user) */
	uint64_t timeout;      /* a request's deadline, ns; 0: 1 s */
	uint32_t queue_depth;  /* keys in flight; 0: 1024 */
	/* Committed blocks of at least this retention priority are written
	 * (write-behind); above KVT_PRIORITY_MAX: none (a read-only node). */
	uint32_t min_priority;
	uint64_t ttl_ms;       /* records expire after this in the store; 0: never */
};

struct kvt_quota {
	uint32_t uid;
	uint64_t host_bytes;
};

struct kvt_engine_config {
	uint64_t host_bytes;    /* capacity of the host tier */
	uint64_t segment_bytes; /* size of one host segment: the largest page */
	enum kvt_huge_pages huge_pages;
	bool lock_host;         /* mlock the host tier */
	bool sparse_host;       /* benchmarks only: see kvt_host_config.sparse */
	uint32_t max_namespaces;

	enum kvt_eviction eviction;
	uint8_t default_priority;  /* retention priority of a block given none */
	uint64_t idle_ttl;         /* namespace default; 0: blocks never expire */
	uint64_t lease_ttl;        /* a pin's longest life; 0: forever */
	uint64_t max_wait;         /* longest Acquire wait */
	/* Host bytes a tenant keeps against other tenants' pressure, and above
	 * which it evicts its own blocks first. 0: no quota. */
	uint64_t default_host_quota;
	const struct kvt_quota *quotas; /* per uid, overriding the default */
	uint32_t nquotas;
	/* Sessions a tenant may hold open, leases it may hold (counting the
	 * Acquires under way), namespaces it may have created and not dropped
	 * (shared ones count against the tenant that created them); 0: no
	 * bound. */
	uint32_t max_sessions, max_leases, max_tenant_namespaces;

	struct kvt_engine_nvme nvme;
	struct kvt_engine_hbm hbm;
	struct kvt_engine_remote remote;
	/* Where the nvme tier reports faults (error) and progress; NULL: nowhere. */
	void (*log)(bool error, const char *msg);

	/* Clock in ns; NULL: CLOCK_MONOTONIC. Tests pass a fake one. */
	uint64_t (*clock)(void *arg);
	void *clock_arg;
	/* Run a thread that fires deadlines (waits, TTLs); without it the
	 * caller calls kvt_engine_tick. Needs the default clock. */
	bool timer_thread;
};

struct kvt_err {
	char msg[256];
};

/* Writes the message (printf) into err (NULL: nowhere) and returns rc:
 * `return kvt_errf(err, -EINVAL, "...", ...);`. */
int kvt_errf(struct kvt_err *err, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Values match kvtier.v1.Tier. */
enum kvt_tier {
	KVT_TIER_HOST = 1,
	KVT_TIER_HBM = 2,
	KVT_TIER_NVME = 3,
	KVT_TIER_REMOTE = 4,
};

/* host: offset in host segment `segment` as made for the generation'th
 * time (kvt_engine_segment_fd); hbm: offset in the pool of the session's
 * GPU (segment is the pool's index). */
struct kvt_location {
	enum kvt_tier tier;
	uint32_t segment, generation;
	uint64_t offset;
};

/* Values match kvtier.v1.ReserveState. */
enum kvt_reserve_state {
	KVT_RESERVE_RESERVED = 1,
	KVT_RESERVE_PRESENT = 2,
	KVT_RESERVE_BUSY = 3,
	KVT_RESERVE_NO_SPACE = 4,
};

/* Retention of the blocks a Reserve or Put creates or finds. */
struct kvt_retention {
	uint8_t priority;  /* 0..100 */
	uint64_t duration; /* then back to the default; 0: for good */
};

/* Values match kvtier.v1.DropScope. */
enum kvt_drop_scope {
	KVT_DROP_KEYS = 0,
	KVT_DROP_NAMESPACE = 1,
	KVT_DROP_TENANT = 2,
};

/* What every keyed call names: who asks, where, which keys. */
struct kvt_req {
	uint32_t tenant;
	const uint8_t *session; /* KVT_SESSION_TOKEN_BYTES, or NULL */
	uint32_t ns;
	const uint8_t *const *keys;
	uint32_t n;
};

struct kvt_engine_stats {
	uint64_t sessions_active, sessions_total, leases_active, pinned_blocks;
	uint64_t ready_blocks, pending_blocks, lookup_keys, lookup_hits;
	uint64_t lookup_pending;
	uint64_t reserved_total, committed_total, aborted_total;
	uint64_t evictions_total, dropped_total, reserve_no_space_total;
	uint64_t expired_total, priority_fallbacks_total;
	uint64_t leases_expired_total, forced_unpins_total;
	uint64_t waits_total, waits_active, waits_completed_total;
	uint64_t waits_missed_total, waits_timed_out_total;
	uint64_t host_capacity_bytes, host_used_bytes;
	uint32_t host_segments, host_segments_used, namespaces, tenants;
	uint32_t host_segments_retiring; /* shrunk away, still holding blocks */
	/* given a new memfd as they passed to another tenant (kvt_host_renew) */
	uint64_t host_segments_renewed_total;
	/* damaged by a worker's punched holes (kvt_host_damaged) */
	uint64_t host_segment_faults_total;
	/* nvme: hits served from it, blocks written to it (demotions), host
	 * evictions that kept the block there, blocks it lost to region reuse,
	 * promotions and failed ones (bad checksum, I/O error), committed blocks
	 * never written (backlog full, tier failing). */
	uint64_t lookup_hits_nvme, nvme_blocks;
	uint64_t lookup_hits_remote; /* hits kept only by the remote tier */
	uint64_t demotions_total, evictions_to_nvme_total, nvme_evictions_total;
	uint64_t promotions_total, promotion_failures_total;
	uint64_t demotions_skipped_total;
	bool nvme_enabled, nvme_fixed_buffers;
	uint32_t nvme_paths, nvme_paths_failed;
	uint64_t nvme_capacity_bytes, nvme_used_bytes;
	uint64_t nvme_write_bytes_total, nvme_read_bytes_total;
	uint64_t nvme_write_errors_total, nvme_read_errors_total;
	uint64_t nvme_bad_checksum_total, nvme_queued, nvme_inflight;
	uint64_t nvme_recovered_blocks, nvme_recovery_ms;
	/* Blocks pinned by leases; page bytes into the host tier (commits,
	 * puts, promotions) and out of it (pinned for reading). */
	uint64_t pins_total, host_in_bytes_total, host_out_bytes_total;
	/* Session opens, Acquires and namespace creations refused: the tenant
	 * was at its bound. */
	uint64_t sessions_refused_total, leases_refused_total;
	uint64_t namespaces_refused_total, namespaces_dropped_total;
	/* remote: records written (write-behind) and not (over queue_depth,
	 * store failing), promotions from it, and values that failed their
	 * check (a miss; the value is deleted from the store). */
	uint64_t remote_writes_total, remote_writes_skipped_total;
	uint64_t remote_promotions_total, remote_bad_records_total;
	/* Lookups not asking the store: a probe ran out of its budget in the
	 * last 100 ms. */
	uint64_t remote_lookups_unasked_total;
	bool remote_enabled;
	struct kvt_redis_stats remote; /* the store's client (redis.h) */
	/* hbm: copies of host blocks in GPU pools (hbm.h). */
	struct kvt_hbm_stats hbm;
	bool hbm_enabled;
};

struct kvt_namespace_stats {
	bool live; /* false: a dropped namespace; the rest is not filled in */
	uint32_t id;
	char name[KVT_NAMESPACE_NAME_MAX + 1];
	uint32_t tenant; /* its owner; KVT_TENANT_SHARED for a shared one */
	char tenant_name[KVT_TENANT_NAME_MAX];
	uint64_t page_bytes;
	uint32_t block_tokens;
	bool shared;
	uint64_t idle_ttl;
	uint64_t ready_blocks, pending_blocks, lookup_keys, lookup_hits;
	uint64_t evictions, expired;
	uint64_t lookup_hits_nvme, lookup_hits_remote, nvme_blocks;
};

struct kvt_tenant_stats {
	uint32_t uid;
	char name[KVT_TENANT_NAME_MAX];
	uint64_t host_used_bytes, host_quota_bytes;
	uint64_t lookup_keys, lookup_hits, evictions;
	uint32_t sessions, leases; /* open, held */
	uint32_t namespaces; /* created and not dropped */
};

/* What an Acquire got: keys[0..count) pinned under lease (0: none). */
struct kvt_acquired {
	uint64_t lease;
	uint32_t count;
	const struct kvt_location *locs; /* count entries */
	/* kvt_engine_pin_async: the count blocks pinned (the callee's to
	 * kvt_engine_unpin, within done()), and the ready prefix's length
	 * when the call came. */
	struct kvt_block **pinned;
	uint32_t ready;
};

/* rc 0 with the result; -ENOENT when the session ended first, -ENOMEM
 * when the lease could not be recorded (nothing is pinned then). */
typedef void (*kvt_acquire_done)(void *arg, int rc,
				 const struct kvt_acquired *got);

struct kvt_engine;
struct kvt_session;

int kvt_engine_create(const struct kvt_engine_config *cfg,
		      struct kvt_engine **out, struct kvt_err *err);
/* Stops the timer, frees everything, closes the host segments. No call may be
 * running; waiters must have been flushed. */
void kvt_engine_destroy(struct kvt_engine *e);

/*
 * Applies the knobs that change while the daemon runs: host_bytes (the tier
 * grows at once; when it shrinks, the highest segments are emptied by
 * demoting or evicting their blocks, pinned ones when unpinned, and their
 * memory is given back), default_priority (for blocks created after),
 * idle_ttl (for namespaces that did not set their own), lease_ttl (for
 * every lease), max_wait, the quotas, max_sessions and max_leases (for
 * what is opened or acquired after). The rest of cfg is ignored.
 * On error nothing has changed, except that a tier that could only grow part
 * of the way keeps the segments it made (inactive).
 */
int kvt_engine_reconfigure(struct kvt_engine *e,
			   const struct kvt_engine_config *cfg,
			   struct kvt_err *err);

/* Host tier layout, as workers need it to map the segments. */
uint32_t kvt_engine_host_segments(const struct kvt_engine *e);
uint64_t kvt_engine_segment_bytes(const struct kvt_engine *e);
/* What backs the host tier: "2M pages (hugetlb), locked". */
const char *kvt_engine_host_describe(const struct kvt_engine *e);

/*
 * A new descriptor of host segment `segment` for a worker of tenant (the
 * caller closes it), if the session token is that tenant's and the segment
 * holds (or last held) that tenant's blocks or a shared namespace's; its
 * generation in *generation. -ENOENT: no such session or segment;
 * -EACCES: another tenant's segment.
 */
int kvt_engine_segment_fd(struct kvt_engine *e, uint32_t tenant,
			  const uint8_t token[KVT_SESSION_TOKEN_BYTES],
			  uint32_t segment, uint32_t *generation,
			  struct kvt_err *err);

/* The tenant of uid, registered on first sight under name. With name NULL,
 * -ENOENT for a uid not seen yet. -ENOSPC past KVT_TENANTS_MAX tenants. */
int kvt_engine_tenant(struct kvt_engine *e, uint32_t uid, const char *name,
		      uint32_t *tenant);

/* Opens a session of tenant; its token (random) is written to token.
 * -EDQUOT when the tenant holds max_sessions already. */
int kvt_engine_session_open(struct kvt_engine *e, uint32_t tenant,
			    uint8_t token[KVT_SESSION_TOKEN_BYTES],
			    struct kvt_session **out);
/*
 * Names the GPU the session's worker runs on. Its Acquires then get the
 * blocks that have a copy in that GPU's pool there (KVT_TIER_HBM), and
 * start copies of the others. Returns the pool's index, or -1 when the
 * daemon has no pool on that GPU (the session reads the host tier).
 */
int kvt_engine_session_gpu(struct kvt_engine *e, struct kvt_session *s,
			   const uint8_t uuid[KVT_GPU_UUID_BYTES]);
/* The hbm pools (0 without an hbm tier), for workers to open. */
uint32_t kvt_engine_hbm_pools(const struct kvt_engine *e);
const struct kvt_hbm_pool *kvt_engine_hbm_pool(const struct kvt_engine *e,
					       uint32_t i);

/* Ends a session: releases its leases, aborts its reservations, wakes the
 * readers waiting for them, ends its own waits with -ENOENT. */
void kvt_engine_session_close(struct kvt_engine *e, struct kvt_session *s);

/* Opens tenant's namespace name, or the shared one of that name: its keys
 * are not scoped by tenant. Another tenant's namespace of the same name is
 * a different namespace; its id is unknown to this tenant. idle_ttl 0: the
 * daemon default. Reopening with another idle_ttl changes it.
 * A namespace id is its table index in the low 16 bits and the number of
 * times that entry was reused in the high 16: the id of a dropped
 * namespace never names the one that takes its place.
 * -EDQUOT: the tenant created max_tenant_namespaces already; -ENOSPC: the
 * daemon's table (max_namespaces) is full. */
int kvt_engine_open_namespace(struct kvt_engine *e, uint32_t tenant,
			      const char *name,
			      uint64_t page_bytes, uint32_t block_tokens,
			      bool shared, uint64_t idle_ttl, uint32_t *ns,
			      bool *created, uint64_t *stride,
			      struct kvt_err *err);
/*
 * Drops namespace ns (its tenant's own, or any for an admin; a shared one
 * only for an admin): its READY blocks go as with Drop, its id is unknown
 * from now on, and it no longer counts against max_tenant_namespaces.
 * Reservations in it stay their producer's until committed (which then
 * fails with -ENOENT and aborts them), aborted or their session ends; its
 * table entry is reused once its last block is gone. *dropped: the READY
 * blocks dropped; *pending: the reservations still open.
 */
int kvt_engine_drop_namespace(struct kvt_engine *e, uint32_t tenant,
			      uint32_t ns, bool admin, uint32_t *dropped,
			      uint32_t *pending, struct kvt_err *err);

/* -ENOENT for an unknown ns, or another tenant's. */
int kvt_engine_page_bytes(struct kvt_engine *e, uint32_t tenant, uint32_t ns,
			  uint64_t *page_bytes, struct kvt_err *err);

/* keys[0..*ready) are READY (in the host tier or kept by a lower tier);
 * keys[*ready..*ready + *pending) exist and keys[*ready] is PENDING. Counts
 * as a use of the ready ones. where (NULL, or q->n entries): the tier each
 * ready block is on, host when it holds a host slot. */
int kvt_engine_lookup(struct kvt_engine *e, const struct kvt_req *q,
		      uint32_t *ready, uint32_t *pending, enum kvt_tier *where,
		      struct kvt_err *err);

/*
 * Lookup that also asks the lower tiers that keep blocks of other nodes
 * (the remote tier) about the part of the chain found nowhere here: the
 * first absent key and those after it, when nothing follows the ready
 * prefix, within budget ns (0: never asks). Blocks found there become
 * ready here (kept by that tier: where says REMOTE; an Acquire reads them
 * into host).
 * Returns 1: answered at once in *ready, *pending and where (q->n entries;
 * NULL only without done), as kvt_engine_lookup; done() is not called. 0: the store was
 * asked; done() is called exactly once, later, without the engine lock,
 * its where valid for the call only (its rc -ENOENT: the namespace was
 * dropped meanwhile). <0: error, done() is not called.
 */
typedef void (*kvt_lookup_done)(void *arg, int rc, uint32_t ready,
				uint32_t pending, const enum kvt_tier *where);
int kvt_engine_lookup_async(struct kvt_engine *e, const struct kvt_req *q,
			    uint64_t budget, uint32_t *ready, uint32_t *pending,
			    enum kvt_tier *where, kvt_lookup_done done,
			    void *arg, struct kvt_err *err);

/*
 * parent may be NULL; retention NULL: the default. states[n] and locs[n]
 * receive the outcome per key. -ENOSPC when some key needed a slot and none
 * was reserved.
 */
int kvt_engine_reserve(struct kvt_engine *e, const struct kvt_req *q,
		       const uint8_t *parent,
		       const struct kvt_retention *retention,
		       enum kvt_reserve_state *states,
		       struct kvt_location *locs, struct kvt_err *err);
int kvt_engine_commit(struct kvt_engine *e, const struct kvt_req *q,
		      struct kvt_err *err);
int kvt_engine_abort(struct kvt_engine *e, const struct kvt_req *q,
		     struct kvt_err *err);

/*
 * Pins the ready prefix of keys under a new lease. Blocks on nvme are
 * promoted (read back into host slots, checksums verified) first: the call
 * completes when their reads have. With wait > 0, a PENDING
 * key in the prefix is waited for (at most wait, at most max_wait) instead
 * of ending the prefix: the call completes when every key is ready, at the
 * first absent key (a producer that aborts or dies makes its keys absent),
 * or at the deadline with what is ready.
 * 0: done() is called exactly once, possibly before this returns, on this
 * or another thread, without the engine lock. <0: error, done() is not
 * called.
 */
int kvt_engine_acquire(struct kvt_engine *e, const struct kvt_req *q,
		       uint64_t wait, kvt_acquire_done done, void *arg,
		       struct kvt_err *err);
int kvt_engine_release(struct kvt_engine *e, uint32_t tenant,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES],
		       uint64_t lease, struct kvt_err *err);

/* Copies pages (each page_bytes long) in as ready blocks; see Put. */
int kvt_engine_put(struct kvt_engine *e, const struct kvt_req *q,
		   const uint8_t *parent, const struct kvt_retention *retention,
		   const void *const *pages, uint32_t *stored,
		   struct kvt_err *err);

/*
 * Pins at most max_pins blocks of the ready prefix without a session, for a
 * caller that copies them out at once (Get): blocks kept by a lower tier
 * only are read back first, as for kvt_engine_acquire (PENDING ones are not
 * waited for). done() as for kvt_engine_acquire, with no lease: got->pinned
 * and got->count are the pins, which done() copies and unpins.
 */
int kvt_engine_pin_async(struct kvt_engine *e, const struct kvt_req *q,
			 uint32_t max_pins, kvt_acquire_done done, void *arg,
			 struct kvt_err *err);

/*
 * Pins at most max_pins blocks of the ready prefix without a session, for a
 * caller that copies them out at once and then calls kvt_engine_unpin.
 * *ready is the whole ready prefix length. Pinning stops at the first block
 * on nvme only; its promotion is started, for a later call to find.
 */
int kvt_engine_pin(struct kvt_engine *e, const struct kvt_req *q,
		   uint32_t max_pins, struct kvt_block **pinned,
		   uint32_t *count, uint32_t *ready, struct kvt_err *err);
void kvt_engine_unpin(struct kvt_engine *e, struct kvt_block **blocks,
		      uint32_t n);
const void *kvt_engine_page(const struct kvt_engine *e,
			    const struct kvt_block *b);

/*
 * Drops READY blocks (pinned ones leave the index now and free their slot at
 * the last unpin): KEYS, the listed keys of ns; NAMESPACE, every block of ns
 * that the tenant sees (every tenant's, for an admin); TENANT, every block of
 * the tenant whose uid is target_uid in every namespace (another tenant's
 * only for an admin).
 */
int kvt_engine_drop(struct kvt_engine *e, const struct kvt_req *q,
		    enum kvt_drop_scope scope, bool admin, uint32_t target_uid,
		    uint32_t *dropped, struct kvt_err *err);

/* Fires what is due: waits, priority fallbacks, idle TTLs, lease TTLs;
 * empties and remakes host segments a worker punched (kvt_host_damaged).
 * Returns the engine clock time of the next deadline. */
uint64_t kvt_engine_tick(struct kvt_engine *e);

/* Completes every wait now with what is ready; later acquires do not wait.
 * For shutdown. */
void kvt_engine_stop_waiting(struct kvt_engine *e);

uint64_t kvt_engine_now(struct kvt_engine *e);

void kvt_engine_stats(struct kvt_engine *e, struct kvt_engine_stats *st);
/* Time since last use of the blocks the host tier evicted. */
void kvt_engine_eviction_ages(struct kvt_engine *e,
			      struct kvt_histogram_snapshot *out);
/* -ENOENT past the last namespace (table entry) / tenant. */
int kvt_engine_namespace_stats(struct kvt_engine *e, uint32_t ns,
			       struct kvt_namespace_stats *st);
int kvt_engine_tenant_stats(struct kvt_engine *e, uint32_t tenant,
			    struct kvt_tenant_stats *st);

#endif

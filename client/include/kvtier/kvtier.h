/*
 * libkvtier: the C client of kvtierd, the node-wide tiered KV-cache daemon.
 *
 * A worker connects, attaches (opens a session), opens the namespace of its
 * KV layout, and then:
 *   - offloads: kvt_reserve -> write each RESERVED page through its pointer
 *     (the slot in the daemon's shared memory) -> kvt_commit;
 *   - onloads: kvt_lookup to see how long a prefix is cached ->
 *     kvt_acquire (pins it, gives page pointers) -> read -> kvt_release;
 *   - or moves bytes inline with kvt_put / kvt_get (no shared memory).
 * The session lives until kvt_close or the process's death; either way the
 * daemon releases every pin and reservation the session held.
 *
 * Early reuse: a block another worker is still producing shows up as
 * pending in kvt_lookup; kvt_acquire with wait_ms > 0 waits for it and
 * returns as soon as it is committed.
 *
 * The daemon knows the calling process's user (the unix socket's peer
 * credentials): that is its tenant. Tenants never see each other's blocks
 * unless the daemon's config shares the namespace.
 *
 * Every action returns 0 or a negative errno, mapped from the daemon's gRPC
 * status: -EINVAL (INVALID_ARGUMENT), -ENOENT (NOT_FOUND), -EPERM
 * (FAILED_PRECONDITION), -ENOSPC (RESOURCE_EXHAUSTED), -EACCES
 * (PERMISSION_DENIED), -ECONNREFUSED
 * (UNAVAILABLE: no daemon), -ETIMEDOUT, -ENOTCONN (no session), -EIO (other).
 * kvt_errmsg() then tells what the daemon said.
 *
 * Threads: a kvt_client may be shared by threads; its calls are serialized.
 * Use one client per thread for parallel calls. Do not fork a process that
 * has created a client (gRPC forbids it); fork first, then connect.
 */
#ifndef KVTIER_KVTIER_H
#define KVTIER_KVTIER_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <kvtier/key.h>
#include <kvtier/version.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvt_client kvt_client;

/* The address used when kvt_connect gets NULL and $KVTIER_ADDR is unset. */
#define KVT_DEFAULT_ADDR "unix:/run/kvtier/kvtierd.sock"

/*
 * Creates a client for the daemon at target ("unix:/path", "host:port"; NULL:
 * $KVTIER_ADDR or KVT_DEFAULT_ADDR). Does not contact the daemon yet.
 * 0, -ENOMEM.
 */
int kvt_connect(const char *target, kvt_client **out);

/* Opens the session (the Attach stream); client_name shows in the daemon's log. */
int kvt_attach(kvt_client *c, const char *client_name);

/* The tenant the daemon sees this client as (after kvt_attach), e.g. "alice". */
const char *kvt_tenant(const kvt_client *c);

/*
 * Host segments are mapped on first use by kvt_reserve and kvt_acquire.
 * For a worker that maps them itself (another language's client, or to
 * register them with a device up front): kvt_segment_fd asks the daemon
 * for segment `segment` over the segment socket (see
 * proto/kvtier/v1/segments.h) and returns its descriptor (the caller maps
 * it, kvt_segment_bytes long, and closes it) with its generation, or
 * -errno: -EACCES when the segment holds another tenant's blocks, -ENOENT
 * for no such segment, -EOPNOTSUPP over TCP. kvt_session_token is the
 * session's 16-byte token (after kvt_attach), which that socket asks for;
 * it is this process's to keep.
 */
int kvt_segment_fd(kvt_client *c, uint32_t segment, uint32_t *generation);
uint64_t kvt_segment_bytes(const kvt_client *c);
void kvt_session_token(const kvt_client *c, uint8_t token[16]);

/* Ends the session (releasing its pins and reservations), frees the client. */
void kvt_close(kvt_client *c);

/*
 * For callers whose pointers into pages may outlive a lease or the client
 * (the Python package's buffers): from now on, a host segment mapping the
 * library is done with (one of an older generation, when a segment is
 * mapped anew, and every one at kvt_close) is not unmapped but handed to
 * keep(arg, base, len), which unmaps it once nothing points into it.
 * Unmapped, such a pointer would fault, or reach whatever is mapped there
 * next. A mapping of an older generation reads zeros (the daemon punched
 * it) and holds no memory. keep runs in the calling thread, one call at a
 * time, and must not call libkvtier.
 */
void kvt_keep_segments(kvt_client *c, void (*keep)(void *arg, void *base, size_t len),
		       void *arg);

/* What the daemon (or the library) said about the last failed call. */
const char *kvt_errmsg(const kvt_client *c);

/* The version of the libkvtier this program runs with, e.g. "0.1.0"
 * (KVT_VERSION_STRING, kvtier/version.h, is the headers' it was built
 * against). */
const char *kvt_version(void);

/* Per-call deadline in milliseconds (default 10000). */
void kvt_set_timeout_ms(kvt_client *c, int ms);

/*
 * How long a call polls for its reply before the thread sleeps, in
 * microseconds (default KVT_DEFAULT_POLL_US, or $KVTIER_POLL_US; 0: never).
 * A reply that comes within it skips a thread wake-up, which costs tens of
 * microseconds on a busy host: the polling burns at most this much CPU
 * per call, while the caller would be waiting anyway.
 */
#define KVT_DEFAULT_POLL_US 200
void kvt_set_poll_us(kvt_client *c, unsigned us);

/*
 * The fast lane: on the unix socket, kvt_attach also opens the session's
 * shared-memory lane (proto/kvtier/v1/lane.h), and Lookup, Reserve,
 * Commit, Abort, Acquire and Release go through it instead of gRPC (the
 * same messages, checks and errors; a request with more keys than the
 * lane holds still goes over gRPC). On by default; kvt_set_fast_lane(c, 0)
 * before kvt_attach, or $KVTIER_FAST_LANE=0, turns it off. kvt_fast_lane
 * says whether calls use it, and in *why_not (when not NULL) why not.
 */
void kvt_set_fast_lane(kvt_client *c, int on);
int kvt_fast_lane(const kvt_client *c, const char **why_not);

/* 0 when the daemon answers its health check SERVING. */
int kvt_health(kvt_client *c);

struct kvt_namespace {
	uint32_t id;
	uint64_t page_bytes;
	uint64_t slot_stride;
	int created; /* 1 if this call created it */
	int shared;  /* 1 if its blocks are shared by all tenants */
};

/*
 * Opens (or creates) a namespace: name like "llama-3-8b:bf16:tp0of1:bt16".
 * idle_ttl_ms: unpinned blocks unused this long expire (0: the daemon's
 * default; another nonzero value on reopen replaces it).
 */
int kvt_open_namespace(kvt_client *c, const char *name, uint64_t page_bytes,
		       uint32_t block_tokens, uint64_t idle_ttl_ms,
		       struct kvt_namespace *ns);

/*
 * *ready: how many leading keys are cached and ready; *pending (may be
 * NULL): how many after those are being produced by some worker.
 */
int kvt_lookup(kvt_client *c, const struct kvt_namespace *ns,
	       const struct kvt_key *keys, size_t n, size_t *ready,
	       size_t *pending);

/* Where a ready block is (kvtier.v1.Tier's values): in shared memory, or
 * kept by a tier that kvt_acquire reads it back from first. */
enum kvt_where {
	KVT_WHERE_HOST = 1,
	KVT_WHERE_HBM = 2,
	KVT_WHERE_NVME = 3,
	KVT_WHERE_REMOTE = 4, /* another node's, in the shared store */
};

/* kvt_lookup that also says where each ready block is: where[i] for i <
 * *ready (where has room for n). */
int kvt_lookup_where(kvt_client *c, const struct kvt_namespace *ns,
		     const struct kvt_key *keys, size_t n, size_t *ready,
		     size_t *pending, enum kvt_where *where);

/*
 * How long blocks should stay: priority 0 (evicted first) .. 100 (last),
 * for duration_ms (0: for good), then the daemon's default priority.
 * Functions taking one accept NULL for the default.
 */
struct kvt_retention {
	unsigned priority;
	uint64_t duration_ms;
};

enum kvt_slot_state {
	KVT_SLOT_RESERVED = 1, /* write page_bytes at .page, then commit */
	KVT_SLOT_PRESENT = 2,  /* already cached */
	KVT_SLOT_BUSY = 3,     /* another session is producing it */
	KVT_SLOT_NO_SPACE = 4, /* no room: the host tier is pinned full */
};

struct kvt_slot {
	enum kvt_slot_state state;
	void *page; /* RESERVED only: the slot in shared memory */
};

/*
 * Reserves slots for keys[0..n) (parent: the key before keys[0], or NULL).
 * slots[n] receives the outcome per key. Needs kvt_attach. When a reserved
 * page cannot be mapped (kvt_segment_fd's errors), the reservations are
 * given up and that error returned.
 */
int kvt_reserve(kvt_client *c, const struct kvt_namespace *ns,
		const struct kvt_key *parent, const struct kvt_key *keys,
		size_t n, const struct kvt_retention *retention,
		struct kvt_slot *slots);

/* Publishes reserved, written blocks (all or nothing). */
int kvt_commit(kvt_client *c, const struct kvt_namespace *ns,
	       const struct kvt_key *keys, size_t n);

/* Gives reservations up. */
int kvt_abort(kvt_client *c, const struct kvt_namespace *ns,
	      const struct kvt_key *keys, size_t n);

struct kvt_lease {
	uint64_t id;        /* 0: nothing pinned */
	size_t count;       /* keys[0..count) are pinned */
	const void **pages; /* count page pointers, valid until release */
	/* count flags: 1 where pages[i] is a device address in the daemon's
	 * hbm pool on this worker's GPU (only after kvt_set_gpu), 0 where it
	 * is host shared memory. */
	const unsigned char *hbm;
};

/*
 * Pins the ready prefix of keys; fills lease. With wait_ms > 0, waits (at
 * most that long) for blocks being produced instead of stopping at them.
 * Needs kvt_attach.
 */
int kvt_acquire(kvt_client *c, const struct kvt_namespace *ns,
		const struct kvt_key *keys, size_t n, unsigned wait_ms,
		struct kvt_lease *lease);

/* Unpins a lease and frees lease->pages. A lease with id 0 is a no-op. */
int kvt_release(kvt_client *c, struct kvt_lease *lease);

/* Stores pages inline (each ns->page_bytes); *stored: how many were new. */
int kvt_put(kvt_client *c, const struct kvt_namespace *ns,
	    const struct kvt_key *parent, const struct kvt_key *keys,
	    const void *const *pages, size_t n,
	    const struct kvt_retention *retention, size_t *stored);

/*
 * Copies the pages of the ready prefix into dst[i] (each ns->page_bytes);
 * *got: how many were copied.
 */
int kvt_get(kvt_client *c, const struct kvt_namespace *ns,
	    const struct kvt_key *keys, size_t n, void *const *dst,
	    size_t *got);

/*
 * Drops keys (n > 0), or every block of the namespace (keys NULL, n 0): the
 * caller's own, or every tenant's when the caller is root or the daemon's user.
 */
int kvt_drop(kvt_client *c, const struct kvt_namespace *ns,
	     const struct kvt_key *keys, size_t n, size_t *dropped);

/* Drops every block of a tenant (a user name or uid; NULL: the caller's own)
 * in every namespace. Another tenant's only for root or the daemon's user. */
int kvt_drop_tenant(kvt_client *c, const char *tenant, size_t *dropped);

/*
 * Deletes a namespace (DropNamespace): its ready blocks go, its id is
 * unknown from then on, its name may be opened again with any layout, and
 * it no longer counts against the tenant's tenants.max_namespaces. Your own
 * namespaces; any, and shared ones, only for root or the daemon's user (who
 * find ids in kvt_stats: "namespaces.<name>.id"). *pending: the
 * reservations in it still open; their Commit fails (-ENOENT) and aborts.
 */
int kvt_drop_namespace(kvt_client *c, uint32_t namespace_id, size_t *dropped,
		       size_t *pending);

/*
 * The daemon's stats (the Stats RPC; README.md lists them, and kvtierd
 * --print-stats). A caller that is not root or the daemon's user sees only
 * its own tenant and namespaces, the shared ones, and the daemon's totals.
 *
 * kvt_stats calls fn once per stat with a dotted name and its value as text
 * ("true"/"false" for booleans): "ready_blocks",
 * "tiers.host.used_bytes", "rpcs.Lookup.calls_total",
 * "rpcs.Lookup.duration_seconds.p99_seconds" (a histogram reads as count,
 * sum_seconds, p50_seconds and p99_seconds), "namespaces.<name>.ready_blocks",
 * "tenants.<name>.host_used_bytes", "rpc_status_errors_total.NOT_FOUND". The
 * element of a list is named by its name, which is not unique for
 * namespaces (two tenants may each have one of a name; its "tenant"
 * follows its "id") and may itself hold dots: use kvt_stats_json to tell
 * them apart.
 *
 * kvt_stats_json writes the same stats as one JSON object into *json
 * (malloc'd, NUL-terminated; free() it): numbers as numbers, booleans as
 * booleans, text as strings; "tiers", "namespaces", "tenants" and "rpcs" as
 * lists of objects, each carrying its names ("tier"; "name" and "tenant";
 * "name"; "method"); "rpc_status_errors_total" as an object by status code;
 * histograms as objects of count, sum_seconds, p50_seconds and p99_seconds.
 * 0, or -errno (-ENOMEM, or the call's error; *json is NULL then).
 */
int kvt_stats(kvt_client *c,
	      void (*fn)(void *arg, const char *name, const char *value),
	      void *arg);
int kvt_stats_json(kvt_client *c, char **json);

/* One configuration knob of the running daemon. */
struct kvt_knob {
	const char *section, *name;
	const char *value;   /* as a file writes it: "1G", "30s" */
	const char *source;  /* "default", "command line" or "FILE:LINE" */
	const char *pending; /* the file's value awaiting a restart; "": none */
	const char *help;
	bool live;           /* a reload (SIGHUP) changes it */
};

struct kvt_config_info {
	char file[4096]; /* "": none */
	uint64_t reloads_total, reload_failures_total;
	bool last_reload_ok;
	int64_t last_reload_unix; /* 0: never */
	char last_reload_error[512];
};

/* Calls fn once per knob of the effective configuration, in file order;
 * info (may be NULL) receives how reloads went. */
int kvt_get_config(kvt_client *c, void (*fn)(void *arg, const struct kvt_knob *k),
		   void *arg, struct kvt_config_info *info);

/*
 * For a GPU data path (libkvtier-cuda, kvtier/cuda.h, does all of this):
 *   kvt_set_gpu, before kvt_attach: the worker's GPU, cudaDeviceProp.uuid.
 *     Acquire then returns blocks the daemon holds in its hbm pool on that
 *     GPU as device addresses in that pool, and copies the blocks it is
 *     asked for into the pool for next time.
 *   kvt_hbm_pool, after kvt_attach: the pool's cudaIpcMemHandle_t and size;
 *     -ENOENT when the daemon has no pool on this GPU.
 *   kvt_set_hbm_base: where cudaIpcOpenMemHandle mapped the pool.
 *   kvt_set_segment_hooks: called as host segments are mapped (to register
 *     them with CUDA) and before they are unmapped, at kvt_close.
 */
void kvt_set_gpu(kvt_client *c, const uint8_t uuid[16]);
int kvt_hbm_pool(const kvt_client *c, uint8_t ipc_handle[64], uint64_t *bytes);
void kvt_set_hbm_base(kvt_client *c, void *base);
void kvt_set_segment_hooks(kvt_client *c,
			   void (*on_map)(void *arg, void *base, size_t len),
			   void (*on_unmap)(void *arg, void *base), void *arg);

#ifdef __cplusplus
}
#endif

#endif

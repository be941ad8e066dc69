/*
 * The stats table and what reads it: a reading (struct kvt_stats) gathers
 * every source once, under each source's own lock; the table says where each
 * stat lies in it. The Stats reply is filled from the table by field name,
 * so that adding a stat is one row here and one field in kvtier.proto, and
 * kvt_stats_check, run at start, refuses a row without its field or a field
 * without its row.
 */
#include "stats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "kvtier.pb-c.h"
#include "lane.h"
#include "rpc.h"
#include "segsock.h"

/* ---- a reading: one element type per scope ---- */

struct daemon_stats {
	char version[16], allocator[96], cuda[160], metrics_address[96];
	char listen[384];
	uint32_t pid;
	uint64_t uptime_seconds;
	struct kvt_engine_stats e;
	struct kvt_histogram_snapshot eviction_age;
	struct kvt_segsock_stats sock;
	struct kvt_lane_stats lanes;
	struct kvt_server_connections conns;
	uint64_t reloads_total, reload_failures_total;
	bool last_reload_ok;
	struct kvt_stat_by_label errors_by_code, remote_errors;
};

/* The measures every tier has, gathered from the engine's own fields. */
struct tier_stats {
	char tier[8];
	bool up;
	uint64_t capacity_bytes, used_bytes, in_bytes_total, out_bytes_total;
	uint64_t evictions_total;
};

struct namespace_stats {
	struct kvt_namespace_stats e;
	uint64_t idle_ttl_ms, lookup_tokens_total, lookup_hit_tokens_total;
	uint64_t lookup_nvme_hit_tokens_total, lookup_remote_hit_tokens_total;
};

struct rpc_stats {
	char method[64];
	uint64_t calls_total, errors_total;
	struct kvt_histogram_snapshot duration;
};

enum { TIER_HOST, TIER_HBM, TIER_NVME, TIER_REMOTE, TIERS };

struct kvt_stats {
	struct daemon_stats daemon;
	struct tier_stats tiers[TIERS];
	struct namespace_stats *ns;
	struct kvt_tenant_stats *tenants;
	struct rpc_stats *rpcs;
	size_t nns, ntenants, nrpcs;
};

/* ---- the table ---- */

/* The type of field in element type t, from its C type. */
#define TYPE_OF(t, field)                                                  \
	_Generic(((t *)0)->field,                                          \
		uint32_t: KVT_STAT_U32,                                    \
		uint64_t: KVT_STAT_U64,                                    \
		bool: KVT_STAT_BOOL,                                       \
		char *: KVT_STAT_TEXT,                                     \
		struct kvt_histogram_snapshot: KVT_STAT_HIST,              \
		struct kvt_stat_by_label: KVT_STAT_BY_LABEL)

#define STAT(scope_, t, kind_, name_, field, label_, help_)                \
	{ .scope = scope_, .kind = KVT_STAT_##kind_,                       \
	  .type = TYPE_OF(t, field), .name = #name_, .label = label_,      \
	  .offset = offsetof(t, field), .help = help_ }

/* One row per scope: kind, name (the field in the reply), where it lies. */
#define D(kind, name, field, help) \
	STAT(KVT_STAT_DAEMON, struct daemon_stats, kind, name, field, NULL, help)
#define T(kind, name, help) \
	STAT(KVT_STAT_TIER, struct tier_stats, kind, name, name, NULL, help)
#define N(kind, name, field, help) \
	STAT(KVT_STAT_NAMESPACE, struct namespace_stats, kind, name, field, NULL, help)
#define U(kind, name, field, help) \
	STAT(KVT_STAT_TENANT, struct kvt_tenant_stats, kind, name, field, NULL, help)
#define R(kind, name, field, help) \
	STAT(KVT_STAT_RPC, struct rpc_stats, kind, name, field, NULL, help)
/* Text: a label (on kvtier_build_info for the daemon's). */
#define LABEL(scope, t, name, field, label, help) \
	STAT(scope, t, LABEL, name, field, label, help)

const struct kvt_stat kvt_stats_table[] = {
	/* Identity. */
	LABEL(KVT_STAT_DAEMON, struct daemon_stats, version, version, "version",
	      "The daemon's version."),
	LABEL(KVT_STAT_DAEMON, struct daemon_stats, allocator, allocator, "allocator",
	      "The daemon's allocator, e.g. jemalloc 5.3.0."),
	LABEL(KVT_STAT_DAEMON, struct daemon_stats, cuda, cuda, "cuda",
	      "What the CUDA probe found."),
	LABEL(KVT_STAT_DAEMON, struct daemon_stats, listen, listen, "listen",
	      "The gRPC addresses served, space-separated."),
	LABEL(KVT_STAT_DAEMON, struct daemon_stats, metrics_address, metrics_address,
	      "metrics_address", "Where /metrics is served; empty: off."),
	D(GAUGE, pid, pid, "The daemon's process id."),
	D(GAUGE, uptime_seconds, uptime_seconds, "Seconds since the daemon started."),

	/* Sessions and pins. */
	D(GAUGE, sessions_active, e.sessions_active, "Attached worker sessions."),
	D(COUNTER, sessions_total, e.sessions_total, "Sessions ever attached."),
	D(COUNTER, sessions_refused_total, e.sessions_refused_total,
	  "Attaches refused: the tenant held tenants.max_sessions."),
	D(GAUGE, leases_active, e.leases_active, "Acquire leases held."),
	D(COUNTER, leases_refused_total, e.leases_refused_total,
	  "Acquires refused: the tenant held tenants.max_leases."),
	D(COUNTER, leases_expired_total, e.leases_expired_total,
	  "Leases ended by policy.lease_ttl."),
	D(GAUGE, pinned_blocks, e.pinned_blocks, "Blocks pinned (by leases or I/O)."),
	D(COUNTER, pins_total, e.pins_total, "Blocks pinned by Acquire leases."),
	D(COUNTER, forced_unpins_total, e.forced_unpins_total,
	  "Pins released because their lease outlived policy.lease_ttl."),

	/* Blocks. */
	D(GAUGE, ready_blocks, e.ready_blocks,
	  "Ready blocks, in the host tier or kept by a lower one."),
	D(GAUGE, pending_blocks, e.pending_blocks, "Reserved blocks not yet committed."),
	D(COUNTER, lookup_blocks_total, e.lookup_keys, "Blocks queried by Lookup."),
	D(COUNTER, lookup_hit_blocks_total, e.lookup_hits,
	  "Queried blocks found in a ready prefix."),
	D(COUNTER, lookup_nvme_hit_blocks_total, e.lookup_hits_nvme,
	  "Of the queried blocks found, those on nvme only."),
	D(COUNTER, lookup_remote_hit_blocks_total, e.lookup_hits_remote,
	  "Of the queried blocks found, those kept only by the remote store."),
	D(COUNTER, lookup_pending_blocks_total, e.lookup_pending,
	  "Queried blocks Lookup reported pending."),
	D(COUNTER, reserved_blocks_total, e.reserved_total, "Blocks reserved."),
	D(COUNTER, committed_blocks_total, e.committed_total, "Blocks committed."),
	D(COUNTER, aborted_blocks_total, e.aborted_total,
	  "Reservations aborted, by Abort or by their session's end."),
	D(COUNTER, dropped_blocks_total, e.dropped_total,
	  "Blocks dropped by Drop or DropNamespace."),
	D(COUNTER, expired_blocks_total, e.expired_total,
	  "Blocks expired after their namespace's idle TTL."),
	D(COUNTER, reserve_no_space_total, e.reserve_no_space_total,
	  "Keys Reserve found no room for."),
	D(COUNTER, priority_fallbacks_total, e.priority_fallbacks_total,
	  "Retention priorities that fell back to policy.default_priority as their duration ended."),
	D(HISTOGRAM, eviction_age_seconds, eviction_age,
	  "Time since last use of each block the host tier evicted."),
	D(COUNTER, waits_total, e.waits_total, "Acquires that waited for pending blocks."),
	D(GAUGE, waits_active, e.waits_active, "Acquires waiting now."),
	D(COUNTER, waits_completed_total, e.waits_completed_total,
	  "Waits that ended with every key ready."),
	D(COUNTER, waits_missed_total, e.waits_missed_total,
	  "Waits that ended as a producer aborted or died."),
	D(COUNTER, waits_timed_out_total, e.waits_timed_out_total,
	  "Waits that reached their deadline."),

	/* Tiers: what each has. */
	LABEL(KVT_STAT_TIER, struct tier_stats, tier, tier, "tier", "host, hbm or nvme."),
	T(GAUGE, up, "1 when the tier serves."),
	T(GAUGE, capacity_bytes, "Capacity of the tier."),
	T(GAUGE, used_bytes, "Bytes of the tier holding blocks."),
	T(COUNTER, in_bytes_total,
	  "Page bytes written into the tier (host: commits, puts, promotions; hbm: copies started; nvme: demotions)."),
	T(COUNTER, out_bytes_total,
	  "Page bytes read out of the tier (host, hbm: blocks acquired from it; nvme: promotions)."),
	T(COUNTER, evictions_total,
	  "Blocks that left the tier to make room (host: to nvme or out of the cache; hbm: copies; nvme: region reuse)."),

	/* The host tier. */
	D(GAUGE, host_segments, e.host_segments, "Host tier segments, retiring ones included."),
	D(GAUGE, host_segments_used, e.host_segments_used,
	  "Host segments carved for some namespace."),
	D(GAUGE, host_segments_retiring, e.host_segments_retiring,
	  "Segments a smaller host.size retired that still hold blocks."),
	D(COUNTER, host_segments_renewed_total, e.host_segments_renewed_total,
	  "Host segments given a new memfd as they passed to another tenant."),
	D(COUNTER, host_segment_faults_total, e.host_segment_faults_total,
	  "Host segments a worker punched holes in that the daemon then found without memory (read as zeros, blocks dropped, made anew)."),
	D(COUNTER, segment_fds_total, sock.served_total,
	  "Segment descriptors handed to workers."),
	D(COUNTER, segment_fd_refusals_total, sock.refused_total,
	  "Segment requests refused (another tenant's segment, no such session, malformed)."),
	D(COUNTER, segment_socket_dropped_total, sock.dropped_total,
	  "Segment socket connections closed without a request (silent, or crowded out)."),
	D(GAUGE, fast_lanes, lanes.active,
	  "Sessions' fast lanes open (shared-memory calls, lane.h)."),
	D(COUNTER, fast_lanes_opened_total, lanes.opened_total, "Fast lanes opened."),
	D(COUNTER, fast_lane_calls_total, lanes.calls_total,
	  "Calls served on fast lanes (also counted as their methods' calls)."),

	/* The hbm tier: copies of host blocks in GPU pools. */
	D(GAUGE, hbm_devices, e.hbm.devices, "GPUs with an hbm pool."),
	D(GAUGE, hbm_blocks, e.hbm.blocks, "Blocks with a copy in an hbm pool."),
	D(COUNTER, hbm_loads_total, e.hbm.loads_total, "Copies into hbm started."),
	D(COUNTER, hbm_load_failures_total, e.hbm.load_failures_total,
	  "Copies into hbm that failed."),
	D(COUNTER, hbm_loads_skipped_total, e.hbm.loads_skipped_total,
	  "Copies into hbm skipped: no room, every copy pinned."),
	D(COUNTER, hbm_drops_total, e.hbm.drops_total, "hbm copies gone with their host slot."),
	D(COUNTER, hbm_hits_total, e.hbm.hits_total, "Blocks acquired from an hbm pool."),

	/* The nvme tier. */
	D(GAUGE, nvme_paths, e.nvme_paths, "nvme paths configured."),
	D(GAUGE, nvme_paths_failed, e.nvme_paths_failed,
	  "nvme paths taking no writes now (or never opened)."),
	D(GAUGE, nvme_fixed_buffers, e.nvme_fixed_buffers,
	  "1 when the host segments are io_uring fixed buffers."),
	D(GAUGE, nvme_blocks, e.nvme_blocks, "Blocks with a copy on nvme."),
	D(COUNTER, demotions_total, e.demotions_total, "Blocks written to nvme."),
	D(COUNTER, demotions_skipped_total, e.demotions_skipped_total,
	  "Committed blocks not written to nvme (backlog full, tier failing)."),
	D(COUNTER, evictions_to_nvme_total, e.evictions_to_nvme_total,
	  "Host evictions of blocks that stay cached on nvme."),
	D(COUNTER, promotions_total, e.promotions_total, "Blocks read back from nvme."),
	D(COUNTER, promotion_failures_total, e.promotion_failures_total,
	  "Promotions that failed (bad checksum or read error): misses."),
	D(COUNTER, nvme_bad_checksum_total, e.nvme_bad_checksum_total,
	  "Pages read from nvme whose checksum did not match."),
	D(COUNTER, nvme_write_errors_total, e.nvme_write_errors_total, "Failed nvme writes."),
	D(COUNTER, nvme_read_errors_total, e.nvme_read_errors_total, "Failed nvme reads."),
	D(GAUGE, nvme_queued, e.nvme_queued, "nvme I/Os queued."),
	D(GAUGE, nvme_inflight, e.nvme_inflight, "nvme I/Os in flight."),
	D(GAUGE, nvme_recovered_blocks, e.nvme_recovered_blocks,
	  "Blocks found on nvme at start."),
	D(GAUGE, nvme_recovery_ms, e.nvme_recovery_ms,
	  "Milliseconds the nvme tier took to read its records back at start."),

	/* The remote tier: a Redis or Redis Cluster that nodes share. */
	D(GAUGE, remote_degraded, e.remote.degraded,
	  "1 while a store node is down, or a request to it failed within the last second."),
	D(GAUGE, remote_cluster, e.remote.cluster, "1 when the store is a Redis Cluster."),
	D(GAUGE, remote_nodes, e.remote.nodes, "Store masters known (1 for one server)."),
	D(COUNTER, remote_slot_map_refreshes_total, e.remote.refreshes,
	  "Cluster slot maps read (at start, after MOVED or a node failure)."),
	D(COUNTER, remote_requests_total, e.remote.requests, "Batches sent to the store."),
	D(COUNTER, remote_hits_total, e.remote.hits,
	  "Keys the store had, read or checked for."),
	D(COUNTER, remote_misses_total, e.remote.misses,
	  "Keys the store did not have: never written, expired, or evicted by its maxmemory-policy."),
	D(COUNTER, remote_writes_total, e.remote_writes_total,
	  "Records written to the store (write-behind)."),
	D(COUNTER, remote_writes_skipped_total, e.remote_writes_skipped_total,
	  "Committed blocks not written: queue_depth reached, or the store failing."),
	D(COUNTER, remote_promotions_total, e.remote_promotions_total,
	  "Blocks read from the store into the host tier."),
	D(COUNTER, remote_bad_records_total, e.remote_bad_records_total,
	  "Records read that failed their check: a miss, deleted from the store."),
	STAT(KVT_STAT_DAEMON, struct daemon_stats, COUNTER, remote_errors_total,
	     remote_errors, "kind",
	     "Keys the store failed, by kind (timeout, conn, auth, proto, server, size); moved and ask: redirections followed."),
	D(COUNTER, remote_lookup_budget_expired_total, e.remote.budget_expired,
	  "Keys a Lookup stopped waiting for at remote.lookup_budget: its chain ends there (not a store error)."),
	D(COUNTER, remote_lookups_unasked_total, e.remote_lookups_unasked_total,
	  "Lookups that did not ask the store: one ran out of remote.lookup_budget in the last 100 ms."),
	D(HISTOGRAM, remote_request_duration_seconds, e.remote.latency,
	  "Round trips of batches to the store."),

	/* Connections and bounds. */
	D(GAUGE, connections_active, conns.active,
	  "Unix-socket connections served (over tenants.max_connections ones not counted)."),
	D(COUNTER, connections_idle_closed_total, conns.idle_closed_total,
	  "Connections shut down after daemon.idle_timeout with no call in flight."),
	D(COUNTER, connections_refused_total, conns.refused_total,
	  "Connections over tenants.max_connections."),
	D(COUNTER, namespaces_refused_total, e.namespaces_refused_total,
	  "Namespaces refused: the tenant had tenants.max_namespaces."),
	D(COUNTER, namespaces_dropped_total, e.namespaces_dropped_total,
	  "Namespaces deleted by DropNamespace."),

	/* Configuration reloads (SIGHUP). */
	D(COUNTER, config_reloads_total, reloads_total, "Configuration reloads."),
	D(COUNTER, config_reload_failures_total, reload_failures_total,
	  "Reloads that left the configuration unchanged (a broken file)."),
	D(GAUGE, config_last_reload_ok, last_reload_ok, "1 unless the last reload failed."),

	/* RPCs. */
	STAT(KVT_STAT_DAEMON, struct daemon_stats, COUNTER, rpc_status_errors_total,
	     errors_by_code, "code", "RPC errors by gRPC status code."),
	LABEL(KVT_STAT_RPC, struct rpc_stats, method, method, "method",
	      "The method, e.g. Lookup."),
	R(COUNTER, calls_total, calls_total, "Calls of the method."),
	R(COUNTER, errors_total, errors_total,
	  "Calls that ended with a status other than OK."),
	R(HISTOGRAM, duration_seconds, duration,
	  "RPC latency in the daemon, request received to reply sent (Attach: to the session's first event)."),

	/* Namespaces: every one for an admin, else the caller's and the shared. */
	LABEL(KVT_STAT_NAMESPACE, struct namespace_stats, name, e.name, "namespace",
	      "The namespace's name."),
	LABEL(KVT_STAT_NAMESPACE, struct namespace_stats, tenant, e.tenant_name, "tenant",
	      "Its owner's name; shared for a shared one."),
	N(GAUGE, id, e.id, "Its namespace_id, as Lookup and DropNamespace take it."),
	N(GAUGE, page_bytes, e.page_bytes, "Bytes of one page."),
	N(GAUGE, block_tokens, e.block_tokens, "Tokens of one block."),
	N(GAUGE, shared, e.shared, "1 for a shared namespace."),
	N(GAUGE, idle_ttl_ms, idle_ttl_ms, "Its blocks expire unused this long; 0: never."),
	N(GAUGE, ready_blocks, e.ready_blocks, "Ready blocks."),
	N(GAUGE, pending_blocks, e.pending_blocks, "Reserved blocks not yet committed."),
	N(COUNTER, lookup_blocks_total, e.lookup_keys, "Blocks queried by Lookup."),
	N(COUNTER, lookup_hit_blocks_total, e.lookup_hits,
	  "Queried blocks found in a ready prefix."),
	N(COUNTER, lookup_nvme_hit_blocks_total, e.lookup_hits_nvme,
	  "Of the queried blocks found, those on nvme only."),
	N(COUNTER, lookup_remote_hit_blocks_total, e.lookup_hits_remote,
	  "Of the queried blocks found, those kept only by the remote store."),
	N(COUNTER, lookup_tokens_total, lookup_tokens_total,
	  "Tokens queried by Lookup (blocks x block_tokens)."),
	N(COUNTER, lookup_hit_tokens_total, lookup_hit_tokens_total,
	  "Queried tokens found cached; the hit rate is lookup_hit_tokens_total / lookup_tokens_total."),
	N(COUNTER, lookup_nvme_hit_tokens_total, lookup_nvme_hit_tokens_total,
	  "Of the queried tokens found, those on nvme only."),
	N(COUNTER, lookup_remote_hit_tokens_total, lookup_remote_hit_tokens_total,
	  "Of the queried tokens found, those kept only by the remote store."),
	N(COUNTER, evictions_total, e.evictions, "Host evictions of its blocks."),
	N(COUNTER, expired_blocks_total, e.expired, "Blocks expired after its idle TTL."),
	N(GAUGE, nvme_blocks, e.nvme_blocks, "Blocks with a copy on nvme."),

	/* Tenants: every one for an admin, else the caller's own. */
	LABEL(KVT_STAT_TENANT, struct kvt_tenant_stats, name, name, "tenant",
	      "User name, uid:N, tcp or shared."),
	U(GAUGE, uid, uid, "Its uid."),
	U(GAUGE, host_used_bytes, host_used_bytes, "Host tier bytes it holds."),
	U(GAUGE, host_quota_bytes, host_quota_bytes,
	  "Host tier bytes it keeps against others (0: no quota)."),
	U(COUNTER, lookup_blocks_total, lookup_keys, "Blocks it queried by Lookup."),
	U(COUNTER, lookup_hit_blocks_total, lookup_hits, "Of those, blocks found cached."),
	U(COUNTER, evictions_total, evictions, "Host evictions of its blocks."),
	U(GAUGE, sessions_active, sessions, "Sessions it holds open (tenants.max_sessions)."),
	U(GAUGE, leases_active, leases, "Leases it holds (tenants.max_leases)."),
	U(GAUGE, namespaces, namespaces,
	  "Namespaces it created and has not dropped (tenants.max_namespaces)."),
};

#undef D
#undef T
#undef N
#undef U
#undef R
#undef LABEL

const size_t kvt_stats_count = sizeof(kvt_stats_table) / sizeof(kvt_stats_table[0]);

const struct kvt_stat_scope_info kvt_stat_scopes[KVT_STAT_SCOPES] = {
	[KVT_STAT_DAEMON] = { NULL, "" },
	[KVT_STAT_TIER] = { "tiers", "tier_" },
	[KVT_STAT_NAMESPACE] = { "namespaces", "namespace_" },
	[KVT_STAT_TENANT] = { "tenants", "tenant_" },
	[KVT_STAT_RPC] = { "rpcs", "rpc_" },
};

bool kvt_stat_in_ms(const struct kvt_stat *st)
{
	size_t n = strlen(st->name);

	return n > 3 && strcmp(st->name + n - 3, "_ms") == 0;
}

void kvt_stat_metric(const struct kvt_stat *st, char *buf, size_t len)
{
	size_t n = strlen(st->name);

	if (kvt_stat_in_ms(st))
		snprintf(buf, len, "kvtier_%s%.*s_seconds", kvt_stat_scopes[st->scope].prefix,
			 (int)(n - 3), st->name);
	else
		snprintf(buf, len, "kvtier_%s%s", kvt_stat_scopes[st->scope].prefix,
			 st->name);
}

/* ---- values ---- */

static const void *field_of(const struct kvt_stat *st, const void *elem)
{
	return (const char *)elem + st->offset;
}

uint64_t kvt_stat_value(const struct kvt_stat *st, const void *elem)
{
	const void *p = field_of(st, elem);

	switch (st->type) {
	case KVT_STAT_U32: return *(const uint32_t *)p;
	case KVT_STAT_U64: return *(const uint64_t *)p;
	case KVT_STAT_BOOL: return *(const bool *)p;
	default: return 0;
	}
}

const char *kvt_stat_text(const struct kvt_stat *st, const void *elem)
{
	return field_of(st, elem);
}

const struct kvt_histogram_snapshot *kvt_stat_histogram(const struct kvt_stat *st,
							const void *elem)
{
	return field_of(st, elem);
}

const struct kvt_stat_by_label *kvt_stat_by_label(const struct kvt_stat *st,
						  const void *elem)
{
	return field_of(st, elem);
}

/* ---- reading ---- */

static const char *const status_names[KVT_STATUS_CODES] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

static void read_daemon(struct kvt_daemon *d, struct daemon_stats *st)
{
	size_t at = 0;

	snprintf(st->version, sizeof(st->version), "%s", KVT_VERSION);
	snprintf(st->allocator, sizeof(st->allocator), "%s", d->allocator);
	snprintf(st->cuda, sizeof(st->cuda), "%s", d->cuda);
	snprintf(st->metrics_address, sizeof(st->metrics_address), "%s",
		 atomic_load_explicit(&d->metrics_published, memory_order_acquire) ?
		 d->metrics_address : "");
	for (size_t i = 0; i < kvt_server_listen_count(d->server) &&
			   at < sizeof(st->listen); i++)
		at += (size_t)snprintf(st->listen + at, sizeof(st->listen) - at,
				       "%s%s", i ? " " : "",
				       kvt_server_listen_address(d->server, i));
	st->pid = (uint32_t)getpid();
	st->uptime_seconds = (uint64_t)(time(NULL) - d->started);
	kvt_engine_stats(d->engine, &st->e);
	kvt_engine_eviction_ages(d->engine, &st->eviction_age);
	kvt_segsock_stats(d->segsock, &st->sock);
	kvt_lanes_stats(d->lanes, &st->lanes);
	kvt_server_connections(d->server, &st->conns);
	pthread_mutex_lock(&d->reload->lock);
	st->reloads_total = d->reload->reloads_total;
	st->reload_failures_total = d->reload->failures_total;
	st->last_reload_ok = d->reload->last_ok;
	pthread_mutex_unlock(&d->reload->lock);
	for (int c = 1; c < KVT_STATUS_CODES; c++) {
		struct kvt_stat_by_label *b = &st->errors_by_code;
		uint64_t v = kvt_server_errors_by_code(d->server, c);

		/* Every code, 0 included: a series that appears only with its
		 * first error leaves dashboards and rate() blind until then. */
		b->key[b->n] = status_names[c];
		b->value[b->n++] = v;
	}
	for (int k = 0; k < KVT_REDIS_ERR_KINDS; k++) {
		static const char *const kinds[KVT_REDIS_ERR_KINDS] = {
			"timeout", "conn", "auth", "proto", "server", "size",
			"moved", "ask",
		};

		st->remote_errors.key[k] = kinds[k];
		st->remote_errors.value[k] = st->e.remote.errors[k];
		st->remote_errors.n = k + 1;
	}
}

static void read_tiers(const struct kvt_engine_stats *e, struct tier_stats *t)
{
	t[TIER_HOST] = (struct tier_stats){
		"host", true, e->host_capacity_bytes, e->host_used_bytes,
		e->host_in_bytes_total, e->host_out_bytes_total, e->evictions_total,
	};
	t[TIER_HBM] = (struct tier_stats){
		"hbm", e->hbm_enabled, e->hbm.capacity_bytes, e->hbm.used_bytes,
		e->hbm.in_bytes_total, e->hbm.out_bytes_total, e->hbm.evictions_total,
	};
	t[TIER_NVME] = (struct tier_stats){
		"nvme", e->nvme_enabled, e->nvme_capacity_bytes, e->nvme_used_bytes,
		e->nvme_write_bytes_total, e->nvme_read_bytes_total,
		e->nvme_evictions_total,
	};
	/* Its capacity is the store's: not known here. */
	t[TIER_REMOTE] = (struct tier_stats){
		"remote", e->remote_enabled, 0, 0, e->remote.bytes_out,
		e->remote.bytes_in, 0,
	};
}

static int read_rpcs(struct kvt_daemon *d, struct kvt_stats *s)
{
	size_t n = kvt_server_method_slots(d->server);

	if (!(s->rpcs = calloc(n, sizeof(*s->rpcs))))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct rpc_stats *m = &s->rpcs[i];
		const char *path, *slash;

		kvt_server_method_counters(d->server, i, &path, &m->calls_total,
					   &m->errors_total);
		kvt_server_method_latency(d->server, i, &m->duration);
		/* "/kvtier.v1.KvTier/Lookup" -> "Lookup" */
		slash = strrchr(path, '/');
		snprintf(m->method, sizeof(m->method), "%s", slash ? slash + 1 : path);
	}
	s->nrpcs = n;
	return 0;
}

/* Whether a tenant that is not an admin sees namespace ns in Stats: its
 * own and the shared ones. */
static bool ns_visible(const struct kvt_namespace_stats *st, uint32_t tenant)
{
	return st->tenant == tenant || st->shared;
}

static int read_namespaces(struct kvt_daemon *d, bool all, uint32_t tenant,
			   struct kvt_stats *s)
{
	struct kvt_namespace_stats tmp;
	uint32_t n = 0;

	while (kvt_engine_namespace_stats(d->engine, n, &tmp) == 0)
		n++;
	/* The table only grows (dropped entries are reused): read at most n. */
	if (!(s->ns = calloc(n + 1, sizeof(*s->ns))))
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct namespace_stats *m = &s->ns[s->nns];

		if (kvt_engine_namespace_stats(d->engine, i, &m->e) < 0 ||
		    !m->e.live || (!all && !ns_visible(&m->e, tenant)))
			continue;
		m->idle_ttl_ms = m->e.idle_ttl / KVT_MS;
		m->lookup_tokens_total = m->e.lookup_keys * m->e.block_tokens;
		m->lookup_hit_tokens_total = m->e.lookup_hits * m->e.block_tokens;
		m->lookup_nvme_hit_tokens_total = m->e.lookup_hits_nvme * m->e.block_tokens;
		m->lookup_remote_hit_tokens_total =
			m->e.lookup_hits_remote * m->e.block_tokens;
		s->nns++;
	}
	return 0;
}

static int read_tenants(struct kvt_daemon *d, bool all, uint32_t tenant,
			struct kvt_stats *s)
{
	struct kvt_tenant_stats tmp;
	uint32_t n = 0;

	while (kvt_engine_tenant_stats(d->engine, n, &tmp) == 0)
		n++;
	/* Tenants are never removed either. */
	if (!(s->tenants = calloc(n + 1, sizeof(*s->tenants))))
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		if ((all || i == tenant) &&
		    kvt_engine_tenant_stats(d->engine, i, &s->tenants[s->ntenants]) == 0)
			s->ntenants++;
	return 0;
}

int kvt_stats_read(struct kvt_daemon *d, bool all, uint32_t tenant,
		   struct kvt_stats **out)
{
	struct kvt_stats *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	read_daemon(d, &s->daemon);
	read_tiers(&s->daemon.e, s->tiers);
	if (read_rpcs(d, s) < 0 || read_namespaces(d, all, tenant, s) < 0 ||
	    read_tenants(d, all, tenant, s) < 0) {
		kvt_stats_free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void kvt_stats_free(struct kvt_stats *s)
{
	if (!s)
		return;
	free(s->ns);
	free(s->tenants);
	free(s->rpcs);
	free(s);
}

size_t kvt_stats_elements(const struct kvt_stats *s, enum kvt_stat_scope scope)
{
	switch (scope) {
	case KVT_STAT_TIER: return TIERS;
	case KVT_STAT_NAMESPACE: return s->nns;
	case KVT_STAT_TENANT: return s->ntenants;
	case KVT_STAT_RPC: return s->nrpcs;
	default: return 1;
	}
}

const void *kvt_stats_element(const struct kvt_stats *s,
			      enum kvt_stat_scope scope, size_t i)
{
	switch (scope) {
	case KVT_STAT_TIER: return &s->tiers[i];
	case KVT_STAT_NAMESPACE: return &s->ns[i];
	case KVT_STAT_TENANT: return &s->tenants[i];
	case KVT_STAT_RPC: return &s->rpcs[i];
	default: return &s->daemon;
	}
}

/* ---- the Stats reply, filled by field name ---- */

/* The message a scope's stats fill: StatsResponse's, or that of its list. */
static const ProtobufCMessageDescriptor *scope_message(enum kvt_stat_scope scope)
{
	const ProtobufCMessageDescriptor *top = &kvtier__v1__stats_response__descriptor;
	const ProtobufCFieldDescriptor *f;

	if (scope == KVT_STAT_DAEMON)
		return top;
	f = protobuf_c_message_descriptor_get_field_by_name(top, kvt_stat_scopes[scope].list);
	return f && f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
}

/* Whether field f can carry stat st. */
static bool field_fits(const struct kvt_stat *st, const ProtobufCFieldDescriptor *f)
{
	bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;

	switch (st->type) {
	case KVT_STAT_U32:
		return !repeated && (f->type == PROTOBUF_C_TYPE_UINT32 ||
				     f->type == PROTOBUF_C_TYPE_UINT64);
	case KVT_STAT_U64: return !repeated && f->type == PROTOBUF_C_TYPE_UINT64;
	case KVT_STAT_BOOL: return !repeated && f->type == PROTOBUF_C_TYPE_BOOL;
	case KVT_STAT_TEXT: return !repeated && f->type == PROTOBUF_C_TYPE_STRING;
	case KVT_STAT_HIST:
		return !repeated && f->descriptor == &kvtier__v1__histogram__descriptor;
	case KVT_STAT_BY_LABEL: /* map<string, uint64> */
		return repeated && f->type == PROTOBUF_C_TYPE_MESSAGE &&
		       ((const ProtobufCMessageDescriptor *)f->descriptor)->n_fields == 2;
	}
	return false;
}

/* Whether the kind suits how the value is held. */
static bool kind_fits(const struct kvt_stat *st)
{
	switch (st->kind) {
	case KVT_STAT_HISTOGRAM: return st->type == KVT_STAT_HIST;
	case KVT_STAT_LABEL: return st->type == KVT_STAT_TEXT && st->label;
	case KVT_STAT_GAUGE:
		return st->type == KVT_STAT_U32 || st->type == KVT_STAT_U64 ||
		       st->type == KVT_STAT_BOOL;
	case KVT_STAT_COUNTER:
		return st->type == KVT_STAT_U32 || st->type == KVT_STAT_U64 ||
		       (st->type == KVT_STAT_BY_LABEL && st->label);
	}
	return false;
}

static bool is_scope_list(const ProtobufCMessageDescriptor *m, const char *field)
{
	if (m != &kvtier__v1__stats_response__descriptor)
		return false;
	for (int s = 0; s < KVT_STAT_SCOPES; s++)
		if (kvt_stat_scopes[s].list && strcmp(kvt_stat_scopes[s].list, field) == 0)
			return true;
	return false;
}

int kvt_stats_check(char *err, size_t len)
{
	for (int s = 0; s < KVT_STAT_SCOPES; s++) {
		const ProtobufCMessageDescriptor *m = scope_message(s);

		if (!m) {
			snprintf(err, len, "stats table: StatsResponse has no list %s",
				 kvt_stat_scopes[s].list);
			return -EINVAL;
		}
		/* Every field of the message is some stat's, or a scope's list. */
		for (unsigned i = 0; i < m->n_fields; i++) {
			const char *name = m->fields[i].name;
			bool found = is_scope_list(m, name);

			for (size_t k = 0; k < kvt_stats_count && !found; k++)
				found = kvt_stats_table[k].scope == (enum kvt_stat_scope)s &&
					strcmp(kvt_stats_table[k].name, name) == 0;
			if (!found) {
				snprintf(err, len, "stats table: %s.%s is no stat's field",
					 m->name, name);
				return -EINVAL;
			}
		}
	}
	for (size_t k = 0; k < kvt_stats_count; k++) {
		const struct kvt_stat *st = &kvt_stats_table[k];
		const ProtobufCFieldDescriptor *f =
			protobuf_c_message_descriptor_get_field_by_name(scope_message(st->scope),
									st->name);

		if (!kind_fits(st) || !f || !field_fits(st, f)) {
			snprintf(err, len, "stats table: %s: %s", st->name,
				 !kind_fits(st) ? "its kind does not suit its type" :
				 !f ? "no field of that name in its message" :
				      "its field's type does not fit");
			return -EINVAL;
		}
	}
	return 0;
}

/* What a filled reply points to, freed at once after packing. */
struct arena {
	void **p;
	size_t n, cap;
};

static void *arena_alloc(struct arena *a, size_t size)
{
	void *p;

	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 64;
		void **np = realloc(a->p, cap * sizeof(*np));

		if (!np)
			return NULL;
		a->p = np;
		a->cap = cap;
	}
	p = calloc(1, size ? size : 1);
	if (p)
		a->p[a->n++] = p;
	return p;
}

static void arena_free(struct arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->p[i]);
	free(a->p);
}

/* A Histogram message in seconds of a snapshot in nanoseconds. */
static Kvtier__V1__Histogram *histogram_message(const struct kvt_histogram_snapshot *s,
						struct arena *a)
{
	Kvtier__V1__Histogram *h = arena_alloc(a, sizeof(*h));
	double *le = arena_alloc(a, sizeof(*le) * s->n);
	uint64_t *counts = arena_alloc(a, sizeof(*counts) * (s->n + 1));

	if (!h || !le || !counts)
		return NULL;
	kvtier__v1__histogram__init(h);
	for (uint32_t i = 0; i < s->n; i++)
		le[i] = (double)s->le[i] / 1e9;
	memcpy(counts, s->counts, sizeof(*counts) * (s->n + 1));
	h->upper_bounds = le;
	h->n_upper_bounds = s->n;
	h->counts = counts;
	h->n_counts = s->n + 1;
	h->sum = (double)s->sum_ns / 1e9;
	h->count = s->count;
	return h;
}

/* The entries of a map<string, uint64> field. */
static int map_entries(const ProtobufCFieldDescriptor *f,
		       const struct kvt_stat_by_label *b, ProtobufCMessage *m,
		       struct arena *a)
{
	const ProtobufCMessageDescriptor *ed = f->descriptor;
	ProtobufCMessage **entries = arena_alloc(a, sizeof(*entries) * b->n);

	if (!entries)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->n; i++) {
		char *e = arena_alloc(a, ed->sizeof_message);

		if (!e)
			return -ENOMEM;
		ed->message_init((ProtobufCMessage *)e);
		*(const char **)(e + ed->fields[0].offset) = b->key[i];
		*(uint64_t *)(e + ed->fields[1].offset) = b->value[i];
		entries[i] = (ProtobufCMessage *)e;
	}
	*(size_t *)((char *)m + f->quantifier_offset) = b->n;
	*(ProtobufCMessage ***)((char *)m + f->offset) = entries;
	return 0;
}

/* Sets the fields of m (scope's message) to the stats of elem. */
static int fill_message(ProtobufCMessage *m, enum kvt_stat_scope scope,
			const void *elem, struct arena *a)
{
	for (size_t k = 0; k < kvt_stats_count; k++) {
		const struct kvt_stat *st = &kvt_stats_table[k];
		const ProtobufCFieldDescriptor *f;
		void *dst;

		if (st->scope != scope)
			continue;
		f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, st->name);
		dst = (char *)m + f->offset;
		switch (st->type) {
		case KVT_STAT_TEXT:
			*(const char **)dst = kvt_stat_text(st, elem);
			break;
		case KVT_STAT_HIST:
			if (!(*(Kvtier__V1__Histogram **)dst =
				      histogram_message(kvt_stat_histogram(st, elem), a)))
				return -ENOMEM;
			break;
		case KVT_STAT_BY_LABEL:
			if (map_entries(f, kvt_stat_by_label(st, elem), m, a) < 0)
				return -ENOMEM;
			break;
		default:
			if (f->type == PROTOBUF_C_TYPE_UINT32)
				*(uint32_t *)dst = (uint32_t)kvt_stat_value(st, elem);
			else if (f->type == PROTOBUF_C_TYPE_UINT64)
				*(uint64_t *)dst = kvt_stat_value(st, elem);
			else
				*(protobuf_c_boolean *)dst = kvt_stat_value(st, elem) != 0;
		}
	}
	return 0;
}

/* Fills the list field of scope in the reply, one message per element. */
static int fill_list(ProtobufCMessage *reply, const struct kvt_stats *s,
		     enum kvt_stat_scope scope, struct arena *a)
{
	const ProtobufCFieldDescriptor *f =
		protobuf_c_message_descriptor_get_field_by_name(reply->descriptor,
								kvt_stat_scopes[scope].list);
	const ProtobufCMessageDescriptor *md = f->descriptor;
	size_t n = kvt_stats_elements(s, scope);
	ProtobufCMessage **list = arena_alloc(a, sizeof(*list) * n);

	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!(list[i] = arena_alloc(a, md->sizeof_message)))
			return -ENOMEM;
		md->message_init(list[i]);
		if (fill_message(list[i], scope, kvt_stats_element(s, scope, i), a) < 0)
			return -ENOMEM;
	}
	*(size_t *)((char *)reply + f->quantifier_offset) = n;
	*(ProtobufCMessage ***)((char *)reply + f->offset) = list;
	return 0;
}

grpc_status_code kvt_rpc_stats(struct kvt_daemon *d, bool all, uint32_t tenant,
			       struct kvt_reply *r)
{
	Kvtier__V1__StatsResponse p = KVTIER__V1__STATS_RESPONSE__INIT;
	struct arena a = { 0 };
	struct kvt_stats *s = NULL;
	int rc = kvt_stats_read(d, all, tenant, &s);

	if (rc == 0)
		rc = fill_message(&p.base, KVT_STAT_DAEMON, &s->daemon, &a);
	for (int scope = KVT_STAT_DAEMON + 1; rc == 0 && scope < KVT_STAT_SCOPES; scope++)
		rc = fill_list(&p.base, s, scope, &a);
	if (rc == 0) {
		size_t len = protobuf_c_message_get_packed_size(&p.base);

		if ((r->buf = malloc(len ? len : 1)))
			r->len = protobuf_c_message_pack(&p.base, r->buf);
		else
			rc = -ENOMEM;
	}
	arena_free(&a);
	kvt_stats_free(s);
	if (rc < 0) {
		snprintf(r->msg, sizeof(r->msg), "out of memory");
		return GRPC_STATUS_RESOURCE_EXHAUSTED;
	}
	return GRPC_STATUS_OK;
}

/* ---- the list for the docs ---- */

void kvt_stats_print(FILE *out)
{
	fputs("| stat | metric | kind | help |\n| --- | --- | --- | --- |\n", out);
	for (size_t k = 0; k < kvt_stats_count; k++) {
		const struct kvt_stat *st = &kvt_stats_table[k];
		const char *list = kvt_stat_scopes[st->scope].list;
		char metric[128];
		const char *kind = st->kind == KVT_STAT_COUNTER ? "counter" :
				   st->kind == KVT_STAT_HISTOGRAM ? "histogram" :
				   st->kind == KVT_STAT_LABEL ? "label" :
				   st->type == KVT_STAT_BOOL ? "bool" : "gauge";

		fprintf(out, "| `%s%s%s` | ", list ? list : "", list ? "[]." : "", st->name);
		kvt_stat_metric(st, metric, sizeof(metric));
		if (st->kind == KVT_STAT_LABEL && !list)
			fprintf(out, "label `%s` of `kvtier_build_info`", st->label);
		else if (st->kind == KVT_STAT_LABEL)
			fprintf(out, "label `%s` of `kvtier_%s*`", st->label,
				kvt_stat_scopes[st->scope].prefix);
		else if (st->type == KVT_STAT_BY_LABEL)
			fprintf(out, "`%s`, label `%s`", metric, st->label);
		else
			fprintf(out, "`%s`", metric);
		fprintf(out, " | %s | %s |\n", kind, st->help);
	}
}

/*
 * The stats table: every counter, gauge and histogram kvtierd exposes,
 * declared once, in stats.c, with its name, kind, help, the scope it belongs
 * to (the daemon, each tier, namespace, tenant or RPC method) and where its
 * value lies in a reading. Everything else is rendered from the table:
 *   - the Stats RPC reply (kvt_rpc_stats): each stat fills the field of its
 *     name in kvtier.v1.StatsResponse, or in the message of its scope
 *     (TierStats, NamespaceStats, ...), found through protobuf-c's
 *     descriptors; kvtierctl and libkvtier walk that reply the same way;
 *   - /metrics (metrics.c): a stat named N is the metric
 *     kvtier_<scope prefix>N, labelled by its scope's text stats;
 *   - kvtierd --print-stats, the list README.md carries.
 *
 * Naming rule: counters end in _total, gauges and histograms never do, and
 * units end names (_bytes, _seconds, _ms); the metric adds only "kvtier_"
 * and the scope prefix ("tier_", "namespace_", "tenant_", "rpc_"). Text
 * stats are labels: the daemon's of kvtier_build_info, a scope's of each of
 * its samples.
 *
 * Threads: kvt_stats_read, kvt_rpc_stats and the value readers run on
 * completion-queue threads and the metrics thread at once; a reading is its
 * caller's alone, and the table never changes.
 */
#ifndef KVT_STATS_H
#define KVT_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "histogram.h"

/* Where a stat belongs; each scope but the daemon is a list in the reply. */
enum kvt_stat_scope {
	KVT_STAT_DAEMON,
	KVT_STAT_TIER,
	KVT_STAT_NAMESPACE,
	KVT_STAT_TENANT,
	KVT_STAT_RPC,
	KVT_STAT_SCOPES,
};

/* What Prometheus is told. */
enum kvt_stat_kind {
	KVT_STAT_COUNTER,
	KVT_STAT_GAUGE,
	KVT_STAT_HISTOGRAM,
	KVT_STAT_LABEL, /* text: a label, not a sample */
};

/* How the value is held; the table derives it from the field's C type. */
enum kvt_stat_type {
	KVT_STAT_U32,
	KVT_STAT_U64,
	KVT_STAT_BOOL,
	KVT_STAT_TEXT,     /* char[] */
	KVT_STAT_HIST,     /* struct kvt_histogram_snapshot */
	KVT_STAT_BY_LABEL, /* struct kvt_stat_by_label */
};

/* A counter split by one label (label in the table): one value a key. */
#define KVT_STAT_KEYS_MAX 32
struct kvt_stat_by_label {
	uint32_t n;
	const char *key[KVT_STAT_KEYS_MAX];
	uint64_t value[KVT_STAT_KEYS_MAX];
};

struct kvt_stat {
	enum kvt_stat_scope scope;
	enum kvt_stat_kind kind;
	enum kvt_stat_type type;
	const char *name;
	const char *label; /* LABEL: its label name; BY_LABEL: its key's */
	size_t offset;     /* in the scope's element of a reading */
	const char *help;
};

extern const struct kvt_stat kvt_stats_table[];
extern const size_t kvt_stats_count;

struct kvt_stat_scope_info {
	const char *list;   /* the StatsResponse field listing it; NULL: daemon */
	const char *prefix; /* of its metrics' names */
};
extern const struct kvt_stat_scope_info kvt_stat_scopes[KVT_STAT_SCOPES];

/* "kvtier_tier_used_bytes". A stat in milliseconds (its name ends in _ms)
 * is a metric in seconds, Prometheus' base unit: nvme_recovery_ms is
 * kvtier_nvme_recovery_seconds, its value divided by 1000. */
void kvt_stat_metric(const struct kvt_stat *st, char *buf, size_t len);
bool kvt_stat_in_ms(const struct kvt_stat *st);

/* Checks the table against the messages it fills: every stat has a field
 * of its name and type, every field a stat. 0, or -errno with err. kvtierd
 * runs it at start; kvt_rpc_stats relies on it. */
int kvt_stats_check(char *err, size_t len);

/* The table as a Markdown list of names, metrics, kinds and help. */
void kvt_stats_print(FILE *out);

struct kvt_daemon;
struct kvt_stats;

/*
 * Reads every stat now: the engine's, the server's, the sockets', the
 * reloads'. all: every tenant and namespace (admins, /metrics); else only
 * tenant's own, and the namespaces it may see. 0 or -ENOMEM.
 */
int kvt_stats_read(struct kvt_daemon *d, bool all, uint32_t tenant,
		   struct kvt_stats **out);
void kvt_stats_free(struct kvt_stats *s);

/* The elements of scope in s (1 for the daemon), and element i. */
size_t kvt_stats_elements(const struct kvt_stats *s, enum kvt_stat_scope scope);
const void *kvt_stats_element(const struct kvt_stats *s,
			      enum kvt_stat_scope scope, size_t i);

/* Stat st of element elem, by its type: U32, U64 and BOOL (0 or 1); TEXT;
 * HIST; BY_LABEL. */
uint64_t kvt_stat_value(const struct kvt_stat *st, const void *elem);
const char *kvt_stat_text(const struct kvt_stat *st, const void *elem);
const struct kvt_histogram_snapshot *kvt_stat_histogram(const struct kvt_stat *st,
							const void *elem);
const struct kvt_stat_by_label *kvt_stat_by_label(const struct kvt_stat *st,
						  const void *elem);

#endif

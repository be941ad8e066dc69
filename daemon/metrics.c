#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvtier.pb-c.h"
#include "log.h"
#include "rpc.h"

struct kvt_metrics {
	struct MHD_Daemon *mhd;
	struct kvt_daemon *d;
	atomic_bool draining;
	pthread_mutex_t auth_lock;
	struct kvt_metrics_auth auth;
};

/* ---- exposition ---- */

/* A label value with \, " and newlines escaped, as the format asks. */
static void label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample; labels: NULL-terminated name, value pairs. */
static void sample(FILE *f, const char *name, const char *const *labels,
		   double value)
{
	fputs(name, f);
	for (size_t i = 0; labels && labels[i]; i += 2) {
		fprintf(f, "%s%s=\"", i ? "," : "{", labels[i]);
		label_value(f, labels[i + 1]);
		fputc('"', f);
		if (!labels[i + 2])
			fputc('}', f);
	}
	fprintf(f, " %.17g\n", value);
}

/* A family with one unlabelled sample. */
static void single(FILE *f, const char *name, const char *type,
		   const char *help, double value)
{
	family(f, name, type, help);
	sample(f, name, NULL, value);
}

static void histogram(FILE *f, const char *name, const char *label,
		      const char *label_value_, const Kvtier__V1__Histogram *h)
{
	char le[32], bucket[128], sum[128], count[128];
	uint64_t cumulative = 0;

	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	snprintf(sum, sizeof(sum), "%s_sum", name);
	snprintf(count, sizeof(count), "%s_count", name);
	for (size_t i = 0; i < h->n_counts; i++) {
		const char *labels[] = { label, label_value_, "le", le, NULL };
		const char *const *l = label ? labels : labels + 2;

		cumulative += h->counts[i];
		if (i < h->n_upper_bounds)
			snprintf(le, sizeof(le), "%g", h->upper_bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		sample(f, bucket, l, (double)cumulative);
	}
	{
		const char *labels[] = { label, label_value_, NULL };

		sample(f, sum, label ? labels : NULL, h->sum);
		sample(f, count, label ? labels : NULL, (double)h->count);
	}
}

/* One value of a label, and the sample's value. */
struct part {
	const char *label_value;
	double value;
};

/* A family whose samples differ in one label. */
static void split(FILE *f, const char *name, const char *type, const char *help,
		  const char *label, const struct part *parts, size_t n)
{
	family(f, name, type, help);
	for (size_t i = 0; i < n; i++)
		sample(f, name, (const char *[]){ label, parts[i].label_value, NULL },
		       parts[i].value);
}

#define SPLIT(f, name, type, help, label, ...)                                \
	split(f, name, type, help, label, (const struct part[]){ __VA_ARGS__ }, \
	      sizeof((const struct part[]){ __VA_ARGS__ }) / sizeof(struct part))

static void render_tiers(FILE *f, const Kvtier__V1__StatsResponse *s)
{
	SPLIT(f, "kvtier_tier_capacity_bytes", "gauge", "Capacity of each tier.", "tier",
	      { "hbm", (double)s->hbm_capacity_bytes },
	      { "host", (double)s->host_capacity_bytes },
	      { "nvme", (double)s->nvme_capacity_bytes });
	SPLIT(f, "kvtier_tier_used_bytes", "gauge", "Bytes of each tier holding blocks.", "tier",
	      { "hbm", (double)s->hbm_used_bytes },
	      { "host", (double)s->host_used_bytes }, { "nvme", (double)s->nvme_used_bytes });
	SPLIT(f, "kvtier_tier_in_bytes_total", "counter",
	      "Page bytes written into each tier (host: commits, puts, promotions; nvme: demotions).",
	      "tier", { "host", (double)s->host_in_bytes_total },
	      { "nvme", (double)s->nvme_write_bytes_total });
	SPLIT(f, "kvtier_tier_out_bytes_total", "counter",
	      "Page bytes read out of each tier (hbm, host: acquired from it; nvme: promotions).",
	      "tier", { "hbm", (double)s->hbm_out_bytes_total },
	      { "host", (double)s->host_out_bytes_total },
	      { "nvme", (double)s->nvme_read_bytes_total });
	SPLIT(f, "kvtier_evictions_total", "counter",
	      "Blocks that left each tier to make room (host: to nvme or out of the cache; nvme: region reuse).",
	      "tier", { "host", (double)s->evictions_total },
	      { "nvme", (double)s->nvme_evictions_total });
	family(f, "kvtier_eviction_age_seconds", "histogram",
	       "Time since last use of each block the host tier evicted.");
	if (s->eviction_age)
		histogram(f, "kvtier_eviction_age_seconds", NULL, NULL, s->eviction_age);
	SPLIT(f, "kvtier_host_segments", "gauge",
	      "Host tier segments: active, carved for a namespace, retiring after a shrink.",
	      "state", { "active", s->host_segments }, { "carved", s->host_segments_used },
	      { "retiring", s->host_segments_retiring });
	single(f, "kvtier_host_segments_renewed_total", "counter",
	       "Host segments given a new memfd as they passed to another tenant.",
	       (double)s->host_segments_renewed_total);
	single(f, "kvtier_host_segment_faults_total", "counter",
	       "Host segments a worker punched holes in that the daemon then found without memory (read as zeros, blocks dropped, made anew).",
	       (double)s->host_segment_faults_total);
	SPLIT(f, "kvtier_segment_socket_requests_total", "counter",
	      "Segment socket: descriptors served, requests refused, connections dropped without a request.",
	      "result", { "served", (double)s->segment_fds_total },
	      { "refused", (double)s->segment_fd_refusals_total },
	      { "dropped", (double)s->segment_socket_dropped_total });
	single(f, "kvtier_hbm_up", "gauge", "1 when the hbm tier serves.", s->hbm_enabled);
	single(f, "kvtier_hbm_blocks", "gauge", "Blocks with a copy in an hbm pool.", (double)s->hbm_blocks);
	SPLIT(f, "kvtier_hbm_copies_total", "counter",
	      "hbm copies of host blocks: started, failed, skipped (no room), evicted, dropped with their host slot.",
	      "event", { "started", (double)s->hbm_loads_total },
	      { "failed", (double)s->hbm_load_failures_total },
	      { "skipped", (double)s->hbm_loads_skipped_total },
	      { "evicted", (double)s->hbm_evictions_total },
	      { "dropped", (double)s->hbm_drops_total });
	single(f, "kvtier_hbm_hits_total", "counter", "Blocks acquired from an hbm pool.",
	       (double)s->hbm_hits_total);
	single(f, "kvtier_nvme_up", "gauge", "1 when the nvme tier serves.", s->nvme_enabled);
	SPLIT(f, "kvtier_nvme_paths", "gauge", "nvme paths configured, and those failing.",
	      "state", { "configured", s->nvme_paths }, { "failed", s->nvme_paths_failed });
	single(f, "kvtier_nvme_blocks", "gauge", "Blocks with a copy on nvme.", (double)s->nvme_blocks);
	single(f, "kvtier_demotions_total", "counter", "Blocks written to nvme.", (double)s->demotions_total);
	single(f, "kvtier_demotions_skipped_total", "counter",
	       "Committed blocks not written to nvme (backlog full, tier failing).",
	       (double)s->demotions_skipped_total);
	single(f, "kvtier_evictions_to_nvme_total", "counter",
	       "Host evictions of blocks that stay cached on nvme.",
	       (double)s->evictions_to_nvme_total);
	single(f, "kvtier_promotions_total", "counter", "Blocks read back from nvme.",
	       (double)s->promotions_total);
	single(f, "kvtier_promotion_failures_total", "counter",
	       "Promotions that failed (bad checksum or read error): misses.",
	       (double)s->promotion_failures_total);
	single(f, "kvtier_nvme_bad_checksums_total", "counter",
	       "Pages read from nvme whose checksum did not match.",
	       (double)s->nvme_bad_checksum_total);
	SPLIT(f, "kvtier_nvme_io_errors_total", "counter", "Failed nvme reads and writes.", "op",
	      { "read", (double)s->nvme_read_errors_total },
	      { "write", (double)s->nvme_write_errors_total });
	SPLIT(f, "kvtier_nvme_io", "gauge", "nvme I/Os queued and in flight.", "state",
	      { "queued", (double)s->nvme_queued }, { "inflight", (double)s->nvme_inflight });
}

static void render_blocks(FILE *f, const Kvtier__V1__StatsResponse *s)
{
	single(f, "kvtier_sessions_active", "gauge", "Attached worker sessions.",
	       (double)s->sessions_active);
	single(f, "kvtier_sessions_opened_total", "counter", "Sessions ever attached.",
	       (double)s->sessions_total);
	single(f, "kvtier_leases_active", "gauge", "Acquire leases held.", (double)s->leases_active);
	single(f, "kvtier_pinned_blocks", "gauge", "Blocks pinned (by leases or I/O).",
	       (double)s->pinned_blocks);
	single(f, "kvtier_pins_total", "counter", "Blocks pinned by Acquire leases.",
	       (double)s->pins_total);
	single(f, "kvtier_forced_unpins_total", "counter",
	       "Pins released because their lease outlived lease_ttl.",
	       (double)s->forced_unpins_total);
	single(f, "kvtier_leases_expired_total", "counter", "Leases ended by lease_ttl.",
	       (double)s->leases_expired_total);
	SPLIT(f, "kvtier_block_events_total", "counter", "Block life cycle events.", "event",
	      { "reserved", (double)s->reserved_blocks_total },
	      { "committed", (double)s->committed_blocks_total },
	      { "aborted", (double)s->aborted_blocks_total },
	      { "dropped", (double)s->dropped_blocks_total },
	      { "expired", (double)s->expired_total },
	      { "reserve_no_space", (double)s->reserve_no_space_total });
	SPLIT(f, "kvtier_waits_total", "counter",
	      "Acquires that waited for pending blocks, by outcome.", "outcome",
	      { "completed", (double)s->waits_completed_total },
	      { "missed", (double)s->waits_missed_total },
	      { "timed_out", (double)s->waits_timed_out_total });
	single(f, "kvtier_waits_active", "gauge", "Acquires waiting now.", (double)s->waits_active);
}

static void render_namespaces(FILE *f, const Kvtier__V1__StatsResponse *s)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "kvtier_lookup_blocks_total", "counter", "Blocks queried by Lookup." },
		{ "kvtier_lookup_hit_blocks_total", "counter",
		  "Queried blocks found in a ready prefix, by the tier holding them." },
		{ "kvtier_lookup_tokens_total", "counter", "Tokens queried by Lookup (blocks x block_tokens)." },
		{ "kvtier_lookup_hit_tokens_total", "counter",
		  "Queried tokens found cached, by the tier holding them; hit rate = hit_tokens / tokens." },
		{ "kvtier_namespace_blocks", "gauge", "Blocks per namespace, by state." },
		{ "kvtier_namespace_evictions_total", "counter", "Host evictions per namespace." },
	};

	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		family(f, fam[k].name, fam[k].type, fam[k].help);
		for (size_t i = 0; i < s->n_namespaces; i++) {
			const Kvtier__V1__NamespaceStats *n = s->namespaces[i];
			double tokens = n->block_tokens, nvme = (double)n->lookup_hits_nvme;
			double host = (double)(n->lookup_hits - n->lookup_hits_nvme);
			/* Namespaces are per tenant: two may share a name. */
			const char *t = n->tenant;
			const char *ns[] = { "namespace", n->name, "tenant", t, NULL };
			const char *h[] = { "namespace", n->name, "tenant", t, "tier", "host", NULL };
			const char *d[] = { "namespace", n->name, "tenant", t, "tier", "nvme", NULL };
			const char *r[] = { "namespace", n->name, "tenant", t, "state", "ready", NULL };
			const char *p[] = { "namespace", n->name, "tenant", t, "state", "pending", NULL };

			switch (k) {
			case 0: sample(f, fam[k].name, ns, (double)n->lookup_keys); break;
			case 1:
				sample(f, fam[k].name, h, host);
				sample(f, fam[k].name, d, nvme);
				break;
			case 2: sample(f, fam[k].name, ns, (double)n->lookup_keys * tokens); break;
			case 3:
				sample(f, fam[k].name, h, host * tokens);
				sample(f, fam[k].name, d, nvme * tokens);
				break;
			case 4:
				sample(f, fam[k].name, r, (double)n->ready_blocks);
				sample(f, fam[k].name, p, (double)n->pending_blocks);
				break;
			default: sample(f, fam[k].name, ns, (double)n->evictions); break;
			}
		}
	}
}

static void render_tenants(FILE *f, const Kvtier__V1__StatsResponse *s)
{
	static const char *names[] = {
		"kvtier_tenant_host_used_bytes", "kvtier_tenant_host_quota_bytes",
		"kvtier_tenant_lookup_blocks_total", "kvtier_tenant_lookup_hit_blocks_total",
		"kvtier_tenant_evictions_total", "kvtier_tenant_sessions",
		"kvtier_tenant_leases", "kvtier_tenant_namespaces",
	};
	static const char *help[] = {
		"Host tier bytes held by each tenant.",
		"Host tier bytes each tenant keeps against others (0: no quota).",
		"Blocks each tenant queried by Lookup.",
		"Of those, blocks found cached.",
		"Host evictions of each tenant's blocks.",
		"Sessions each tenant holds open (tenants.max_sessions).",
		"Leases each tenant holds (tenants.max_leases).",
		"Namespaces each tenant created and has not dropped (tenants.max_namespaces).",
	};

	for (size_t k = 0; k < 8; k++) {
		family(f, names[k], k < 2 || k > 4 ? "gauge" : "counter", help[k]);
		for (size_t i = 0; i < s->n_tenants; i++) {
			const Kvtier__V1__TenantStats *t = s->tenants[i];
			const uint64_t v[] = { t->host_used_bytes, t->host_quota_bytes,
					       t->lookup_keys, t->lookup_hits, t->evictions,
					       t->sessions_active, t->leases_active,
					       t->namespaces };

			sample(f, names[k], (const char *[]){ "tenant", t->name, NULL },
			       (double)v[k]);
		}
	}
}

static void render_bounds(FILE *f, const Kvtier__V1__StatsResponse *s)
{
	single(f, "kvtier_connections", "gauge",
	       "Unix-socket connections served (over tenants.max_connections ones not counted).",
	       (double)s->connections_active);
	single(f, "kvtier_connections_idle_closed_total", "counter",
	       "Connections shut down after daemon.idle_timeout with no call in flight.",
	       (double)s->connections_idle_closed_total);
	SPLIT(f, "kvtier_limit_refusals_total", "counter",
	      "Connections, Attaches, Acquires and new namespaces refused because the tenant was at its bound.",
	      "limit", { "tenants.max_connections", (double)s->connections_refused_total },
	      { "tenants.max_sessions", (double)s->sessions_refused_total },
	      { "tenants.max_leases", (double)s->leases_refused_total },
	      { "tenants.max_namespaces", (double)s->namespaces_refused_total });
	single(f, "kvtier_namespaces_dropped_total", "counter",
	       "Namespaces deleted by DropNamespace.",
	       (double)s->namespaces_dropped_total);
}

static void render_rpcs(FILE *f, const Kvtier__V1__StatsResponse *s)
{
	family(f, "kvtier_rpc_duration_seconds", "histogram",
	       "Unary RPC latency in the daemon, request received to reply sent.");
	for (size_t i = 0; i < s->n_rpcs; i++)
		if (s->rpcs[i]->latency)
			histogram(f, "kvtier_rpc_duration_seconds", "method",
				  s->rpcs[i]->method, s->rpcs[i]->latency);
	family(f, "kvtier_rpc_errors_total", "counter", "RPCs that ended with a status other than OK.");
	for (size_t i = 0; i < s->n_rpcs; i++)
		sample(f, "kvtier_rpc_errors_total",
		       (const char *[]){ "method", s->rpcs[i]->method, NULL },
		       (double)s->rpcs[i]->errors);
	family(f, "kvtier_rpc_status_errors_total", "counter", "RPC errors by gRPC status code.");
	for (size_t i = 0; i < s->n_rpc_errors; i++)
		sample(f, "kvtier_rpc_status_errors_total",
		       (const char *[]){ "code", s->rpc_errors[i]->key, NULL },
		       (double)s->rpc_errors[i]->value);
}

/* The exposition text (malloc'd), or NULL. */
static char *render(struct kvt_daemon *d, size_t *len)
{
	struct kvt_reply r = { 0 };
	Kvtier__V1__StatsResponse *s;
	char *text = NULL;
	FILE *f;

	if (kvt_rpc_stats(d, true, 0, &r) != GRPC_STATUS_OK)
		return NULL;
	s = kvtier__v1__stats_response__unpack(NULL, r.len, r.buf);
	free(r.buf);
	if (!s)
		return NULL;
	f = open_memstream(&text, len);
	if (f) {
		family(f, "kvtier_build_info", "gauge", "The daemon's version, allocator and CUDA probe.");
		sample(f, "kvtier_build_info",
		       (const char *[]){ "version", s->version, "allocator", s->allocator,
					 "cuda", s->cuda, NULL }, 1);
		single(f, "kvtier_uptime_seconds", "gauge", "Seconds since the daemon started.",
		       (double)s->uptime_seconds);
		render_blocks(f, s);
		render_tiers(f, s);
		render_namespaces(f, s);
		render_tenants(f, s);
		render_bounds(f, s);
		render_rpcs(f, s);
		single(f, "kvtier_config_reloads_total", "counter", "Configuration reloads (SIGHUP).",
		       (double)s->config_reloads_total);
		single(f, "kvtier_config_reload_failures_total", "counter",
		       "Reloads that left the configuration unchanged (a broken file).",
		       (double)s->config_reload_failures_total);
		single(f, "kvtier_config_last_reload_successful", "gauge",
		       "1 unless the last reload failed.", s->config_last_reload_ok);
		if (fclose(f) != 0) {
			free(text);
			text = NULL;
		}
	}
	kvtier__v1__stats_response__free_unpacked(s, NULL);
	return text;
}

/* ---- HTTP ---- */

int kvt_metrics_auth_read(const char *path, struct kvt_metrics_auth *out,
			  char *err, size_t len)
{
	char buf[512], *colon;
	struct stat st;
	ssize_t n;
	int fd;

	memset(out, 0, sizeof(*out));
	if (!path[0])
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, len, "[metrics] auth_file: cannot open %s: %s", path,
			 strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		snprintf(err, len, "[metrics] auth_file: %s must be a regular file that only its owner may read (mode %04o; chmod 0600 it)",
			 path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, len, "[metrics] auth_file: cannot read %s: %s", path,
			 strerror(errno));
		return -1;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	colon = strchr(buf, ':');
	if (!colon || colon == buf || !colon[1] ||
	    (size_t)(colon - buf) >= sizeof(out->user) ||
	    strlen(colon + 1) >= sizeof(out->password)) {
		snprintf(err, len, "[metrics] auth_file: %s does not hold one line user:password (user under %zu bytes, password under %zu)",
			 path, sizeof(out->user), sizeof(out->password));
		explicit_bzero(buf, sizeof(buf));
		return -1;
	}
	*colon = '\0';
	strcpy(out->user, buf);
	strcpy(out->password, colon + 1);
	out->on = true;
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

void kvt_metrics_set_auth(struct kvt_metrics *m,
			  const struct kvt_metrics_auth *auth)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->auth_lock);
	m->auth = *auth;
	pthread_mutex_unlock(&m->auth_lock);
}

/* a == b, in time that depends on b's length only (b: what was sent). */
static bool same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;

	for (size_t i = 0; i < lb; i++)
		d |= (unsigned char)(a[la ? i % la : 0] ^ b[i]);
	return d == 0;
}

/* Whether the request carries the configured credentials (or none are). */
static bool authorized(struct kvt_metrics *m, struct MHD_Connection *conn)
{
	char *pass = NULL, *user;
	bool ok;

	pthread_mutex_lock(&m->auth_lock);
	if (!m->auth.on) {
		pthread_mutex_unlock(&m->auth_lock);
		return true;
	}
	user = MHD_basic_auth_get_username_password(conn, &pass);
	ok = user && pass && (same_secret(m->auth.user, user) &
			      same_secret(m->auth.password, pass));
	pthread_mutex_unlock(&m->auth_lock);
	if (pass) {
		explicit_bzero(pass, strlen(pass));
		MHD_free(pass);
	}
	if (user)
		MHD_free(user);
	return ok;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
			     const char *type, char *body, size_t len,
			     enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result rc;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	rc = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_len, void **state)
{
	static const char *plain = "text/plain; charset=utf-8";
	struct kvt_metrics *m = cls;
	char *text;
	size_t len;

	(void)version;
	(void)upload;
	(void)upload_len;
	(void)state;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, plain,
			     "only GET and HEAD\n", 18, MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/healthz") == 0) {
		if (atomic_load(&m->draining))
			return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, plain,
				     "draining\n", 9, MHD_RESPMEM_PERSISTENT);
		return reply(conn, MHD_HTTP_OK, plain, "ok\n", 3, MHD_RESPMEM_PERSISTENT);
	}
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, plain,
			     "not found: try /metrics or /healthz\n", 36,
			     MHD_RESPMEM_PERSISTENT);
	if (!authorized(m, conn)) {
		static char body[] = "unauthorized: /metrics needs the user and password of metrics.auth_file\n";
		struct MHD_Response *resp =
			MHD_create_response_from_buffer(sizeof(body) - 1, body,
							MHD_RESPMEM_PERSISTENT);
		enum MHD_Result rc;

		if (!resp)
			return MHD_NO;
		MHD_add_response_header(resp, "Content-Type", plain);
		rc = MHD_queue_basic_auth_fail_response(conn, "kvtier metrics", resp);
		MHD_destroy_response(resp);
		return rc;
	}
	text = render(m->d, &len);
	if (!text)
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, plain,
			     "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
	return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
		     text, len, MHD_RESPMEM_MUST_FREE);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	kvt_log(KVT_LOG_WARN, "metrics: %s", msg);
}

int kvt_metrics_start(const char *listen, const struct kvt_metrics_auth *auth,
		      struct kvt_daemon *d, struct kvt_metrics **out, char *err,
		      size_t len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	char host[128], host_text[INET6_ADDRSTRLEN];
	const char *colon = strrchr(listen, ':');
	const union MHD_DaemonInfo *info;
	struct addrinfo *ai = NULL;
	struct kvt_metrics *m;
	size_t hlen;
	int rc;

	hlen = colon ? (size_t)(colon - listen) : 0;
	if (!colon || hlen >= sizeof(host) || !colon[1]) {
		snprintf(err, len, "[metrics] listen: '%s' is not HOST:PORT", listen);
		return -1;
	}
	memcpy(host, listen, hlen);
	host[hlen] = '\0';
	if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = '\0';
	}
	rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
	if (rc != 0) {
		snprintf(err, len, "[metrics] listen: '%s': %s", listen, gai_strerror(rc));
		return -1;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		freeaddrinfo(ai);
		snprintf(err, len, "out of memory");
		return -1;
	}
	m->d = d;
	pthread_mutex_init(&m->auth_lock, NULL);
	m->auth = *auth;
	/* epoll (AUTO), not select(): with a raised RLIMIT_NOFILE a scrape's
	 * socket may well be past FD_SETSIZE. */
	m->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
				  (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, on_request, m,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				  MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				  MHD_OPTION_CONNECTION_LIMIT, 64u,
				  MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				  MHD_OPTION_END);
	if (!m->mhd) {
		snprintf(err, len, "[metrics] listen: cannot serve HTTP on %s (address in use or not local?)",
			 listen);
		freeaddrinfo(ai);
		free(m);
		return -1;
	}
	info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_BIND_PORT);
	if (ai->ai_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
			  host_text, sizeof(host_text));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr,
			  host_text, sizeof(host_text));
	snprintf(d->metrics_address, sizeof(d->metrics_address),
		 ai->ai_family == AF_INET6 ? "http://[%s]:%u/metrics" : "http://%s:%u/metrics",
		 host_text, info ? info->port : 0);
	freeaddrinfo(ai);
	*out = m;
	return 0;
}

void kvt_metrics_draining(struct kvt_metrics *m)
{
	if (m)
		atomic_store(&m->draining, true);
}

void kvt_metrics_stop(struct kvt_metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->mhd);
	explicit_bzero(&m->auth, sizeof(m->auth));
	pthread_mutex_destroy(&m->auth_lock);
	free(m);
}

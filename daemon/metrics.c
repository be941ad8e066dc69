#include "metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "rpc.h"
#include "stats.h"

struct kvt_metrics {
	struct MHD_Daemon *mhd;
	struct kvt_daemon *d;
	atomic_bool draining;
	pthread_mutex_t auth_lock;
	struct kvt_metrics_auth auth;
};

/* ---- exposition: one family per row of the stats table ---- */

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

/* The labels of a sample: its element's, then le or a key. */
#define LABELS_MAX 8
struct labels {
	const char *name[LABELS_MAX], *value[LABELS_MAX];
	size_t n;
};

static void label_add(struct labels *l, const char *name, const char *value)
{
	if (l->n < LABELS_MAX) {
		l->name[l->n] = name;
		l->value[l->n++] = value;
	}
}

/* The labels of an element: its scope's text stats. Every sample of a
 * tier, namespace, ... carries them; the daemon's label kvtier_build_info. */
static void element_labels(enum kvt_stat_scope scope, const void *elem,
			   struct labels *l)
{
	for (size_t k = 0; k < kvt_stats_count; k++) {
		const struct kvt_stat *st = &kvt_stats_table[k];

		if (st->scope == scope && st->kind == KVT_STAT_LABEL)
			label_add(l, st->label, kvt_stat_text(st, elem));
	}
}

/* One sample: name and suffix, labels, value (already formatted). */
static void sample(FILE *f, const char *name, const char *suffix,
		   const struct labels *l, const char *value)
{
	fprintf(f, "%s%s", name, suffix);
	for (size_t i = 0; i < l->n; i++) {
		fprintf(f, "%s%s=\"", i ? "," : "{", l->name[i]);
		label_value(f, l->value[i]);
		fputc('"', f);
	}
	fprintf(f, "%s %s\n", l->n ? "}" : "", value);
}

/* Buckets (cumulative), sum and count, in seconds of a snapshot in ns. */
static void histogram(FILE *f, const char *name, struct labels *l,
		      const struct kvt_histogram_snapshot *h)
{
	char le[32], v[32];
	uint64_t cumulative = 0;

	for (uint32_t i = 0; i <= h->n; i++) {
		cumulative += h->counts[i];
		if (i < h->n)
			snprintf(le, sizeof(le), "%g", (double)h->le[i] / 1e9);
		else
			snprintf(le, sizeof(le), "+Inf");
		label_add(l, "le", le);
		snprintf(v, sizeof(v), "%llu", (unsigned long long)cumulative);
		sample(f, name, "_bucket", l, v);
		l->n--;
	}
	snprintf(v, sizeof(v), "%.17g", (double)h->sum_ns / 1e9);
	sample(f, name, "_sum", l, v);
	snprintf(v, sizeof(v), "%llu", (unsigned long long)h->count);
	sample(f, name, "_count", l, v);
}

/* The family of one stat: a sample per element of its scope. */
static void family(FILE *f, const struct kvt_stats *s, const struct kvt_stat *st)
{
	static const char *const types[] = {
		[KVT_STAT_COUNTER] = "counter", [KVT_STAT_GAUGE] = "gauge",
		[KVT_STAT_HISTOGRAM] = "histogram",
	};
	char name[128], v[32];
	struct labels l;

	kvt_stat_metric(st, name, sizeof(name));
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, st->help, name,
		types[st->kind]);
	for (size_t i = 0; i < kvt_stats_elements(s, st->scope); i++) {
		const void *elem = kvt_stats_element(s, st->scope, i);
		const struct kvt_stat_by_label *b;

		l.n = 0;
		if (st->scope != KVT_STAT_DAEMON)
			element_labels(st->scope, elem, &l);
		switch (st->type) {
		case KVT_STAT_HIST:
			histogram(f, name, &l, kvt_stat_histogram(st, elem));
			break;
		case KVT_STAT_BY_LABEL:
			b = kvt_stat_by_label(st, elem);
			for (uint32_t k = 0; k < b->n; k++) {
				label_add(&l, st->label, b->key[k]);
				snprintf(v, sizeof(v), "%llu", (unsigned long long)b->value[k]);
				sample(f, name, "", &l, v);
				l.n--;
			}
			break;
		default:
			if (kvt_stat_in_ms(st))
				snprintf(v, sizeof(v), "%.3f",
					 (double)kvt_stat_value(st, elem) / 1e3);
			else
				snprintf(v, sizeof(v), "%llu",
					 (unsigned long long)kvt_stat_value(st, elem));
			sample(f, name, "", &l, v);
		}
	}
}

/* The process's own families, named as Prometheus' client libraries name
 * them (process_*), from /proc/self: what every exporter gives. */
static void process_families(FILE *f)
{
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, btime = 0;
	long long rss = 0;
	char buf[1024], *p;
	struct rlimit nofile;
	struct dirent *e;
	long fds = 0;
	FILE *in;
	DIR *dir;

	/* /proc/self/stat: the fields after the command's closing ')'. */
	if ((in = fopen("/proc/self/stat", "r"))) {
		if (fgets(buf, sizeof(buf), in) && (p = strrchr(buf, ')')))
			sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
			       "%*d %*d %*d %*d %*d %*d %llu %llu %lld",
			       &utime, &stime, &start, &vsize, &rss);
		fclose(in);
	}
	if ((in = fopen("/proc/stat", "r"))) {
		while (fgets(buf, sizeof(buf), in))
			if (sscanf(buf, "btime %llu", &btime) == 1)
				break;
		fclose(in);
	}
	if ((dir = opendir("/proc/self/fd"))) {
		while ((e = readdir(dir)))
			fds += e->d_name[0] != '.';
		closedir(dir);
		fds--; /* the directory's own */
	}
	if (getrlimit(RLIMIT_NOFILE, &nofile) < 0)
		nofile.rlim_cur = 0;
	fprintf(f, "# HELP process_cpu_seconds_total User and system CPU time spent in seconds.\n"
		   "# TYPE process_cpu_seconds_total counter\n"
		   "process_cpu_seconds_total %.2f\n",
		(double)(utime + stime) / (double)tick);
	fprintf(f, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
		   "# TYPE process_resident_memory_bytes gauge\n"
		   "process_resident_memory_bytes %lld\n", rss * page);
	fprintf(f, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
		   "# TYPE process_virtual_memory_bytes gauge\n"
		   "process_virtual_memory_bytes %llu\n", vsize);
	fprintf(f, "# HELP process_open_fds Number of open file descriptors.\n"
		   "# TYPE process_open_fds gauge\n"
		   "process_open_fds %ld\n", fds);
	fprintf(f, "# HELP process_max_fds Maximum number of open file descriptors.\n"
		   "# TYPE process_max_fds gauge\n"
		   "process_max_fds %llu\n", (unsigned long long)nofile.rlim_cur);
	fprintf(f, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
		   "# TYPE process_start_time_seconds gauge\n"
		   "process_start_time_seconds %.2f\n",
		(double)btime + (double)start / (double)tick);
}

/* The exposition text (malloc'd), or NULL. */
static char *render(struct kvt_daemon *d, size_t *len)
{
	struct kvt_stats *s;
	char *text = NULL;
	struct labels l;
	FILE *f;

	if (kvt_stats_read(d, true, 0, &s) < 0)
		return NULL;
	f = open_memstream(&text, len);
	if (f) {
		l.n = 0;
		element_labels(KVT_STAT_DAEMON, kvt_stats_element(s, KVT_STAT_DAEMON, 0), &l);
		fputs("# HELP kvtier_build_info The daemon's version, allocator, CUDA probe and addresses.\n"
		      "# TYPE kvtier_build_info gauge\n", f);
		sample(f, "kvtier_build_info", "", &l, "1");
		for (size_t k = 0; k < kvt_stats_count; k++)
			if (kvt_stats_table[k].kind != KVT_STAT_LABEL)
				family(f, s, &kvt_stats_table[k]);
		process_families(f);
		if (fclose(f) != 0) {
			free(text);
			text = NULL;
		}
	}
	kvt_stats_free(s);
	return text;
}

/* ---- HTTP ---- */

int kvt_metrics_auth_read(const char *path, struct kvt_metrics_auth *out,
			  char *err, size_t len)
{
	char buf[512], *colon;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!path[0])
		return 0;
	rc = kvt_config_read_secret("[metrics] auth_file", path, buf, sizeof(buf),
				    err, len);
	if (rc < 0)
		return rc;
	colon = strchr(buf, ':');
	if (!colon || colon == buf || !colon[1] ||
	    (size_t)(colon - buf) >= sizeof(out->user) ||
	    strlen(colon + 1) >= sizeof(out->password)) {
		snprintf(err, len, "[metrics] auth_file: %s does not hold one line user:password (user under %zu bytes, password under %zu)",
			 path, sizeof(out->user), sizeof(out->password));
		explicit_bzero(buf, sizeof(buf));
		return -EINVAL;
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
		return -EINVAL;
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
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		freeaddrinfo(ai);
		snprintf(err, len, "out of memory");
		return -ENOMEM;
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
		return -EADDRNOTAVAIL;
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
	atomic_store_explicit(&d->metrics_published, true, memory_order_release);
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

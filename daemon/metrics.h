/*
 * The metrics endpoint: Prometheus text exposition (format 0.0.4) over
 * HTTP, served by libmicrohttpd on its own thread. GET /metrics renders a
 * family per row of the stats table (stats.h), from the same reading the
 * Stats RPC answers with, so the two agree in names and values; GET
 * /healthz answers 200 "ok" while the daemon serves and 503 once it drains.
 *
 * /metrics is an operator surface: it shows every tenant's namespaces and
 * usage. It listens on 127.0.0.1 by default, and with metrics.auth_file it
 * asks for HTTP basic auth (401 with WWW-Authenticate otherwise); /healthz,
 * which says nothing about tenants, never does.
 */
#ifndef KVT_METRICS_H
#define KVT_METRICS_H

#include <stdbool.h>
#include <stddef.h>

struct kvt_daemon;
struct kvt_metrics;

/* The credentials /metrics asks for; on false: none. */
struct kvt_metrics_auth {
	bool on;
	char user[128];
	char password[256];
};

/*
 * Reads "user:password" (one line) from path into out; path "": no auth.
 * The file must be a regular file that neither group nor others may read
 * or write. 0, or -errno with the reason in err (never the file's content).
 */
int kvt_metrics_auth_read(const char *path, struct kvt_metrics_auth *out,
			  char *err, size_t len);

/* listen: "HOST:PORT" ("[::1]:9400" for IPv6; port 0: any free one). The
 * address actually bound goes to d->metrics_address. 0, or -errno with err. */
int kvt_metrics_start(const char *listen, const struct kvt_metrics_auth *auth,
		      struct kvt_daemon *d, struct kvt_metrics **out, char *err,
		      size_t len);
/* Replaces the credentials (a reload); m may be NULL (no endpoint). */
void kvt_metrics_set_auth(struct kvt_metrics *m,
			  const struct kvt_metrics_auth *auth);
/* /healthz answers 503 from now on. */
void kvt_metrics_draining(struct kvt_metrics *m);
void kvt_metrics_stop(struct kvt_metrics *m);

#endif

/*
 * The metrics endpoint: Prometheus text exposition (format 0.0.4) over
 * HTTP, served by libmicrohttpd on its own thread. GET /metrics renders the
 * same StatsResponse the Stats RPC returns, so the two always agree; GET
 * /healthz answers 200 "ok" while the daemon serves and 503 once it drains.
 */
#ifndef KVT_METRICS_H
#define KVT_METRICS_H

#include <stddef.h>

struct kvt_daemon;
struct kvt_metrics;

/* listen: "HOST:PORT" ("[::1]:9400" for IPv6; port 0: any free one). The
 * address actually bound goes to d->metrics_address. 0, or -1 with err. */
int kvt_metrics_start(const char *listen, struct kvt_daemon *d,
		      struct kvt_metrics **out, char *err, size_t len);
/* /healthz answers 503 from now on. */
void kvt_metrics_draining(struct kvt_metrics *m);
void kvt_metrics_stop(struct kvt_metrics *m);

#endif

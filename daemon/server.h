/*
 * gRPC core async server: one completion queue, a pool of threads calling
 * grpc_completion_queue_next, and a context struct per call whose embedded
 * tags route each completion. Knows nothing about kvtier: it calls the
 * handlers it is given with the request bytes and sends what they return.
 *
 * Handlers run on completion-queue threads and must not block. Unary
 * handlers may run concurrently; one that cannot answer at once returns
 * KVT_STATUS_DEFERRED and later calls kvt_call_reply, from any thread. The
 * one streaming method (Attach) has open and close callbacks: close runs
 * exactly once per successful open, when the client goes away or the server
 * shuts down.
 *
 * The unix socket is accepted here, not by gRPC, so that every call knows
 * its peer's credentials (SO_PEERCRED), which gRPC core does not expose,
 * and so that idle connections can be shut down and each uid's connections
 * bounded. TCP connections (daemon.tcp) are gRPC's own: neither.
 */
#ifndef KVT_SERVER_H
#define KVT_SERVER_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "histogram.h"

/* gRPC status codes are 0 (OK) .. 16 (UNAUTHENTICATED). */
#define KVT_STATUS_CODES 17

/* What a handler answers: a serialized message (malloc'd; the server frees
 * it) when the status is OK, else a message naming the problem. */
struct kvt_reply {
	uint8_t *buf;
	size_t len;
	char msg[320];
};

/* A handler's answer meaning "kvt_call_reply will follow". */
#define KVT_STATUS_DEFERRED ((grpc_status_code)-1)

/* Who is calling. Unix-socket peers carry their credentials. */
struct kvt_peer {
	bool unix_socket;
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

struct kvt_call;

/* method: the kvt_method's data, the handler's own description of it. */
typedef grpc_status_code (*kvt_unary_fn)(void *ctx, const void *method,
					 struct kvt_call *call,
					 const uint8_t *req, size_t len,
					 struct kvt_reply *r);

const struct kvt_peer *kvt_call_peer(const struct kvt_call *call);
/* The most keys this call's transport can answer for (the fast lane's
 * bound, lane.h); 0: only the daemon's max_keys_per_request. */
uint32_t kvt_call_max_keys(const struct kvt_call *call);

/* Ends a deferred call with code and r (as a handler's return would). */
void kvt_call_reply(struct kvt_call *call, grpc_status_code code,
		    struct kvt_reply *r);

struct kvt_method {
	const char *path; /* "/kvtier.v1.KvTier/Lookup" */
	kvt_unary_fn fn;
	const void *data; /* passed to fn */
};

struct kvt_stream_method {
	const char *path;
	/* First message in r; per-stream state in *state. */
	grpc_status_code (*open)(void *ctx, struct kvt_call *call,
				 const uint8_t *req, size_t len,
				 struct kvt_reply *r, void **state);
	void (*close)(void *ctx, void *state);
};

struct kvt_server_config {
	const char *unix_path; /* bound, then chmod/chown'ed */
	const char *tcp;       /* NULL or empty: none */
	unsigned threads;
	/* After a completion, one thread keeps polling this long before it
	 * sleeps: a request arriving meanwhile skips a thread wake-up. 0: off. */
	unsigned poll_us;
	uint64_t max_message_size;
	mode_t socket_mode;
	gid_t gid; /* (gid_t)-1: keep */
	const struct kvt_method *methods;
	size_t nmethods;
	/* Server-streaming methods, counted after the unary ones. */
	const struct kvt_stream_method *const *streams;
	size_t nstreams;
	/* Shut down a unix-socket connection with no call in flight for this
	 * long (0: never); a uid's connections past max_connections fail every
	 * call with RESOURCE_EXHAUSTED (0: no bound). See kvt_server_set_limits. */
	uint64_t idle_timeout_ms;
	uint32_t max_connections;
	/* The tenant name of a peer, for messages; NULL: none. */
	void (*peer_name)(void *ctx, const struct kvt_peer *p, char *buf,
			  size_t len);
	void *ctx; /* passed to every handler */
	/* Called once shutdown has begun, before in-flight calls are awaited:
	 * answer the deferred ones. */
	void (*draining)(void *ctx);
};

struct kvt_server;

/* Binds (replacing a stale socket file: the caller holds the lock), starts
 * the threads. 0, or -errno with the reason in err. */
int kvt_server_start(const struct kvt_server_config *cfg,
		     struct kvt_server **out, char *err, size_t len);

/*
 * Stops accepting calls, lets in-flight unary calls finish, ends streams
 * with UNAVAILABLE, cancels what is left after grace_ms, joins the threads.
 */
void kvt_server_shutdown(struct kvt_server *s, int grace_ms);
void kvt_server_destroy(struct kvt_server *s);

/* Listen addresses, e.g. "unix:/run/kvtier/kvtierd.sock", "127.0.0.1:7420". */
size_t kvt_server_listen_count(const struct kvt_server *s);
const char *kvt_server_listen_address(const struct kvt_server *s, size_t i);

/* Counters of method i (nmethods is the stream method, nmethods+1 unknown ones). */
void kvt_server_method_counters(const struct kvt_server *s, size_t i,
				const char **path, uint64_t *calls,
				uint64_t *errors);
size_t kvt_server_method_slots(const struct kvt_server *s);
/* Latency of method i's unary calls, request received to reply sent. */
void kvt_server_method_latency(const struct kvt_server *s, size_t i,
			       struct kvt_histogram_snapshot *out);
/* Changes the bounds of kvt_server_config while the server runs (reload). */
void kvt_server_set_limits(struct kvt_server *s, uint64_t idle_timeout_ms,
			   uint32_t max_connections);

/*
 * Local calls: requests that came another way than gRPC (the fast lane,
 * daemon/lane.h) run the same handlers, counted and timed as the method's
 * calls. A local call is reused call after call by one thread:
 * kvt_call_local_start before each handler, and the reply (kvt_call_reply,
 * from the handler or later from any thread) goes to fn.
 */
typedef void (*kvt_local_reply_fn)(void *arg, grpc_status_code code,
				   struct kvt_reply *r);
struct kvt_call *kvt_call_local(struct kvt_server *s, const struct kvt_peer *peer,
				uint32_t max_keys, kvt_local_reply_fn fn, void *arg);
void kvt_call_local_start(struct kvt_call *c, size_t method);
void kvt_call_local_free(struct kvt_call *c);
/* The index of the method at path (its counters'), or the unknown slot. */
size_t kvt_server_method_index(const struct kvt_server *s, const char *path);

struct kvt_server_connections {
	uint64_t active;            /* unix-socket connections served */
	uint64_t idle_closed_total; /* shut down after idle_timeout */
	uint64_t refused_total;     /* over max_connections */
};
void kvt_server_connections(const struct kvt_server *s,
			    struct kvt_server_connections *out);

uint64_t kvt_server_errors_by_code(const struct kvt_server *s,
				   grpc_status_code code);

#endif

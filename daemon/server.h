/*
 * gRPC core async server: one completion queue, a pool of threads calling
 * grpc_completion_queue_next, and a context struct per call whose embedded
 * tags route each completion. Knows nothing about kvtier: it calls the
 * handlers it is given with the request bytes and sends what they return.
 *
 * Handlers run on completion-queue threads and must not block. Unary
 * handlers may run concurrently. The one streaming method (Attach) has open
 * and close callbacks: close runs exactly once per successful open, when the
 * client goes away or the server shuts down.
 */
#ifndef KVT_SERVER_H
#define KVT_SERVER_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* gRPC status codes are 0 (OK) .. 16 (UNAUTHENTICATED). */
#define KVT_STATUS_CODES 17

/* What a handler answers: a serialized message (malloc'd; the server frees
 * it) when the status is OK, else a message naming the problem. */
struct kvt_reply {
	uint8_t *buf;
	size_t len;
	char msg[320];
};

typedef grpc_status_code (*kvt_unary_fn)(void *ctx, const uint8_t *req,
					 size_t len, struct kvt_reply *r);

struct kvt_method {
	const char *path; /* "/kvtier.v1.KvTier/Lookup" */
	kvt_unary_fn fn;
};

struct kvt_stream_method {
	const char *path;
	/* First message in r; per-stream state in *state. */
	grpc_status_code (*open)(void *ctx, const uint8_t *req, size_t len,
				 struct kvt_reply *r, void **state);
	void (*close)(void *ctx, void *state);
};

struct kvt_server_config {
	const char *unix_path; /* bound, then chmod/chown'ed */
	const char *tcp;       /* NULL or empty: none */
	unsigned threads;
	uint64_t max_message_size;
	mode_t socket_mode;
	gid_t gid; /* (gid_t)-1: keep */
	const struct kvt_method *methods;
	size_t nmethods;
	const struct kvt_stream_method *stream;
	void *ctx; /* passed to every handler */
};

struct kvt_server;

/* Binds, starts the threads. 0, or -1 with the reason in err. */
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
uint64_t kvt_server_errors_by_code(const struct kvt_server *s,
				   grpc_status_code code);

#endif

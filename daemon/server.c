/*
 * Life of a unary call (one batch in flight at a time, so no lock):
 *   accepted -> {SEND_INITIAL_METADATA, RECV_MESSAGE} -> handler ->
 *   {SEND_MESSAGE, SEND_STATUS_FROM_SERVER, RECV_CLOSE_ON_SERVER} -> freed.
 * Life of a stream (Attach): the same first batch, then open(), then two
 * batches at once, {SEND_MESSAGE first event} and {RECV_CLOSE_ON_SERVER}; the
 * second completes when the client goes away, and runs close(). Both may
 * complete on different threads, so the call is reference counted. Streams
 * are listed (s->streams) so that shutdown can end them. One mutex, s->lock,
 * guards that list, the accepting and shutdown_done flags (with s->cond),
 * and the connection records below; a stream's first batches and
 * shutdown's SEND_STATUS_FROM_SERVER on a listed call are started under it,
 * and shutdown takes a reference to each call it ends. A deferred call sits
 * in READING until its handler's kvt_call_reply.
 *
 * The unix socket: a thread (the acceptor) accepts, records the peer's
 * SO_PEERCRED under the connection's fd and hands the fd to gRPC, whose
 * calls then name their peer "fd:N". An fd number is reused only after gRPC
 * closed it, which it does only after the connection's last call is gone.
 *
 * Each connection also has a record of our own (struct conn), keyed by a
 * dup of its fd, the "watch" fd, which the acceptor keeps in its epoll set:
 * the socket hangs up (EPOLLHUP) when the client closes it or either side
 * shuts it down, and only then is the record dropped. The watch fd lets us
 * shut the socket down (SHUT_RDWR: gRPC reads EOF and cleans up) without
 * ever touching, or racing for, the fd number gRPC owns. The record counts
 * the calls in flight on the connection; the acceptor shuts down one that
 * has had none for daemon.idle_timeout (an open Attach stream is a call in
 * flight, so attached workers are never idle), and counts connections per
 * uid against tenants.max_connections: one over the bound is still handed
 * to gRPC, but every call on it fails with RESOURCE_EXHAUSTED naming the
 * knob, and it is shut down shortly after. Lock order: s->lock, then
 * nothing (the record is touched only under s->lock).
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/grpc_posix.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "histogram.h"
#include "log.h"

#define ACCEPTS_IN_FLIGHT 16
#define MAX_LISTEN 2
/* A refused connection is shut down this long after its last call ended
 * (time for the status to reach the client), and this long at most after
 * it came. */
#define REFUSED_GRACE_NS (500 * 1000000ull)
#define REFUSED_MAX_NS (5000 * 1000000ull)
/* The acceptor looks at idle connections at least this often. */
#define SWEEP_MAX_MS 1000
/* Streams (calls) one connection may have open at once. */
#define MAX_CALLS_PER_CONNECTION 256
/* At shutdown, how often connections are looked at for the end of
 * their last call. */
#define SHUT_IDLE_MS 10

/* A unix-socket connection, from accept until its socket hangs up. */
struct conn {
	uint64_t id;         /* 0: the slot is free */
	int grpc_fd;         /* the fd gRPC owns; calls name it "fd:N" */
	struct kvt_peer peer;
	uint32_t calls;      /* in flight on it, Attach streams included */
	uint32_t limit;      /* refused: the bound it went over */
	uint64_t accepted_ns;
	uint64_t since_ns;   /* accepted, or a call began or ended */
	bool refused;        /* over tenants.max_connections */
	bool shut;           /* shut down by us: its hang-up follows */
};

struct tag {
	void (*done)(struct tag *t, bool ok);
};

struct counters {
	atomic_uint_fast64_t calls, errors;
	struct kvt_histogram latency; /* request received to reply sent */
};

struct kvt_server {
	struct kvt_server_config cfg;
	grpc_server *server;
	grpc_completion_queue *cq;
	pthread_t *threads;
	unsigned nthreads;
	atomic_bool polling; /* a thread is busy-polling the queue */
	char listen[MAX_LISTEN][160];
	size_t nlisten;

	struct counters *counters; /* nmethods + nstreams + unknown */
	atomic_uint_fast64_t by_code[KVT_STATUS_CODES];

	/* The unix listener. */
	int listen_fd, wake_fd[2], epoll_fd;
	pthread_t acceptor;
	bool acceptor_running;
	grpc_server_credentials *creds;
	struct conn *conns; /* by watch fd */
	size_t nconns;
	int *watch_of;      /* by gRPC's fd: the watch fd, or -1 */
	size_t nwatch_of;
	uint64_t next_conn_id;
	time_t last_refusal_log;
	/* Bounds (live), counters. */
	atomic_uint_fast64_t idle_timeout_ms;
	atomic_uint max_connections;
	atomic_uint_fast64_t idle_closed, refused;
	atomic_uint connections;

	struct tag shutdown_tag;
	pthread_mutex_t lock; /* guards shutdown_done, accepting, streams, conns, watch_of */
	pthread_cond_t cond;
	bool shutdown_done, accepting;
	struct kvt_call *streams;
};

struct kvt_call {
	struct tag tag;              /* the call's current batch */
	struct tag close_tag;        /* streams: RECV_CLOSE_ON_SERVER */
	struct tag end_tag;          /* streams: SEND_STATUS at shutdown */
	struct kvt_server *srv;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_byte_buffer *recv, *send;
	int cancelled;
	size_t method; /* index into counters */
	bool crowded;  /* its connection had MAX_CALLS_PER_CONNECTION open */
	uint64_t started_ns; /* when the request message arrived */
	struct kvt_peer peer;
	int conn_fd;       /* the watch fd of its connection's record, or -1 */
	uint64_t conn_id;
	enum { ACCEPTING, READING, REPLYING, STREAMING } phase;
	atomic_int refs;
	void *state;                 /* streams: from open() */
	struct kvt_call *prev, *next;    /* streams list */
	/* Local calls (kvt_call_local): where the reply goes instead. */
	kvt_local_reply_fn local_reply;
	void *local_arg;
	uint32_t max_keys;
};

static void accept_one(struct kvt_server *s);
static void call_done(struct tag *t, bool ok);
static uint32_t conns_of(struct kvt_server *s, uid_t uid, uint32_t max,
			 bool check_up);

static uint64_t monotonic_ns(void);

/* The record of c's connection, under s->lock; NULL once it is gone. */
static struct conn *call_conn(struct kvt_call *c)
{
	struct kvt_server *s = c->srv;

	if (c->conn_fd < 0 || (size_t)c->conn_fd >= s->nconns ||
	    s->conns[c->conn_fd].id != c->conn_id)
		return NULL;
	return &s->conns[c->conn_fd];
}

static void call_free(struct kvt_call *c)
{
	if (c->conn_fd >= 0) {
		struct conn *cn;

		pthread_mutex_lock(&c->srv->lock);
		cn = call_conn(c);
		if (cn) {
			cn->calls--;
			cn->since_ns = monotonic_ns();
		}
		pthread_mutex_unlock(&c->srv->lock);
	}
	if (c->call)
		grpc_call_unref(c->call);
	if (c->recv)
		grpc_byte_buffer_destroy(c->recv);
	if (c->send)
		grpc_byte_buffer_destroy(c->send);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	free(c);
}

static void call_put(struct kvt_call *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		call_free(c);
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Counter slots: the unary methods, the streaming ones, then unknown. */
static size_t unknown_slot(const struct kvt_server *s)
{
	return s->cfg.nmethods + s->cfg.nstreams;
}

static const struct kvt_stream_method *stream_of(const struct kvt_server *s,
						  const struct kvt_call *c)
{
	return s->cfg.streams[c->method - s->cfg.nmethods];
}

static void count_status(struct kvt_server *s, size_t method,
			 grpc_status_code code)
{
	atomic_fetch_add(&s->counters[method].calls, 1);
	if (code != GRPC_STATUS_OK) {
		atomic_fetch_add(&s->counters[method].errors, 1);
		if (code > 0 && code < KVT_STATUS_CODES)
			atomic_fetch_add(&s->by_code[code], 1);
	}
}

/*
 * A tag handed to gRPC comes back from the completion queue, often on
 * another thread: that hand-over orders what the two threads do with the
 * call. ThreadSanitizer cannot see it (Debian's libgrpc is not built for
 * it), so in a TSan build it is told: a release on each tag given, an
 * acquire on each tag taken. No-ops elsewhere.
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tag_given(t) __tsan_release(t)
#define tag_taken(t) __tsan_acquire(t)
#else
#define tag_given(t) ((void)(t))
#define tag_taken(t) ((void)(t))
#endif

static void start_batch(struct kvt_call *c, const grpc_op *ops, size_t n,
			struct tag *tag)
{
	grpc_call *call = c->call; /* c may be gone once the tag is given */
	grpc_call_error e;

	tag_given(tag);
	e = grpc_call_start_batch(call, ops, n, tag, NULL);

	/* Only a programming error gets here: the ops are fixed sets. */
	if (e != GRPC_CALL_OK) {
		kvt_log(KVT_LOG_ERROR, "grpc_call_start_batch: error %d", e);
		abort();
	}
}

/*
 * Sends the reply (message if OK) and the status, ending a unary call;
 * with_metadata when the initial metadata has not gone out yet.
 */
static void send_reply(struct kvt_call *c, grpc_status_code code,
		       struct kvt_reply *r, bool with_metadata)
{
	grpc_slice details = grpc_slice_from_copied_string(
		code == GRPC_STATUS_OK ? "" : r->msg);
	grpc_op ops[4];
	size_t n = 0;

	count_status(c->srv, c->method, code);
	kvt_histogram_observe(&c->srv->counters[c->method].latency,
			      monotonic_ns() - c->started_ns);
	if (code != GRPC_STATUS_OK)
		kvt_log(KVT_LOG_DEBUG, "%s: status %d: %s",
			(const char *)GRPC_SLICE_START_PTR(c->details.method),
			code, r->msg);
	memset(ops, 0, sizeof(ops));
	if (with_metadata)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (code == GRPC_STATUS_OK) {
		grpc_slice body = r->len ? grpc_slice_new(r->buf, r->len, free) :
					   grpc_empty_slice();

		if (!r->len)
			free(r->buf);
		c->send = grpc_raw_byte_buffer_create(&body, 1);
		grpc_slice_unref(body);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = c->send;
	} else {
		free(r->buf);
	}
	r->buf = NULL;
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = code;
	ops[n++].data.send_status_from_server.status_details = &details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
	c->phase = REPLYING;
	start_batch(c, ops, n, &c->tag);
	grpc_slice_unref(details);
}

static bool method_is(const grpc_slice m, const char *path)
{
	size_t len = strlen(path);

	return GRPC_SLICE_LENGTH(m) == len &&
	       memcmp(GRPC_SLICE_START_PTR(m), path, len) == 0;
}

static void stream_send_done(struct tag *t, bool ok)
{
	struct kvt_call *c = (struct kvt_call *)((char *)t - offsetof(struct kvt_call, tag));

	(void)ok; /* a failed send means the client left: close_tag follows */
	call_put(c);
}

static void stream_end_done(struct tag *t, bool ok)
{
	struct kvt_call *c = (struct kvt_call *)((char *)t - offsetof(struct kvt_call, end_tag));

	(void)ok;
	/* The status is out; a client that polls nothing (a worker between
	 * calls) would never close its end, and shutdown would wait out its
	 * grace for it. */
	grpc_call_cancel(c->call, NULL);
	call_put(c);
}

static void stream_close_done(struct tag *t, bool ok)
{
	struct kvt_call *c = (struct kvt_call *)((char *)t - offsetof(struct kvt_call, close_tag));
	struct kvt_server *s = c->srv;

	(void)ok;
	pthread_mutex_lock(&s->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->streams = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&s->lock);
	stream_of(s, c)->close(s->cfg.ctx, c->state);
	call_put(c);
}

static void stream_start(struct kvt_call *c, struct kvt_reply *r)
{
	struct kvt_server *s = c->srv;
	grpc_slice body = grpc_slice_new(r->buf, r->len, free);
	grpc_op send, close;

	r->buf = NULL;
	count_status(s, c->method, GRPC_STATUS_OK);
	c->send = grpc_raw_byte_buffer_create(&body, 1);
	grpc_slice_unref(body);
	memset(&send, 0, sizeof(send));
	memset(&close, 0, sizeof(close));
	send.op = GRPC_OP_SEND_MESSAGE;
	send.data.send_message.send_message = c->send;
	close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	close.data.recv_close_on_server.cancelled = &c->cancelled;
	c->phase = STREAMING;
	c->tag.done = stream_send_done;
	c->close_tag.done = stream_close_done;
	c->end_tag.done = stream_end_done;
	atomic_store(&c->refs, 2);

	pthread_mutex_lock(&s->lock);
	start_batch(c, &send, 1, &c->tag);
	start_batch(c, &close, 1, &c->close_tag);
	c->next = s->streams;
	if (c->next)
		c->next->prev = c;
	s->streams = c;
	pthread_mutex_unlock(&s->lock);
}

/* The request message has arrived (or not): run the handler. */
static void handle_request(struct kvt_call *c)
{
	struct kvt_server *s = c->srv;
	struct kvt_reply r = { 0 };
	grpc_status_code code;
	grpc_byte_buffer_reader reader;
	grpc_slice req = grpc_empty_slice();

	c->started_ns = monotonic_ns();
	if (!c->recv) {
		snprintf(r.msg, sizeof(r.msg), "request message missing");
		send_reply(c, GRPC_STATUS_INVALID_ARGUMENT, &r, false);
		return;
	}
	if (grpc_byte_buffer_reader_init(&reader, c->recv)) {
		req = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
	}
	grpc_byte_buffer_destroy(c->recv);
	c->recv = NULL;

	if (c->method < s->cfg.nmethods) {
		const struct kvt_method *m = &s->cfg.methods[c->method];

		code = m->fn(s->cfg.ctx, m->data, c, GRPC_SLICE_START_PTR(req),
			     GRPC_SLICE_LENGTH(req), &r);
		if (code == KVT_STATUS_DEFERRED) {
			/* c may be gone already: kvt_call_reply owns it now. */
			grpc_slice_unref(req);
			return;
		}
	} else {
		code = stream_of(s, c)->open(s->cfg.ctx, c,
					   GRPC_SLICE_START_PTR(req),
					   GRPC_SLICE_LENGTH(req), &r, &c->state);
		if (code == GRPC_STATUS_OK) {
			/* An Attach is timed to its session's first event. */
			kvt_histogram_observe(&s->counters[c->method].latency,
					      monotonic_ns() - c->started_ns);
			grpc_slice_unref(req);
			stream_start(c, &r);
			return;
		}
	}
	grpc_slice_unref(req);
	send_reply(c, code, &r, false);
}

const struct kvt_peer *kvt_call_peer(const struct kvt_call *c)
{
	return &c->peer;
}

void kvt_call_reply(struct kvt_call *c, grpc_status_code code,
		    struct kvt_reply *r)
{
	if (!c->local_reply) {
		send_reply(c, code, r, false);
		return;
	}
	count_status(c->srv, c->method, code);
	kvt_histogram_observe(&c->srv->counters[c->method].latency,
			      monotonic_ns() - c->started_ns);
	if (code != GRPC_STATUS_OK)
		kvt_log(KVT_LOG_DEBUG, "%s (fast lane): status %d: %s",
			c->method < c->srv->cfg.nmethods ?
			c->srv->cfg.methods[c->method].path : "unknown method",
			code, r->msg);
	c->local_reply(c->local_arg, code, r);
}

uint32_t kvt_call_max_keys(const struct kvt_call *c)
{
	return c->max_keys;
}

struct kvt_call *kvt_call_local(struct kvt_server *s, const struct kvt_peer *peer,
				uint32_t max_keys, kvt_local_reply_fn fn, void *arg)
{
	struct kvt_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	*c = (struct kvt_call){ .srv = s, .peer = *peer,
				.conn_fd = -1, .max_keys = max_keys,
				.local_reply = fn, .local_arg = arg };
	return c;
}

void kvt_call_local_start(struct kvt_call *c, size_t method)
{
	c->method = method;
	c->started_ns = monotonic_ns();
}

void kvt_call_local_free(struct kvt_call *c)
{
	free(c);
}

size_t kvt_server_method_index(const struct kvt_server *s, const char *path)
{
	for (size_t i = 0; i < s->cfg.nmethods; i++)
		if (strcmp(s->cfg.methods[i].path, path) == 0)
			return i;
	return unknown_slot(s);
}

/* A refused connection is served after all if its uid has gone under the
 * bound since (a client that retries need not wait for the shutdown). */
static void unrefuse(struct kvt_server *s, struct conn *cn)
{
	uint32_t max = atomic_load(&s->max_connections);

	if (max && conns_of(s, cn->peer.uid, max, true) >= max)
		return;
	cn->refused = false;
	atomic_fetch_add(&s->connections, 1);
}

/*
 * Fills c->peer from the credentials recorded when its connection came, and
 * counts the call on the connection. Returns the bound the connection went
 * over, 0 if it was not refused.
 */
static uint32_t resolve_peer(struct kvt_call *c)
{
	struct kvt_server *s = c->srv;
	char *peer = grpc_call_get_peer(c->call);
	uint32_t refused = 0;
	char *end;
	long fd;

	if (peer && strncmp(peer, "fd:", 3) == 0) {
		fd = strtol(peer + 3, &end, 10);
		pthread_mutex_lock(&s->lock);
		if (*end == '\0' && fd >= 0 && (size_t)fd < s->nwatch_of &&
		    s->watch_of[fd] >= 0) {
			struct conn *cn = &s->conns[s->watch_of[fd]];

			c->peer = cn->peer;
			c->conn_fd = s->watch_of[fd];
			c->conn_id = cn->id;
			cn->calls++;
			c->crowded = cn->calls > MAX_CALLS_PER_CONNECTION;
			cn->since_ns = monotonic_ns();
			if (cn->refused && !cn->shut)
				unrefuse(s, cn);
			if (cn->refused)
				refused = cn->limit;
		}
		pthread_mutex_unlock(&s->lock);
	}
	gpr_free(peer);
	return refused;
}

static void call_accepted(struct kvt_call *c)
{
	struct kvt_server *s = c->srv;
	uint32_t refused;
	grpc_op ops[2];
	size_t i;

	accept_one(s);
	refused = resolve_peer(c);
	for (i = 0; i < s->cfg.nmethods; i++)
		if (method_is(c->details.method, s->cfg.methods[i].path))
			break;
	if (i == s->cfg.nmethods) {
		size_t k = 0;

		while (k < s->cfg.nstreams &&
		       !method_is(c->details.method, s->cfg.streams[k]->path))
			k++;
		i += k; /* none: the unknown methods' slot */
	}
	c->method = i;

	if (i == unknown_slot(s)) {
		struct kvt_reply r = { 0 };

		snprintf(r.msg, sizeof(r.msg), "unknown method %.*s",
			 (int)GRPC_SLICE_LENGTH(c->details.method),
			 (const char *)GRPC_SLICE_START_PTR(c->details.method));
		send_reply(c, GRPC_STATUS_UNIMPLEMENTED, &r, true);
		return;
	}
	if (refused) {
		struct kvt_reply r = { 0 };
		char name[64] = "?";

		if (s->cfg.peer_name)
			s->cfg.peer_name(s->cfg.ctx, &c->peer, name, sizeof(name));
		c->started_ns = monotonic_ns();
		snprintf(r.msg, sizeof(r.msg),
			 "tenants.max_connections (%u) reached for tenant %s: this connection is refused and will be closed",
			 refused, name);
		send_reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED, &r, true);
		return;
	}
	if (c->crowded) {
		struct kvt_reply r = { 0 };

		c->started_ns = monotonic_ns();
		snprintf(r.msg, sizeof(r.msg),
			 "this connection has %d calls open, the most one may: end some first",
			 MAX_CALLS_PER_CONNECTION);
		send_reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED, &r, true);
		return;
	}
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_RECV_MESSAGE;
	ops[1].data.recv_message.recv_message = &c->recv;
	c->phase = READING;
	start_batch(c, ops, 2, &c->tag);
}

static void call_done(struct tag *t, bool ok)
{
	struct kvt_call *c = (struct kvt_call *)t;

	switch (c->phase) {
	case ACCEPTING:
		if (!ok) { /* server shutting down */
			call_free(c);
			return;
		}
		call_accepted(c);
		return;
	case READING:
		if (!ok) { /* the client went away before sending */
			count_status(c->srv, c->method, GRPC_STATUS_CANCELLED);
			call_free(c);
			return;
		}
		handle_request(c);
		return;
	case REPLYING:
		call_free(c);
		return;
	case STREAMING:
		return; /* not reached: streams use their own tags */
	}
}

static void accept_one(struct kvt_server *s)
{
	struct kvt_call *c;
	grpc_call_error e;

	pthread_mutex_lock(&s->lock);
	if (!s->accepting) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		pthread_mutex_unlock(&s->lock);
		kvt_log(KVT_LOG_ERROR, "out of memory accepting a call");
		return;
	}
	c->srv = s;
	c->conn_fd = -1;
	c->tag.done = call_done;
	c->phase = ACCEPTING;
	atomic_init(&c->refs, 1);
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	tag_given(&c->tag);
	e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md,
				     s->cq, s->cq, &c->tag);
	pthread_mutex_unlock(&s->lock);
	if (e != GRPC_CALL_OK) {
		kvt_log(KVT_LOG_ERROR, "grpc_server_request_call: error %d", e);
		call_free(c);
	}
}

/*
 * Waking a sleeping thread costs tens of microseconds on a busy or
 * virtualized host, more than a whole Lookup. So after a completion one
 * thread (not all: they would starve the clients of CPU) polls the queue
 * for poll_us before sleeping.
 */
static grpc_event cq_wait(struct kvt_server *s)
{
	gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					  gpr_time_from_micros(s->cfg.poll_us, GPR_TIMESPAN));
	bool idle = false;
	grpc_event ev;

	if (s->cfg.poll_us && atomic_compare_exchange_strong(&s->polling, &idle, true)) {
		do
			ev = grpc_completion_queue_next(s->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
		while (ev.type == GRPC_QUEUE_TIMEOUT &&
		       gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), until) < 0);
		atomic_store(&s->polling, false);
		if (ev.type != GRPC_QUEUE_TIMEOUT)
			return ev;
	}
	return grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
}

static void *cq_thread(void *arg)
{
	struct kvt_server *s = arg;

	for (;;) {
		grpc_event ev = cq_wait(s);

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			return NULL;
		if (ev.type == GRPC_OP_COMPLETE) {
			tag_taken(ev.tag);
			((struct tag *)ev.tag)->done(ev.tag, ev.success);
		}
	}
}

static void shutdown_done(struct tag *t, bool ok)
{
	struct kvt_server *s =
		(struct kvt_server *)((char *)t - offsetof(struct kvt_server, shutdown_tag));

	(void)ok;
	pthread_mutex_lock(&s->lock);
	s->shutdown_done = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static int add_port(struct kvt_server *s, const char *addr, char *err,
		    size_t len)
{
	grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
	int port = grpc_server_add_http2_port(s->server, addr, creds);

	grpc_server_credentials_release(creds);
	if (port == 0) {
		snprintf(err, len, "cannot listen on %s (address in use or invalid)",
			 addr);
		return -EADDRNOTAVAIL;
	}
	if (!strstr(addr, ":0"))
		snprintf(s->listen[s->nlisten++], sizeof(s->listen[0]), "%s", addr);
	else /* port 0: say which port the kernel picked */
		snprintf(s->listen[s->nlisten++], sizeof(s->listen[0]), "%.*s:%d",
			 (int)(strrchr(addr, ':') - addr), addr, port);
	return 0;
}

/* ---- the unix listener ---- */

/* Grows a table of n elements of size sz to hold index i. 0, or -1. */
static int grow(void **table, size_t *n, size_t sz, size_t i, int fill)
{
	size_t want = i * 2 + 64;
	char *p;

	if (i < *n)
		return 0;
	p = realloc(*table, want * sz);
	if (!p)
		return -ENOMEM;
	memset(p + *n * sz, fill, (want - *n) * sz);
	*table = p;
	*n = want;
	return 0;
}

/* Whether the socket under watch fd w is still up: the client may have
 * closed it a moment ago, before the acceptor saw it hang up. */
static bool conn_up(int w)
{
	struct pollfd p = { .fd = w, .events = 0 };

	return poll(&p, 1, 0) == 0 || !(p.revents & (POLLHUP | POLLERR));
}

/* The connections uid holds (not refused, not shut down; up, when
 * check_up), counting no further than max; under s->lock. */
static uint32_t conns_of(struct kvt_server *s, uid_t uid, uint32_t max,
			 bool check_up)
{
	uint32_t n = 0;

	for (size_t w = 0; w < s->nconns && n < max; w++) {
		const struct conn *cn = &s->conns[w];

		if (cn->id && !cn->refused && !cn->shut && cn->peer.uid == uid &&
		    (!check_up || conn_up((int)w)))
			n++;
	}
	return n;
}

/*
 * Records the connection fd (its credentials, a watch fd in the epoll set)
 * and hands it to gRPC; refused when its uid holds max_connections already.
 */
static void conn_new(struct kvt_server *s, int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	uint32_t max = atomic_load(&s->max_connections);
	struct epoll_event ev = { .events = 0 };
	bool refused = false, complain = false;
	struct conn *cn;
	int w;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		kvt_log(KVT_LOG_WARN, "cannot read the peer credentials of a connection: %s",
			strerror(errno));
		close(fd);
		return;
	}
	w = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (w < 0) {
		close(fd); /* out of fds: better one client refused than a blind one */
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (grow((void **)&s->conns, &s->nconns, sizeof(*s->conns), (size_t)w, 0) < 0 ||
	    grow((void **)&s->watch_of, &s->nwatch_of, sizeof(*s->watch_of),
		 (size_t)fd, -1) < 0) {
		pthread_mutex_unlock(&s->lock);
		close(w);
		close(fd);
		return;
	}
	/* A client that closed and reconnected at once is not over the bound. */
	if (max && conns_of(s, cr.uid, max, false) >= max &&
	    conns_of(s, cr.uid, max, true) >= max) {
		refused = true;
		atomic_fetch_add(&s->refused, 1);
		if (time(NULL) - s->last_refusal_log >= 10) {
			s->last_refusal_log = time(NULL);
			complain = true;
		}
	}
	cn = &s->conns[w];
	*cn = (struct conn){ .id = ++s->next_conn_id, .grpc_fd = fd,
			     .peer = { .unix_socket = true, .uid = cr.uid,
				       .gid = cr.gid, .pid = cr.pid },
			     .limit = max, .refused = refused };
	cn->accepted_ns = cn->since_ns = monotonic_ns();
	s->watch_of[fd] = w;
	ev.data.fd = w;
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, w, &ev) < 0) {
		/* Not watched, it could never be reaped: refuse it. */
		cn->id = 0;
		s->watch_of[fd] = -1;
		pthread_mutex_unlock(&s->lock);
		close(w);
		close(fd);
		return;
	}
	if (!refused)
		atomic_fetch_add(&s->connections, 1);
	pthread_mutex_unlock(&s->lock);
	if (complain)
		kvt_log(KVT_LOG_WARN, "uid %u (pid %d) holds tenants.max_connections (%u) connections: refusing more (counted in kvtier_limit_refusals_total; logged once per 10 s)",
			(unsigned)cr.uid, (int)cr.pid, max);
	grpc_server_add_channel_from_fd(s->server, fd, s->creds);
}

/* The socket under watch fd w hung up: forget the connection. */
static void conn_gone(struct kvt_server *s, int w)
{
	struct conn *cn;

	pthread_mutex_lock(&s->lock);
	cn = &s->conns[w];
	if (cn->id) {
		if (!cn->refused && !cn->shut)
			atomic_fetch_sub(&s->connections, 1);
		if ((size_t)cn->grpc_fd < s->nwatch_of && s->watch_of[cn->grpc_fd] == w)
			s->watch_of[cn->grpc_fd] = -1;
		cn->id = 0;
	}
	pthread_mutex_unlock(&s->lock);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, w, NULL);
	close(w);
}

/*
 * Shuts down the connections that are idle (no call in flight for
 * idle_timeout) and the refused ones whose grace is over. Returns the
 * milliseconds until the next one is due (at most SWEEP_MAX_MS).
 */
static int sweep(struct kvt_server *s)
{
	uint64_t idle = atomic_load(&s->idle_timeout_ms) * 1000000ull;
	uint64_t now = monotonic_ns();
	uint64_t next = now + SWEEP_MAX_MS * 1000000ull;

	pthread_mutex_lock(&s->lock);
	for (size_t w = 0; w < s->nconns; w++) {
		struct conn *cn = &s->conns[w];
		uint64_t due;

		if (!cn->id || cn->shut)
			continue;
		if (cn->refused) {
			due = cn->accepted_ns + REFUSED_MAX_NS;
			if (cn->calls == 0 && cn->since_ns + REFUSED_GRACE_NS < due)
				due = cn->since_ns + REFUSED_GRACE_NS;
		} else if (idle && cn->calls == 0) {
			due = cn->since_ns + idle;
		} else {
			continue;
		}
		if (due > now) {
			if (due < next)
				next = due;
			continue;
		}
		/* gRPC reads EOF and ends the connection; the hang-up reaps it. */
		shutdown((int)w, SHUT_RDWR);
		cn->shut = true;
		if (!cn->refused) {
			atomic_fetch_sub(&s->connections, 1);
			atomic_fetch_add(&s->idle_closed, 1);
			kvt_log(KVT_LOG_DEBUG, "closed an idle connection of uid %u (pid %d)",
				(unsigned)cn->peer.uid, (int)cn->peer.pid);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return (int)((next - now + 999999) / 1000000);
}

static void *acceptor_main(void *arg)
{
	struct kvt_server *s = arg;
	time_t last_complaint = 0;

	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(s->epoll_fd, evs, 64, sweep(s));

		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == s->wake_fd[0])
				return NULL;
			if (fd != s->listen_fd) {
				conn_gone(s, fd);
				continue;
			}
			/* A burst of clients: take up to 64 before looking around. */
			for (int k = 0; k < 64; k++) {
				int c = accept4(s->listen_fd, NULL, NULL,
						SOCK_NONBLOCK | SOCK_CLOEXEC);

				if (c >= 0) {
					conn_new(s, c);
					continue;
				}
				if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
					/* Out of fds: say so now and then, and let
					 * connections close before trying again. */
					if (time(NULL) - last_complaint >= 10) {
						kvt_log(KVT_LOG_WARN, "accept: %s", strerror(errno));
						last_complaint = time(NULL);
					}
					poll(NULL, 0, 100);
				}
				break;
			}
		}
	}
	return NULL;
}

static int listen_unix(struct kvt_server *s, const char *path, char *err,
		       size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, len, "socket path %s is longer than %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0 || (unlink(path) < 0 && errno != ENOENT) ||
	    bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, s->cfg.socket_mode) < 0 ||
	    (s->cfg.gid != (gid_t)-1 && chown(path, (uid_t)-1, s->cfg.gid) < 0) ||
	    listen(s->listen_fd, SOMAXCONN) < 0) {
		int rc = -errno;

		snprintf(err, len, "cannot listen on %s: %s", path, strerror(-rc));
		return rc;
	}
	snprintf(s->listen[s->nlisten++], sizeof(s->listen[0]), "unix:%s", path);
	return 0;
}

static void stop_acceptor(struct kvt_server *s)
{
	if (s->acceptor_running) {
		if (write(s->wake_fd[1], "x", 1) < 0)
			kvt_log(KVT_LOG_WARN, "cannot wake the acceptor: %s", strerror(errno));
		pthread_join(s->acceptor, NULL);
		s->acceptor_running = false;
	}
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	s->listen_fd = -1;
}

/* Ends the connections with no call in flight. Caller holds s->lock. */
static void shut_idle_connections(struct kvt_server *s)
{
	for (size_t w = 0; w < s->nconns; w++) {
		struct conn *cn = &s->conns[w];

		if (cn->id && !cn->shut && cn->calls == 0) {
			shutdown((int)w, SHUT_RDWR);
			cn->shut = true;
		}
	}
}

/* Closes the watch fds, which are ours; gRPC's sockets are left alone. */
static void forget_connections(struct kvt_server *s)
{
	/* Under the lock: calls still finishing look their records up. */
	pthread_mutex_lock(&s->lock);
	for (size_t w = 0; w < s->nconns; w++)
		if (s->conns[w].id) {
			s->conns[w].id = 0;
			close((int)w);
		}
	pthread_mutex_unlock(&s->lock);
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
	s->epoll_fd = -1;
}

int kvt_server_start(const struct kvt_server_config *cfg,
		     struct kvt_server **out, char *err, size_t len)
{
	struct kvt_server *s = calloc(1, sizeof(*s));
	int max_msg = cfg->max_message_size > INT_MAX ? INT_MAX :
							(int)cfg->max_message_size;
	grpc_arg args[3];
	grpc_channel_args chargs = { 3, args };
	int rc;

	if (!s) {
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	s->cfg = *cfg;
	s->listen_fd = s->wake_fd[0] = s->wake_fd[1] = s->epoll_fd = -1;
	atomic_init(&s->idle_timeout_ms, cfg->idle_timeout_ms);
	atomic_init(&s->max_connections, cfg->max_connections);
	s->counters = calloc(cfg->nmethods + cfg->nstreams + 1, sizeof(*s->counters));
	for (size_t i = 0; s->counters && i < cfg->nmethods + cfg->nstreams + 1; i++)
		kvt_histogram_init(&s->counters[i].latency, &kvt_latency_bounds);
	s->threads = calloc(cfg->threads, sizeof(*s->threads));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->shutdown_tag.done = shutdown_done;
	memset(args, 0, sizeof(args));
	args[0].type = args[1].type = GRPC_ARG_INTEGER;
	args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[0].value.integer = args[1].value.integer = max_msg;
	/* Calls open at once on one connection: a worker holds its Attach
	 * stream and one call (libkvtier serializes its calls); a client
	 * opening Health/Watch streams without end would hold memory. gRPC
	 * advertises it; unix-socket connections are also held to it by
	 * count (call_accepted), whatever the client does with the setting. */
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
	args[2].value.integer = MAX_CALLS_PER_CONNECTION;

	s->server = grpc_server_create(&chargs, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s->server, s->cq, NULL);
	s->creds = grpc_insecure_server_credentials_create();
	if (pipe2(s->wake_fd, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, len, "pipe: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = listen_unix(s, cfg->unix_path, err, len)) < 0)
		goto fail;
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epoll_fd < 0 ||
	    epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.fd = s->listen_fd }) < 0 ||
	    epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->wake_fd[0],
		      &(struct epoll_event){ .events = EPOLLIN, .data.fd = s->wake_fd[0] }) < 0) {
		rc = -errno;
		snprintf(err, len, "epoll: %s", strerror(-rc));
		goto fail;
	}
	if (cfg->tcp && cfg->tcp[0] && (rc = add_port(s, cfg->tcp, err, len)) < 0)
		goto fail;
	grpc_server_start(s->server);
	if ((rc = -pthread_create(&s->acceptor, NULL, acceptor_main, s)) < 0) {
		snprintf(err, len, "cannot start the acceptor thread");
		goto fail;
	}
	s->acceptor_running = true;
	s->accepting = true;
	for (unsigned i = 0; i < ACCEPTS_IN_FLIGHT; i++)
		accept_one(s);
	for (s->nthreads = 0; s->nthreads < cfg->threads; s->nthreads++)
		if ((rc = -pthread_create(&s->threads[s->nthreads], NULL, cq_thread, s)) < 0) {
			snprintf(err, len, "cannot start threads");
			kvt_server_shutdown(s, 0);
			kvt_server_destroy(s);
			return rc;
		}
	*out = s;
	return 0;

fail:
	stop_acceptor(s);
	forget_connections(s);
	/* Never started: shut down to let the cq drain, with no threads. */
	tag_given(&s->shutdown_tag);
	grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
	grpc_server_cancel_all_calls(s->server);
	grpc_completion_queue_shutdown(s->cq);
	while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
					  NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	kvt_server_destroy(s);
	return rc;
}

/* Ends every open stream with UNAVAILABLE, so clients learn why. */
static void end_streams(struct kvt_server *s)
{
	grpc_slice details = grpc_slice_from_static_string("kvtierd is shutting down");
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	op.data.send_status_from_server.status = GRPC_STATUS_UNAVAILABLE;
	op.data.send_status_from_server.status_details = &details;
	pthread_mutex_lock(&s->lock);
	for (struct kvt_call *c = s->streams; c; c = c->next) {
		grpc_call *call = c->call;

		atomic_fetch_add(&c->refs, 1);
		tag_given(&c->end_tag);
		if (grpc_call_start_batch(call, &op, 1, &c->end_tag, NULL) !=
		    GRPC_CALL_OK)
			atomic_fetch_sub(&c->refs, 1);
	}
	pthread_mutex_unlock(&s->lock);
}

/* Waits on s->cond for at most ms. Caller holds s->lock. */
static void wait_ms(struct kvt_server *s, unsigned ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&s->cond, &s->lock, &until);
}

void kvt_server_shutdown(struct kvt_server *s, int grace_ms)
{
	uint64_t deadline = monotonic_ns() + (uint64_t)grace_ms * 1000000u;

	stop_acceptor(s);
	pthread_mutex_lock(&s->lock);
	s->accepting = false;
	pthread_mutex_unlock(&s->lock);
	tag_given(&s->shutdown_tag);
	grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
	if (s->cfg.draining)
		s->cfg.draining(s->cfg.ctx);
	end_streams(s);

	/*
	 * gRPC reports the shutdown once every connection is gone, and an
	 * idle client's goes only when it answers the GOAWAY: one that polls
	 * nothing (an attached worker between calls) held the shutdown 4.5 s.
	 * So each connection is ended as soon as it has no call in flight.
	 */
	pthread_mutex_lock(&s->lock);
	for (;;) {
		shut_idle_connections(s);
		if (s->shutdown_done || monotonic_ns() >= deadline)
			break;
		wait_ms(s, SHUT_IDLE_MS);
	}
	if (!s->shutdown_done) {
		kvt_log(KVT_LOG_WARN, "calls still running after %d ms: cancelling them",
			grace_ms);
		pthread_mutex_unlock(&s->lock);
		grpc_server_cancel_all_calls(s->server);
		pthread_mutex_lock(&s->lock);
		while (!s->shutdown_done) {
			shut_idle_connections(s);
			wait_ms(s, SHUT_IDLE_MS);
		}
	}
	pthread_mutex_unlock(&s->lock);
	forget_connections(s);
	grpc_completion_queue_shutdown(s->cq);
	for (unsigned i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	s->nthreads = 0;
}

void kvt_server_destroy(struct kvt_server *s)
{
	if (!s)
		return;
	if (s->server)
		grpc_server_destroy(s->server);
	if (s->cq)
		grpc_completion_queue_destroy(s->cq);
	if (s->creds)
		grpc_server_credentials_release(s->creds);
	for (int i = 0; i < 2; i++)
		if (s->wake_fd[i] >= 0)
			close(s->wake_fd[i]);
	free(s->conns);
	free(s->watch_of);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->counters);
	free(s->threads);
	free(s);
}

size_t kvt_server_listen_count(const struct kvt_server *s)
{
	return s->nlisten;
}

const char *kvt_server_listen_address(const struct kvt_server *s, size_t i)
{
	return s->listen[i];
}

size_t kvt_server_method_slots(const struct kvt_server *s)
{
	return unknown_slot(s) + 1;
}

void kvt_server_method_counters(const struct kvt_server *s, size_t i,
				const char **path, uint64_t *calls,
				uint64_t *errors)
{
	if (i < s->cfg.nmethods)
		*path = s->cfg.methods[i].path;
	else if (i < unknown_slot(s))
		*path = s->cfg.streams[i - s->cfg.nmethods]->path;
	else
		*path = "unknown";
	*calls = atomic_load(&s->counters[i].calls);
	*errors = atomic_load(&s->counters[i].errors);
}

void kvt_server_method_latency(const struct kvt_server *s, size_t i,
			       struct kvt_histogram_snapshot *out)
{
	kvt_histogram_read(&s->counters[i].latency, out);
}

void kvt_server_set_limits(struct kvt_server *s, uint64_t idle_timeout_ms,
			   uint32_t max_connections)
{
	atomic_store(&s->idle_timeout_ms, idle_timeout_ms);
	atomic_store(&s->max_connections, max_connections);
}

void kvt_server_connections(const struct kvt_server *s,
			    struct kvt_server_connections *out)
{
	out->active = atomic_load(&s->connections);
	out->idle_closed_total = atomic_load(&s->idle_closed);
	out->refused_total = atomic_load(&s->refused);
}

uint64_t kvt_server_errors_by_code(const struct kvt_server *s,
				   grpc_status_code code)
{
	if (code <= 0 || code >= KVT_STATUS_CODES)
		return 0;
	return atomic_load(&s->by_code[code]);
}

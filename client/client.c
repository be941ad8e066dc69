/*
 * libkvtier over gRPC core. Unary calls run on one pluck queue under the
 * client's mutex. The Attach stream has a queue of its own: its status batch
 * stays posted for the life of the session and is plucked by kvt_close.
 * Shared-memory segments are mapped on first use and stay mapped until close.
 */
#include "kvtier/kvtier.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "health.pb-c.h"
#include "kvtier.pb-c.h"
#include "kvtier/v1/lane.h"
#include "kvtier/v1/segments.h"
#include "lane.h"

enum method {
	M_OPEN_NAMESPACE, M_LOOKUP, M_RESERVE, M_COMMIT, M_ABORT, M_ACQUIRE,
	M_RELEASE, M_PUT, M_GET, M_DROP, M_STATS, M_HEALTH, M_ATTACH,
	M_GET_CONFIG, M_DROP_NAMESPACE, M_COUNT
};

static const char *const method_paths[M_COUNT] = {
	"/kvtier.v1.KvTier/OpenNamespace", "/kvtier.v1.KvTier/Lookup",
	"/kvtier.v1.KvTier/Reserve",       "/kvtier.v1.KvTier/Commit",
	"/kvtier.v1.KvTier/Abort",         "/kvtier.v1.KvTier/Acquire",
	"/kvtier.v1.KvTier/Release",       "/kvtier.v1.KvTier/Put",
	"/kvtier.v1.KvTier/Get",           "/kvtier.v1.KvTier/Drop",
	"/kvtier.v1.KvTier/Stats",         "/grpc.health.v1.Health/Check",
	"/kvtier.v1.KvTier/Attach",        "/kvtier.v1.KvTier/GetConfig",
	"/kvtier.v1.KvTier/DropNamespace",
};

struct kvt_client {
	pthread_mutex_t lock;
	grpc_channel *channel;
	grpc_completion_queue *cq;
	void *registered[M_COUNT];
	int timeout_ms;
	unsigned poll_us;
	char errmsg[512];

	/* session */
	grpc_completion_queue *attach_cq;
	grpc_call *attach_call;
	grpc_metadata_array attach_md, attach_trailing;
	grpc_status_code attach_status;
	grpc_slice attach_details;
	uint8_t session[16];
	bool attached;
	/* The session's fast lane (lane.h): the hot calls go through it. */
	struct kvt_lane *lane;
	bool lane_off;
	char lane_error[160]; /* why there is none, when asked for */

	/* host tier segments */
	char segment_socket[108]; /* empty: none (over TCP) */
	char tenant[64];
	uint32_t segments;
	uint64_t segment_bytes;
	uint8_t **maps;
	uint32_t *map_gen; /* the generation each mapping is of */
	void (*on_map)(void *arg, void *base, size_t len);
	void (*on_unmap)(void *arg, void *base);
	void *hook_arg;
	/* kvt_keep_segments: takes the mappings we are done with */
	void (*keep)(void *arg, void *base, size_t len);
	void *keep_arg;
	/* maps and map_gen: slot_ptr runs outside c->lock, in several threads */
	pthread_mutex_t map_lock;

	/* GPU (kvt_set_gpu) and the daemon's hbm pool on it */
	uint8_t gpu_uuid[16];
	bool has_gpu, has_hbm_pool;
	uint8_t hbm_ipc[64];
	uint64_t hbm_bytes;
	uint8_t *hbm_base;
};

static pthread_once_t grpc_once = PTHREAD_ONCE_INIT;

static void grpc_start(void)
{
	grpc_init();
}

static int status_errno(grpc_status_code code)
{
	switch (code) {
	case GRPC_STATUS_OK: return 0;
	case GRPC_STATUS_INVALID_ARGUMENT: return -EINVAL;
	case GRPC_STATUS_NOT_FOUND: return -ENOENT;
	case GRPC_STATUS_FAILED_PRECONDITION: return -EPERM;
	case GRPC_STATUS_RESOURCE_EXHAUSTED: return -ENOSPC;
	case GRPC_STATUS_PERMISSION_DENIED: return -EACCES;
	case GRPC_STATUS_UNAVAILABLE: return -ECONNREFUSED;
	case GRPC_STATUS_DEADLINE_EXCEEDED: return -ETIMEDOUT;
	case GRPC_STATUS_UNIMPLEMENTED: return -ENOSYS;
	case GRPC_STATUS_CANCELLED: return -ECANCELED;
	default: return -EIO;
	}
}

static int fail(kvt_client *c, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(kvt_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

int kvt_connect(const char *target, kvt_client **out)
{
	kvt_client *c = calloc(1, sizeof(*c));
	grpc_channel_credentials *creds;
	grpc_arg args[2];
	grpc_channel_args chargs = { 2, args };

	if (!c)
		return -ENOMEM;
	if (!target)
		target = getenv("KVTIER_ADDR");
	if (!target || !*target)
		target = KVT_DEFAULT_ADDR;
	pthread_once(&grpc_once, grpc_start);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->map_lock, NULL);
	c->timeout_ms = 10000;
	c->poll_us = getenv("KVTIER_POLL_US") ? (unsigned)atoi(getenv("KVTIER_POLL_US")) :
						KVT_DEFAULT_POLL_US;
	c->lane_off = getenv("KVTIER_FAST_LANE") && strcmp(getenv("KVTIER_FAST_LANE"), "0") == 0;
	/* The daemon enforces its own limit; never cut its replies short here. */
	memset(args, 0, sizeof(args));
	args[0].type = args[1].type = GRPC_ARG_INTEGER;
	args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[0].value.integer = args[1].value.integer = -1;
	creds = grpc_insecure_credentials_create();
	c->channel = grpc_channel_create(target, creds, &chargs);
	grpc_channel_credentials_release(creds);
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	for (int m = 0; m < M_COUNT; m++)
		c->registered[m] = grpc_channel_register_call(c->channel,
							      method_paths[m],
							      NULL, NULL);
	*out = c;
	return 0;
}

static void drain_and_destroy(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME),
					   NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}

/* A segment mapping we are done with: unmapped, or handed to the keep hook
 * (whose caller may still have views into it). */
static void drop_mapping(kvt_client *c, uint8_t *base)
{
	if (c->on_unmap)
		c->on_unmap(c->hook_arg, base);
	if (c->keep)
		c->keep(c->keep_arg, base, c->segment_bytes);
	else
		munmap(base, c->segment_bytes);
}

void kvt_close(kvt_client *c)
{
	if (!c)
		return;
	if (c->attach_call) {
		/* Ending the stream ends the session: the daemon releases it all. */
		grpc_call_cancel(c->attach_call, NULL);
		grpc_completion_queue_pluck(c->attach_cq, &c->attach_status,
					    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		grpc_call_unref(c->attach_call);
		grpc_slice_unref(c->attach_details);
		grpc_metadata_array_destroy(&c->attach_md);
		grpc_metadata_array_destroy(&c->attach_trailing);
	}
	if (c->attach_cq)
		drain_and_destroy(c->attach_cq);
	kvt_lane_close(c->lane);
	for (uint32_t i = 0; c->maps && i < c->segments; i++)
		if (c->maps[i])
			drop_mapping(c, c->maps[i]);
	free(c->maps);
	free(c->map_gen);
	grpc_channel_destroy(c->channel);
	drain_and_destroy(c->cq);
	pthread_mutex_destroy(&c->map_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

const char *kvt_version(void)
{
	return KVT_VERSION_STRING;
}

const char *kvt_errmsg(const kvt_client *c)
{
	return c->errmsg;
}

void kvt_set_timeout_ms(kvt_client *c, int ms)
{
	c->timeout_ms = ms > 0 ? ms : 10000;
}

void kvt_set_poll_us(kvt_client *c, unsigned us)
{
	c->poll_us = us;
}

void kvt_set_fast_lane(kvt_client *c, int on)
{
	c->lane_off = !on;
}

int kvt_fast_lane(const kvt_client *c, const char **why_not)
{
	if (why_not)
		*why_not = c->lane ? "" : c->lane_off ? "turned off" :
			   !c->attached ? "not attached" :
			   c->lane_error[0] ? c->lane_error : "over TCP";
	return c->lane != NULL;
}

static grpc_byte_buffer *pack_buffer(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	grpc_byte_buffer *bb;
	grpc_slice s;

	if (!buf)
		return NULL;
	protobuf_c_message_pack(m, buf);
	s = grpc_slice_new(buf, len, free);
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

static ProtobufCMessage *unpack_buffer(grpc_byte_buffer *bb,
				       const ProtobufCMessageDescriptor *d)
{
	grpc_byte_buffer_reader r;
	ProtobufCMessage *m = NULL;
	grpc_slice s;

	if (!grpc_byte_buffer_reader_init(&r, bb))
		return NULL;
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s),
				      GRPC_SLICE_START_PTR(s));
	grpc_slice_unref(s);
	return m;
}

/*
 * One unary call: sends req, unpacks the reply into *resp (free it with
 * protobuf_c_message_free_unpacked). Caller holds c->lock.
 */
/*
 * The completion of tag: polled for poll_us first (a reply that comes that
 * soon is not delayed by a thread wake-up), then waited for. Each empty
 * poll yields the core: where clients outnumber cores, a spinning client
 * would otherwise hold the core the daemon needs to answer it
 * (BENCHMARKS.md, issue 18: 4 clients on 2 cores, 0.63x -> 1.44x Redis
 * throughput, p99 4.8 -> 0.6-1.6 ms; one client unchanged).
 */
static grpc_event wait_for(kvt_client *c, void *tag)
{
	gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					  gpr_time_from_micros(c->poll_us, GPR_TIMESPAN));
	grpc_event ev;

	while ((ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_past(GPR_CLOCK_REALTIME),
						 NULL)).type == GRPC_QUEUE_TIMEOUT &&
	       gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), until) < 0)
		sched_yield();
	if (ev.type == GRPC_QUEUE_TIMEOUT)
		ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ev;
}

/* The fast lane's name for m; 0: m goes over gRPC. */
static uint32_t lane_method(enum method m)
{
	switch (m) {
	case M_LOOKUP: return KVT_LANE_LOOKUP;
	case M_RESERVE: return KVT_LANE_RESERVE;
	case M_COMMIT: return KVT_LANE_COMMIT;
	case M_ABORT: return KVT_LANE_ABORT;
	case M_ACQUIRE: return KVT_LANE_ACQUIRE;
	case M_RELEASE: return KVT_LANE_RELEASE;
	default: return 0;
	}
}

/* The keys req carries (libkvtier sends them packed). */
static size_t keys_in(const ProtobufCMessage *req)
{
	const ProtobufCFieldDescriptor *f =
		protobuf_c_message_descriptor_get_field_by_name(req->descriptor,
								"packed_keys");

	return f ? ((const ProtobufCBinaryData *)((const char *)req + f->offset))->len /
		   sizeof(struct kvt_key) : 0;
}

/* The call over the fast lane: 1 when it does not fit the lane (the
 * caller sends it over gRPC), else as call_locked. */
static int lane_call_locked(kvt_client *c, enum method m,
			    const ProtobufCMessage *req,
			    const ProtobufCMessageDescriptor *resp_desc,
			    ProtobufCMessage **resp, unsigned wait_ms)
{
	size_t cap, len = protobuf_c_message_get_packed_size(req), reply_len;
	uint8_t *buf = kvt_lane_request(c->lane, &cap);
	const uint8_t *reply;
	char msg[sizeof(c->errmsg) - 64];
	int rc;

	if (len > cap || keys_in(req) > kvt_lane_max_keys(c->lane))
		return 1;
	protobuf_c_message_pack(req, buf);
	rc = kvt_lane_call(c->lane, lane_method(m), len, c->poll_us,
			   c->timeout_ms + (int)wait_ms, &reply, &reply_len,
			   msg, sizeof(msg));
	if (rc < 0)
		return fail(c, rc, "%s: %s", method_paths[m] + 1, msg);
	if (rc != GRPC_STATUS_OK)
		return fail(c, status_errno((grpc_status_code)rc), "%s: %s",
			    method_paths[m] + 1, msg);
	*resp = protobuf_c_message_unpack(resp_desc, NULL, reply_len, reply);
	if (!*resp)
		return fail(c, -EIO, "%s: malformed reply", method_paths[m]);
	return 0;
}

static int call_locked(kvt_client *c, enum method m, const ProtobufCMessage *req,
		       const ProtobufCMessageDescriptor *resp_desc,
		       ProtobufCMessage **resp, unsigned wait_ms)
{
	gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
					     gpr_time_from_millis((int64_t)c->timeout_ms + wait_ms,
								  GPR_TIMESPAN));
	grpc_byte_buffer *send = pack_buffer(req), *recv = NULL;
	grpc_metadata_array md, trailing;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details;
	grpc_call *call;
	grpc_event ev;
	grpc_op ops[6];
	int rc = 0;

	if (!send)
		return fail(c, -ENOMEM, "out of memory");
	call = grpc_channel_create_registered_call(c->channel, NULL,
						   GRPC_PROPAGATE_DEFAULTS, c->cq,
						   c->registered[m], deadline, NULL);
	grpc_metadata_array_init(&md);
	grpc_metadata_array_init(&trailing);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(call, ops, 6, &status, NULL) != GRPC_CALL_OK) {
		rc = fail(c, -EIO, "%s: cannot start the call", method_paths[m]);
		goto out;
	}
	ev = wait_for(c, &status);
	if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
		rc = fail(c, -EIO, "%s: the call failed", method_paths[m]);
		goto out_details;
	}
	if (status != GRPC_STATUS_OK) {
		rc = fail(c, status_errno(status), "%s: %.*s", method_paths[m] + 1,
			  (int)GRPC_SLICE_LENGTH(details),
			  (const char *)GRPC_SLICE_START_PTR(details));
		goto out_details;
	}
	*resp = recv ? unpack_buffer(recv, resp_desc) : NULL;
	if (!*resp)
		rc = fail(c, -EIO, "%s: malformed reply", method_paths[m]);
out_details:
	grpc_slice_unref(details);
out:
	if (recv)
		grpc_byte_buffer_destroy(recv);
	grpc_byte_buffer_destroy(send);
	grpc_metadata_array_destroy(&md);
	grpc_metadata_array_destroy(&trailing);
	grpc_call_unref(call);
	return rc;
}

/* A call whose reply may take wait_ms on top of the usual timeout. */
static int call_waiting(kvt_client *c, enum method m, const void *req,
			const ProtobufCMessageDescriptor *resp_desc, void **resp,
			unsigned wait_ms)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = c->lane && lane_method(m) ?
	     lane_call_locked(c, m, req, resp_desc, (ProtobufCMessage **)resp, wait_ms) : 1;
	if (rc == 1)
		rc = call_locked(c, m, req, resp_desc, (ProtobufCMessage **)resp, wait_ms);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static int call(kvt_client *c, enum method m, const void *req,
		const ProtobufCMessageDescriptor *resp_desc, void **resp)
{
	return call_waiting(c, m, req, resp_desc, resp, 0);
}

#define FREE_MSG(p) protobuf_c_message_free_unpacked(&(p)->base, NULL)

int kvt_attach(kvt_client *c, const char *client_name)
{
	Kvtier__V1__AttachRequest req = KVTIER__V1__ATTACH_REQUEST__INIT;
	Kvtier__V1__AttachEvent *ev = NULL;
	grpc_byte_buffer *send, *recv = NULL;
	grpc_op ops[5], status_op;
	grpc_event e;
	int rc = 0;

	if (c->attached)
		return fail(c, -EINVAL, "already attached");
	req.client_name = (char *)(client_name ? client_name : "");
	if (c->has_gpu) {
		req.gpu_uuid.data = c->gpu_uuid;
		req.gpu_uuid.len = sizeof(c->gpu_uuid);
	}
	send = pack_buffer(&req.base);
	if (!send)
		return fail(c, -ENOMEM, "out of memory");
	c->attach_cq = grpc_completion_queue_create_for_pluck(NULL);
	/* No deadline: the stream is the session and lives until close. */
	c->attach_call = grpc_channel_create_registered_call(
		c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->attach_cq,
		c->registered[M_ATTACH], gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	grpc_metadata_array_init(&c->attach_md);
	grpc_metadata_array_init(&c->attach_trailing);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->attach_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	memset(&status_op, 0, sizeof(status_op));
	status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	status_op.data.recv_status_on_client.trailing_metadata = &c->attach_trailing;
	status_op.data.recv_status_on_client.status = &c->attach_status;
	status_op.data.recv_status_on_client.status_details = &c->attach_details;

	if (grpc_call_start_batch(c->attach_call, ops, 5, ops, NULL) != GRPC_CALL_OK ||
	    grpc_call_start_batch(c->attach_call, &status_op, 1, &c->attach_status,
				  NULL) != GRPC_CALL_OK) {
		grpc_byte_buffer_destroy(send);
		return fail(c, -EIO, "Attach: cannot start the call");
	}
	e = grpc_completion_queue_pluck(c->attach_cq, ops,
					gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
						     gpr_time_from_millis(c->timeout_ms,
									  GPR_TIMESPAN)),
					NULL);
	grpc_byte_buffer_destroy(send);
	if (e.type == GRPC_QUEUE_TIMEOUT) {
		grpc_call_cancel(c->attach_call, NULL);
		grpc_completion_queue_pluck(c->attach_cq, ops,
					    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	}
	if (recv) {
		ev = (Kvtier__V1__AttachEvent *)unpack_buffer(
			recv, &kvtier__v1__attach_event__descriptor);
		grpc_byte_buffer_destroy(recv);
	}
	if (!ev) {
		/* The stream ended at once: its status says why. */
		grpc_completion_queue_pluck(c->attach_cq, &c->attach_status,
					    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		rc = fail(c, c->attach_status ? status_errno(c->attach_status) : -EIO,
			  "Attach: %.*s", (int)GRPC_SLICE_LENGTH(c->attach_details),
			  (const char *)GRPC_SLICE_START_PTR(c->attach_details));
		grpc_call_unref(c->attach_call);
		c->attach_call = NULL;
		grpc_slice_unref(c->attach_details);
		grpc_metadata_array_destroy(&c->attach_md);
		grpc_metadata_array_destroy(&c->attach_trailing);
		return rc;
	}
	if (ev->session.len != sizeof(c->session) ||
	    strlen(ev->host_segment_socket) >= sizeof(c->segment_socket)) {
		rc = fail(c, -EIO, "Attach: malformed first event");
		goto out;
	}
	memcpy(c->session, ev->session.data, sizeof(c->session));
	strcpy(c->segment_socket, ev->host_segment_socket);
	snprintf(c->tenant, sizeof(c->tenant), "%s", ev->tenant);
	/* Room for every segment the tier may grow to (a reload). */
	c->segments = ev->host_segments_max > ev->host_segments ?
		      ev->host_segments_max : ev->host_segments;
	c->segment_bytes = ev->host_segment_bytes;
	if (ev->hbm_pool && ev->hbm_pool->ipc_handle.len == sizeof(c->hbm_ipc)) {
		memcpy(c->hbm_ipc, ev->hbm_pool->ipc_handle.data, sizeof(c->hbm_ipc));
		c->hbm_bytes = ev->hbm_pool->bytes;
		c->has_hbm_pool = true;
	}
	c->maps = calloc(c->segments ? c->segments : 1, sizeof(*c->maps));
	c->map_gen = calloc(c->segments ? c->segments : 1, sizeof(*c->map_gen));
	if (!c->maps || !c->map_gen) {
		rc = fail(c, -ENOMEM, "out of memory");
		goto out;
	}
	c->attached = true;
	if (c->segment_socket[0] && !c->lane_off &&
	    kvt_lane_open(c->segment_socket, c->session, &c->lane, c->lane_error,
			  sizeof(c->lane_error)) < 0)
		c->lane = NULL; /* calls go over gRPC; kvt_fast_lane says why */
out:
	FREE_MSG(ev);
	return rc;
}

/* Asks the daemon for host segment `segment` (proto/kvtier/v1/segments.h):
 * its descriptor, or -errno with the daemon's reason. */
int kvt_segment_fd(kvt_client *c, uint32_t segment, uint32_t *generation)
{
	struct kvt_segment_reply rep;
	int fd, rc;

	if (!c->attached)
		return fail(c, -EPERM, "not attached: call kvt_attach first");
	if (!c->segment_socket[0])
		return fail(c, -EOPNOTSUPP, "host segments cannot be mapped over TCP: use kvt_put and kvt_get");
	rc = kvt_segsock_ask(c->segment_socket, c->session, segment, &rep, &fd,
			     NULL, c->errmsg, sizeof(c->errmsg));
	if (rc == 0 && rep.bytes != c->segment_bytes) {
		close(fd);
		rc = -EIO;
		snprintf(c->errmsg, sizeof(c->errmsg), "malformed reply");
	}
	if (rc < 0) {
		char why[sizeof(c->errmsg) - 32];

		memcpy(why, c->errmsg, sizeof(why) - 1);
		why[sizeof(why) - 1] = '\0';
		return fail(c, rc, "host segment %u: %s", segment, why);
	}
	*generation = rep.generation;
	return fd;
}

/* *out: the address of (segment, offset) of that segment's generation,
 * mapping the segment on first use (again when the mapping is of an older
 * one). 0 or -errno with the reason in errmsg. */
static int slot_ptr_locked(kvt_client *c, uint32_t segment, uint32_t generation,
			   uint64_t offset, void **out)
{
	uint32_t got;
	void *p;
	int fd;

	if (segment >= c->segments || offset >= c->segment_bytes)
		return fail(c, -EIO, "daemon sent a location outside the host tier (segment %u offset %llu)",
			    segment, (unsigned long long)offset);
	if (c->maps[segment] && c->map_gen[segment] == generation) {
		*out = c->maps[segment] + offset;
		return 0;
	}
	if (c->maps[segment]) {
		drop_mapping(c, c->maps[segment]);
		c->maps[segment] = NULL;
	}
	fd = kvt_segment_fd(c, segment, &got);
	if (fd < 0)
		return fd;
	if (got != generation) {
		close(fd);
		return fail(c, -ESTALE, "host segment %u is of generation %u, the location of %u (a lease or reservation used after its end?)",
			    segment, got, generation);
	}
	p = mmap(NULL, c->segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return fail(c, -errno, "cannot map host segment %u: %s", segment,
			    strerror(errno));
	/* The daemon committed the memory: map it writable in one go, not a
	 * fault per 4 KiB page on first write (MAP_POPULATE maps shared pages
	 * read-only). Best effort: older kernels lack it. */
	(void)madvise(p, c->segment_bytes, MADV_POPULATE_WRITE);
	c->maps[segment] = p;
	c->map_gen[segment] = generation;
	if (c->on_map)
		c->on_map(c->hook_arg, p, c->segment_bytes);
	*out = c->maps[segment] + offset;
	return 0;
}

/* Two threads' Reserve or Acquire may map (or remap) the same segment. */
static int slot_ptr(kvt_client *c, uint32_t segment, uint32_t generation,
		    uint64_t offset, void **out)
{
	int rc;

	pthread_mutex_lock(&c->map_lock);
	rc = slot_ptr_locked(c, segment, generation, offset, out);
	pthread_mutex_unlock(&c->map_lock);
	return rc;
}

/* A page of a lease: a host segment's, or the hbm pool's on our GPU. */
/* A location as the daemon sends it in packed_locations (kvtier.proto's
 * PackedLocation). */
struct wire_location {
	uint32_t tier, segment, generation;
	uint64_t offset;
};

#define PACKED_LOCATION_BYTES 24

/* Location i of a packed_locations field of n records; 0, or -EIO when
 * the field is not n records long. */
static int location_at(kvt_client *c, const ProtobufCBinaryData *b, size_t n,
		       size_t i, struct wire_location *l)
{
	uint32_t w[4];
	uint64_t offset;

	if (b->len != n * PACKED_LOCATION_BYTES)
		return fail(c, -EIO, "packed_locations is %zu bytes for %zu locations",
			    b->len, n);
	memcpy(w, b->data + i * PACKED_LOCATION_BYTES, sizeof(w));
	memcpy(&offset, b->data + i * PACKED_LOCATION_BYTES + sizeof(w), sizeof(offset));
	*l = (struct wire_location){ le32toh(w[0]), le32toh(w[1]), le32toh(w[2]),
				     le64toh(offset) };
	return 0;
}

static int page_ptr(kvt_client *c, const struct wire_location *l, void **out)
{
	if (l->tier != KVTIER__V1__TIER__TIER_HBM)
		return slot_ptr(c, l->segment, l->generation, l->offset, out);
	if (!c->hbm_base || l->offset >= c->hbm_bytes)
		return fail(c, -EIO, c->hbm_base ? "daemon sent an hbm location outside its pool (offset %llu)" :
				     "daemon sent an hbm location, but the pool is not mapped (kvt_set_hbm_base)",
			    (unsigned long long)l->offset);
	*out = c->hbm_base + l->offset;
	return 0;
}

void kvt_set_segment_hooks(kvt_client *c,
			   void (*on_map)(void *arg, void *base, size_t len),
			   void (*on_unmap)(void *arg, void *base), void *arg)
{
	c->on_map = on_map;
	c->on_unmap = on_unmap;
	c->hook_arg = arg;
}

void kvt_keep_segments(kvt_client *c, void (*keep)(void *arg, void *base, size_t len),
		       void *arg)
{
	c->keep = keep;
	c->keep_arg = arg;
}

void kvt_set_gpu(kvt_client *c, const uint8_t uuid[16])
{
	memcpy(c->gpu_uuid, uuid, sizeof(c->gpu_uuid));
	c->has_gpu = true;
}

int kvt_hbm_pool(const kvt_client *c, uint8_t ipc_handle[64], uint64_t *bytes)
{
	if (!c->has_hbm_pool)
		return -ENOENT;
	memcpy(ipc_handle, c->hbm_ipc, sizeof(c->hbm_ipc));
	*bytes = c->hbm_bytes;
	return 0;
}

void kvt_set_hbm_base(kvt_client *c, void *base)
{
	c->hbm_base = base;
}

uint64_t kvt_segment_bytes(const kvt_client *c)
{
	return c->segment_bytes;
}

void kvt_session_token(const kvt_client *c, uint8_t token[16])
{
	memcpy(token, c->session, sizeof(c->session));
}

const char *kvt_tenant(const kvt_client *c)
{
	return c->tenant;
}

int kvt_health(kvt_client *c)
{
	Grpc__Health__V1__HealthCheckRequest req =
		GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp;
	int rc;

	rc = call(c, M_HEALTH, &req, &grpc__health__v1__health_check_response__descriptor,
		  (void **)&resp);
	if (rc < 0)
		return rc;
	if (resp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
		rc = fail(c, -EIO, "daemon is not serving (status %d)", resp->status);
	FREE_MSG(resp);
	return rc;
}

int kvt_open_namespace(kvt_client *c, const char *name, uint64_t page_bytes,
		       uint32_t block_tokens, uint64_t idle_ttl_ms,
		       struct kvt_namespace *ns)
{
	Kvtier__V1__OpenNamespaceRequest req = KVTIER__V1__OPEN_NAMESPACE_REQUEST__INIT;
	Kvtier__V1__OpenNamespaceResponse *resp;
	int rc;

	req.name = (char *)name;
	req.page_bytes = page_bytes;
	req.block_tokens = block_tokens;
	req.idle_ttl_ms = idle_ttl_ms;
	rc = call(c, M_OPEN_NAMESPACE, &req,
		  &kvtier__v1__open_namespace_response__descriptor, (void **)&resp);
	if (rc < 0)
		return rc;
	ns->id = resp->namespace_id;
	ns->page_bytes = page_bytes;
	ns->slot_stride = resp->slot_stride;
	ns->created = resp->created;
	ns->shared = resp->shared;
	FREE_MSG(resp);
	return 0;
}

/* Key lists point into the caller's array: no copy. */
/* keys as a request's packed_keys: their bytes where they are (struct
 * kvt_key is its 16 bytes), no field per key to frame and unpack. */
static ProtobufCBinaryData packed_keys(const struct kvt_key *keys, size_t n)
{
	_Static_assert(sizeof(struct kvt_key) == KVT_KEY_SIZE, "keys are packed");
	return (ProtobufCBinaryData){ n * KVT_KEY_SIZE, (uint8_t *)keys };
}

static ProtobufCBinaryData key_bytes(const struct kvt_key *key)
{
	ProtobufCBinaryData b = { 0, NULL };

	if (key) {
		b.data = (uint8_t *)key->bytes;
		b.len = KVT_KEY_SIZE;
	}
	return b;
}

/* A Retention message in *buf for r, or NULL for the default. */
static Kvtier__V1__Retention *retention_msg(const struct kvt_retention *r,
					    Kvtier__V1__Retention *buf)
{
	if (!r)
		return NULL;
	kvtier__v1__retention__init(buf);
	buf->priority = r->priority;
	buf->duration_ms = r->duration_ms;
	return buf;
}

static ProtobufCBinaryData session_bytes(kvt_client *c)
{
	ProtobufCBinaryData b = { sizeof(c->session), c->session };

	return b;
}

int kvt_lookup_where(kvt_client *c, const struct kvt_namespace *ns,
		     const struct kvt_key *keys, size_t n, size_t *ready,
		     size_t *pending, enum kvt_where *where)
{
	Kvtier__V1__LookupRequest req = KVTIER__V1__LOOKUP_REQUEST__INIT;
	Kvtier__V1__LookupResponse *resp;
	int rc;

	req.namespace_id = ns->id;
	req.packed_keys = packed_keys(keys, n);
	rc = call(c, M_LOOKUP, &req, &kvtier__v1__lookup_response__descriptor,
		  (void **)&resp);
	if (rc < 0)
		return rc;
	if (resp->ready_blocks > n ||
	    (where && resp->n_tiers != resp->ready_blocks)) {
		FREE_MSG(resp);
		return fail(c, -EPROTO, "Lookup: the reply does not fit the request");
	}
	*ready = resp->ready_blocks;
	if (pending)
		*pending = resp->pending_blocks;
	for (size_t i = 0; where && i < *ready; i++)
		where[i] = (enum kvt_where)resp->tiers[i];
	FREE_MSG(resp);
	return 0;
}

int kvt_lookup(kvt_client *c, const struct kvt_namespace *ns,
	       const struct kvt_key *keys, size_t n, size_t *ready,
	       size_t *pending)
{
	return kvt_lookup_where(c, ns, keys, n, ready, pending, NULL);
}

/* Gives up the reservations of a Reserve whose pages could not be mapped,
 * so that they do not block other writers until the session ends; the
 * first error's message stays. */
static void abort_reserved(kvt_client *c, const struct kvt_namespace *ns,
			   const struct kvt_key *keys,
			   const Kvtier__V1__ReserveState *states,
			   struct kvt_slot *slots, size_t n)
{
	struct kvt_key *held = malloc(sizeof(*held) * (n ? n : 1));
	char why[sizeof(c->errmsg)];
	size_t k = 0;

	memcpy(why, c->errmsg, sizeof(why));
	for (size_t i = 0; i < n; i++) {
		if (states[i] == KVTIER__V1__RESERVE_STATE__RESERVE_STATE_RESERVED && held)
			held[k++] = keys[i];
		slots[i].state = (enum kvt_slot_state)states[i];
		slots[i].page = NULL;
	}
	if (k)
		kvt_abort(c, ns, held, k);
	free(held);
	memcpy(c->errmsg, why, sizeof(why));
}

int kvt_reserve(kvt_client *c, const struct kvt_namespace *ns,
		const struct kvt_key *parent, const struct kvt_key *keys,
		size_t n, const struct kvt_retention *retention,
		struct kvt_slot *slots)
{
	Kvtier__V1__ReserveRequest req = KVTIER__V1__RESERVE_REQUEST__INIT;
	Kvtier__V1__ReserveResponse *resp;
	Kvtier__V1__Retention ret;
	int rc;

	if (!c->attached)
		return fail(c, -ENOTCONN, "Reserve needs a session: call kvt_attach first");
	req.session = session_bytes(c);
	req.namespace_id = ns->id;
	req.parent = key_bytes(parent);
	req.retention = retention_msg(retention, &ret);
	req.packed_keys = packed_keys(keys, n);
	req.packed_locations = true;
	rc = call(c, M_RESERVE, &req, &kvtier__v1__reserve_response__descriptor,
		  (void **)&resp);
	if (rc < 0)
		return rc;
	if (resp->n_states != n) {
		rc = fail(c, -EIO, "Reserve: reply has %zu states for %zu keys",
			  resp->n_states, n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct wire_location l = { 0 };

		slots[i].state = (enum kvt_slot_state)resp->states[i];
		slots[i].page = NULL;
		if (slots[i].state != KVT_SLOT_RESERVED)
			continue;
		rc = location_at(c, &resp->packed_locations, n, i, &l);
		if (rc == 0)
			rc = slot_ptr(c, l.segment, l.generation, l.offset, &slots[i].page);
		if (rc < 0)
			break;
	}
	if (rc < 0)
		abort_reserved(c, ns, keys, resp->states, slots, n);
out:
	FREE_MSG(resp);
	return rc;
}

/* Commit and Abort: same request shape, empty reply. */
static int owned_keys(kvt_client *c, enum method m,
		      const ProtobufCMessageDescriptor *req_desc,
		      const ProtobufCMessageDescriptor *resp_desc,
		      const struct kvt_namespace *ns, const struct kvt_key *keys,
		      size_t n)
{
	/* CommitRequest and AbortRequest have the same fields in the same order. */
	Kvtier__V1__CommitRequest req = KVTIER__V1__COMMIT_REQUEST__INIT;
	ProtobufCMessage *resp;
	int rc;

	if (!c->attached)
		return fail(c, -ENOTCONN, "%s needs a session: call kvt_attach first",
			    method_paths[m] + 18);
	req.base.descriptor = req_desc;
	req.session = session_bytes(c);
	req.namespace_id = ns->id;
	req.packed_keys = packed_keys(keys, n);
	rc = call(c, m, &req, resp_desc, (void **)&resp);
	if (rc == 0)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

int kvt_commit(kvt_client *c, const struct kvt_namespace *ns,
	       const struct kvt_key *keys, size_t n)
{
	return owned_keys(c, M_COMMIT, &kvtier__v1__commit_request__descriptor,
			  &kvtier__v1__commit_response__descriptor, ns, keys, n);
}

int kvt_abort(kvt_client *c, const struct kvt_namespace *ns,
	      const struct kvt_key *keys, size_t n)
{
	return owned_keys(c, M_ABORT, &kvtier__v1__abort_request__descriptor,
			  &kvtier__v1__abort_response__descriptor, ns, keys, n);
}

int kvt_acquire(kvt_client *c, const struct kvt_namespace *ns,
		const struct kvt_key *keys, size_t n, unsigned wait_ms,
		struct kvt_lease *lease)
{
	Kvtier__V1__AcquireRequest req = KVTIER__V1__ACQUIRE_REQUEST__INIT;
	Kvtier__V1__AcquireResponse *resp;
	int rc;

	memset(lease, 0, sizeof(*lease));
	if (!c->attached)
		return fail(c, -ENOTCONN, "Acquire needs a session: call kvt_attach first");
	req.session = session_bytes(c);
	req.namespace_id = ns->id;
	req.packed_keys = packed_keys(keys, n);
	req.wait_ms = wait_ms;
	req.packed_locations = true;
	rc = call_waiting(c, M_ACQUIRE, &req,
			  &kvtier__v1__acquire_response__descriptor,
			  (void **)&resp, wait_ms);
	if (rc < 0)
		return rc;
	lease->id = resp->lease;
	lease->count = resp->blocks;
	if (resp->packed_locations.len != (size_t)resp->blocks * PACKED_LOCATION_BYTES) {
		rc = fail(c, -EIO, "Acquire: reply has %zu bytes of locations for %u blocks",
			  resp->packed_locations.len, resp->blocks);
		goto out_release;
	}
	/* One allocation: the pointers, then the hbm flags. */
	lease->pages = calloc(resp->blocks + 1, sizeof(*lease->pages) + 1);
	if (!lease->pages) {
		rc = fail(c, -ENOMEM, "out of memory");
		goto out_release;
	}
	lease->hbm = (const unsigned char *)(lease->pages + resp->blocks + 1);
	for (size_t i = 0; i < resp->blocks; i++) {
		struct wire_location l = { 0 };

		rc = location_at(c, &resp->packed_locations, resp->blocks, i, &l);
		if (rc == 0)
			rc = page_ptr(c, &l, (void **)&lease->pages[i]);
		if (rc < 0)
			goto out_release;
		((unsigned char *)lease->hbm)[i] = l.tier == KVTIER__V1__TIER__TIER_HBM;
	}
	FREE_MSG(resp);
	return 0;

out_release:
	FREE_MSG(resp);
	{
		char why[sizeof(c->errmsg)];

		/* Keep the first error's message over the release's. */
		memcpy(why, c->errmsg, sizeof(why));
		kvt_release(c, lease);
		memcpy(c->errmsg, why, sizeof(why));
	}
	return rc;
}

int kvt_release(kvt_client *c, struct kvt_lease *lease)
{
	Kvtier__V1__ReleaseRequest req = KVTIER__V1__RELEASE_REQUEST__INIT;
	Kvtier__V1__ReleaseResponse *resp;
	int rc = 0;

	if (lease->id) {
		req.session = session_bytes(c);
		req.lease = lease->id;
		rc = call(c, M_RELEASE, &req, &kvtier__v1__release_response__descriptor,
			  (void **)&resp);
		if (rc == 0)
			FREE_MSG(resp);
	}
	free(lease->pages);
	memset(lease, 0, sizeof(*lease));
	return rc;
}

int kvt_put(kvt_client *c, const struct kvt_namespace *ns,
	    const struct kvt_key *parent, const struct kvt_key *keys,
	    const void *const *pages, size_t n,
	    const struct kvt_retention *retention, size_t *stored)
{
	Kvtier__V1__PutRequest req = KVTIER__V1__PUT_REQUEST__INIT;
	Kvtier__V1__PutResponse *resp;
	Kvtier__V1__Retention ret;
	int rc;

	req.namespace_id = ns->id;
	req.parent = key_bytes(parent);
	req.retention = retention_msg(retention, &ret);
	req.packed_keys = packed_keys(keys, n);
	req.pages = malloc(sizeof(*req.pages) * (n ? n : 1));
	req.n_pages = n;
	if (!req.pages)
		return fail(c, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		req.pages[i].data = (uint8_t *)pages[i];
		req.pages[i].len = ns->page_bytes;
	}
	rc = call(c, M_PUT, &req, &kvtier__v1__put_response__descriptor,
		  (void **)&resp);
	free(req.pages);
	if (rc < 0)
		return rc;
	if (stored)
		*stored = resp->stored;
	FREE_MSG(resp);
	return 0;
}

int kvt_get(kvt_client *c, const struct kvt_namespace *ns,
	    const struct kvt_key *keys, size_t n, void *const *dst, size_t *got)
{
	Kvtier__V1__GetRequest req = KVTIER__V1__GET_REQUEST__INIT;
	Kvtier__V1__GetResponse *resp;
	size_t done = 0;
	int rc = 0;

	req.namespace_id = ns->id;
	/* A reply holds what fits in one message: ask again for the rest. */
	while (done < n) {
		req.packed_keys = packed_keys(keys + done, n - done);
		rc = call(c, M_GET, &req, &kvtier__v1__get_response__descriptor,
			  (void **)&resp);
		if (rc < 0)
			break;
		for (size_t i = 0; i < resp->n_pages && done + i < n; i++) {
			if (resp->pages[i].len != ns->page_bytes) {
				rc = fail(c, -EIO, "Get: page of %zu bytes, expected %llu",
					  resp->pages[i].len,
					  (unsigned long long)ns->page_bytes);
				break;
			}
			memcpy(dst[done + i], resp->pages[i].data, ns->page_bytes);
		}
		done += rc < 0 ? 0 : resp->n_pages;
		if (rc < 0 || resp->n_pages == 0 || resp->ready_blocks <= resp->n_pages) {
			FREE_MSG(resp);
			break;
		}
		FREE_MSG(resp);
	}
	*got = done;
	return rc;
}

/* Drop and its scopes share one reply. */
static int drop_call(kvt_client *c, Kvtier__V1__DropRequest *req,
		     size_t *dropped)
{
	Kvtier__V1__DropResponse *resp;
	int rc = call(c, M_DROP, req, &kvtier__v1__drop_response__descriptor,
		      (void **)&resp);

	if (rc < 0)
		return rc;
	if (dropped)
		*dropped = resp->dropped;
	FREE_MSG(resp);
	return 0;
}

int kvt_drop(kvt_client *c, const struct kvt_namespace *ns,
	     const struct kvt_key *keys, size_t n, size_t *dropped)
{
	Kvtier__V1__DropRequest req = KVTIER__V1__DROP_REQUEST__INIT;

	req.namespace_id = ns->id;
	req.scope = n ? KVTIER__V1__DROP_SCOPE__DROP_SCOPE_KEYS :
			KVTIER__V1__DROP_SCOPE__DROP_SCOPE_NAMESPACE;
	req.packed_keys = packed_keys(keys, n);
	return drop_call(c, &req, dropped);
}

int kvt_drop_tenant(kvt_client *c, const char *tenant, size_t *dropped)
{
	Kvtier__V1__DropRequest req = KVTIER__V1__DROP_REQUEST__INIT;

	req.scope = KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT;
	req.tenant = (char *)(tenant ? tenant : "");
	return drop_call(c, &req, dropped);
}

int kvt_drop_namespace(kvt_client *c, uint32_t namespace_id, size_t *dropped,
		       size_t *pending)
{
	Kvtier__V1__DropNamespaceRequest req =
		KVTIER__V1__DROP_NAMESPACE_REQUEST__INIT;
	Kvtier__V1__DropNamespaceResponse *resp;
	int rc;

	req.namespace_id = namespace_id;
	rc = call(c, M_DROP_NAMESPACE, &req,
		  &kvtier__v1__drop_namespace_response__descriptor,
		  (void **)&resp);
	if (rc < 0)
		return rc;
	if (dropped)
		*dropped = resp->dropped;
	if (pending)
		*pending = resp->pending;
	FREE_MSG(resp);
	return 0;
}

/*
 * ---- stats: walk the reply by its descriptor, so new fields show up ----
 * One walk, two writers: kvt_stats' dotted names with values as text, and
 * kvt_stats_json's nested JSON.
 */

enum stat_type { STAT_NUMBER, STAT_BOOL, STAT_TEXT };

struct stat_writer {
	/* A value: its dotted name, its key in the object around it (NULL in
	 * a list), its type and text. */
	void (*value)(struct stat_writer *w, const char *path, const char *key,
		      enum stat_type type, const char *text);
	/* An object (list false) or a list opens under key, and closes. */
	void (*open)(struct stat_writer *w, const char *key, bool list);
	void (*close)(struct stat_writer *w, bool list);
};

static void walk_message(const ProtobufCMessage *m, const char *path,
			 struct stat_writer *w);

/* The q-quantile of h in seconds, interpolated within its bucket as
 * Prometheus' histogram_quantile does; the +Inf bucket gives its lower bound. */
static double quantile(const Kvtier__V1__Histogram *h, double q)
{
	double rank = q * (double)h->count, seen = 0;

	if (!h->count)
		return 0;

	for (size_t i = 0; i < h->n_counts; i++) {
		double lo = i ? h->upper_bounds[i - 1] : 0;

		if (i >= h->n_upper_bounds)
			return lo;
		if (seen + (double)h->counts[i] >= rank && h->counts[i])
			return lo + (h->upper_bounds[i] - lo) *
				    (rank - seen) / (double)h->counts[i];
		seen += (double)h->counts[i];
	}
	return 0;
}

/* A histogram reads as its count, sum and estimated p50 and p99. */
static void walk_histogram(const Kvtier__V1__Histogram *h, const char *path,
			   const char *key, struct stat_writer *w)
{
	static const char *const keys[] = { "count", "sum_seconds",
					    "p50_seconds", "p99_seconds" };
	const double v[] = { (double)h->count, h->sum, quantile(h, 0.5),
			     quantile(h, 0.99) };
	char full[300], text[64];

	w->open(w, key, false);
	for (size_t i = 0; i < 4; i++) {
		snprintf(full, sizeof(full), "%s.%s", path, keys[i]);
		snprintf(text, sizeof(text), i ? "%.6g" : "%.0f", v[i]);
		w->value(w, full, keys[i], STAT_NUMBER, text);
	}
	w->close(w, false);
}

/* One field that is not repeated, at p. */
static void walk_field(const ProtobufCFieldDescriptor *f, const void *p,
		       const char *path, const char *key, struct stat_writer *w)
{
	char v[64];

	switch (f->type) {
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_ENUM:
		snprintf(v, sizeof(v), "%u", *(const uint32_t *)p);
		w->value(w, path, key, STAT_NUMBER, v);
		break;
	case PROTOBUF_C_TYPE_UINT64:
		snprintf(v, sizeof(v), "%llu",
			 (unsigned long long)*(const uint64_t *)p);
		w->value(w, path, key, STAT_NUMBER, v);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		w->value(w, path, key, STAT_BOOL,
			 *(const protobuf_c_boolean *)p ? "true" : "false");
		break;
	case PROTOBUF_C_TYPE_STRING:
		w->value(w, path, key, STAT_TEXT,
			 *(char *const *)p ? *(char *const *)p : "");
		break;
	case PROTOBUF_C_TYPE_MESSAGE:
		if (!*(ProtobufCMessage *const *)p)
			break;
		if (f->descriptor == &kvtier__v1__histogram__descriptor) {
			walk_histogram(*(Kvtier__V1__Histogram *const *)p, path, key, w);
		} else {
			w->open(w, key, false);
			walk_message(*(ProtobufCMessage *const *)p, path, w);
			w->close(w, false);
		}
		break;
	default:
		break;
	}
}

/* The string value of field f of m. */
static const char *text_field(const ProtobufCMessage *m,
			      const ProtobufCFieldDescriptor *f)
{
	return *(char *const *)((const char *)m + f->offset);
}

/* A repeated message field: a map<string, X> is an object by key; a list's
 * elements are named, in dotted names, by their first field when it is a
 * string ("rpcs.Lookup"), else by their index. */
static void walk_repeated(const ProtobufCFieldDescriptor *f,
			  const ProtobufCMessage *const *elems, size_t n,
			  const char *path, struct stat_writer *w)
{
	const ProtobufCMessageDescriptor *d = f->descriptor;
	const ProtobufCFieldDescriptor *f0 = &d->fields[0];
	bool map = d->n_fields == 2 && strcmp(f0->name, "key") == 0;
	bool labelled = f0->type == PROTOBUF_C_TYPE_STRING &&
			f0->label != PROTOBUF_C_LABEL_REPEATED;
	char elem[300];

	w->open(w, f->name, !map);
	for (size_t k = 0; k < n; k++) {
		const ProtobufCMessage *e = elems[k];

		if (map || labelled)
			snprintf(elem, sizeof(elem), "%s.%s", path, text_field(e, f0));
		else
			snprintf(elem, sizeof(elem), "%s.%zu", path, k);
		if (map) {
			walk_field(&d->fields[1], (const char *)e + d->fields[1].offset,
				   elem, text_field(e, f0), w);
		} else {
			w->open(w, NULL, false);
			walk_message(e, elem, w);
			w->close(w, false);
		}
	}
	w->close(w, !map);
}

static void walk_message(const ProtobufCMessage *m, const char *path,
			 struct stat_writer *w)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	char name[256];

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *p = (const char *)m + f->offset;

		snprintf(name, sizeof(name), "%s%s%s", path, *path ? "." : "",
			 f->name);
		if (f->label != PROTOBUF_C_LABEL_REPEATED)
			walk_field(f, p, name, f->name, w);
		else if (f->type == PROTOBUF_C_TYPE_MESSAGE)
			walk_repeated(f, *(const ProtobufCMessage *const *const *)p,
				      *(const size_t *)((const char *)m + f->quantifier_offset),
				      name, w);
	}
}

static int read_stats(kvt_client *c, struct stat_writer *w)
{
	Kvtier__V1__StatsRequest req = KVTIER__V1__STATS_REQUEST__INIT;
	Kvtier__V1__StatsResponse *resp;
	int rc;

	rc = call(c, M_STATS, &req, &kvtier__v1__stats_response__descriptor,
		  (void **)&resp);
	if (rc < 0)
		return rc;
	w->open(w, NULL, false);
	walk_message(&resp->base, "", w);
	w->close(w, false);
	FREE_MSG(resp);
	return 0;
}

/* kvt_stats: each value to the caller's callback, by its dotted name. */
struct stat_flat {
	struct stat_writer w;
	void (*fn)(void *arg, const char *name, const char *value);
	void *arg;
};

static void flat_value(struct stat_writer *w, const char *path, const char *key,
		       enum stat_type type, const char *text)
{
	struct stat_flat *f = (struct stat_flat *)w;

	(void)key;
	(void)type;
	f->fn(f->arg, path, text);
}

static void flat_open(struct stat_writer *w, const char *key, bool list)
{
	(void)w;
	(void)key;
	(void)list;
}

static void flat_close(struct stat_writer *w, bool list)
{
	(void)w;
	(void)list;
}

int kvt_stats(kvt_client *c,
	      void (*fn)(void *arg, const char *name, const char *value),
	      void *arg)
{
	struct stat_flat f = { { flat_value, flat_open, flat_close }, fn, arg };

	return read_stats(c, &f.w);
}

/* kvt_stats_json: the same walk, written as JSON into a memory stream. */
struct stat_json {
	struct stat_writer w;
	FILE *out;
	bool first; /* nothing written yet in the object or list open now */
};

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(out, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(out, "\\u%04x", *s);
		else
			fputc(*s, out);
	}
	fputc('"', out);
}

/* A comma unless first, then the key unless in a list. */
static void json_key(struct stat_json *j, const char *key)
{
	if (!j->first)
		fputc(',', j->out);
	j->first = false;
	if (key) {
		json_string(j->out, key);
		fputc(':', j->out);
	}
}

static void json_value(struct stat_writer *w, const char *path, const char *key,
		       enum stat_type type, const char *text)
{
	struct stat_json *j = (struct stat_json *)w;

	(void)path;
	json_key(j, key);
	if (type == STAT_TEXT)
		json_string(j->out, text);
	else
		fputs(text, j->out);
}

static void json_open(struct stat_writer *w, const char *key, bool list)
{
	struct stat_json *j = (struct stat_json *)w;

	json_key(j, key);
	fputc(list ? '[' : '{', j->out);
	j->first = true;
}

static void json_close(struct stat_writer *w, bool list)
{
	struct stat_json *j = (struct stat_json *)w;

	fputc(list ? ']' : '}', j->out);
	j->first = false;
}

int kvt_stats_json(kvt_client *c, char **json)
{
	struct stat_json j = { { json_value, json_open, json_close }, NULL, true };
	size_t len;
	int rc;

	*json = NULL;
	if (!(j.out = open_memstream(json, &len)))
		return -ENOMEM;
	rc = read_stats(c, &j.w);
	if (fclose(j.out) != 0 && rc == 0)
		rc = -ENOMEM;
	if (rc < 0) {
		free(*json);
		*json = NULL;
	}
	return rc;
}

int kvt_get_config(kvt_client *c, void (*fn)(void *arg, const struct kvt_knob *k),
		   void *arg, struct kvt_config_info *info)
{
	Kvtier__V1__GetConfigRequest req = KVTIER__V1__GET_CONFIG_REQUEST__INIT;
	Kvtier__V1__GetConfigResponse *resp;
	int rc;

	rc = call(c, M_GET_CONFIG, &req, &kvtier__v1__get_config_response__descriptor,
		  (void **)&resp);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < resp->n_knobs; i++) {
		const Kvtier__V1__ConfigKnob *m = resp->knobs[i];
		struct kvt_knob k = { m->section, m->name, m->value, m->source,
				      m->pending, m->help, m->live };

		fn(arg, &k);
	}
	if (info) {
		snprintf(info->file, sizeof(info->file), "%s", resp->file);
		info->reloads_total = resp->reloads_total;
		info->reload_failures_total = resp->reload_failures_total;
		info->last_reload_ok = resp->last_reload_ok;
		info->last_reload_unix = resp->last_reload_unix;
		snprintf(info->last_reload_error, sizeof(info->last_reload_error),
			 "%s", resp->last_reload_error);
	}
	FREE_MSG(resp);
	return 0;
}

/*
 * Every kind of bad input gets its named status and a message that names
 * the problem, is counted in stats, and the daemon keeps serving: another
 * client's blocks are intact afterwards. All of it twice: over gRPC, and
 * over the fast lane (lane.h) for the calls the lane carries, raw ones
 * included.
 */
#include <errno.h>
#include <sys/wait.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <string.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"
#include "kvtier.pb-c.h"
#include "kvtier/v1/lane.h"
#include "lane.h"

#define PAGE 4096

/* The lane pass's raw lane (its own session's): raw calls to the methods
 * the lane carries go through it. NULL: the gRPC pass. */
static struct kvt_lane *raw_lane;

static uint32_t lane_method_of(const char *path)
{
	static const char *const names[] = { NULL, "Lookup", "Reserve", "Commit",
					     "Abort", "Acquire", "Release" };
	const char *prefix = "/kvtier.v1.KvTier/";

	if (strncmp(path, prefix, strlen(prefix)) != 0)
		return 0;
	for (uint32_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(path + strlen(prefix), names[i]) == 0)
			return i;
	return 0;
}

/* raw_exchange over the raw lane. */
static grpc_status_code lane_exchange(uint32_t method, const void *bytes,
				      size_t len, char *buf, size_t buflen,
				      grpc_slice *reply)
{
	size_t cap, reply_len = 0;
	uint8_t *req = kvt_lane_request(raw_lane, &cap);
	const uint8_t *rep = NULL;
	int rc;

	CHECK(len <= cap);
	memcpy(req, bytes, len);
	buf[0] = '\0';
	rc = kvt_lane_call(raw_lane, method, len, 100, 5000, &rep, &reply_len, buf,
			   buflen);
	CHECK(rc >= 0);
	if (reply)
		*reply = rc == 0 ? grpc_slice_from_copied_buffer((const char *)rep, reply_len) :
				   grpc_empty_slice();
	return (grpc_status_code)rc;
}

/* raw_exchange over gRPC. */
static grpc_status_code grpc_exchange(const char *addr, const char *method,
				      const void *bytes, size_t len, char *buf,
				      size_t buflen, grpc_slice *reply)
{
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(addr, creds, NULL);
	grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_slice m = grpc_slice_from_static_string(method);
	grpc_call *call = grpc_channel_create_call(
		ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
		gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
			     gpr_time_from_seconds(10, GPR_TIMESPAN)),
		NULL);
	grpc_slice body = grpc_slice_from_copied_buffer(bytes, len);
	grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1), *recv = NULL;
	grpc_metadata_array md, tr;
	grpc_status_code status;
	grpc_slice details;
	grpc_op ops[6];

	grpc_metadata_array_init(&md);
	grpc_metadata_array_init(&tr);
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
	ops[5].data.recv_status_on_client.trailing_metadata = &tr;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	CHECK(grpc_call_start_batch(call, ops, 6, ops, NULL) == GRPC_CALL_OK);
	CHECK(grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME),
					  NULL).type == GRPC_OP_COMPLETE);
	snprintf(buf, buflen, "%.*s", (int)GRPC_SLICE_LENGTH(details),
		 (const char *)GRPC_SLICE_START_PTR(details));
	grpc_slice_unref(details);
	grpc_slice_unref(body);
	if (reply)
		*reply = grpc_empty_slice();
	if (recv && reply) {
		grpc_byte_buffer_reader reader;

		CHECK(grpc_byte_buffer_reader_init(&reader, recv));
		*reply = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
	}
	if (recv)
		grpc_byte_buffer_destroy(recv);
	grpc_byte_buffer_destroy(send);
	grpc_metadata_array_destroy(&md);
	grpc_metadata_array_destroy(&tr);
	grpc_call_unref(call);
	grpc_channel_destroy(ch);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME),
					   NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	grpc_channel_credentials_release(creds);
	return status;
}

/* Sends raw bytes to a method; returns the status, details in buf, and
 * with reply the reply's bytes (a slice to unref; empty: none). */
static grpc_status_code raw_exchange(const char *addr, const char *method,
				     const void *bytes, size_t len, char *buf,
				     size_t buflen, grpc_slice *reply)
{
	if (raw_lane && lane_method_of(method))
		return lane_exchange(lane_method_of(method), bytes, len, buf, buflen,
				     reply);
	return grpc_exchange(addr, method, bytes, len, buf, buflen, reply);
}

static grpc_status_code raw_call(const char *addr, const char *method,
				 const void *bytes, size_t len, char *buf,
				 size_t buflen)
{
	return raw_exchange(addr, method, bytes, len, buf, buflen, NULL);
}

static grpc_status_code raw_message(const char *addr, const char *method,
				    const ProtobufCMessage *m, char *buf,
				    size_t buflen)
{
	uint8_t packed[4096];
	size_t len = protobuf_c_message_pack(m, packed);

	return raw_call(addr, method, packed, len, buf, buflen);
}

/* m is refused as INVALID_ARGUMENT with a message naming why. */
static void refused(const char *addr, const char *method,
		    const ProtobufCMessage *m, const char *why)
{
	char msg[512];

	CHECK(raw_message(addr, method, m, msg, sizeof(msg)) ==
	      GRPC_STATUS_INVALID_ARGUMENT);
	CHECK(strstr(msg, why));
}

#define EXPECT_MSG(c, expr, want, text)                                  \
	do {                                                               \
		CHECK_RC(c, expr, want);                                   \
		if (!strstr(kvt_errmsg(c), text)) {                        \
			fprintf(stderr, "%s:%d: message '%s' lacks '%s'\n", \
				__FILE__, __LINE__, kvt_errmsg(c), text);  \
			exit(1);                                           \
		}                                                          \
	} while (0)

struct error_count {
	long invalid, not_found, precondition, exhausted, unimplemented;
};

static void count_errors(void *arg, const char *name, const char *value)
{
	struct error_count *e = arg;

	if (strcmp(name, "rpc_status_errors_total.INVALID_ARGUMENT") == 0)
		e->invalid = atol(value);
	else if (strcmp(name, "rpc_status_errors_total.NOT_FOUND") == 0)
		e->not_found = atol(value);
	else if (strcmp(name, "rpc_status_errors_total.FAILED_PRECONDITION") == 0)
		e->precondition = atol(value);
	else if (strcmp(name, "rpc_status_errors_total.RESOURCE_EXHAUSTED") == 0)
		e->exhausted = atol(value);
	else if (strcmp(name, "rpc_status_errors_total.UNIMPLEMENTED") == 0)
		e->unimplemented = atol(value);
}

/* Reserve's locations as other languages' stubs read them: a reserved
 * slot is in the host tier (TIER_HOST), as Acquire's are. libkvtier reads
 * anything but TIER_HBM as host, so only the raw reply shows it. */
static void reserve_location_tier(const char *addr, kvt_client *c,
				  const struct kvt_namespace *ns)
{
	Kvtier__V1__ReserveRequest q = KVTIER__V1__RESERVE_REQUEST__INIT;
	Kvtier__V1__ReserveResponse *p;
	struct kvt_key key;
	ProtobufCBinaryData k = { 16, key.bytes };
	uint8_t token[16], packed[256];
	grpc_slice reply;
	char msg[512];

	test_fill(key.bytes, 16, 4040);
	kvt_session_token(c, token);
	q.session.data = token;
	q.session.len = sizeof(token);
	q.namespace_id = ns->id;
	q.keys = &k;
	q.n_keys = 1;
	CHECK(raw_exchange(addr, "/kvtier.v1.KvTier/Reserve", packed,
			   protobuf_c_message_pack(&q.base, packed), msg, sizeof(msg),
			   &reply) == GRPC_STATUS_OK);
	p = kvtier__v1__reserve_response__unpack(NULL, GRPC_SLICE_LENGTH(reply),
						 GRPC_SLICE_START_PTR(reply));
	CHECK(p && p->n_states == 1 && p->n_locations == 1);
	CHECK(p->states[0] == KVTIER__V1__RESERVE_STATE__RESERVE_STATE_RESERVED);
	if (p->locations[0]->tier != KVTIER__V1__TIER__TIER_HOST) {
		fprintf(stderr, "Reserve: a reserved slot's location has tier %d, want TIER_HOST\n",
			(int)p->locations[0]->tier);
		exit(1);
	}
	kvtier__v1__reserve_response__free_unpacked(p, NULL);
	grpc_slice_unref(reply);
	CHECK_RC(c, kvt_abort(c, ns, &key, 1), 0);

	/* Asked for packed_locations: the same location as one 24-byte
	 * little-endian record (kvtier.proto's PackedLocation), no messages. */
	q.packed_locations = true;
	CHECK(raw_exchange(addr, "/kvtier.v1.KvTier/Reserve", packed,
			   protobuf_c_message_pack(&q.base, packed), msg, sizeof(msg),
			   &reply) == GRPC_STATUS_OK);
	p = kvtier__v1__reserve_response__unpack(NULL, GRPC_SLICE_LENGTH(reply),
						 GRPC_SLICE_START_PTR(reply));
	CHECK(p && p->n_states == 1 && p->n_locations == 0);
	CHECK(p->packed_locations.len == 24);
	CHECK(p->packed_locations.data[0] == KVTIER__V1__TIER__TIER_HOST &&
	      p->packed_locations.data[1] == 0 && p->packed_locations.data[12] == 0);
	kvtier__v1__reserve_response__free_unpacked(p, NULL);
	grpc_slice_unref(reply);
	CHECK_RC(c, kvt_abort(c, ns, &key, 1), 0);
}

/* packed_keys (what libkvtier sends): 16 bytes a key, or refused; not
 * together with keys; not where no keys belong. */
static void packed_keys(const char *addr, const struct kvt_namespace *ns)
{
	Kvtier__V1__LookupRequest q = KVTIER__V1__LOOKUP_REQUEST__INIT;
	Kvtier__V1__DropRequest dq = KVTIER__V1__DROP_REQUEST__INIT;
	uint8_t keys[33];
	ProtobufCBinaryData k = { 16, keys };
	char msg[512];

	test_fill(keys, sizeof(keys), 77);
	q.namespace_id = ns->id;
	q.packed_keys = (ProtobufCBinaryData){ 17, keys };
	refused(addr, "/kvtier.v1.KvTier/Lookup", &q.base,
		"packed_keys is 17 bytes, not a multiple of 16");
	q.packed_keys.len = 32;
	q.keys = &k;
	q.n_keys = 1;
	refused(addr, "/kvtier.v1.KvTier/Lookup", &q.base,
		"both keys and packed_keys are given");
	q.keys = NULL;
	q.n_keys = 0;
	CHECK(raw_message(addr, "/kvtier.v1.KvTier/Lookup", &q.base, msg, sizeof(msg)) ==
	      GRPC_STATUS_OK);
	dq.namespace_id = ns->id;
	dq.scope = KVTIER__V1__DROP_SCOPE__DROP_SCOPE_NAMESPACE;
	dq.packed_keys = (ProtobufCBinaryData){ 16, keys };
	refused(addr, "/kvtier.v1.KvTier/Drop", &dq.base, "keys are only for DROP_SCOPE_KEYS");
}

/* kvtierd -c FILE with text in FILE: exits 2 before it starts anything, and
 * says FILE:LINE: want. */
static void broken_config(const char *text, int line, const char *want)
{
	char path[] = "/tmp/kvtier-bad-XXXXXX", cmd[512], out[1024] = "", where[64];
	int fd = mkstemp(path), status;
	size_t n = strlen(text);
	FILE *p;

	CHECK(fd >= 0);
	CHECK(write(fd, text, n) == (ssize_t)n);
	close(fd);
	/* A run dir of its own: a daemon that wrongly starts fails the test,
	 * not another's. */
	snprintf(cmd, sizeof(cmd), "%s -c %s --set daemon.run_dir=%s.run 2>&1",
		 getenv("KVTIERD"), path, path);
	p = popen(cmd, "r");
	CHECK(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	status = pclose(p);
	snprintf(where, sizeof(where), "%s:%d: ", path, line);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 ||
	    !strstr(out, "kvtierd: configuration error: ") || !strstr(out, where) ||
	    !strstr(out, want)) {
		fprintf(stderr, "kvtierd -c '%s': status %d, said '%s'; want exit 2 and '%s%s'\n",
			text, status, out, where, want);
		exit(1);
	}
	unlink(path);
	snprintf(cmd, sizeof(cmd), "rm -rf %s.run", path);
	CHECK(system(cmd) == 0);
}

/* Over TCP no segment can be mapped: Reserve says so and gives up the
 * reservations it got, instead of leaving them PENDING until the session
 * ends. */
static void reserve_over_tcp(void)
{
	const char *sets[] = { "daemon.tcp=127.0.0.1:0", NULL };
	struct test_daemon d;
	struct kvt_namespace ns;
	struct kvt_key keys[2];
	struct kvt_slot slots[2];
	char addr[64];
	size_t ready, pending;
	const char *tcp;
	kvt_client *c;

	test_daemon_start(&d, sets);
	tcp = strstr(d.said, " 127.0.0.1:");
	CHECK(tcp && sscanf(tcp + 1, "%63s", addr) == 1);
	for (int i = 0; i < 2; i++)
		test_fill(keys[i].bytes, 16, 900u + (unsigned)i);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "tcp-worker"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "tcp-ns", 4096, 16, 0, &ns), 0);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, 2, NULL, slots), -EOPNOTSUPP);
	CHECK(strstr(kvt_errmsg(c), "cannot be mapped over TCP"));
	CHECK(slots[0].page == NULL && slots[1].page == NULL);
	CHECK_RC(c, kvt_lookup(c, &ns, keys, 2, &ready, &pending), 0);
	CHECK(ready == 0 && pending == 0);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
}

/* The lane pass's own checks: what only a raw lane can send. */
static void lane_only(void)
{
	size_t cap, reply_len;
	const uint8_t *rep;
	char msg[512];

	kvt_lane_request(raw_lane, &cap);
	CHECK(kvt_lane_call(raw_lane, KVT_LANE_LOOKUP, cap + 1, 100, 5000, &rep,
			    &reply_len, msg, sizeof(msg)) == GRPC_STATUS_INVALID_ARGUMENT);
	CHECK(strstr(msg, "exceeds the lane's request_capacity"));
	CHECK(kvt_lane_call(raw_lane, 99, 0, 100, 5000, &rep, &reply_len, msg,
			    sizeof(msg)) == GRPC_STATUS_UNIMPLEMENTED);
	CHECK(strstr(msg, "fast lane method 99 is not one of"));
}

/* Everything against one daemon, the hot calls over the lane or not. */
static void bad_input(bool lane)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=64K", "host.segment_size=16K",
			       "limits.max_keys_per_request=8",
			       "limits.max_message_size=64K", NULL };
	struct kvt_key keys[9], held[4];
	struct kvt_namespace ns, wrong;
	struct kvt_slot slots[4];
	struct kvt_lease lease = { .id = 4242 };
	struct error_count errs = { 0 };
	struct kvt_lease pins[16];
	int npins = 0;
	kvt_client *c, *other;
	uint8_t page[PAGE], back[PAGE];
	const void *pages[4];
	void *dst[1] = { back };
	char msg[512];
	size_t ready, n;

	kvt_client *rawc = NULL;

	test_daemon_start(&d, sets);
	for (int i = 0; i < 9; i++)
		test_fill(keys[i].bytes, 16, (unsigned)i);
	for (int i = 0; i < 4; i++) {
		test_fill(held[i].bytes, 16, 100u + (unsigned)i);
		pages[i] = page;
	}
	test_fill(page, PAGE, 7);

	/* Another client's data, checked at the end. */
	CHECK(kvt_connect(d.addr, &other) == 0);
	CHECK_RC(other, kvt_open_namespace(other, "ns", PAGE, 16, 0, &ns), 0);
	CHECK_RC(other, kvt_put(other, &ns, NULL, held, pages, 2, NULL, &n), 0);
	CHECK(n == 2);

	CHECK(kvt_connect(d.addr, &c) == 0);
	kvt_set_fast_lane(c, lane);
	CHECK_RC(c, kvt_attach(c, "bad-input"), 0);
	CHECK(kvt_fast_lane(c, NULL) == lane);
	if (lane) {
		char path[160], err[256];
		uint8_t token[16];

		/* A session of its own: one lane per session. */
		CHECK(kvt_connect(d.addr, &rawc) == 0);
		kvt_set_fast_lane(rawc, 0);
		CHECK_RC(rawc, kvt_attach(rawc, "bad-input-raw"), 0);
		kvt_session_token(rawc, token);
		snprintf(path, sizeof(path), "%.150s%s", d.addr + strlen("unix:"),
			 KVT_SEGMENT_SOCKET_SUFFIX);
		if (kvt_lane_open(path, token, &raw_lane, err, sizeof(err)) < 0) {
			fprintf(stderr, "kvt_lane_open: %s\n", err);
			exit(1);
		}
		lane_only();
	}
	EXPECT_MSG(c, kvt_lookup(c, &ns, keys, 0, &ready, NULL), -EINVAL, "keys is empty");
	EXPECT_MSG(c, kvt_lookup(c, &ns, keys, 9, &ready, NULL), -EINVAL, "max_keys_per_request");
	wrong = ns;
	wrong.id = 99;
	EXPECT_MSG(c, kvt_lookup(c, &wrong, keys, 1, &ready, NULL), -ENOENT, "namespace_id 99");
	EXPECT_MSG(c, kvt_open_namespace(c, "ns", PAGE * 2, 16, 0, &wrong), -EPERM, "page_bytes");
	EXPECT_MSG(c, kvt_open_namespace(c, "no spaces", PAGE, 16, 0, &wrong), -EINVAL, "namespace name");
	EXPECT_MSG(c, kvt_commit(c, &ns, keys, 1), -EPERM, "not reserved by this session");
	EXPECT_MSG(c, kvt_abort(c, &ns, keys, 1), -EPERM, "not reserved by this session");
	EXPECT_MSG(c, kvt_release(c, &lease), -ENOENT, "lease 4242");
	wrong = ns;
	wrong.page_bytes = PAGE - 1;
	EXPECT_MSG(c, kvt_put(c, &wrong, NULL, keys, pages, 1, NULL, &n), -EINVAL, "pages[0] is 4095 bytes");
	EXPECT_MSG(c, kvt_put(c, &ns, NULL, keys, pages, 0, NULL, &n), -EINVAL, "keys is empty");
	{
		struct kvt_retention too_high = { 101, 0 };
		struct kvt_lease none;

		/* A duration whose deadline (now + it, in ns) wrapped fell back
		 * to the default priority at once: refused above 10 years. */
		struct kvt_retention too_long = { 50, UINT64_MAX / 1000000 - 1 };
		struct kvt_retention ten_years = { 50, 315360000000ull };

		EXPECT_MSG(c, kvt_put(c, &ns, NULL, keys, pages, 1, &too_high, &n), -EINVAL,
			   "retention.priority 101 is outside 0..100");
		EXPECT_MSG(c, kvt_put(c, &ns, NULL, keys, pages, 1, &too_long, &n), -EINVAL,
			   "retention.duration_ms 18446744073708 is above 315360000000 (10 years)");
		too_long.duration_ms = UINT64_MAX;
		EXPECT_MSG(c, kvt_reserve(c, &ns, NULL, keys, 1, &too_long, slots), -EINVAL,
			   "retention.duration_ms 18446744073709551615 is above");
		CHECK_RC(c, kvt_put(c, &ns, NULL, &keys[8], pages, 1, &ten_years, &n), 0);
		EXPECT_MSG(c, kvt_open_namespace(c, "ns2", PAGE, 16, 315360000001ull, &wrong),
			   -EINVAL, "idle_ttl_ms 315360000001 is above 315360000000");
		EXPECT_MSG(c, kvt_acquire(c, &ns, keys, 1, 3600 * 1000, &none), -EINVAL,
			   "exceeds max_wait");
		EXPECT_MSG(c, kvt_drop_tenant(c, "no-such-user-kvtier", &n), -EINVAL,
			   "neither a user name nor a uid");
	}

	reserve_location_tier(d.addr, c, &ns);
	packed_keys(d.addr, &ns);

	/* Fill the remaining slots with pins: Reserve has nowhere to go. */
	{
		CHECK_RC(c, kvt_put(c, &ns, NULL, &held[2], pages, 2, NULL, &n), 0);
		CHECK_RC(c, kvt_acquire(c, &ns, held, 4, 0, &pins[npins]), 0);
		CHECK(pins[npins++].count == 4);
		for (int i = 0; i < 3; i++) {
			CHECK_RC(c, kvt_put(c, &ns, NULL, &keys[i], pages, 1, NULL, &n), 0);
			CHECK_RC(c, kvt_acquire(c, &ns, &keys[i], 1, 0, &pins[npins++]), 0);
		}
		for (int i = 3; i < 9; i++) {
			CHECK_RC(c, kvt_put(c, &ns, NULL, &keys[i], pages, 1, NULL, &n), 0);
			CHECK_RC(c, kvt_acquire(c, &ns, &keys[i], 1, 0, &pins[npins++]), 0);
		}
		{
			struct kvt_key extra[4];

			for (int i = 0; i < 3; i++) { /* the last 3 slots */
				test_fill(extra[i].bytes, 16, 500u + (unsigned)i);
				CHECK_RC(c, kvt_put(c, &ns, NULL, &extra[i], pages, 1, NULL, &n), 0);
				CHECK_RC(c, kvt_acquire(c, &ns, &extra[i], 1, 0, &pins[npins++]), 0);
			}
			test_fill(extra[0].bytes, 16, 999);
			EXPECT_MSG(c, kvt_reserve(c, &ns, NULL, extra, 1, NULL, slots), -ENOSPC,
				   "host tier full");
			EXPECT_MSG(c, kvt_put(c, &ns, NULL, extra, pages, 1, NULL, &n), -ENOSPC,
				   "host tier full");
		}
	}

	/* What libkvtier cannot send: raw messages. */
	{
		Kvtier__V1__LookupRequest q = KVTIER__V1__LOOKUP_REQUEST__INIT;
		Kvtier__V1__AcquireRequest a = KVTIER__V1__ACQUIRE_REQUEST__INIT;
		ProtobufCBinaryData k = { 15, keys[0].bytes };
		static uint8_t big[80 * 1024];

		q.namespace_id = ns.id;
		q.keys = &k;
		q.n_keys = 1;
		CHECK(raw_message(d.addr, "/kvtier.v1.KvTier/Lookup", &q.base, msg,
				  sizeof(msg)) == GRPC_STATUS_INVALID_ARGUMENT);
		CHECK(strstr(msg, "keys[0] is 15 bytes"));
		k.len = 16;
		a.namespace_id = ns.id;
		a.keys = &k;
		a.n_keys = 1;
		a.session.data = keys[0].bytes;
		a.session.len = 5;
		CHECK(raw_message(d.addr, "/kvtier.v1.KvTier/Acquire", &a.base, msg,
				  sizeof(msg)) == GRPC_STATUS_INVALID_ARGUMENT);
		CHECK(strstr(msg, "session is 5 bytes"));
		a.session.len = 16;
		CHECK(raw_message(d.addr, "/kvtier.v1.KvTier/Acquire", &a.base, msg,
				  sizeof(msg)) == GRPC_STATUS_NOT_FOUND);
		CHECK(strstr(msg, "unknown session"));
		/* Drop judges its scope before its keys: keys where none
		 * belong, or an unknown scope, are named as such whatever the
		 * keys look like. */
		{
			Kvtier__V1__DropRequest dr = KVTIER__V1__DROP_REQUEST__INIT;
			ProtobufCBinaryData many[9];

			for (int i = 0; i < 9; i++)
				many[i] = (ProtobufCBinaryData){ 16, keys[i].bytes };
			many[1].len = 3;
			dr.namespace_id = ns.id;
			dr.keys = many;
			dr.n_keys = 2;
			dr.scope = KVTIER__V1__DROP_SCOPE__DROP_SCOPE_NAMESPACE;
			refused(d.addr, "/kvtier.v1.KvTier/Drop", &dr.base,
				"keys are only for DROP_SCOPE_KEYS");
			dr.n_keys = 9;
			dr.scope = KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT;
			refused(d.addr, "/kvtier.v1.KvTier/Drop", &dr.base,
				"keys are only for DROP_SCOPE_KEYS");
			dr.scope = 7;
			refused(d.addr, "/kvtier.v1.KvTier/Drop", &dr.base, "unknown scope 7");
			dr.scope = KVTIER__V1__DROP_SCOPE__DROP_SCOPE_KEYS;
			refused(d.addr, "/kvtier.v1.KvTier/Drop", &dr.base,
				"9 keys exceed max_keys_per_request");
			dr.n_keys = 0;
			refused(d.addr, "/kvtier.v1.KvTier/Drop", &dr.base, "keys is empty");
		}
		CHECK(raw_call(d.addr, "/kvtier.v1.KvTier/Lookup", "\xff\xff\xff\x0f", 4,
			       msg, sizeof(msg)) == GRPC_STATUS_INVALID_ARGUMENT);
		CHECK(strstr(msg, "malformed kvtier.v1.LookupRequest"));
		CHECK(raw_call(d.addr, "/kvtier.v1.KvTier/Nope", "", 0, msg,
			       sizeof(msg)) == GRPC_STATUS_UNIMPLEMENTED);
		CHECK(strstr(msg, "unknown method /kvtier.v1.KvTier/Nope"));
		memset(big, 0x0a, sizeof(big));
		CHECK(raw_call(d.addr, "/kvtier.v1.KvTier/Put", big, sizeof(big), msg,
			       sizeof(msg)) == GRPC_STATUS_RESOURCE_EXHAUSTED);
	}

	/* Still serving; the other client's blocks are intact; errors counted. */
	CHECK_RC(c, kvt_health(c), 0);
	CHECK_RC(other, kvt_get(other, &ns, held, 1, dst, &n), 0);
	CHECK(n == 1 && memcmp(back, page, PAGE) == 0);
	CHECK_RC(c, kvt_stats(c, count_errors, &errs), 0);
	printf("errors counted: invalid %ld, not found %ld, precondition %ld, "
	       "exhausted %ld, unimplemented %ld\n", errs.invalid, errs.not_found,
	       errs.precondition, errs.exhausted, errs.unimplemented);
	CHECK(errs.invalid >= 10 && errs.not_found >= 3 && errs.precondition >= 3);
	CHECK(errs.exhausted >= 2 && errs.unimplemented == 1 + lane);
	for (int i = 0; i < npins; i++)
		CHECK_RC(c, kvt_release(c, &pins[i]), 0);
	kvt_close(c);
	kvt_close(other);
	kvt_lane_close(raw_lane);
	raw_lane = NULL;
	kvt_close(rawc);
	CHECK(test_daemon_stop(&d) == 0);
}

int main(void)
{
	broken_config("[daemon]\nthreads = 2\n[host]\nsize = 1G\nsegment_size = big\n", 5,
		      "[host] segment_size: 'big' is not a size");
	/* gRPC took port 99999 as 34463. */
	broken_config("[daemon]\ntcp = 127.0.0.1:99999\n", 2,
		      "[daemon] tcp: port '99999' is not a number in 0..65535");
	/* These stopped the daemon only once it was starting (exit 1), or
	 * never. */
	broken_config("[daemon]\ngroup = no-such-group-kvtier\n", 2,
		      "[daemon] group: no group named 'no-such-group-kvtier'");
	broken_config("[host]\nsize = 100T\n", 2,
		      "[host] size: 100T makes more than 16384 segments");
	broken_config("[host]\nsize = 1G\n[host]\nsize = 2G\n", 4,
		      "[host] size: duplicate key (first set at line 2)");
	broken_config("[host\nsize = 1G\n", 1, "unterminated section header '[host'");
	bad_input(false);
	bad_input(true);
	reserve_over_tcp();
	return 0;
}

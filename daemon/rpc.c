#include "rpc.h"
#include "segsock.h"

#include <endian.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "health.pb-c.h"
#include "host.h"
#include "lane.h"
#include "kvtier.pb-c.h"
#include "log.h"

#define CLIENT_NAME_MAX 64
/* Callers over TCP have no credentials: they are one tenant. */
#define TCP_UID (UINT32_MAX - 1)

/* -errno from the engine -> gRPC status: the only place this mapping lives. */
static const struct {
	int err;
	grpc_status_code code;
} errno_codes[] = {
	{ EINVAL, GRPC_STATUS_INVALID_ARGUMENT },
	{ ENOENT, GRPC_STATUS_NOT_FOUND },
	{ EPERM, GRPC_STATUS_FAILED_PRECONDITION },
	{ ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED },
	{ ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED },
	{ EACCES, GRPC_STATUS_PERMISSION_DENIED },
	{ EDQUOT, GRPC_STATUS_RESOURCE_EXHAUSTED },
};

/* The status of rc (0 or -errno), with err's message in r. */
static grpc_status_code errno_status(int rc, const struct kvt_err *err,
				     struct kvt_reply *r)
{
	if (rc == 0)
		return GRPC_STATUS_OK;
	snprintf(r->msg, sizeof(r->msg), "%s", err->msg);
	for (size_t i = 0; i < sizeof(errno_codes) / sizeof(errno_codes[0]); i++)
		if (errno_codes[i].err == -rc)
			return errno_codes[i].code;
	return GRPC_STATUS_INTERNAL;
}

__attribute__((format(printf, 3, 4))) static grpc_status_code
reject(struct kvt_reply *r, grpc_status_code code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	return code;
}

static grpc_status_code pack(const void *msg, struct kvt_reply *r)
{
	size_t len = protobuf_c_message_get_packed_size(msg);

	r->buf = malloc(len ? len : 1);
	if (!r->buf)
		return reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	r->len = protobuf_c_message_pack(msg, r->buf);
	return GRPC_STATUS_OK;
}

/* A duration in ms from a request, in engine ns. At most
 * KVT_DURATION_MS_MAX (10 years): deadlines are now + it, which must not
 * wrap (a wrapped deadline is already past). */
static int check_duration(const char *field, uint64_t ms, uint64_t *ns,
			  struct kvt_err *err)
{
	if (ms > KVT_DURATION_MS_MAX)
		return kvt_errf(err, -EINVAL, "%s %llu is above %llu (10 years)",
				field, (unsigned long long)ms, KVT_DURATION_MS_MAX);
	*ns = ms * KVT_MS;
	return 0;
}

static int check_retention(const Kvtier__V1__Retention *m,
			   struct kvt_retention *out,
			   const struct kvt_retention **ret, struct kvt_err *err)
{
	int rc;

	*ret = NULL;
	if (!m)
		return 0;
	if (m->priority > KVT_PRIORITY_MAX)
		return kvt_errf(err, -EINVAL, "retention.priority %u is outside 0..%d",
				m->priority, KVT_PRIORITY_MAX);
	if ((rc = check_duration("retention.duration_ms", m->duration_ms,
				 &out->duration, err)) < 0)
		return rc;
	out->priority = (uint8_t)m->priority;
	*ret = out;
	return 0;
}

/* The name a tenant goes by: its user name, else "uid:N". */
static void tenant_name(uint32_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char tmp[1024];

	if (uid == TCP_UID)
		snprintf(buf, len, "tcp");
	else if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
		snprintf(buf, len, "%s", res->pw_name);
	else
		snprintf(buf, len, "uid:%u", uid);
}

/* The caller's uid on the unix socket; TCP_UID over TCP. */
static uint32_t caller_uid(struct kvt_call *call)
{
	const struct kvt_peer *peer = kvt_call_peer(call);

	return peer->unix_socket ? (uint32_t)peer->uid : TCP_UID;
}

/* The engine tenant of the caller. A known one costs no lock (see
 * kvt_engine_tenant); the user database is read once per tenant. */
static int caller(struct kvt_daemon *d, struct kvt_call *call,
		  uint32_t *tenant, struct kvt_err *err)
{
	uint32_t uid = caller_uid(call);
	char name[KVT_TENANT_NAME_MAX];

	if (kvt_engine_tenant(d->engine, uid, NULL, tenant) == 0)
		return 0;
	tenant_name(uid, name, sizeof(name));
	if (kvt_engine_tenant(d->engine, uid, name, tenant) < 0)
		return kvt_errf(err, -ENOSPC, "the daemon already serves %d tenants",
				KVT_TENANTS_MAX);
	return 0;
}

void kvt_rpc_peer_name(void *ctx, const struct kvt_peer *p, char *buf,
		       size_t len)
{
	(void)ctx;
	tenant_name(p->unix_socket ? (uint32_t)p->uid : TCP_UID, buf, len);
}

/* Root and the daemon's own user may act on every tenant's blocks. */
static bool is_admin(struct kvt_call *call)
{
	const struct kvt_peer *peer = kvt_call_peer(call);

	return peer->unix_socket && (peer->uid == 0 || peer->uid == geteuid());
}

/* ---- Attach ---- */

/* An Attach stream's state: its session. */
struct attached {
	struct kvt_session *session;
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	/* Who it was, for the line its end logs. */
	char client[CLIENT_NAME_MAX + 1];
	char tenant[KVT_TENANT_NAME_MAX];
	pid_t pid;
};

/* A client's name as the log shows it: a control character (a newline
 * that would forge a log line) or a quote becomes '?'. */
static void printable_name(char *out, size_t len, const char *name)
{
	size_t i;

	for (i = 0; name[i] && i + 1 < len; i++)
		out[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ||
				 name[i] == '"' ? '?' : name[i];
	out[i] = '\0';
}

static int attach(struct kvt_daemon *d, struct kvt_call *call,
		  const Kvtier__V1__AttachRequest *q, struct kvt_reply *r,
		  void **state, struct kvt_err *err)
{
	Kvtier__V1__AttachEvent ev = KVTIER__V1__ATTACH_EVENT__INIT;
	Kvtier__V1__HbmPool pool = KVTIER__V1__HBM_POOL__INIT;
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	char name[KVT_TENANT_NAME_MAX];
	struct attached *st;
	struct kvt_session *s;
	uint32_t tenant;
	int rc;

	if (strlen(q->client_name) > CLIENT_NAME_MAX)
		return kvt_errf(err, -EINVAL, "client_name is longer than %d bytes",
				CLIENT_NAME_MAX);
	if (q->gpu_uuid.len != 0 && q->gpu_uuid.len != KVT_GPU_UUID_BYTES)
		return kvt_errf(err, -EINVAL,
				"gpu_uuid is %zu bytes; pass the %d-byte cudaDeviceProp.uuid or nothing",
				q->gpu_uuid.len, KVT_GPU_UUID_BYTES);
	if ((rc = caller(d, call, &tenant, err)) < 0)
		return rc;
	tenant_name(caller_uid(call), name, sizeof(name));
	rc = kvt_engine_session_open(d->engine, tenant, token, &s);
	if (rc == -EDQUOT)
		return kvt_errf(err, rc, "tenants.max_sessions (%u) reached for tenant %s: close a session first",
				d->max_sessions, name);
	if (rc < 0)
		return kvt_errf(err, rc, "cannot open a session: %s", strerror(-rc));
	ev.session.data = token;
	ev.session.len = sizeof(token);
	/* Over TCP there is no descriptor passing: Put and Get only. */
	ev.host_segment_socket = kvt_call_peer(call)->unix_socket ?
				 (char *)kvt_segsock_path(d->segsock) : "";
	ev.host_segments = kvt_engine_host_segments(d->engine);
	ev.host_segments_max = KVT_HOST_SEGMENTS_MAX;
	ev.host_segment_bytes = kvt_engine_segment_bytes(d->engine);
	ev.daemon_version = KVT_VERSION;
	if (q->gpu_uuid.len) {
		int i = kvt_engine_session_gpu(d->engine, s, q->gpu_uuid.data);

		if (i >= 0) {
			const struct kvt_hbm_pool *hp = kvt_engine_hbm_pool(d->engine, (uint32_t)i);

			pool.gpu_uuid.data = (uint8_t *)hp->uuid;
			pool.gpu_uuid.len = KVT_GPU_UUID_BYTES;
			pool.ipc_handle.data = (uint8_t *)hp->ipc;
			pool.ipc_handle.len = KVT_HBM_IPC_BYTES;
			pool.bytes = hp->bytes;
			ev.hbm_pool = &pool;
		}
	}
	ev.tenant = name;
	st = calloc(1, sizeof(*st));
	if (!st || pack(&ev, r) != GRPC_STATUS_OK ||
	    (kvt_call_peer(call)->unix_socket &&
	     kvt_lanes_session_open(d->lanes, token, kvt_call_peer(call)->uid) < 0)) {
		free(st);
		kvt_engine_session_close(d->engine, s);
		return kvt_errf(err, -ENOMEM, "out of memory");
	}
	st->session = s;
	memcpy(st->token, token, sizeof(token));
	printable_name(st->client, sizeof(st->client), q->client_name);
	snprintf(st->tenant, sizeof(st->tenant), "%s", name);
	st->pid = kvt_call_peer(call)->pid;
	*state = st;
	kvt_log(KVT_LOG_INFO, "session opened (client \"%s\", tenant %s, pid %d)",
		st->client, st->tenant, (int)st->pid);
	return 0;
}

static grpc_status_code attach_open(void *ctx, struct kvt_call *call,
				    const uint8_t *req, size_t len,
				    struct kvt_reply *r, void **state)
{
	Kvtier__V1__AttachRequest *q =
		kvtier__v1__attach_request__unpack(NULL, len, req);
	struct kvt_err err;
	int rc;

	if (!q)
		rc = kvt_errf(&err, -EINVAL, "malformed %s: the bytes do not parse",
			      kvtier__v1__attach_request__descriptor.name);
	else
		rc = attach(ctx, call, q, r, state, &err);
	if (q)
		protobuf_c_message_free_unpacked(&q->base, NULL);
	return errno_status(rc, &err, r);
}

static void attach_close(void *ctx, void *state)
{
	struct kvt_daemon *d = ctx;
	struct attached *st = state;

	/* The engine first: it answers the session's waiting Acquires, so
	 * that a lane's call in hand gets its answer before the lane ends. */
	kvt_engine_session_close(d->engine, st->session);
	kvt_lanes_session_close(d->lanes, st->token);
	kvt_log(KVT_LOG_INFO,
		"session closed (client \"%s\", tenant %s, pid %d): its pins and reservations are released",
		st->client, st->tenant, (int)st->pid);
	free(st);
}

/*
 * grpc.health.v1.Health/Watch: the serving status now (SERVICE_UNKNOWN for
 * a service the daemon is not, as the protocol asks, rather than an
 * error), then the stream stays open while the daemon serves; its stop
 * ends the stream with UNAVAILABLE. Anyone may watch, as anyone may Check.
 */
static grpc_status_code watch_open(void *ctx, struct kvt_call *call,
				   const uint8_t *req, size_t len,
				   struct kvt_reply *r, void **state)
{
	Grpc__Health__V1__HealthCheckRequest *q =
		grpc__health__v1__health_check_request__unpack(NULL, len, req);
	Grpc__Health__V1__HealthCheckResponse p =
		GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	grpc_status_code code;

	(void)ctx;
	(void)call;
	if (!q)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "malformed grpc.health.v1.HealthCheckRequest: the bytes do not parse");
	p.status = q->service[0] && strcmp(q->service, "kvtier.v1.KvTier") != 0 ?
		   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN :
		   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	protobuf_c_message_free_unpacked(&q->base, NULL);
	code = pack(&p, r);
	*state = NULL;
	return code;
}

static void watch_close(void *ctx, void *state)
{
	(void)ctx;
	(void)state;
}

static const struct kvt_stream_method rpc_attach = {
	"/kvtier.v1.KvTier/Attach", attach_open, attach_close
};
static const struct kvt_stream_method rpc_watch = {
	"/grpc.health.v1.Health/Watch", watch_open, watch_close
};

const struct kvt_stream_method *const kvt_rpc_streams[] = { &rpc_attach, &rpc_watch };
const size_t kvt_rpc_nstreams = sizeof(kvt_rpc_streams) / sizeof(kvt_rpc_streams[0]);

/* ---- unary methods: one prologue and epilogue, a body each ---- */

/*
 * One unary call as its body sees it: the request unpacked and its common
 * fields checked (those it has of session, namespace_id, keys, parent and
 * retention, found by name through the message's descriptor), the caller's
 * tenant, and the response to fill in.
 */
struct rpc {
	struct kvt_daemon *d;
	struct kvt_call *call;
	struct kvt_reply *r;
	const void *in;                /* the request, of the method's type */
	ProtobufCMessage *out;         /* the response, initialised */
	struct kvt_req q;              /* tenant, session, ns and keys */
	const uint8_t *parent;         /* NULL: none given */
	const struct kvt_retention *retention; /* NULL: the default */
	struct kvt_retention retention_buf;
	struct kvt_err err;            /* why a body failed */
	bool packed;                   /* the body packed r itself */
	void *mem[8];                  /* freed once the reply is packed */
};

/* A body: 0 (the response is packed from c->out unless c->packed),
 * RPC_DEFERRED (kvt_call_reply answers later), or -errno with c->err. */
#define RPC_DEFERRED 1

struct rpc_method {
	const ProtobufCMessageDescriptor *in, *out;
	bool keys_optional; /* an empty key list is the body's to judge */
	/* Serves anyone without making the caller a tenant (Health and
	 * GetConfig: a probe takes no entry, nor fails when none is left). */
	bool no_tenant;
	/* Checks of its own that come before the common ones (NULL: none). */
	int (*check)(struct rpc *c);
	int (*body)(struct rpc *c);
};

/* Zeroed memory that lives until the reply is packed; NULL when out of
 * memory. */
static void *rpc_alloc(struct rpc *c, size_t n, size_t size)
{
	for (size_t i = 0; i < sizeof(c->mem) / sizeof(c->mem[0]); i++)
		if (!c->mem[i])
			return c->mem[i] = calloc(n + 1, size);
	return NULL;
}

/* The request's field `name`: its address and (repeated) count, or NULL
 * when the message has no such field. */
static const void *field(const ProtobufCMessage *m, const char *name,
			 size_t *count)
{
	const ProtobufCFieldDescriptor *f =
		protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);

	if (!f)
		return NULL;
	if (count)
		*count = f->label == PROTOBUF_C_LABEL_REPEATED ?
			 *(const size_t *)((const char *)m + f->quantifier_offset) : 1;
	return (const char *)m + f->offset;
}

/* Checks the fields keyed calls share and fills c->q, c->parent and
 * c->retention from them. */
static int rpc_common(struct rpc *c, const struct rpc_method *m)
{
	const ProtobufCMessage *in = c->in;
	const ProtobufCBinaryData *session = field(in, "session", NULL);
	const ProtobufCBinaryData *parent = field(in, "parent", NULL);
	const ProtobufCBinaryData *keys;
	Kvtier__V1__Retention *const *retention = field(in, "retention", NULL);
	const uint32_t *ns = field(in, "namespace_id", NULL);
	const ProtobufCBinaryData *const *key_list = field(in, "keys", NULL);
	const ProtobufCBinaryData *packed = field(in, "packed_keys", NULL);
	const uint8_t **p;
	size_t n = 0;
	int rc;

	if (session && session->len != KVT_SESSION_TOKEN_BYTES)
		return kvt_errf(&c->err, -EINVAL,
				"session is %zu bytes; pass the %d-byte token from Attach",
				session->len, KVT_SESSION_TOKEN_BYTES);
	if (parent && parent->len != 0 && parent->len != KVT_KEY_BYTES)
		return kvt_errf(&c->err, -EINVAL, "parent is %zu bytes, keys must be %d",
				parent->len, KVT_KEY_BYTES);
	if (retention && (rc = check_retention(*retention, &c->retention_buf,
					       &c->retention, &c->err)) < 0)
		return rc;
	c->q.session = session ? session->data : NULL;
	c->q.ns = ns ? *ns : 0;
	c->parent = parent && parent->len ? parent->data : NULL;
	if (!key_list)
		return 0;
	field(in, "keys", &n);
	keys = *key_list;
	if (packed && packed->len) {
		if (n)
			return kvt_errf(&c->err, -EINVAL,
					"both keys and packed_keys are given: give one");
		if (packed->len % KVT_KEY_BYTES)
			return kvt_errf(&c->err, -EINVAL,
					"packed_keys is %zu bytes, not a multiple of %d",
					packed->len, KVT_KEY_BYTES);
		n = packed->len / KVT_KEY_BYTES;
	}
	if (n == 0 && !m->keys_optional)
		return kvt_errf(&c->err, -EINVAL, "keys is empty");
	if (n > c->d->max_keys)
		return kvt_errf(&c->err, -EINVAL, "%zu keys exceed max_keys_per_request (%u)",
				n, c->d->max_keys);
	if (kvt_call_max_keys(c->call) && n > kvt_call_max_keys(c->call))
		return kvt_errf(&c->err, -EINVAL,
				"%zu keys exceed the fast lane's %u: send this request over gRPC",
				n, kvt_call_max_keys(c->call));
	for (size_t i = 0; !(packed && packed->len) && i < n; i++)
		if (keys[i].len != KVT_KEY_BYTES)
			return kvt_errf(&c->err, -EINVAL, "keys[%zu] is %zu bytes, keys must be %d",
					i, keys[i].len, KVT_KEY_BYTES);
	p = rpc_alloc(c, n, sizeof(*p));
	if (!p)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		p[i] = packed && packed->len ? packed->data + i * KVT_KEY_BYTES : keys[i].data;
	c->q.keys = p;
	c->q.n = (uint32_t)n;
	return 0;
}

/* Frees what rpc_alloc gave c. */
static void rpc_free(struct rpc *c)
{
	for (size_t i = 0; i < sizeof(c->mem) / sizeof(c->mem[0]); i++)
		free(c->mem[i]);
}

static int rpc_pack(struct rpc *c)
{
	if (pack(c->out, c->r) != GRPC_STATUS_OK)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	c->packed = true;
	return 0;
}

/* The prologue (unpack, tenant, common checks), the body, and the
 * epilogue (pack, or -errno to a status and its message) of every unary
 * method. */
static grpc_status_code rpc_call(void *ctx, const void *method,
				 struct kvt_call *call, const uint8_t *req,
				 size_t len, struct kvt_reply *r)
{
	const struct rpc_method *m = method;
	struct rpc c = { .d = ctx, .call = call, .r = r };
	grpc_status_code code;
	int rc;

	c.in = protobuf_c_message_unpack(m->in, NULL, len, req);
	c.out = calloc(1, m->out->sizeof_message);
	if (c.out)
		protobuf_c_message_init(m->out, c.out);
	if (!c.in)
		rc = kvt_errf(&c.err, -EINVAL, "malformed %s: the bytes do not parse",
			      m->in->name);
	else if (!c.out)
		rc = kvt_errf(&c.err, -ENOMEM, "out of memory");
	else if ((m->no_tenant ||
		  (rc = caller(c.d, call, &c.q.tenant, &c.err)) == 0) &&
		 (!m->check || (rc = m->check(&c)) == 0) &&
		 (rc = rpc_common(&c, m)) == 0)
		rc = m->body(&c);
	if (rc == 0 && !c.packed)
		rc = rpc_pack(&c);
	code = rc == RPC_DEFERRED ? KVT_STATUS_DEFERRED : errno_status(rc, &c.err, r);
	rpc_free(&c);
	free(c.out);
	if (c.in)
		protobuf_c_message_free_unpacked((ProtobufCMessage *)c.in, NULL);
	return code;
}

/* ---- the bodies ---- */

static int open_namespace(struct rpc *c)
{
	const Kvtier__V1__OpenNamespaceRequest *q = c->in;
	Kvtier__V1__OpenNamespaceResponse *p = (void *)c->out;
	uint64_t idle_ttl = 0;
	bool created;
	int rc;

	p->shared = kvt_config_listed(c->d->shared_namespaces, q->name);
	if ((rc = check_duration("idle_ttl_ms", q->idle_ttl_ms, &idle_ttl, &c->err)) < 0 ||
	    (rc = kvt_engine_open_namespace(c->d->engine, c->q.tenant, q->name,
					    q->page_bytes, q->block_tokens,
					    p->shared, idle_ttl, &p->namespace_id,
					    &created, &p->slot_stride, &c->err)) < 0)
		return rc;
	p->created = created;
	if (created)
		kvt_log(KVT_LOG_INFO, "namespace %s: page %llu bytes, %u tokens per block%s",
			q->name, (unsigned long long)q->page_bytes,
			q->block_tokens, p->shared ? ", shared" : "");
	return 0;
}

/* The reply to a Lookup: enum kvt_tier's values are the proto's. */
static void lookup_fill(Kvtier__V1__LookupResponse *p, Kvtier__V1__Tier *tiers,
			uint32_t ready, uint32_t pending,
			const enum kvt_tier *where)
{
	for (uint32_t i = 0; i < ready; i++)
		tiers[i] = (Kvtier__V1__Tier)where[i];
	p->ready_blocks = ready;
	p->pending_blocks = pending;
	p->tiers = tiers;
	p->n_tiers = ready;
}

/* Ends a deferred call: its status from rc (its reply packed if 0). */
static void rpc_reply_later(struct rpc *c, int rc)
{
	grpc_status_code code = errno_status(rc, &c->err, c->r);

	rpc_free(c);
	kvt_call_reply(c->call, code, c->r);
}

/* Answers a Lookup (arg: its call) that asked the remote store. */
static void lookup_done(void *arg, int rc, uint32_t ready, uint32_t pending,
			const enum kvt_tier *where)
{
	Kvtier__V1__LookupResponse p = KVTIER__V1__LOOKUP_RESPONSE__INIT;
	struct kvt_reply r = { 0 };
	struct rpc c = { .call = arg, .r = &r, .out = &p.base };
	Kvtier__V1__Tier *tiers = rpc_alloc(&c, ready, sizeof(*tiers));

	if (rc == -ENOENT)
		rc = kvt_errf(&c.err, rc, "the namespace was dropped while this Lookup asked the remote store");
	else if (rc == 0 && !tiers)
		rc = kvt_errf(&c.err, -ENOMEM, "out of memory");
	if (rc == 0) {
		lookup_fill(&p, tiers, ready, pending, where);
		rc = rpc_pack(&c);
	}
	rpc_reply_later(&c, rc);
}

/* Answered at once, unless the chain stops here with nothing pending and
 * the remote store is to be asked about the rest (within lookup_budget):
 * then lookup_done answers. */
static int lookup(struct rpc *c)
{
	Kvtier__V1__LookupResponse *p = (void *)c->out;
	enum kvt_tier *where = rpc_alloc(c, c->q.n, sizeof(*where));
	Kvtier__V1__Tier *tiers = rpc_alloc(c, c->q.n, sizeof(*tiers));
	uint32_t ready, pending;
	int rc;

	if (!where || !tiers)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	rc = kvt_engine_lookup_async(c->d->engine, &c->q, c->d->lookup_budget, &ready,
				     &pending, where, lookup_done, c->call, &c->err);
	if (rc == 0)
		return RPC_DEFERRED; /* lookup_done answers, maybe already has */
	if (rc < 0)
		return rc;
	lookup_fill(p, tiers, ready, pending, where);
	return 0;
}

/* Where a reply's locations go: Location messages, or (when the request
 * asked) PackedLocation records in one bytes field. */
struct locations {
	Kvtier__V1__Location **msgs;
	uint8_t *packed;
};

#define PACKED_LOCATION_BYTES 24

/* Room for n locations, allocated before the engine call whose result
 * they carry so that it cannot be lost to a failed allocation after it;
 * -ENOMEM. */
static int locations_new(struct rpc *c, bool packed, uint32_t n,
			 struct locations *l)
{
	Kvtier__V1__Location *msgs;

	*l = (struct locations){ 0 };
	if (packed)
		return (l->packed = rpc_alloc(c, n, PACKED_LOCATION_BYTES)) ? 0 : -ENOMEM;
	msgs = rpc_alloc(c, n, sizeof(*msgs));
	l->msgs = rpc_alloc(c, n, sizeof(*l->msgs));
	if (!msgs || !l->msgs)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		kvtier__v1__location__init(&msgs[i]);
		l->msgs[i] = &msgs[i];
	}
	return 0;
}

/* Fills l with src and points the reply's fields at it. enum kvt_tier's
 * values are the proto's. */
static void locations_set(const struct locations *l,
			  const struct kvt_location *src, uint32_t n,
			  Kvtier__V1__Location ***msgs, size_t *n_msgs,
			  ProtobufCBinaryData *packed)
{
	for (uint32_t i = 0; l->packed && i < n; i++) {
		uint8_t *r = l->packed + (size_t)i * PACKED_LOCATION_BYTES;
		uint32_t w[4] = { htole32((uint32_t)src[i].tier), htole32(src[i].segment),
				  htole32(src[i].generation), 0 };
		uint64_t offset = htole64(src[i].offset);

		memcpy(r, w, sizeof(w));
		memcpy(r + sizeof(w), &offset, sizeof(offset));
	}
	for (uint32_t i = 0; l->msgs && i < n; i++) {
		l->msgs[i]->tier = (Kvtier__V1__Tier)src[i].tier;
		l->msgs[i]->segment = src[i].segment;
		l->msgs[i]->generation = src[i].generation;
		l->msgs[i]->offset = src[i].offset;
	}
	*msgs = l->msgs;
	*n_msgs = l->msgs ? n : 0;
	*packed = (ProtobufCBinaryData){ l->packed ? (size_t)n * PACKED_LOCATION_BYTES : 0,
					 l->packed };
}

static int reserve(struct rpc *c)
{
	const Kvtier__V1__ReserveRequest *q = c->in;
	Kvtier__V1__ReserveResponse *p = (void *)c->out;
	enum kvt_reserve_state *states = rpc_alloc(c, c->q.n, sizeof(*states));
	struct kvt_location *locs = rpc_alloc(c, c->q.n, sizeof(*locs));
	struct locations l;
	int rc;

	if (!states || !locs || locations_new(c, q->packed_locations, c->q.n, &l) < 0)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	rc = kvt_engine_reserve(c->d->engine, &c->q, c->parent, c->retention,
				states, locs, &c->err);
	if (rc < 0)
		return rc;
	locations_set(&l, locs, c->q.n, &p->locations, &p->n_locations,
		      &p->packed_locations);
	/* The engine's values are kvtier.v1.ReserveState's by construction. */
	p->states = (Kvtier__V1__ReserveState *)states;
	p->n_states = c->q.n;
	return 0;
}

static int commit(struct rpc *c)
{
	return kvt_engine_commit(c->d->engine, &c->q, &c->err);
}

static int abort_(struct rpc *c)
{
	return kvt_engine_abort(c->d->engine, &c->q, &c->err);
}

/* An Acquire in flight: answered by acquire_done, maybe after a wait. */
struct acquire_call {
	struct kvt_daemon *d;
	struct kvt_call *call;
	uint32_t tenant;
	uint8_t session[KVT_SESSION_TOKEN_BYTES];
	bool packed_locations;
};

static void acquire_done(void *arg, int rc, const struct kvt_acquired *got)
{
	struct acquire_call *a = arg;
	Kvtier__V1__AcquireResponse p = KVTIER__V1__ACQUIRE_RESPONSE__INIT;
	struct rpc c = { .d = a->d, .call = a->call, .out = &p.base };
	struct kvt_reply r = { 0 };
	struct kvt_err ignored;
	struct locations l;

	c.r = &r;
	if (rc == -ENOENT)
		rc = kvt_errf(&c.err, rc, "the session ended while this Acquire waited");
	else if (rc < 0)
		rc = kvt_errf(&c.err, -ENOMEM, "out of memory recording the lease");
	else if (locations_new(&c, a->packed_locations, got->count, &l) < 0)
		rc = kvt_errf(&c.err, -ENOMEM, "out of memory");
	if (rc == 0) {
		locations_set(&l, got->locs, got->count, &p.locations, &p.n_locations,
			      &p.packed_locations);
		p.blocks = got->count;
		p.lease = got->lease;
		rc = rpc_pack(&c);
	}
	/* A lease the worker will never hear of is given back at once. */
	if (rc < 0 && got && got->lease)
		kvt_engine_release(a->d->engine, a->tenant, a->session,
				   got->lease, &ignored);
	rpc_reply_later(&c, rc);
	free(a);
}

static int acquire(struct rpc *c)
{
	const Kvtier__V1__AcquireRequest *q = c->in;
	struct acquire_call *a = calloc(1, sizeof(*a));
	int rc;

	if (!a)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	*a = (struct acquire_call){ .d = c->d, .call = c->call,
				    .tenant = c->q.tenant,
				    .packed_locations = q->packed_locations };
	memcpy(a->session, q->session.data, sizeof(a->session));
	rc = kvt_engine_acquire(c->d->engine, &c->q, (uint64_t)q->wait_ms * KVT_MS,
				acquire_done, a, &c->err);
	if (rc < 0) {
		free(a);
		return rc;
	}
	return RPC_DEFERRED; /* acquire_done answers, maybe already has */
}

void kvt_rpc_draining(void *ctx)
{
	struct kvt_daemon *d = ctx;

	kvt_engine_stop_waiting(d->engine);
}

static int release(struct rpc *c)
{
	const Kvtier__V1__ReleaseRequest *q = c->in;

	return kvt_engine_release(c->d->engine, c->q.tenant, c->q.session,
				  q->lease, &c->err);
}

static int put(struct rpc *c)
{
	const Kvtier__V1__PutRequest *q = c->in;
	Kvtier__V1__PutResponse *p = (void *)c->out;
	const void **pages = rpc_alloc(c, q->n_pages, sizeof(*pages));
	uint64_t page_bytes;
	int rc;

	if (q->n_pages != c->q.n)
		return kvt_errf(&c->err, -EINVAL, "%zu pages for %u keys: give one page per key",
				q->n_pages, c->q.n);
	if (!pages)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	rc = kvt_engine_page_bytes(c->d->engine, c->q.tenant, c->q.ns,
				   &page_bytes, &c->err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < q->n_pages; i++) {
		if (q->pages[i].len != page_bytes)
			return kvt_errf(&c->err, -EINVAL,
					"pages[%zu] is %zu bytes; the namespace's page_bytes is %llu",
					i, q->pages[i].len,
					(unsigned long long)page_bytes);
		pages[i] = q->pages[i].data;
	}
	return kvt_engine_put(c->d->engine, &c->q, c->parent, c->retention,
			      pages, &p->stored, &c->err);
}

/* A Get whose pages are being pinned (read back first from a lower tier
 * when they must be), answered by get_done. */
struct get_call {
	struct kvt_daemon *d;
	struct kvt_call *call;
	uint64_t page_bytes;
};

static void get_done(void *arg, int rc, const struct kvt_acquired *got)
{
	struct get_call *g = arg;
	Kvtier__V1__GetResponse p = KVTIER__V1__GET_RESPONSE__INIT;
	struct kvt_reply r = { 0 };
	struct rpc c = { .d = g->d, .call = g->call, .r = &r, .out = &p.base };
	ProtobufCBinaryData *pages = NULL;

	if (rc == 0 && got->count &&
	    !(pages = rpc_alloc(&c, got->count, sizeof(*pages))))
		rc = kvt_errf(&c.err, -ENOMEM, "out of memory");
	if (rc == 0) {
		/* Pinned: the pages cannot move while they are packed. */
		for (uint32_t i = 0; i < got->count; i++) {
			pages[i].data = (uint8_t *)kvt_engine_page(g->d->engine,
								   got->pinned[i]);
			pages[i].len = g->page_bytes;
		}
		p.pages = pages;
		p.n_pages = got->count;
		p.ready_blocks = got->ready;
		rc = rpc_pack(&c);
	} else if (rc == -ENOENT) {
		rc = kvt_errf(&c.err, rc, "the namespace was dropped while this Get read its pages");
	}
	if (got && got->count)
		kvt_engine_unpin(g->d->engine, got->pinned, got->count);
	rpc_reply_later(&c, rc);
	free(g);
}

/* Copies of the ready prefix's pages, as many as fit in a reply; blocks
 * kept only by nvme or the remote store are read back into host first. */
static int get(struct rpc *c)
{
	struct get_call *g = calloc(1, sizeof(*g));
	uint64_t fit;
	int rc;

	if (!g)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	*g = (struct get_call){ .d = c->d, .call = c->call };
	rc = kvt_engine_page_bytes(c->d->engine, c->q.tenant, c->q.ns,
				   &g->page_bytes, &c->err);
	/* Each page costs its bytes plus a tag and a length varint. */
	fit = (c->d->max_message_size - 16) / (g->page_bytes + 11);
	if (rc == 0)
		rc = kvt_engine_pin_async(c->d->engine, &c->q,
					  fit > UINT32_MAX ? UINT32_MAX : (uint32_t)fit,
					  get_done, g, &c->err);
	if (rc < 0) {
		free(g);
		return rc;
	}
	return RPC_DEFERRED; /* get_done answers, maybe already has */
}

/* The scope first: keys where none belong are named as such, whatever
 * they look like (the common checks of the keys come after). */
static int drop_check(struct rpc *c)
{
	const Kvtier__V1__DropRequest *q = c->in;
	bool keys = q->n_keys || q->packed_keys.len;

	switch (q->scope) {
	case KVTIER__V1__DROP_SCOPE__DROP_SCOPE_KEYS:
		if (!keys)
			return kvt_errf(&c->err, -EINVAL, "keys is empty");
		return 0;
	case KVTIER__V1__DROP_SCOPE__DROP_SCOPE_NAMESPACE:
	case KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT:
		if (keys)
			return kvt_errf(&c->err, -EINVAL, "keys are only for DROP_SCOPE_KEYS");
		return 0;
	default:
		return kvt_errf(&c->err, -EINVAL, "unknown scope %d", (int)q->scope);
	}
}

static int drop(struct rpc *c)
{
	const Kvtier__V1__DropRequest *q = c->in;
	Kvtier__V1__DropResponse *p = (void *)c->out;
	uint32_t uid = caller_uid(c->call);
	int rc;

	/* The target tenant: a user name or uid, or "" for the caller. */
	if (q->scope == KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT &&
	    q->tenant[0] && kvt_parse_user(q->tenant, &uid) < 0)
		return kvt_errf(&c->err, -EINVAL,
				"tenant '%s' is neither a user name nor a uid",
				q->tenant);
	rc = kvt_engine_drop(c->d->engine, &c->q, (enum kvt_drop_scope)q->scope,
			     is_admin(c->call), uid, &p->dropped, &c->err);
	/* A whole namespace's or tenant's blocks: an operator's act, which
	 * the log keeps; a worker's drops of its own keys are its business. */
	if (rc == 0 && q->scope == KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT)
		kvt_log(KVT_LOG_INFO, "uid %u%s dropped %u blocks of uid %u",
			caller_uid(c->call), is_admin(c->call) ? " (admin)" : "",
			p->dropped, uid);
	else if (rc == 0 && q->scope == KVTIER__V1__DROP_SCOPE__DROP_SCOPE_NAMESPACE)
		kvt_log(KVT_LOG_INFO, "uid %u%s dropped %u blocks of namespace_id %u",
			caller_uid(c->call), is_admin(c->call) ? " (admin)" : "",
			p->dropped, c->q.ns);
	return rc;
}

static int drop_namespace(struct rpc *c)
{
	Kvtier__V1__DropNamespaceResponse *p = (void *)c->out;
	int rc = kvt_engine_drop_namespace(c->d->engine, c->q.tenant, c->q.ns,
					   is_admin(c->call), &p->dropped,
					   &p->pending, &c->err);

	if (rc == 0)
		kvt_log(KVT_LOG_INFO, "namespace_id %u dropped by uid %u (%u blocks, %u reservations left to their producers)",
			c->q.ns, caller_uid(c->call), p->dropped, p->pending);
	return rc;
}

static int stats(struct rpc *c)
{
	/* An admin sees every tenant; anyone else, its own (and the totals). */
	if (kvt_rpc_stats(c->d, is_admin(c->call), c->q.tenant, c->r) != GRPC_STATUS_OK)
		return kvt_errf(&c->err, -ENOMEM, "%s", c->r->msg);
	c->packed = true;
	return 0;
}

static int get_config(struct rpc *c)
{
	Kvtier__V1__GetConfigResponse *p = (void *)c->out;
	struct kvt_reload *rl = c->d->reload;
	size_t n = kvt_config_knobs();
	struct knob_text {
		char value[KVT_CONFIG_VALUE_MAX], pending[KVT_CONFIG_VALUE_MAX];
		char source[PATH_MAX + 16];
	} *text = rpc_alloc(c, n, sizeof(*text));
	Kvtier__V1__ConfigKnob *knobs = rpc_alloc(c, n, sizeof(*knobs));
	Kvtier__V1__ConfigKnob **ptrs = rpc_alloc(c, n, sizeof(*ptrs));
	int rc;

	if (!text || !knobs || !ptrs)
		return kvt_errf(&c->err, -ENOMEM, "out of memory");
	/* Packed under the lock: the strings are the reload state's. */
	pthread_mutex_lock(&rl->lock);
	for (size_t i = 0; i < n; i++) {
		struct kvt_config_knob k;
		Kvtier__V1__ConfigKnob *m = &knobs[i];

		kvt_config_knob(i, &k);
		kvtier__v1__config_knob__init(m);
		m->section = (char *)k.section;
		m->name = (char *)k.name;
		m->help = (char *)k.help;
		m->live = k.live;
		kvt_config_value(&rl->running, i, text[i].value, sizeof(text[i].value));
		kvt_config_value(&rl->wanted, i, text[i].pending, sizeof(text[i].pending));
		if (strcmp(text[i].value, text[i].pending) == 0)
			text[i].pending[0] = '\0';
		kvt_config_source(&rl->running, i, text[i].source, sizeof(text[i].source));
		m->value = text[i].value;
		m->pending = text[i].pending;
		m->source = text[i].source;
		ptrs[i] = m;
	}
	p->file = (char *)(rl->file ? rl->file : "");
	p->knobs = ptrs;
	p->n_knobs = n;
	p->reloads_total = rl->reloads_total;
	p->reload_failures_total = rl->failures_total;
	p->last_reload_ok = rl->last_ok;
	p->last_reload_unix = rl->last_time;
	p->last_reload_error = rl->last_error;
	rc = rpc_pack(c);
	pthread_mutex_unlock(&rl->lock);
	return rc;
}

/* grpc.health.v1.Health/Check */
static int health_check(struct rpc *c)
{
	const Grpc__Health__V1__HealthCheckRequest *q = c->in;
	Grpc__Health__V1__HealthCheckResponse *p = (void *)c->out;

	if (q->service[0] && strcmp(q->service, "kvtier.v1.KvTier") != 0)
		return kvt_errf(&c->err, -ENOENT,
				"unknown service \"%s\" (known: \"\", \"kvtier.v1.KvTier\")",
				q->service);
	p->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	return 0;
}

/* ---- the table ---- */

#define METHOD(path, name, req, resp, ...)                                   \
	{ path, rpc_call,                                                    \
	  &(const struct rpc_method){ &req##__descriptor, &resp##__descriptor, \
				      __VA_ARGS__ } }
#define KVTIER(name, body, ...)                                              \
	METHOD("/kvtier.v1.KvTier/" #name, name, kvtier__v1__##body##_request, \
	       kvtier__v1__##body##_response, __VA_ARGS__)

const struct kvt_method kvt_rpc_methods[] = {
	KVTIER(OpenNamespace, open_namespace, .body = open_namespace),
	KVTIER(Lookup, lookup, .body = lookup),
	KVTIER(Reserve, reserve, .body = reserve),
	KVTIER(Commit, commit, .body = commit),
	KVTIER(Abort, abort, .body = abort_),
	KVTIER(Acquire, acquire, .body = acquire),
	KVTIER(Release, release, .body = release),
	KVTIER(Put, put, .body = put),
	KVTIER(Get, get, .body = get),
	KVTIER(Drop, drop, .body = drop, .check = drop_check,
	       .keys_optional = true),
	KVTIER(DropNamespace, drop_namespace, .body = drop_namespace),
	KVTIER(Stats, stats, .body = stats),
	KVTIER(GetConfig, get_config, .body = get_config, .no_tenant = true),
	METHOD("/grpc.health.v1.Health/Check", Check,
	       grpc__health__v1__health_check_request,
	       grpc__health__v1__health_check_response, .body = health_check,
	       .no_tenant = true),
};

const size_t kvt_rpc_nmethods = sizeof(kvt_rpc_methods) / sizeof(kvt_rpc_methods[0]);

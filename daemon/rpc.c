#include "rpc.h"
#include "segsock.h"

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
#include "kvtier.pb-c.h"
#include "log.h"

#define CLIENT_NAME_MAX 64
/* Callers over TCP have no credentials: they are one tenant. */
#define TCP_UID (UINT32_MAX - 1)

/* -errno from the engine -> gRPC status: the only place this mapping lives. */
static const struct {
	int err;
	grpc_status_code code;
} errno_status[] = {
	{ EINVAL, GRPC_STATUS_INVALID_ARGUMENT },
	{ ENOENT, GRPC_STATUS_NOT_FOUND },
	{ EPERM, GRPC_STATUS_FAILED_PRECONDITION },
	{ ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED },
	{ ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED },
	{ EACCES, GRPC_STATUS_PERMISSION_DENIED },
	{ EDQUOT, GRPC_STATUS_RESOURCE_EXHAUSTED },
};

static grpc_status_code engine_status(int rc, const struct kvt_err *err,
				      struct kvt_reply *r)
{
	if (rc == 0)
		return GRPC_STATUS_OK;
	snprintf(r->msg, sizeof(r->msg), "%s", err->msg);
	for (size_t i = 0; i < sizeof(errno_status) / sizeof(errno_status[0]); i++)
		if (errno_status[i].err == -rc)
			return errno_status[i].code;
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

static void *unpack(const ProtobufCMessageDescriptor *d, const uint8_t *req,
		    size_t len, struct kvt_reply *r)
{
	void *m = protobuf_c_message_unpack(d, NULL, len, req);

	if (!m)
		snprintf(r->msg, sizeof(r->msg), "malformed %s: the bytes do not parse",
			 d->name);
	return m;
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

/*
 * Checks a key list (count and lengths) and returns pointers to the keys in
 * *out (to free). `what` names the field in messages.
 */
static grpc_status_code check_keys(const struct kvt_daemon *d, size_t n,
				   const ProtobufCBinaryData *keys,
				   const uint8_t ***out, struct kvt_reply *r)
{
	const uint8_t **p;

	if (n == 0)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT, "keys is empty");
	if (n > d->max_keys)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "%zu keys exceed max_keys_per_request (%u)", n,
			      d->max_keys);
	for (size_t i = 0; i < n; i++)
		if (keys[i].len != KVT_KEY_BYTES)
			return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
				      "keys[%zu] is %zu bytes, keys must be %d",
				      i, keys[i].len, KVT_KEY_BYTES);
	p = malloc(sizeof(*p) * n);
	if (!p)
		return reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	for (size_t i = 0; i < n; i++)
		p[i] = keys[i].data;
	*out = p;
	return GRPC_STATUS_OK;
}

static grpc_status_code check_session(const ProtobufCBinaryData *token,
				      struct kvt_reply *r)
{
	if (token->len != KVT_SESSION_TOKEN_BYTES)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "session is %zu bytes; pass the %d-byte token from Attach",
			      token->len, KVT_SESSION_TOKEN_BYTES);
	return GRPC_STATUS_OK;
}

/* An optional parent key: empty, or 16 bytes. */
static grpc_status_code check_parent(const ProtobufCBinaryData *parent,
				     const uint8_t **out, struct kvt_reply *r)
{
	*out = NULL;
	if (parent->len == 0)
		return GRPC_STATUS_OK;
	if (parent->len != KVT_KEY_BYTES)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "parent is %zu bytes, keys must be %d", parent->len,
			      KVT_KEY_BYTES);
	*out = parent->data;
	return GRPC_STATUS_OK;
}

/* A duration in ms from a request, in engine ns. At most
 * KVT_DURATION_MS_MAX (10 years): deadlines are now + it, which must not
 * wrap (a wrapped deadline is already past). */
static grpc_status_code check_duration(const char *field, uint64_t ms,
				       uint64_t *ns, struct kvt_reply *r)
{
	if (ms > KVT_DURATION_MS_MAX)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "%s %llu is above %llu (10 years)", field,
			      (unsigned long long)ms, KVT_DURATION_MS_MAX);
	*ns = ms * KVT_MS;
	return GRPC_STATUS_OK;
}

static grpc_status_code check_retention(const Kvtier__V1__Retention *m,
				       struct kvt_retention *out,
				       const struct kvt_retention **ret,
				       struct kvt_reply *r)
{
	*ret = NULL;
	if (!m)
		return GRPC_STATUS_OK;
	if (m->priority > KVT_PRIORITY_MAX)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "retention.priority %u is outside 0..%d",
			      m->priority, KVT_PRIORITY_MAX);
	if (check_duration("retention.duration_ms", m->duration_ms,
			   &out->duration, r) != GRPC_STATUS_OK)
		return GRPC_STATUS_INVALID_ARGUMENT;
	out->priority = (uint8_t)m->priority;
	*ret = out;
	return GRPC_STATUS_OK;
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

/* The engine tenant of the caller. */
static grpc_status_code caller(struct kvt_daemon *d, struct kvt_call *call,
			       uint32_t *tenant, struct kvt_reply *r)
{
	uint32_t uid = caller_uid(call);
	char name[KVT_TENANT_NAME_MAX];

	/* The user database is read once per tenant, not per call. */
	if (kvt_engine_tenant(d->engine, uid, NULL, tenant) == 0)
		return GRPC_STATUS_OK;
	tenant_name(uid, name, sizeof(name));
	if (kvt_engine_tenant(d->engine, uid, name, tenant) < 0)
		return reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
			      "the daemon already serves %d tenants", KVT_TENANTS_MAX);
	return GRPC_STATUS_OK;
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

static grpc_status_code attach_open(void *ctx, struct kvt_call *call,
				    const uint8_t *req, size_t len,
				    struct kvt_reply *r, void **state)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__AttachRequest *q =
		unpack(&kvtier__v1__attach_request__descriptor, req, len, r);
	Kvtier__V1__AttachEvent ev = KVTIER__V1__ATTACH_EVENT__INIT;
	Kvtier__V1__HbmPool pool = KVTIER__V1__HBM_POOL__INIT;
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	char name[KVT_TENANT_NAME_MAX];
	struct kvt_session *s;
	grpc_status_code code;
	uint32_t tenant;
	int rc;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if (strlen(q->client_name) > CLIENT_NAME_MAX) {
		code = reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "client_name is longer than %d bytes", CLIENT_NAME_MAX);
		goto out;
	}
	if (q->gpu_uuid.len != 0 && q->gpu_uuid.len != KVT_GPU_UUID_BYTES) {
		code = reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "gpu_uuid is %zu bytes; pass the %d-byte cudaDeviceProp.uuid or nothing",
			      q->gpu_uuid.len, KVT_GPU_UUID_BYTES);
		goto out;
	}
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK)
		goto out;
	rc = kvt_engine_session_open(d->engine, tenant, token, &s);
	if (rc == -EDQUOT) {
		tenant_name(caller_uid(call), name, sizeof(name));
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
			      "tenants.max_sessions (%u) reached for tenant %s: close a session first",
			      d->max_sessions, name);
		goto out;
	}
	if (rc < 0) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED,
			      "cannot open a session: %s", strerror(-rc));
		goto out;
	}
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
	tenant_name(caller_uid(call), name, sizeof(name));
	ev.tenant = name;
	code = pack(&ev, r);
	if (code != GRPC_STATUS_OK) {
		kvt_engine_session_close(d->engine, s);
		goto out;
	}
	*state = s;
	kvt_log(KVT_LOG_INFO, "session opened (client \"%s\", tenant %s, pid %d)",
		q->client_name, name, (int)kvt_call_peer(call)->pid);
out:
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

static void attach_close(void *ctx, void *state)
{
	struct kvt_daemon *d = ctx;

	kvt_engine_session_close(d->engine, state);
	kvt_log(KVT_LOG_INFO, "session closed: its pins and reservations are released");
}

const struct kvt_stream_method kvt_rpc_attach = {
	"/kvtier.v1.KvTier/Attach", attach_open, attach_close
};

/* ---- unary methods ---- */

static grpc_status_code open_namespace(void *ctx, struct kvt_call *call,
				       const uint8_t *req, size_t len,
				       struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__OpenNamespaceRequest *q =
		unpack(&kvtier__v1__open_namespace_request__descriptor, req, len, r);
	Kvtier__V1__OpenNamespaceResponse p = KVTIER__V1__OPEN_NAMESPACE_RESPONSE__INIT;
	struct kvt_err err;
	grpc_status_code code;
	bool created = false;
	uint32_t tenant;
	uint64_t idle_ttl = 0;
	int rc;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK)
		goto out;
	p.shared = kvt_config_listed(d->shared_namespaces, q->name);
	code = check_duration("idle_ttl_ms", q->idle_ttl_ms, &idle_ttl, r);
	if (code != GRPC_STATUS_OK)
		goto out;
	rc = kvt_engine_open_namespace(d->engine, tenant, q->name, q->page_bytes,
				       q->block_tokens, p.shared,
				       idle_ttl, &p.namespace_id,
				       &created, &p.slot_stride, &err);
	p.created = created;
	code = engine_status(rc, &err, r);
	if (code == GRPC_STATUS_OK) {
		if (created)
			kvt_log(KVT_LOG_INFO, "namespace %s: page %llu bytes, %u tokens per block%s",
				q->name, (unsigned long long)q->page_bytes,
				q->block_tokens, p.shared ? ", shared" : "");
		code = pack(&p, r);
	}
out:
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

/* Fills the request head shared by keyed calls. */
static struct kvt_req req_head(uint32_t tenant, const ProtobufCBinaryData *session,
			       uint32_t ns, const uint8_t **keys, size_t n)
{
	return (struct kvt_req){ .tenant = tenant,
				 .session = session ? session->data : NULL,
				 .ns = ns, .keys = keys, .n = (uint32_t)n };
}

static grpc_status_code lookup(void *ctx, struct kvt_call *call,
			       const uint8_t *req, size_t len,
			       struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__LookupRequest *q =
		unpack(&kvtier__v1__lookup_request__descriptor, req, len, r);
	Kvtier__V1__LookupResponse p = KVTIER__V1__LOOKUP_RESPONSE__INIT;
	Kvtier__V1__Tier *tiers = NULL;
	enum kvt_tier *where = NULL;
	const uint8_t **keys = NULL;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) == GRPC_STATUS_OK &&
	    (code = check_keys(d, q->n_keys, q->keys, &keys, r)) == GRPC_STATUS_OK) {
		where = malloc(sizeof(*where) * (q->n_keys + 1));
		tiers = malloc(sizeof(*tiers) * (q->n_keys + 1));
		if (!where || !tiers)
			code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	}
	if (code == GRPC_STATUS_OK) {
		h = req_head(tenant, NULL, q->namespace_id, keys, q->n_keys);
		code = engine_status(kvt_engine_lookup(d->engine, &h,
						       &p.ready_blocks,
						       &p.pending_blocks, where,
						       &err),
				     &err, r);
	}
	if (code == GRPC_STATUS_OK) {
		/* enum kvt_tier's values are the proto's. */
		for (uint32_t i = 0; i < p.ready_blocks; i++)
			tiers[i] = (Kvtier__V1__Tier)where[i];
		p.tiers = tiers;
		p.n_tiers = p.ready_blocks;
		code = pack(&p, r);
	}
	free(where);
	free(tiers);
	free(keys);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

/* Location messages for n engine locations, as an array of pointers. */
struct locations {
	Kvtier__V1__Location *msgs;
	Kvtier__V1__Location **ptrs;
};

static int locations_fill(struct locations *l, const struct kvt_location *src,
			  uint32_t n)
{
	l->msgs = calloc(n + 1, sizeof(*l->msgs));
	l->ptrs = calloc(n + 1, sizeof(*l->ptrs));
	if (!l->msgs || !l->ptrs)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		kvtier__v1__location__init(&l->msgs[i]);
		l->msgs[i].tier = src[i].tier == KVT_TIER_HBM ?
			KVTIER__V1__TIER__TIER_HBM : KVTIER__V1__TIER__TIER_HOST;
		l->msgs[i].segment = src[i].segment;
		l->msgs[i].generation = src[i].generation;
		l->msgs[i].offset = src[i].offset;
		l->ptrs[i] = &l->msgs[i];
	}
	return 0;
}

static void locations_free(struct locations *l)
{
	free(l->msgs);
	free(l->ptrs);
}

static grpc_status_code reserve(void *ctx, struct kvt_call *call,
				const uint8_t *req, size_t len,
				struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__ReserveRequest *q =
		unpack(&kvtier__v1__reserve_request__descriptor, req, len, r);
	Kvtier__V1__ReserveResponse p = KVTIER__V1__RESERVE_RESPONSE__INIT;
	enum kvt_reserve_state *states = NULL;
	struct kvt_location *locs = NULL;
	struct locations l = { 0 };
	const uint8_t **keys = NULL, *parent;
	struct kvt_retention rbuf;
	const struct kvt_retention *ret;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK ||
	    (code = check_session(&q->session, r)) != GRPC_STATUS_OK ||
	    (code = check_parent(&q->parent, &parent, r)) != GRPC_STATUS_OK ||
	    (code = check_retention(q->retention, &rbuf, &ret, r)) != GRPC_STATUS_OK ||
	    (code = check_keys(d, q->n_keys, q->keys, &keys, r)) != GRPC_STATUS_OK)
		goto out;
	h = req_head(tenant, &q->session, q->namespace_id, keys, q->n_keys);
	states = malloc(sizeof(*states) * q->n_keys);
	locs = malloc(sizeof(*locs) * q->n_keys);
	if (!states || !locs) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	code = engine_status(kvt_engine_reserve(d->engine, &h, parent, ret,
						states, locs, &err),
			     &err, r);
	if (code != GRPC_STATUS_OK)
		goto out;
	if (locations_fill(&l, locs, (uint32_t)q->n_keys) < 0) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	/* The engine's values are kvtier.v1.ReserveState's by construction. */
	p.states = (Kvtier__V1__ReserveState *)states;
	p.n_states = q->n_keys;
	p.locations = l.ptrs;
	p.n_locations = q->n_keys;
	code = pack(&p, r);
out:
	locations_free(&l);
	free(states);
	free(locs);
	free(keys);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

typedef int (*owned_fn)(struct kvt_engine *e, const struct kvt_req *q,
			struct kvt_err *err);

/* Commit and Abort share their request shape and their checks. */
static grpc_status_code owned_keys(struct kvt_daemon *d, struct kvt_call *call,
				   const ProtobufCBinaryData *session,
				   uint32_t ns, size_t n,
				   const ProtobufCBinaryData *key_list,
				   owned_fn fn, const void *empty_reply,
				   struct kvt_reply *r)
{
	const uint8_t **keys = NULL;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;
	uint32_t tenant;

	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK ||
	    (code = check_session(session, r)) != GRPC_STATUS_OK ||
	    (code = check_keys(d, n, key_list, &keys, r)) != GRPC_STATUS_OK)
		return code;
	h = req_head(tenant, session, ns, keys, n);
	code = engine_status(fn(d->engine, &h, &err), &err, r);
	free(keys);
	return code == GRPC_STATUS_OK ? pack(empty_reply, r) : code;
}

static grpc_status_code commit(void *ctx, struct kvt_call *call,
			       const uint8_t *req, size_t len,
			       struct kvt_reply *r)
{
	Kvtier__V1__CommitRequest *q =
		unpack(&kvtier__v1__commit_request__descriptor, req, len, r);
	Kvtier__V1__CommitResponse p = KVTIER__V1__COMMIT_RESPONSE__INIT;
	grpc_status_code code;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	code = owned_keys(ctx, call, &q->session, q->namespace_id, q->n_keys,
			  q->keys, kvt_engine_commit, &p, r);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

static grpc_status_code abort_(void *ctx, struct kvt_call *call,
			       const uint8_t *req, size_t len,
			       struct kvt_reply *r)
{
	Kvtier__V1__AbortRequest *q =
		unpack(&kvtier__v1__abort_request__descriptor, req, len, r);
	Kvtier__V1__AbortResponse p = KVTIER__V1__ABORT_RESPONSE__INIT;
	grpc_status_code code;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	code = owned_keys(ctx, call, &q->session, q->namespace_id, q->n_keys,
			  q->keys, kvt_engine_abort, &p, r);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

/* An Acquire in flight: answered by acquire_done, maybe after a wait. */
struct acquire_call {
	struct kvt_daemon *d;
	struct kvt_call *call;
	uint32_t tenant;
	uint8_t session[KVT_SESSION_TOKEN_BYTES];
};

static void acquire_done(void *arg, int rc, const struct kvt_acquired *got)
{
	struct acquire_call *a = arg;
	Kvtier__V1__AcquireResponse p = KVTIER__V1__ACQUIRE_RESPONSE__INIT;
	struct locations l = { 0 };
	struct kvt_reply r = { 0 };
	grpc_status_code code;

	if (rc == -ENOENT) {
		code = reject(&r, GRPC_STATUS_NOT_FOUND,
			      "the session ended while this Acquire waited");
	} else if (rc < 0) {
		code = reject(&r, GRPC_STATUS_RESOURCE_EXHAUSTED,
			      "out of memory recording the lease");
	} else if (locations_fill(&l, got->locs, got->count) < 0) {
		struct kvt_err ignored;

		if (got->lease)
			kvt_engine_release(a->d->engine, a->tenant, a->session,
					   got->lease, &ignored);
		code = reject(&r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	} else {
		p.blocks = got->count;
		p.lease = got->lease;
		p.locations = l.ptrs;
		p.n_locations = got->count;
		code = pack(&p, &r);
	}
	locations_free(&l);
	kvt_call_reply(a->call, code, &r);
	free(a);
}

static grpc_status_code acquire(void *ctx, struct kvt_call *call,
				const uint8_t *req, size_t len,
				struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__AcquireRequest *q =
		unpack(&kvtier__v1__acquire_request__descriptor, req, len, r);
	struct acquire_call *a = NULL;
	const uint8_t **keys = NULL;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK ||
	    (code = check_session(&q->session, r)) != GRPC_STATUS_OK ||
	    (code = check_keys(d, q->n_keys, q->keys, &keys, r)) != GRPC_STATUS_OK)
		goto out;
	a = calloc(1, sizeof(*a));
	if (!a) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	*a = (struct acquire_call){ .d = d, .call = call, .tenant = tenant };
	memcpy(a->session, q->session.data, sizeof(a->session));
	h = req_head(tenant, &q->session, q->namespace_id, keys, q->n_keys);
	code = engine_status(kvt_engine_acquire(d->engine, &h,
						(uint64_t)q->wait_ms * KVT_MS,
						acquire_done, a, &err),
			     &err, r);
	if (code == GRPC_STATUS_OK)
		code = KVT_STATUS_DEFERRED; /* acquire_done answers, maybe already */
	else
		free(a);
out:
	free(keys);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

void kvt_rpc_draining(void *ctx)
{
	struct kvt_daemon *d = ctx;

	kvt_engine_stop_waiting(d->engine);
}

static grpc_status_code release(void *ctx, struct kvt_call *call,
				const uint8_t *req, size_t len,
				struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__ReleaseRequest *q =
		unpack(&kvtier__v1__release_request__descriptor, req, len, r);
	Kvtier__V1__ReleaseResponse p = KVTIER__V1__RELEASE_RESPONSE__INIT;
	struct kvt_err err;
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) == GRPC_STATUS_OK &&
	    (code = check_session(&q->session, r)) == GRPC_STATUS_OK)
		code = engine_status(kvt_engine_release(d->engine, tenant,
							q->session.data,
							q->lease, &err),
				     &err, r);
	if (code == GRPC_STATUS_OK)
		code = pack(&p, r);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

static grpc_status_code put(void *ctx, struct kvt_call *call,
			    const uint8_t *req, size_t len,
			    struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__PutRequest *q =
		unpack(&kvtier__v1__put_request__descriptor, req, len, r);
	Kvtier__V1__PutResponse p = KVTIER__V1__PUT_RESPONSE__INIT;
	const uint8_t **keys = NULL, *parent;
	const void **pages = NULL;
	struct kvt_retention rbuf;
	const struct kvt_retention *ret;
	uint64_t page_bytes;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK ||
	    (code = check_parent(&q->parent, &parent, r)) != GRPC_STATUS_OK ||
	    (code = check_retention(q->retention, &rbuf, &ret, r)) != GRPC_STATUS_OK ||
	    (code = check_keys(d, q->n_keys, q->keys, &keys, r)) != GRPC_STATUS_OK)
		goto out;
	if (q->n_pages != q->n_keys) {
		code = reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "%zu pages for %zu keys: give one page per key",
			      q->n_pages, q->n_keys);
		goto out;
	}
	code = engine_status(kvt_engine_page_bytes(d->engine, tenant, q->namespace_id,
						   &page_bytes, &err),
			     &err, r);
	if (code != GRPC_STATUS_OK)
		goto out;
	pages = malloc(sizeof(*pages) * q->n_pages);
	if (!pages) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < q->n_pages; i++) {
		if (q->pages[i].len != page_bytes) {
			code = reject(r, GRPC_STATUS_INVALID_ARGUMENT,
				      "pages[%zu] is %zu bytes; the namespace's page_bytes is %llu",
				      i, q->pages[i].len,
				      (unsigned long long)page_bytes);
			goto out;
		}
		pages[i] = q->pages[i].data;
	}
	h = req_head(tenant, NULL, q->namespace_id, keys, q->n_keys);
	code = engine_status(kvt_engine_put(d->engine, &h, parent, ret, pages,
					    &p.stored, &err),
			     &err, r);
	if (code == GRPC_STATUS_OK)
		code = pack(&p, r);
out:
	free(pages);
	free(keys);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

static grpc_status_code get(void *ctx, struct kvt_call *call,
			    const uint8_t *req, size_t len,
			    struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__GetRequest *q =
		unpack(&kvtier__v1__get_request__descriptor, req, len, r);
	Kvtier__V1__GetResponse p = KVTIER__V1__GET_RESPONSE__INIT;
	struct kvt_block **pinned = NULL;
	ProtobufCBinaryData *pages = NULL;
	const uint8_t **keys = NULL;
	uint64_t page_bytes, fit;
	uint32_t count = 0, tenant;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK ||
	    (code = check_keys(d, q->n_keys, q->keys, &keys, r)) != GRPC_STATUS_OK ||
	    (code = engine_status(kvt_engine_page_bytes(d->engine, tenant, q->namespace_id,
							&page_bytes, &err),
				  &err, r)) != GRPC_STATUS_OK)
		goto out;
	/* Each page costs its bytes plus a tag and a length varint. */
	fit = (d->max_message_size - 16) / (page_bytes + 11);
	pinned = malloc(sizeof(*pinned) * q->n_keys);
	pages = malloc(sizeof(*pages) * q->n_keys);
	if (!pinned || !pages) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	h = req_head(tenant, NULL, q->namespace_id, keys, q->n_keys);
	code = engine_status(kvt_engine_pin(d->engine, &h,
					    fit > UINT32_MAX ? UINT32_MAX : (uint32_t)fit,
					    pinned, &count, &p.ready_blocks, &err),
			     &err, r);
	if (code != GRPC_STATUS_OK)
		goto out;
	/* Pinned: the pages cannot move while pack copies them out. */
	for (uint32_t i = 0; i < count; i++) {
		pages[i].data = (uint8_t *)kvt_engine_page(d->engine, pinned[i]);
		pages[i].len = page_bytes;
	}
	p.pages = pages;
	p.n_pages = count;
	code = pack(&p, r);
	kvt_engine_unpin(d->engine, pinned, count);
out:
	free(pinned);
	free(pages);
	free(keys);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

/* A drop's target tenant: a user name or uid, or "" for the caller. */
static grpc_status_code drop_target(const char *tenant, struct kvt_call *call,
				    uint32_t *uid, struct kvt_reply *r)
{
	*uid = caller_uid(call);
	if (tenant[0] && kvt_parse_user(tenant, uid) < 0)
		return reject(r, GRPC_STATUS_INVALID_ARGUMENT,
			      "tenant '%s' is neither a user name nor a uid", tenant);
	return GRPC_STATUS_OK;
}

static grpc_status_code drop(void *ctx, struct kvt_call *call,
			     const uint8_t *req, size_t len,
			     struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__DropRequest *q =
		unpack(&kvtier__v1__drop_request__descriptor, req, len, r);
	Kvtier__V1__DropResponse p = KVTIER__V1__DROP_RESPONSE__INIT;
	const uint8_t **keys = NULL;
	struct kvt_err err;
	struct kvt_req h;
	grpc_status_code code;
	uint32_t tenant, uid = 0;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK)
		goto out;
	switch (q->scope) {
	case KVTIER__V1__DROP_SCOPE__DROP_SCOPE_KEYS:
		code = check_keys(d, q->n_keys, q->keys, &keys, r);
		break;
	case KVTIER__V1__DROP_SCOPE__DROP_SCOPE_NAMESPACE:
	case KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT:
		if (q->n_keys)
			code = reject(r, GRPC_STATUS_INVALID_ARGUMENT,
				      "keys are only for DROP_SCOPE_KEYS");
		else if (q->scope == KVTIER__V1__DROP_SCOPE__DROP_SCOPE_TENANT)
			code = drop_target(q->tenant, call, &uid, r);
		break;
	default:
		code = reject(r, GRPC_STATUS_INVALID_ARGUMENT, "unknown scope %d",
			      (int)q->scope);
	}
	if (code != GRPC_STATUS_OK)
		goto out;
	h = req_head(tenant, NULL, q->namespace_id, keys, q->n_keys);
	code = engine_status(kvt_engine_drop(d->engine, &h,
					     (enum kvt_drop_scope)q->scope,
					     is_admin(call), uid, &p.dropped,
					     &err),
			     &err, r);
	if (code == GRPC_STATUS_OK)
		code = pack(&p, r);
out:
	free(keys);
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

static grpc_status_code drop_namespace(void *ctx, struct kvt_call *call,
				       const uint8_t *req, size_t len,
				       struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__DropNamespaceRequest *q =
		unpack(&kvtier__v1__drop_namespace_request__descriptor, req, len, r);
	Kvtier__V1__DropNamespaceResponse p =
		KVTIER__V1__DROP_NAMESPACE_RESPONSE__INIT;
	struct kvt_err err;
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK)
		goto out;
	code = engine_status(kvt_engine_drop_namespace(d->engine, tenant,
						       q->namespace_id,
						       is_admin(call),
						       &p.dropped, &p.pending,
						       &err),
			     &err, r);
	if (code == GRPC_STATUS_OK) {
		kvt_log(KVT_LOG_INFO, "namespace_id %u dropped by uid %u (%u blocks, %u reservations left to their producers)",
			q->namespace_id, caller_uid(call), p.dropped, p.pending);
		code = pack(&p, r);
	}
out:
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

/* ---- Stats (the reply is stats.c's) ---- */

static grpc_status_code stats(void *ctx, struct kvt_call *call,
			      const uint8_t *req, size_t len,
			      struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	Kvtier__V1__StatsRequest *q =
		unpack(&kvtier__v1__stats_request__descriptor, req, len, r);
	grpc_status_code code;
	uint32_t tenant;

	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	protobuf_c_message_free_unpacked(&q->base, NULL);
	/* An admin sees every tenant; anyone else, its own (and the totals). */
	if ((code = caller(d, call, &tenant, r)) != GRPC_STATUS_OK)
		return code;
	return kvt_rpc_stats(d, is_admin(call), tenant, r);
}

static grpc_status_code get_config(void *ctx, struct kvt_call *call,
				   const uint8_t *req, size_t len,
				   struct kvt_reply *r)
{
	struct kvt_daemon *d = ctx;
	struct kvt_reload *rl = d->reload;
	Kvtier__V1__GetConfigRequest *q =
		unpack(&kvtier__v1__get_config_request__descriptor, req, len, r);
	Kvtier__V1__GetConfigResponse p = KVTIER__V1__GET_CONFIG_RESPONSE__INIT;
	size_t n = kvt_config_knobs();
	struct knob_text {
		char value[KVT_CONFIG_VALUE_MAX], pending[KVT_CONFIG_VALUE_MAX];
		char source[PATH_MAX + 16];
	} *text = calloc(n, sizeof(*text));
	Kvtier__V1__ConfigKnob *knobs = calloc(n, sizeof(*knobs));
	Kvtier__V1__ConfigKnob **ptrs = calloc(n, sizeof(*ptrs));
	grpc_status_code code;

	(void)call;
	if (!q) {
		code = GRPC_STATUS_INVALID_ARGUMENT;
		goto out;
	}
	if (!text || !knobs || !ptrs) {
		code = reject(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
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
	p.file = (char *)(rl->file ? rl->file : "");
	p.knobs = ptrs;
	p.n_knobs = n;
	p.reloads_total = rl->reloads_total;
	p.reload_failures_total = rl->failures_total;
	p.last_reload_ok = rl->last_ok;
	p.last_reload_unix = rl->last_time;
	p.last_reload_error = rl->last_error;
	code = pack(&p, r);
	pthread_mutex_unlock(&rl->lock);
out:
	if (q)
		protobuf_c_message_free_unpacked(&q->base, NULL);
	free(text);
	free(knobs);
	free(ptrs);
	return code;
}

/* ---- grpc.health.v1.Health ---- */

static grpc_status_code health_check(void *ctx, struct kvt_call *call,
				     const uint8_t *req, size_t len,
				     struct kvt_reply *r)
{
	Grpc__Health__V1__HealthCheckRequest *q =
		unpack(&grpc__health__v1__health_check_request__descriptor, req, len, r);
	Grpc__Health__V1__HealthCheckResponse p =
		GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	grpc_status_code code;

	(void)ctx;
	(void)call;
	if (!q)
		return GRPC_STATUS_INVALID_ARGUMENT;
	if (q->service[0] && strcmp(q->service, "kvtier.v1.KvTier") != 0) {
		code = reject(r, GRPC_STATUS_NOT_FOUND,
			      "unknown service \"%s\" (known: \"\", \"kvtier.v1.KvTier\")",
			      q->service);
	} else {
		p.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
		code = pack(&p, r);
	}
	protobuf_c_message_free_unpacked(&q->base, NULL);
	return code;
}

const struct kvt_method kvt_rpc_methods[] = {
	{ "/kvtier.v1.KvTier/OpenNamespace", open_namespace },
	{ "/kvtier.v1.KvTier/Lookup", lookup },
	{ "/kvtier.v1.KvTier/Reserve", reserve },
	{ "/kvtier.v1.KvTier/Commit", commit },
	{ "/kvtier.v1.KvTier/Abort", abort_ },
	{ "/kvtier.v1.KvTier/Acquire", acquire },
	{ "/kvtier.v1.KvTier/Release", release },
	{ "/kvtier.v1.KvTier/Put", put },
	{ "/kvtier.v1.KvTier/Get", get },
	{ "/kvtier.v1.KvTier/Drop", drop },
	{ "/kvtier.v1.KvTier/DropNamespace", drop_namespace },
	{ "/kvtier.v1.KvTier/Stats", stats },
	{ "/kvtier.v1.KvTier/GetConfig", get_config },
	{ "/grpc.health.v1.Health/Check", health_check },
};

const size_t kvt_rpc_nmethods = sizeof(kvt_rpc_methods) / sizeof(kvt_rpc_methods[0]);

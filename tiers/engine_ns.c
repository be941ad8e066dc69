/*
 * Tenants and namespaces: tenants are registered on first sight by uid;
 * namespaces are a table whose entries are reused once a dropped
 * namespace's last block is gone (ids carry the entry's generation).
 * Everything here runs under the engine lock (engine_int.h).
 */
#include "engine_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A namespace's id: its entry in the low half, the entry's generation in
 * the high one, so that a dropped namespace's id never names the next. */
uint32_t ns_id(const struct kvt_engine *e, uint32_t i)
{
	return (uint32_t)e->ns[i].generation << 16 | i;
}

/* A block of namespace i is freed: the last of a dropped one frees its
 * entry for reuse. */
void ns_block_gone(struct kvt_engine *e, uint32_t i)
{
	if (--e->ns[i].blocks == 0 && e->ns[i].state == NS_DROPPED)
		e->ns[i].state = NS_FREE;
}
/* ---- tenants ---- */

uint64_t tenant_quota(const struct kvt_engine *e, uint32_t uid)
{
	for (uint32_t i = 0; i < e->cfg.nquotas; i++)
		if (e->quotas[i].uid == uid)
			return e->quotas[i].host_bytes;
	return e->cfg.default_host_quota;
}

/*
 * Tenants are never removed, and an entry is filled in before ntenants
 * (stored with release) makes it visible, after which its uid never
 * changes: so uid lookups may run without the lock, and an RPC's tenant
 * costs no lock once the tenant is known (kvt_engine_tenant).
 */
static int tenant_find(const struct kvt_engine *e, uint32_t uid, uint32_t *tenant)
{
	uint32_t n = __atomic_load_n(&e->ntenants, __ATOMIC_ACQUIRE);

	for (uint32_t i = 1; i < n; i++)
		if (e->tenants[i].uid == uid) {
			*tenant = i;
			return 0;
		}
	return -ENOENT;
}

int tenant_locked(struct kvt_engine *e, uint32_t uid, const char *name,
		  uint32_t *tenant)
{
	uint32_t i = e->ntenants;

	if (tenant_find(e, uid, tenant) == 0)
		return 0;
	if (!name)
		return -ENOENT;
	if (i == KVT_TENANTS_MAX)
		return -ENOSPC;
	e->tenants[i].uid = uid;
	snprintf(e->tenants[i].name, sizeof(e->tenants[i].name), "%s", name);
	e->tenants[i].quota = tenant_quota(e, uid);
	__atomic_store_n(&e->ntenants, i + 1, __ATOMIC_RELEASE);
	*tenant = i;
	return 0;
}

int kvt_engine_tenant(struct kvt_engine *e, uint32_t uid, const char *name,
		      uint32_t *tenant)
{
	int rc;

	if (tenant_find(e, uid, tenant) == 0)
		return 0;
	pthread_mutex_lock(&e->lock);
	rc = tenant_locked(e, uid, name, tenant);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- namespaces ---- */

bool ns_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > KVT_NAMESPACE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* Namespaces the tenant created and has not dropped. */
uint32_t ns_created_by(const struct kvt_engine *e, uint32_t tenant)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < e->nns; i++)
		n += e->ns[i].state == NS_LIVE && e->ns[i].creator == tenant;
	return n;
}

/* The tenant's own namespaces it dropped whose entries still wait for
 * their last blocks: only it can hold those (by its leases and
 * reservations), so they count against it too, separately. */
static uint32_t ns_dropped_by(const struct kvt_engine *e, uint32_t tenant)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < e->nns; i++)
		n += e->ns[i].state == NS_DROPPED && !e->ns[i].shared &&
		     e->ns[i].creator == tenant;
	return n;
}

/* A table entry for a new namespace: a free one (its generation moves on),
 * else the next unused one. */
static struct namespace *ns_entry(struct kvt_engine *e, struct kvt_err *err)
{
	uint32_t dropped = 0;

	for (uint32_t i = 0; i < e->nns; i++) {
		struct namespace *n = &e->ns[i];
		uint16_t generation = (uint16_t)(n->generation + 1);

		if (n->state == NS_FREE) {
			memset(n, 0, sizeof(*n));
			n->generation = generation;
			return n;
		}
		dropped += n->state == NS_DROPPED;
	}
	if (e->nns < e->cfg.max_namespaces)
		return &e->ns[e->nns++];
	kvt_errf(err, -ENOSPC, "limits.max_namespaces (%u) reached: the daemon holds that many namespaces%s",
		    e->cfg.max_namespaces,
		    dropped ? ", some of them dropped and waiting for their last pinned or reserved blocks" : "");
	return NULL;
}

/*
 * Namespaces are the tenant's own, like keys, unless shared: tenant is
 * KVT_TENANT_SHARED for a shared one. A new one counts against creator's
 * max_tenant_namespaces (KVT_TENANT_SHARED: against nobody), which bounds
 * it unless recovering (what the nvme tier holds comes back regardless).
 * *ns: its entry.
 */
int ns_open_locked(struct kvt_engine *e, const char *name,
		   uint64_t page_bytes, uint32_t block_tokens,
		   uint32_t tenant, uint32_t creator, bool recovering,
		   uint64_t idle_ttl, uint32_t *ns, bool *created,
		   struct kvt_err *err)
{
	bool shared = tenant == KVT_TENANT_SHARED;
	struct namespace *n;
	uint32_t i;

	for (i = 0; i < e->nns; i++) {
		n = &e->ns[i];
		if (n->state != NS_LIVE || n->tenant != tenant ||
		    strcmp(n->name, name) != 0)
			continue;
		if (n->page_bytes != page_bytes || n->block_tokens != block_tokens)
			return kvt_errf(err, -EPERM,
					   "namespace %s is open with page_bytes %llu and block_tokens %u, not %llu and %u",
					   name, (unsigned long long)n->page_bytes,
					   n->block_tokens,
					   (unsigned long long)page_bytes, block_tokens);
		if (idle_ttl) {
			n->idle_ttl = idle_ttl;
			n->own_ttl = true;
		}
		*ns = i;
		*created = false;
		return 0;
	}
	if (!recovering && e->cfg.max_tenant_namespaces &&
	    ns_created_by(e, creator) >= e->cfg.max_tenant_namespaces) {
		e->st.namespaces_refused_total++;
		return kvt_errf(err, -EDQUOT,
				   "tenants.max_namespaces (%u) reached for tenant %s: drop a namespace first (DropNamespace)",
				   e->cfg.max_tenant_namespaces, e->tenants[creator].name);
	}
	/* Nor may its dropped ones, which hold their entries while it keeps
	 * their leases and reservations, fill the daemon's table. */
	if (!recovering && e->cfg.max_tenant_namespaces &&
	    ns_dropped_by(e, creator) >= e->cfg.max_tenant_namespaces) {
		e->st.namespaces_refused_total++;
		return kvt_errf(err, -EDQUOT,
				   "tenants.max_namespaces (%u) reached for tenant %s: that many namespaces it dropped still wait for their last leased or reserved blocks (release the leases; commit, abort or close the sessions of the reservations)",
				   e->cfg.max_tenant_namespaces, e->tenants[creator].name);
	}
	if (!(n = ns_entry(e, err)))
		return -ENOSPC;
	i = (uint32_t)(n - e->ns);
	n->state = NS_LIVE;
	strcpy(n->name, name);
	n->page_bytes = page_bytes;
	n->block_tokens = block_tokens;
	n->shared = shared;
	n->tenant = tenant;
	n->creator = creator;
	n->idle_ttl = idle_ttl ? idle_ttl : e->cfg.idle_ttl;
	n->own_ttl = idle_ttl != 0;
	n->stride = (page_bytes + KVT_SLOT_ALIGN - 1) / KVT_SLOT_ALIGN *
		    KVT_SLOT_ALIGN;
	tiers_namespace(e, i, true);
	*ns = i;
	*created = true;
	return 0;
}

int kvt_engine_open_namespace(struct kvt_engine *e, uint32_t tenant,
			      const char *name,
			      uint64_t page_bytes, uint32_t block_tokens,
			      bool shared, uint64_t idle_ttl, uint32_t *ns,
			      bool *created, uint64_t *stride,
			      struct kvt_err *err)
{
	int rc;

	if (!ns_name_valid(name))
		return kvt_errf(err, -EINVAL,
				   "namespace name must be 1..%d characters of [A-Za-z0-9._:-]",
				   KVT_NAMESPACE_NAME_MAX);
	if (page_bytes == 0 || page_bytes > e->cfg.segment_bytes)
		return kvt_errf(err, -EINVAL,
				   "page_bytes %llu is outside 1..%llu (the host segment size)",
				   (unsigned long long)page_bytes,
				   (unsigned long long)e->cfg.segment_bytes);
	if (block_tokens == 0 || block_tokens > KVT_BLOCK_TOKENS_MAX)
		return kvt_errf(err, -EINVAL, "block_tokens %u is outside 1..%d",
				   block_tokens, KVT_BLOCK_TOKENS_MAX);

	pthread_mutex_lock(&e->lock);
	rc = ns_open_locked(e, name, page_bytes, block_tokens,
			    shared ? KVT_TENANT_SHARED : tenant, tenant, false,
			    idle_ttl, ns, created, err);
	if (rc == 0) {
		*stride = e->ns[*ns].stride;
		*ns = ns_id(e, *ns);
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/*
 * The entry of namespace id `id`, if tenant may use it. Another tenant's
 * namespace is as unknown as one that does not exist: its id says nothing.
 * A dropped one is -ENOENT too, saying so, unless dropped_ok. Caller holds
 * the lock.
 */
int ns_index(struct kvt_engine *e, uint32_t id, uint32_t tenant,
	     bool dropped_ok, struct kvt_err *err)
{
	uint32_t i = id & 0xffff;
	const struct namespace *n = i < e->nns ? &e->ns[i] : NULL;

	if (!n || n->generation != id >> 16 ||
	    (n->tenant != tenant && n->tenant != KVT_TENANT_SHARED))
		return kvt_errf(err, -ENOENT, "unknown namespace_id %u", id);
	/* A free entry of the same generation is a dropped one, emptied. */
	if (n->state == NS_FREE || (n->state == NS_DROPPED && !dropped_ok))
		return kvt_errf(err, -ENOENT, "namespace %s (namespace_id %u) was dropped",
				   n->name, id);
	return (int)i;
}

/* q with its namespace id resolved to the entry (see ns_index): what the
 * engine's own functions take. */
int req_resolve(struct kvt_engine *e, const struct kvt_req *q,
		struct kvt_req *r, bool dropped_ok, struct kvt_err *err)
{
	int i = ns_index(e, q->ns, q->tenant, dropped_ok, err);

	*r = *q;
	if (i < 0)
		return i;
	r->ns = (uint32_t)i;
	return 0;
}

int kvt_engine_page_bytes(struct kvt_engine *e, uint32_t tenant, uint32_t ns,
			  uint64_t *page_bytes, struct kvt_err *err)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = ns_index(e, ns, tenant, false, err);
	if (rc >= 0) {
		*page_bytes = e->ns[rc].page_bytes;
		rc = 0;
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/*
 * The keyed operations of engine.h: Lookup, Reserve, Commit, Abort,
 * Acquire, Release, Pin, Put, Drop and DropNamespace. Each takes the
 * engine lock once, resolves the caller's namespace id (engine_ns.c) and
 * works on the blocks (engine_room.c, engine_wait.c).
 */
#include "engine_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "policy.h"

static struct kvt_block *find(struct kvt_engine *e, const struct kvt_req *q,
			      uint32_t i)
{
	return kvt_index_find(e->index, q->ns, ns_scope(e, q->ns),
			      q->keys[i]);
}

/* Keys the walk prefetches ahead of itself (see ready_prefix). */
#define LOOKAHEAD 8

/*
 * Walks the READY prefix of q's keys into e->found[0..*len), so that
 * callers need not look its blocks up again. Caller holds the lock.
 */
static int ready_prefix(struct kvt_engine *e, const struct kvt_req *q,
			uint32_t *len, struct kvt_err *err)
{
	uint32_t i, tenant = ns_scope(e, q->ns);

	if (q->n > e->found_cap) {
		struct kvt_block **f = realloc(e->found, sizeof(*f) * q->n);

		if (!f)
			return kvt_errf(err, -ENOMEM, "out of memory");
		e->found = f;
		e->found_cap = q->n;
	}
	/* In a large index every probe misses the cache: overlap them, a
	 * few keys ahead of the walk (buckets 2 * LOOKAHEAD keys ahead, their
	 * blocks LOOKAHEAD ahead) so that the prefetches in flight fit the
	 * core's miss buffers instead of crowding each other out. */
	for (i = 0; i < q->n && i < 2 * LOOKAHEAD; i++)
		kvt_index_prefetch(e->index, q->ns, tenant, q->keys[i]);
	for (i = 0; i < q->n && i < LOOKAHEAD; i++)
		kvt_index_prefetch_block(e->index, q->ns, tenant, q->keys[i]);
	for (i = 0; i < q->n; i++) {
		struct kvt_block *b;

		if (i + 2 * LOOKAHEAD < q->n)
			kvt_index_prefetch(e->index, q->ns, tenant, q->keys[i + 2 * LOOKAHEAD]);
		if (i + LOOKAHEAD < q->n)
			kvt_index_prefetch_block(e->index, q->ns, tenant, q->keys[i + LOOKAHEAD]);
		b = find(e, q, i);

		if (!b || b->state != KVT_BLOCK_READY)
			break;
		e->found[i] = b;
	}
	*len = i;
	return 0;
}

/* Counts a Lookup of q's n keys that found ready of them ready. */
static void lookup_count(struct kvt_engine *e, const struct kvt_req *q,
			 uint32_t ready, uint32_t pending)
{
	e->ns[q->ns].lookup_keys += q->n;
	e->ns[q->ns].lookup_hits += ready;
	e->tenants[q->tenant].lookup_keys += q->n;
	e->tenants[q->tenant].lookup_hits += ready;
	e->st.lookup_keys += q->n;
	e->st.lookup_hits += ready;
	e->st.lookup_pending += pending;
}

/* A Lookup hit on b, found in ns: counted by the lower tier that keeps it
 * when it has no host slot. Returns b's tier. */
static enum kvt_tier lookup_hit(struct kvt_engine *e, uint32_t ns,
				const struct kvt_block *b)
{
	enum kvt_tier t = tiers_where(e, b);

	if (t == KVT_TIER_NVME) {
		e->ns[ns].lookup_hits_nvme++;
		e->st.lookup_hits_nvme++;
	} else if (t == KVT_TIER_REMOTE) {
		e->ns[ns].lookup_hits_remote++;
		e->st.lookup_hits_remote++;
	}
	return t;
}

/* The local part of a Lookup (q resolved): the ready prefix, touched
 * leaf first so that the chain's root is the most recent, and what
 * follows it that exists (pending). */
static int lookup_local(struct kvt_engine *e, const struct kvt_req *q,
			uint32_t *ready, uint32_t *pending, enum kvt_tier *where,
			struct kvt_err *err)
{
	uint32_t r, p;
	uint64_t now;
	int rc;

	if ((rc = ready_prefix(e, q, &r, err)) < 0)
		return rc;
	for (p = r; p < q->n && find(e, q, p); p++)
		;
	now = engine_ticks_locked(e, r);
	for (uint32_t i = 0; i < r && i < LOOKAHEAD; i++)
		kvt_policy_prefetch_touch(e->found[r - 1 - i]);
	for (uint32_t i = r; i-- > 0;) {
		enum kvt_tier t = lookup_hit(e, q->ns, e->found[i]);

		if (i >= LOOKAHEAD)
			kvt_policy_prefetch_touch(e->found[i - LOOKAHEAD]);
		block_touch(e, e->found[i], now++);
		if (where)
			where[i] = t;
	}
	*ready = r;
	*pending = p - r;
	return 0;
}

int kvt_engine_lookup(struct kvt_engine *e, const struct kvt_req *q,
		      uint32_t *ready, uint32_t *pending, enum kvt_tier *where,
		      struct kvt_err *err)
{
	int rc = kvt_engine_lookup_async(e, q, 0, ready, pending, where, NULL,
					 NULL, err);

	return rc < 0 ? rc : 0;
}

/* A Lookup waiting for a lower tier's probe of its absent keys. */
struct probe {
	struct kvt_lower_tier *t;
	kvt_lookup_done done;
	void *arg;
	struct kvt_req q;  /* resolved; keys point into keys below */
	uint32_t id;       /* the namespace's id, to see it was not dropped */
	uint32_t ready;    /* found here */
	enum kvt_tier *where;
	const uint8_t **key_ptrs;
	uint8_t (*keys)[KVT_KEY_BYTES];
};

/* The first lower tier that can be asked for blocks found nowhere here. */
static struct kvt_lower_tier *prober(const struct kvt_engine *e)
{
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops->probe)
			return e->lower[i];
	return NULL;
}

/* A probe of rq's keys from ready on (the first ready found here, their
 * tiers in where); NULL: out of memory. */
static struct probe *probe_new(const struct kvt_req *rq, uint32_t id,
			       uint32_t ready, const enum kvt_tier *where,
			       kvt_lookup_done done, void *arg)
{
	size_t per_key = sizeof(enum kvt_tier) + sizeof(uint8_t *) + KVT_KEY_BYTES;
	struct probe *pr = calloc(1, sizeof(*pr) + per_key * rq->n);

	if (!pr)
		return NULL;
	/* Pointers first: each array stays aligned for any n. */
	pr->key_ptrs = (const uint8_t **)(pr + 1);
	pr->where = (enum kvt_tier *)(pr->key_ptrs + rq->n);
	pr->keys = (uint8_t (*)[KVT_KEY_BYTES])(pr->where + rq->n);
	for (uint32_t i = 0; i < rq->n; i++) {
		memcpy(pr->keys[i], rq->keys[i], KVT_KEY_BYTES);
		pr->key_ptrs[i] = pr->keys[i];
	}
	memcpy(pr->where, where, sizeof(*where) * ready);
	pr->q = *rq;
	pr->q.keys = pr->key_ptrs;
	pr->id = id;
	pr->ready = ready;
	pr->done = done;
	pr->arg = arg;
	return pr;
}

int kvt_engine_lookup_async(struct kvt_engine *e, const struct kvt_req *q,
			    uint64_t budget, uint32_t *ready, uint32_t *pending,
			    enum kvt_tier *where, kvt_lookup_done done,
			    void *arg, struct kvt_err *err)
{
	struct kvt_lower_tier *t;
	struct kvt_req rq;
	struct probe *pr;
	int rc;

	if (done && !where)
		return kvt_errf(err, -EINVAL, "a Lookup that may wait needs where");
	pthread_mutex_lock(&e->lock);
	if ((rc = req_resolve(e, q, &rq, false, err)) == 0)
		rc = lookup_local(e, &rq, ready, pending, where, err);
	if (rc < 0)
		goto out;
	/* Ask only where the chain stops here with nothing being made. */
	if (budget && done && *ready < rq.n && *pending == 0 && (t = prober(e)) &&
	    (pr = probe_new(&rq, q->ns, *ready, where, done, arg))) {
		pr->t = t;
		if (t->ops->probe(t, rq.ns, ns_scope(e, rq.ns), pr->keys + *ready,
				  rq.n - *ready, budget, pr) == 0) {
			pthread_mutex_unlock(&e->lock);
			return 0;
		}
		free(pr);
	}
	lookup_count(e, &rq, *ready, *pending);
	rc = 1;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Makes key i of pr, found by its tier, a READY block here kept there,
 * chained to the block before it; NULL when it cannot. */
static struct kvt_block *probe_adopt(struct kvt_engine *e, struct probe *pr,
				     uint32_t i)
{
	struct kvt_block *b = block_kept_new(e, pr->q.ns, ns_scope(e, pr->q.ns),
					     pr->keys[i]);

	if (!b)
		return NULL;
	b->parent = i ? find(e, &pr->q, i - 1) : NULL;
	if (b->parent)
		b->parent->children++;
	pr->t->ops->adopt(pr->t, b);
	return b;
}

void engine_probed(struct kvt_engine *e, void *job, const bool *found)
{
	struct probe *pr = job;
	uint32_t ready = pr->ready, n = pr->q.n;
	struct kvt_err err;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	/* The namespace may have been dropped while the store answered. */
	if (ns_index(e, pr->id, pr->q.tenant, false, &err) != (int)pr->q.ns) {
		rc = -ENOENT;
		ready = 0;
	} else {
		for (; ready < n && found && found[ready - pr->ready]; ready++) {
			struct kvt_block *b = find(e, &pr->q, ready);

			if (!b)
				b = probe_adopt(e, pr, ready);
			else if (b->state != KVT_BLOCK_READY)
				break; /* made here meanwhile */
			if (!b)
				break;
			block_touch(e, b, engine_now_locked(e));
			pr->where[ready] = lookup_hit(e, pr->q.ns, b);
		}
		lookup_count(e, &pr->q, ready, 0);
	}
	pthread_mutex_unlock(&e->lock);
	pr->done(pr->arg, rc, ready, 0, pr->where);
	free(pr);
}

/* ---- reserve / commit / abort ---- */

/*
 * A new PENDING block for owner in a free slot, or NULL (rc in *rc). Its
 * parent counts it as a child before the slot is sought, so that making
 * room never evicts the block the chain is being extended from.
 */
static struct kvt_block *block_reserve(struct kvt_engine *e,
				       struct kvt_block_list *pending, void *owner,
				       uint32_t ns, uint32_t tenant,
				       const uint8_t *key, const uint8_t *parent,
				       const struct kvt_retention *ret,
				       uint64_t now, int *rc)
{
	struct kvt_block *b = kvt_block_pool_alloc(e->blocks);
	uint32_t seg, slot;

	if (!b) {
		*rc = -ENOMEM;
		return NULL;
	}
	memcpy(b->key, key, KVT_KEY_BYTES);
	b->ns = (uint16_t)ns;
	b->tenant = (uint16_t)tenant;
	if ((*rc = kvt_policy_prepare(e->policy, ns, tenant)) < 0 ||
	    (*rc = kvt_index_insert(e->index, b)) < 0) {
		kvt_block_pool_free(e->blocks, b);
		return NULL;
	}
	b->parent = parent ? kvt_index_find(e->index, ns, tenant, parent) : NULL;
	if (b->parent)
		b->parent->children++;
	host_child(e, b->parent, true);
	if ((*rc = host_slot_alloc(e, ns, tenant, &seg, &slot)) < 0) {
		if (b->parent) {
			b->parent->children--;
			host_child(e, b->parent, false);
			block_settle(e, b->parent);
		}
		kvt_index_remove(e->index, b);
		kvt_block_pool_free(e->blocks, b);
		return NULL;
	}
	b->state = KVT_BLOCK_PENDING;
	b->u.pending.owner = owner;
	b->indexed = 1;
	host_attach(e, b, seg, slot);
	kvt_block_list_insert(pending, NULL, b);
	block_retain(e, b, ret, now);
	e->ns[ns].blocks++;
	e->ns[ns].pending++;
	e->st.reserved_total++;
	return b;
}

/*
 * Reserves q's keys for owner, whose PENDING blocks go on `pending` (a
 * session's list, or a Put call's own). Stops taking slots at the first key
 * that finds none. Caller holds the lock.
 */
static int reserve_locked(struct kvt_engine *e, struct kvt_block_list *pending,
			  void *owner, const struct kvt_req *q,
			  const uint8_t *parent,
			  const struct kvt_retention *ret,
			  enum kvt_reserve_state *states,
			  struct kvt_location *locs, struct kvt_err *err)
{
	uint32_t tenant = ns_scope(e, q->ns);
	uint32_t reserved = 0, no_space = 0;
	uint64_t now = engine_now_locked(e);
	int rc = 0;

	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		/* A reserved slot is a host one; the others' stay empty. */
		locs[i] = (struct kvt_location){ .tier = KVT_TIER_HOST };
		if (b && b->state == KVT_BLOCK_READY) {
			states[i] = KVT_RESERVE_PRESENT;
			if (ret)
				block_retain(e, b, ret, now);
			continue;
		}
		if (b && b->u.pending.owner != owner) {
			states[i] = KVT_RESERVE_BUSY;
			continue;
		}
		if (!b && no_space == 0) {
			b = block_reserve(e, pending, owner, q->ns, tenant,
					  q->keys[i], i ? q->keys[i - 1] : parent,
					  ret, now, &rc);
			if (!b && rc != -ENOSPC)
				return kvt_errf(err, rc, "slot allocation: %s",
						   strerror(-rc));
			reserved += b != NULL;
		}
		if (!b) {
			states[i] = KVT_RESERVE_NO_SPACE;
			no_space++;
			continue;
		}
		/* Reserved now, or earlier by the same owner: same slot. */
		states[i] = KVT_RESERVE_RESERVED;
		locs[i].segment = b->segment;
		locs[i].generation = kvt_host_generation(e->host, b->segment);
		locs[i].offset = kvt_slots_offset(e->slots, b->segment, b->slot);
	}
	if (no_space) {
		e->st.reserve_no_space_total += no_space;
		if (reserved == 0)
			return kvt_errf(err, -ENOSPC,
					   "host tier full: nothing this tenant may evict for %u of %u keys",
					   no_space, q->n);
	}
	return 0;
}

/* q's session (*s) and q resolved (*r, see req_resolve). */
static int session_req(struct kvt_engine *e, const struct kvt_req *q,
		       struct kvt_session **s, struct kvt_req *r,
		       bool dropped_ok, struct kvt_err *err)
{
	*s = session_find(e, q->session, q->tenant);
	if (!*s)
		return kvt_errf(err, -ENOENT, "unknown session");
	return req_resolve(e, q, r, dropped_ok, err);
}

int kvt_engine_reserve(struct kvt_engine *e, const struct kvt_req *q,
		       const uint8_t *parent,
		       const struct kvt_retention *retention,
		       enum kvt_reserve_state *states,
		       struct kvt_location *locs, struct kvt_err *err)
{
	struct kvt_session *s;
	struct kvt_req rq;
	int rc;

	pthread_mutex_lock(&e->lock);
	if ((rc = session_req(e, q, &s, &rq, false, err)) == 0)
		rc = reserve_locked(e, &s->pending, s, &rq, parent, retention,
				    states, locs, err);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Checks that every key is PENDING and owned by owner. Caller holds the lock. */
static int check_owned(struct kvt_engine *e, void *owner,
		       const struct kvt_req *q, struct kvt_err *err)
{
	char hex[17];

	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (!b || b->state != KVT_BLOCK_PENDING ||
		    b->u.pending.owner != owner)
			return kvt_errf(err, -EPERM,
					   "keys[%u] (%s...) is not reserved by this session (%s)",
					   i, key_hex(q->keys[i], hex),
					   !b ? "absent" :
					   b->state == KVT_BLOCK_READY ? "already committed" :
								  "reserved by another session");
	}
	return 0;
}

/* Publishes PENDING blocks and wakes their readers. Caller holds the lock. */
static void commit_locked(struct kvt_engine *e, struct kvt_block_list *pending,
			  const struct kvt_req *q, struct done_list *done)
{
	struct namespace *nsp = &e->ns[q->ns];

	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);
		struct kvt_waiter *waiters;

		if (b->state == KVT_BLOCK_READY)
			continue; /* listed twice */
		waiters = b->u.pending.waiters;
		kvt_block_list_unlink(pending, b);
		b->state = KVT_BLOCK_READY;
		b->u.atime = nsp->last_use = engine_now_locked(e);
		kvt_policy_update(e->policy, b);
		nsp->pending--;
		nsp->ready++;
		e->st.committed_total++;
		e->st.host_in_bytes_total += nsp->page_bytes;
		wake_waiters(e, waiters, done);
		tiers_save(e, b);
	}
}

static void abort_locked(struct kvt_engine *e, struct kvt_block_list *pending,
			 const struct kvt_req *q, struct done_list *done)
{
	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (b) /* NULL when listed twice */
			pending_abort(e, pending, b, done);
	}
}

typedef void (*owned_op)(struct kvt_engine *e, struct kvt_block_list *pending,
			 const struct kvt_req *q, struct done_list *done);

/*
 * Commit and Abort: all keys must be this session's reservations. In a
 * namespace dropped since they were made, both abort them, and a Commit
 * says it could not publish them.
 */
static int owned_call(struct kvt_engine *e, const struct kvt_req *q,
		      owned_op op, struct kvt_err *err)
{
	struct done_list done = { 0 };
	struct kvt_session *s;
	struct kvt_req rq;
	int rc;

	pthread_mutex_lock(&e->lock);
	if ((rc = session_req(e, q, &s, &rq, true, err)) == 0 &&
	    (rc = check_owned(e, s, &rq, err)) == 0) {
		if (e->ns[rq.ns].state == NS_DROPPED) {
			if (op == commit_locked)
				rc = kvt_errf(err, -ENOENT,
						 "namespace %s (namespace_id %u) was dropped: its reservations are aborted",
						 e->ns[rq.ns].name, q->ns);
			op = abort_locked;
		}
		op(e, &s->pending, &rq, &done);
	}
	pthread_mutex_unlock(&e->lock);
	done_run(&done);
	return rc;
}

int kvt_engine_commit(struct kvt_engine *e, const struct kvt_req *q,
		      struct kvt_err *err)
{
	return owned_call(e, q, commit_locked, err);
}

int kvt_engine_abort(struct kvt_engine *e, const struct kvt_req *q,
		     struct kvt_err *err)
{
	return owned_call(e, q, abort_locked, err);
}

/* ---- acquire / release / pin ---- */

/* A waiter for the first n of q's keys, answering done; NULL: no memory. */
static struct kvt_waiter *waiter_new(const struct kvt_req *q, uint32_t n,
				     kvt_acquire_done done_fn, void *arg)
{
	struct kvt_waiter *w;
	size_t per_key = sizeof(*w->pinned) + sizeof(*w->locs) + KVT_KEY_BYTES;

	w = calloc(1, sizeof(*w) + per_key * n);
	if (!w)
		return NULL;
	w->pinned = (struct kvt_block **)(w + 1);
	w->locs = (struct kvt_location *)(w->pinned + n);
	w->keys = (uint8_t(*)[KVT_KEY_BYTES])(w->locs + n);
	w->result.locs = w->locs;
	w->n = n;
	w->done = done_fn;
	w->arg = arg;
	for (uint32_t i = 0; i < n; i++)
		memcpy(w->keys[i], q->keys[i], KVT_KEY_BYTES);
	return w;
}

/* Starts w on namespace index ns, waiting at most wait for PENDING keys. */
static void waiter_start(struct kvt_engine *e, struct kvt_waiter *w, uint32_t ns,
			 uint64_t wait, struct done_list *done)
{
	w->ns = ns;
	w->tenant = ns_scope(e, ns);
	w->wait_deadline = engine_now_locked(e) + wait;
	waiter_advance(e, w, done);
}

/* Ends a call that made w: w is freed if it was not started (rc < 0), the
 * waiters done are answered without the lock. */
static int waiter_unlock(struct kvt_engine *e, struct kvt_waiter *w, int rc,
			 struct done_list *done)
{
	pthread_mutex_unlock(&e->lock);
	if (rc < 0)
		free(w);
	done_run(done);
	return rc;
}

int kvt_engine_acquire(struct kvt_engine *e, const struct kvt_req *q,
		       uint64_t wait, kvt_acquire_done done_fn, void *arg,
		       struct kvt_err *err)
{
	struct done_list done = { 0 };
	struct kvt_waiter *w = waiter_new(q, q->n, done_fn, arg);
	struct kvt_session *s;
	int rc = 0;

	if (!w)
		return kvt_errf(err, -ENOMEM, "out of memory");
	pthread_mutex_lock(&e->lock);
	s = session_find(e, q->session, q->tenant);
	if (wait > e->cfg.max_wait) /* reload changes it under the lock */
		rc = kvt_errf(err, -EINVAL, "wait_ms %llu exceeds max_wait (%llu ms)",
				 (unsigned long long)(wait / KVT_MS),
				 (unsigned long long)(e->cfg.max_wait / KVT_MS));
	else if (!s)
		rc = kvt_errf(err, -ENOENT, "unknown session");
	else
		rc = ns_index(e, q->ns, q->tenant, false, err);
	if (rc >= 0 && e->cfg.max_leases) {
		struct tenant *t = &e->tenants[s->tenant];

		if (t->leases + t->acquiring >= e->cfg.max_leases) {
			e->st.leases_refused_total++;
			rc = kvt_errf(err, -EDQUOT,
					 "tenants.max_leases (%u) reached for tenant %s: release leases first",
					 e->cfg.max_leases, t->name);
		}
	}
	if (rc >= 0) {
		e->tenants[s->tenant].acquiring++;
		w->session = s;
		waiter_start(e, w, (uint32_t)rc, wait, &done);
		rc = 0;
	}
	return waiter_unlock(e, w, rc, &done);
}

int kvt_engine_pin_async(struct kvt_engine *e, const struct kvt_req *q,
			 uint32_t max_pins, kvt_acquire_done done_fn, void *arg,
			 struct kvt_err *err)
{
	struct done_list done = { 0 };
	struct kvt_waiter *w = waiter_new(q, q->n < max_pins ? q->n : max_pins,
					  done_fn, arg);
	struct kvt_req rq;
	int rc;

	if (!w)
		return kvt_errf(err, -ENOMEM, "out of memory");
	pthread_mutex_lock(&e->lock);
	if ((rc = req_resolve(e, q, &rq, false, err)) == 0 &&
	    (rc = ready_prefix(e, &rq, &w->result.ready, err)) == 0)
		waiter_start(e, w, rq.ns, 0, &done); /* no PENDING waits */
	return waiter_unlock(e, w, rc, &done);
}

int kvt_engine_release(struct kvt_engine *e, uint32_t tenant,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES],
		       uint64_t lease, struct kvt_err *err)
{
	struct kvt_session *s;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token, tenant);
	if (!s)
		rc = kvt_errf(err, -ENOENT, "unknown session");
	else if (!lease_remove(e, s, lease))
		rc = kvt_errf(err, -ENOENT,
				 "lease %llu is not held by this session (released, or expired after lease_ttl)",
				 (unsigned long long)lease);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_pin(struct kvt_engine *e, const struct kvt_req *q,
		   uint32_t max_pins, struct kvt_block **pinned,
		   uint32_t *count, uint32_t *ready, struct kvt_err *err)
{
	struct kvt_req rq;
	int rc;

	*count = 0;
	pthread_mutex_lock(&e->lock);
	if ((rc = req_resolve(e, q, &rq, false, err)) == 0)
		rc = ready_prefix(e, &rq, ready, err);
	if (rc == 0) {
		q = &rq;
		for (; *count < *ready && *count < max_pins; (*count)++) {
			struct kvt_block *b = e->found[*count];

			if (!b->has_slot || b->promoting)
				break;
			pinned[*count] = b;
			block_pin(e, b);
			e->st.host_out_bytes_total += e->ns[q->ns].page_bytes;
		}
		/* Blocks kept by a lower tier only are read back for the next
		 * call. Found anew: making room for one may evict the next. */
		for (uint32_t i = *count; i < *ready; i++) {
			struct kvt_block *b = find(e, q, i);

			if (!b || b->state != KVT_BLOCK_READY ||
			    (!b->has_slot && !block_promote(e, b)))
				break;
		}
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

void kvt_engine_unpin(struct kvt_engine *e, struct kvt_block **blocks,
		      uint32_t n)
{
	pthread_mutex_lock(&e->lock);
	for (uint32_t i = 0; i < n; i++)
		block_unpin(e, blocks[i]);
	pthread_mutex_unlock(&e->lock);
}

const void *kvt_engine_page(const struct kvt_engine *e,
			    const struct kvt_block *b)
{
	return kvt_host_ptr(e->host, b->segment,
			    kvt_slots_offset(e->slots, b->segment, b->slot));
}

/* ---- put ---- */

int kvt_engine_put(struct kvt_engine *e, const struct kvt_req *q,
		   const uint8_t *parent, const struct kvt_retention *retention,
		   const void *const *pages, uint32_t *stored,
		   struct kvt_err *err)
{
	enum kvt_reserve_state *states = malloc(sizeof(*states) * q->n);
	struct kvt_location *locs = malloc(sizeof(*locs) * q->n);
	/* The reservations of this call, owned by nobody else. */
	struct kvt_block_list mine = { 0 };
	struct done_list done = { 0 };
	uint64_t page_bytes = 0;
	struct kvt_req rq;
	int rc;

	*stored = 0;
	if (!states || !locs) {
		rc = kvt_errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&e->lock);
	rc = req_resolve(e, q, &rq, false, err);
	if (rc == 0) {
		q = &rq;
		page_bytes = e->ns[q->ns].page_bytes;
		rc = reserve_locked(e, &mine, &mine, q, parent, retention,
				    states, locs, err);
	}
	if (rc < 0) {
		while (mine.head)
			pending_abort(e, &mine, mine.head, &done);
		pthread_mutex_unlock(&e->lock);
		goto out;
	}
	pthread_mutex_unlock(&e->lock);

	/* The slots are PENDING and ours: copy without the lock. */
	for (uint32_t i = 0; i < q->n; i++)
		if (states[i] == KVT_RESERVE_RESERVED)
			memcpy(kvt_host_ptr(e->host, locs[i].segment,
					    locs[i].offset),
			       pages[i], page_bytes);

	pthread_mutex_lock(&e->lock);
	if (e->ns[q->ns].state == NS_DROPPED) {
		rc = kvt_errf(err, -ENOENT, "namespace %s was dropped during the Put",
				 e->ns[q->ns].name);
		while (mine.head)
			pending_abort(e, &mine, mine.head, &done);
	}
	for (uint32_t i = 0; i < q->n && rc == 0; i++) {
		struct kvt_req one = *q;

		if (states[i] != KVT_RESERVE_RESERVED)
			continue;
		one.keys = &q->keys[i];
		one.n = 1;
		if (find(e, &one, 0)->state == KVT_BLOCK_PENDING) /* once per key */
			(*stored)++;
		commit_locked(e, &mine, &one, &done);
	}
	pthread_mutex_unlock(&e->lock);
out:
	done_run(&done);
	free(states);
	free(locs);
	return rc;
}
/* ---- drop ---- */

struct drop_all {
	struct kvt_engine *e;
	uint32_t ns, tenant, dropped, pending;
	bool any_ns, any_tenant; /* any_tenant: every namespace of ns's name */
};

static void drop_all_cb(struct kvt_block *b, void *arg)
{
	struct drop_all *d = arg;
	const struct namespace *n = d->e->ns;
	bool ns_match = d->any_ns || b->ns == d->ns ||
			(d->any_tenant && strcmp(n[b->ns].name, n[d->ns].name) == 0);

	if (b->state == KVT_BLOCK_READY && ns_match &&
	    (d->any_tenant || b->tenant == d->tenant)) {
		block_unindex(d->e, b);
		d->dropped++;
	} else if (ns_match && b->state == KVT_BLOCK_PENDING) {
		d->pending++; /* left to its producer */
	}
}

static int drop_tenant(struct kvt_engine *e, const struct kvt_req *q,
		       bool admin, uint32_t uid, struct drop_all *d,
		       struct kvt_err *err)
{
	uint32_t t;

	if (!admin && uid != e->tenants[q->tenant].uid)
		return kvt_errf(err, -EACCES,
				   "only an admin may drop another tenant's blocks (uid %u)",
				   uid);
	for (t = 1; t < e->ntenants && e->tenants[t].uid != uid; t++)
		;
	if (t == e->ntenants)
		return 0; /* a tenant never seen has no blocks */
	d->any_ns = true;
	d->tenant = t;
	kvt_index_foreach(e->index, drop_all_cb, d);
	return 0;
}

int kvt_engine_drop(struct kvt_engine *e, const struct kvt_req *q,
		    enum kvt_drop_scope scope_kind, bool admin,
		    uint32_t target_uid, uint32_t *dropped, struct kvt_err *err)
{
	struct drop_all d = { .e = e };
	struct kvt_req rq;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (scope_kind == KVT_DROP_TENANT) {
		rc = drop_tenant(e, q, admin, target_uid, &d, err);
		goto out;
	}
	if ((rc = req_resolve(e, q, &rq, false, err)) < 0)
		goto out;
	q = &rq;
	d.ns = q->ns;
	if (scope_kind == KVT_DROP_NAMESPACE) {
		if (e->ns[q->ns].shared && !admin) {
			rc = kvt_errf(err, -EACCES,
					 "namespace %s is shared: only an admin may drop all of it",
					 e->ns[q->ns].name);
			goto out;
		}
		d.tenant = ns_scope(e, q->ns);
		d.any_tenant = admin;
		kvt_index_foreach(e->index, drop_all_cb, &d);
		goto out;
	}
	for (uint32_t i = 0; i < q->n; i++) {
		struct kvt_block *b = find(e, q, i);

		if (b && b->state == KVT_BLOCK_READY) {
			block_unindex(e, b);
			d.dropped++;
		}
	}
out:
	e->st.dropped_total += d.dropped;
	*dropped = d.dropped;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_drop_namespace(struct kvt_engine *e, uint32_t tenant,
			      uint32_t ns, bool admin, uint32_t *dropped,
			      uint32_t *pending, struct kvt_err *err)
{
	struct drop_all d = { .e = e };
	struct namespace *n;
	int rc;

	pthread_mutex_lock(&e->lock);
	/* An admin may name any tenant's namespace: as its owner would. */
	if (admin && (ns & 0xffff) < e->nns)
		tenant = e->ns[ns & 0xffff].tenant;
	if ((rc = ns_index(e, ns, tenant, false, err)) < 0)
		goto out;
	n = &e->ns[rc];
	if (n->shared && !admin) {
		rc = kvt_errf(err, -EACCES,
				 "namespace %s is shared: only an admin may drop it",
				 n->name);
		goto out;
	}
	d.ns = (uint32_t)rc;
	d.tenant = n->tenant;
	kvt_index_foreach(e->index, drop_all_cb, &d);
	n->state = n->blocks ? NS_DROPPED : NS_FREE;
	tiers_namespace(e, d.ns, false);
	e->st.dropped_total += d.dropped;
	e->st.namespaces_dropped_total++;
	rc = 0;
out:
	*dropped = d.dropped;
	*pending = d.pending;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

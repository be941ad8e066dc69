/*
 * Engine state lives under one mutex (e->lock). Blocks are linked three
 * ways: the index finds them by key; READY unpinned blocks sit on their
 * namespace's LRU list (head = most recent), so the tail is always an
 * eviction candidate; PENDING blocks sit on their producer's pending list
 * instead (the same link fields, since a block is never on both).
 *
 * A block's memory and slot are freed when it is neither in the index nor
 * pinned; a block dropped while pinned waits for its last unpin.
 */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "host.h"
#include "slots.h"

struct block_list {
	struct kvt_block *head, *tail;
};

struct namespace {
	char name[KVT_NAMESPACE_NAME_MAX + 1];
	uint64_t page_bytes, stride;
	uint32_t block_tokens;
	struct block_list lru;
	uint64_t ready, pending, lookup_keys, lookup_hits, evictions;
};

struct lease {
	struct lease *next;
	uint64_t id;
	uint32_t n;
	struct kvt_block *blocks[];
};

struct kvt_session {
	struct kvt_session *prev, *next;
	uint8_t token[KVT_SESSION_TOKEN_BYTES];
	struct block_list pending;
	struct lease *leases;
};

struct kvt_engine {
	pthread_mutex_t lock;
	struct kvt_index *index;
	struct kvt_slots *slots;
	struct kvt_host *host;
	uint64_t segment_bytes;
	struct namespace *ns;
	uint32_t nns, max_ns;
	struct kvt_session *sessions;
	uint64_t next_lease;
	struct kvt_engine_stats st; /* counters; gauges are filled in on read */
};

static int fail(struct kvt_err *err, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}

static const char *key_hex(const uint8_t *key, char buf[17])
{
	for (int i = 0; i < 8; i++)
		sprintf(buf + 2 * i, "%02x", key[i]);
	return buf;
}

/* ---- lists ---- */

static void list_push_head(struct block_list *l, struct kvt_block *b)
{
	b->lru_prev = NULL;
	b->lru_next = l->head;
	if (l->head)
		l->head->lru_prev = b;
	else
		l->tail = b;
	l->head = b;
}

static void list_unlink(struct block_list *l, struct kvt_block *b)
{
	if (b->lru_prev)
		b->lru_prev->lru_next = b->lru_next;
	else
		l->head = b->lru_next;
	if (b->lru_next)
		b->lru_next->lru_prev = b->lru_prev;
	else
		l->tail = b->lru_prev;
	b->lru_prev = b->lru_next = NULL;
}

/* ---- create / destroy ---- */

int kvt_engine_create(const struct kvt_engine_config *cfg,
		      struct kvt_engine **out, struct kvt_err *err)
{
	struct kvt_engine *e;
	uint32_t segments;
	int rc;

	if (cfg->segment_bytes < KVT_SLOT_ALIGN ||
	    cfg->segment_bytes % KVT_SLOT_ALIGN)
		return fail(err, -EINVAL,
			    "segment size %llu is not a positive multiple of %d",
			    (unsigned long long)cfg->segment_bytes,
			    KVT_SLOT_ALIGN);
	if (cfg->host_bytes < cfg->segment_bytes)
		return fail(err, -EINVAL,
			    "host tier size %llu is smaller than one segment (%llu)",
			    (unsigned long long)cfg->host_bytes,
			    (unsigned long long)cfg->segment_bytes);
	if (cfg->host_bytes / cfg->segment_bytes > UINT32_MAX / 2)
		return fail(err, -EINVAL, "too many host segments");
	segments = (uint32_t)(cfg->host_bytes / cfg->segment_bytes);

	e = calloc(1, sizeof(*e));
	if (!e)
		return fail(err, -ENOMEM, "out of memory");
	pthread_mutex_init(&e->lock, NULL);
	e->segment_bytes = cfg->segment_bytes;
	e->max_ns = cfg->max_namespaces;
	e->next_lease = 1;
	e->index = kvt_index_create();
	e->slots = kvt_slots_create(segments, cfg->segment_bytes,
				    cfg->max_namespaces);
	e->ns = calloc(cfg->max_namespaces ? cfg->max_namespaces : 1,
		       sizeof(*e->ns));
	if (!e->index || !e->slots || !e->ns) {
		kvt_engine_destroy(e);
		return fail(err, -ENOMEM, "out of memory");
	}
	rc = kvt_host_create(cfg->shm_prefix, segments, cfg->segment_bytes,
			     cfg->shm_mode, cfg->shm_gid, &e->host);
	if (rc < 0) {
		kvt_engine_destroy(e);
		return fail(err, rc, "cannot create shared memory %s*: %s",
			    cfg->shm_prefix, strerror(-rc));
	}
	e->st.host_capacity_bytes = (uint64_t)segments * cfg->segment_bytes;
	*out = e;
	return 0;
}

static void free_block_cb(struct kvt_block *b, void *arg)
{
	(void)arg;
	free(b);
}

void kvt_engine_destroy(struct kvt_engine *e)
{
	if (!e)
		return;
	while (e->sessions)
		kvt_engine_session_close(e, e->sessions);
	if (e->index) {
		kvt_index_foreach(e->index, free_block_cb, NULL);
		kvt_index_destroy(e->index);
	}
	kvt_slots_destroy(e->slots);
	kvt_host_destroy(e->host);
	free(e->ns);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

const char *kvt_engine_shm_prefix(const struct kvt_engine *e)
{
	return kvt_host_prefix(e->host);
}

uint32_t kvt_engine_host_segments(const struct kvt_engine *e)
{
	return kvt_slots_segments(e->slots);
}

uint64_t kvt_engine_segment_bytes(const struct kvt_engine *e)
{
	return e->segment_bytes;
}

/* ---- blocks ---- */

/* Frees a block that is out of the index and unpinned, and its slot. */
static void block_free(struct kvt_engine *e, struct kvt_block *b)
{
	kvt_slots_free(e->slots, b->segment, b->slot);
	e->st.host_used_bytes -= e->ns[b->ns].stride;
	free(b);
}

/* Takes a READY block out of the index, freeing it unless pinned. */
static void block_unindex(struct kvt_engine *e, struct kvt_block *b)
{
	struct namespace *n = &e->ns[b->ns];

	kvt_index_remove(e->index, b);
	b->indexed = 0;
	n->ready--;
	if (b->pins == 0) {
		list_unlink(&n->lru, b);
		block_free(e, b);
	}
}

static void block_evict(struct kvt_engine *e, struct kvt_block *b)
{
	e->ns[b->ns].evictions++;
	e->st.evictions_total++;
	block_unindex(e, b);
}

static void block_pin(struct kvt_engine *e, struct kvt_block *b)
{
	if (b->pins++ == 0) {
		list_unlink(&e->ns[b->ns].lru, b);
		e->st.pinned_blocks++;
	}
}

static void block_unpin(struct kvt_engine *e, struct kvt_block *b)
{
	if (--b->pins > 0)
		return;
	e->st.pinned_blocks--;
	if (b->indexed)
		list_push_head(&e->ns[b->ns].lru, b);
	else
		block_free(e, b);
}

static void block_touch(struct kvt_engine *e, struct kvt_block *b)
{
	struct namespace *n = &e->ns[b->ns];

	if (b->pins == 0 && n->lru.head != b) {
		list_unlink(&n->lru, b);
		list_push_head(&n->lru, b);
	}
}

/*
 * Evicts every block of a segment carved for another namespace, if none of
 * them is pinned or pending, so that the segment can be carved anew. This is
 * how a new namespace gets room once older ones have filled the tier.
 */
static bool reclaim_segment(struct kvt_engine *e, uint32_t for_ns)
{
	uint32_t nseg = kvt_slots_segments(e->slots);

	for (uint32_t g = 0; g < nseg; g++) {
		uint32_t owner = kvt_slots_segment_owner(e->slots, g);
		uint32_t nslots = kvt_slots_segment_slots(e->slots, g);
		bool evictable = owner != KVT_SLOTS_FREE_SEGMENT && owner != for_ns;

		for (uint32_t s = 0; evictable && s < nslots; s++) {
			struct kvt_block *b = kvt_slots_user(e->slots, g, s);

			if (b && (b->state != KVT_BLOCK_READY || b->pins ||
				  !b->indexed))
				evictable = false;
		}
		if (!evictable)
			continue;
		/* The last eviction returns the segment to the pool: stop there. */
		for (uint32_t s = 0; s < nslots &&
		     kvt_slots_segment_owner(e->slots, g) == owner; s++) {
			struct kvt_block *b = kvt_slots_user(e->slots, g, s);

			if (b)
				block_evict(e, b);
		}
		return true;
	}
	return false;
}

/* Finds a slot for ns: free, else by evicting its LRU block, else by reclaim. */
static int slot_alloc(struct kvt_engine *e, uint32_t ns, uint32_t *seg,
		      uint32_t *slot)
{
	struct namespace *n = &e->ns[ns];

	for (;;) {
		int rc = kvt_slots_alloc(e->slots, ns, n->stride, seg, slot);

		if (rc != -ENOSPC)
			return rc;
		if (n->lru.tail)
			block_evict(e, n->lru.tail);
		else if (!reclaim_segment(e, ns))
			return -ENOSPC;
	}
}

/* ---- sessions ---- */

static struct kvt_session *session_find(struct kvt_engine *e,
					const uint8_t *token)
{
	for (struct kvt_session *s = e->sessions; s; s = s->next)
		if (memcmp(s->token, token, KVT_SESSION_TOKEN_BYTES) == 0)
			return s;
	return NULL;
}

int kvt_engine_session_open(struct kvt_engine *e,
			    uint8_t token[KVT_SESSION_TOKEN_BYTES],
			    struct kvt_session **out)
{
	struct kvt_session *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	if (getrandom(s->token, sizeof(s->token), 0) != sizeof(s->token)) {
		free(s);
		return -EIO;
	}
	memcpy(token, s->token, sizeof(s->token));
	pthread_mutex_lock(&e->lock);
	s->next = e->sessions;
	if (s->next)
		s->next->prev = s;
	e->sessions = s;
	e->st.sessions_active++;
	e->st.sessions_total++;
	pthread_mutex_unlock(&e->lock);
	*out = s;
	return 0;
}

/* Removes a PENDING block of session s (or of an inline Put). */
static void pending_abort(struct kvt_engine *e, struct block_list *pending,
			  struct kvt_block *b)
{
	list_unlink(pending, b);
	kvt_index_remove(e->index, b);
	e->ns[b->ns].pending--;
	e->st.aborted_total++;
	block_free(e, b);
}

static void lease_free(struct kvt_engine *e, struct lease *l)
{
	for (uint32_t i = 0; i < l->n; i++)
		block_unpin(e, l->blocks[i]);
	e->st.leases_active--;
	free(l);
}

void kvt_engine_session_close(struct kvt_engine *e, struct kvt_session *s)
{
	pthread_mutex_lock(&e->lock);
	while (s->leases) {
		struct lease *l = s->leases;

		s->leases = l->next;
		lease_free(e, l);
	}
	while (s->pending.head)
		pending_abort(e, &s->pending, s->pending.head);
	if (s->prev)
		s->prev->next = s->next;
	else
		e->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	e->st.sessions_active--;
	pthread_mutex_unlock(&e->lock);
	free(s);
}

/* ---- namespaces ---- */

static bool name_valid(const char *name)
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

int kvt_engine_open_namespace(struct kvt_engine *e, const char *name,
			      uint64_t page_bytes, uint32_t block_tokens,
			      uint32_t *ns, bool *created, uint64_t *stride,
			      struct kvt_err *err)
{
	struct namespace *n;
	int rc = 0;

	if (!name_valid(name))
		return fail(err, -EINVAL,
			    "namespace name must be 1..%d characters of [A-Za-z0-9._:-]",
			    KVT_NAMESPACE_NAME_MAX);
	if (page_bytes == 0 || page_bytes > e->segment_bytes)
		return fail(err, -EINVAL,
			    "page_bytes %llu is outside 1..%llu (the host segment size)",
			    (unsigned long long)page_bytes,
			    (unsigned long long)e->segment_bytes);
	if (block_tokens == 0 || block_tokens > KVT_BLOCK_TOKENS_MAX)
		return fail(err, -EINVAL, "block_tokens %u is outside 1..%d",
			    block_tokens, KVT_BLOCK_TOKENS_MAX);

	pthread_mutex_lock(&e->lock);
	for (uint32_t i = 0; i < e->nns; i++) {
		n = &e->ns[i];
		if (strcmp(n->name, name) != 0)
			continue;
		if (n->page_bytes != page_bytes || n->block_tokens != block_tokens)
			rc = fail(err, -EPERM,
				  "namespace %s is open with page_bytes %llu and block_tokens %u, not %llu and %u",
				  name, (unsigned long long)n->page_bytes,
				  n->block_tokens,
				  (unsigned long long)page_bytes, block_tokens);
		*ns = i;
		*created = false;
		*stride = n->stride;
		goto out;
	}
	if (e->nns == e->max_ns) {
		rc = fail(err, -ENOSPC, "the daemon already holds %u namespaces (max_namespaces)",
			  e->max_ns);
		goto out;
	}
	n = &e->ns[e->nns];
	strcpy(n->name, name);
	n->page_bytes = page_bytes;
	n->block_tokens = block_tokens;
	n->stride = (page_bytes + KVT_SLOT_ALIGN - 1) / KVT_SLOT_ALIGN *
		    KVT_SLOT_ALIGN;
	*ns = e->nns++;
	*created = true;
	*stride = n->stride;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Caller holds the lock. */
static int ns_check(struct kvt_engine *e, uint32_t ns, struct kvt_err *err)
{
	if (ns >= e->nns)
		return fail(err, -ENOENT, "unknown namespace_id %u", ns);
	return 0;
}

int kvt_engine_page_bytes(struct kvt_engine *e, uint32_t ns,
			  uint64_t *page_bytes, struct kvt_err *err)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = ns_check(e, ns, err);
	if (rc == 0)
		*page_bytes = e->ns[ns].page_bytes;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Length of the READY prefix of keys. Caller holds the lock. */
static uint32_t ready_prefix(struct kvt_engine *e, uint32_t ns,
			     const uint8_t *const *keys, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

		if (!b || b->state != KVT_BLOCK_READY)
			break;
	}
	return i;
}

int kvt_engine_lookup(struct kvt_engine *e, uint32_t ns,
		      const uint8_t *const *keys, uint32_t n, uint32_t *ready,
		      struct kvt_err *err)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = ns_check(e, ns, err);
	if (rc == 0) {
		*ready = ready_prefix(e, ns, keys, n);
		/* Touch leaf first so the chain's root ends up most recent. */
		for (uint32_t i = *ready; i-- > 0;)
			block_touch(e, kvt_index_find(e->index, ns, keys[i]));
		e->ns[ns].lookup_keys += n;
		e->ns[ns].lookup_hits += *ready;
		e->st.lookup_keys += n;
		e->st.lookup_hits += *ready;
	}
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- reserve / commit / abort ---- */

/* A new PENDING block for owner in a free slot, or NULL (-ENOSPC/-ENOMEM in *rc). */
static struct kvt_block *block_reserve(struct kvt_engine *e,
				       struct block_list *pending, void *owner,
				       uint32_t ns, const uint8_t *key,
				       const uint8_t *parent, int *rc)
{
	struct kvt_block *b = calloc(1, sizeof(*b));

	if (!b) {
		*rc = -ENOMEM;
		return NULL;
	}
	*rc = slot_alloc(e, ns, &b->segment, &b->slot);
	if (*rc < 0) {
		free(b);
		return NULL;
	}
	memcpy(b->key, key, KVT_KEY_BYTES);
	if (parent)
		memcpy(b->parent, parent, KVT_KEY_BYTES);
	b->ns = ns;
	b->state = KVT_BLOCK_PENDING;
	b->owner = owner;
	b->indexed = 1;
	kvt_index_insert(e->index, b);
	kvt_slots_set_user(e->slots, b->segment, b->slot, b);
	list_push_head(pending, b);
	e->st.host_used_bytes += e->ns[ns].stride;
	e->ns[ns].pending++;
	e->st.reserved_total++;
	return b;
}

/*
 * Reserves keys for owner, whose PENDING blocks go on `pending` (a session's
 * list, or a Put call's own). Stops taking slots at the first key that finds
 * none. Caller holds the lock.
 */
static int reserve_locked(struct kvt_engine *e, struct block_list *pending,
			  void *owner, uint32_t ns, const uint8_t *parent,
			  const uint8_t *const *keys, uint32_t n,
			  enum kvt_reserve_state *states,
			  struct kvt_location *locs, struct kvt_err *err)
{
	uint32_t reserved = 0, no_space = 0;
	int rc = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

		memset(&locs[i], 0, sizeof(locs[i]));
		if (b && b->state == KVT_BLOCK_READY) {
			states[i] = KVT_RESERVE_PRESENT;
			continue;
		}
		if (b && b->owner != owner) {
			states[i] = KVT_RESERVE_BUSY;
			continue;
		}
		if (!b && no_space == 0) {
			b = block_reserve(e, pending, owner, ns, keys[i],
					  i ? keys[i - 1] : parent, &rc);
			if (!b && rc != -ENOSPC)
				return fail(err, rc, "slot allocation: %s",
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
		locs[i].offset = kvt_slots_offset(e->slots, b->segment, b->slot);
	}
	if (no_space) {
		e->st.reserve_no_space_total += no_space;
		if (reserved == 0)
			return fail(err, -ENOSPC,
				    "host tier full: no unpinned ready block to evict for %u of %u keys",
				    no_space, n);
	}
	return 0;
}

int kvt_engine_reserve(struct kvt_engine *e,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		       const uint8_t *parent, const uint8_t *const *keys,
		       uint32_t n, enum kvt_reserve_state *states,
		       struct kvt_location *locs, struct kvt_err *err)
{
	struct kvt_session *s;
	int rc;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token);
	if (!s)
		rc = fail(err, -ENOENT, "unknown session");
	else if ((rc = ns_check(e, ns, err)) == 0)
		rc = reserve_locked(e, &s->pending, s, ns, parent, keys, n,
				    states, locs, err);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* Checks that every key is PENDING and owned by owner. Caller holds the lock. */
static int check_owned(struct kvt_engine *e, void *owner, uint32_t ns,
		       const uint8_t *const *keys, uint32_t n,
		       struct kvt_err *err)
{
	char hex[17];

	for (uint32_t i = 0; i < n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

		if (!b || b->state != KVT_BLOCK_PENDING || b->owner != owner)
			return fail(err, -EPERM,
				    "keys[%u] (%s...) is not reserved by this session (%s)",
				    i, key_hex(keys[i], hex),
				    !b ? "absent" :
				    b->state == KVT_BLOCK_READY ? "already committed" :
								  "reserved by another session");
	}
	return 0;
}

/* Caller holds the lock and has run check_owned. */
static void commit_locked(struct kvt_engine *e, struct block_list *pending,
			  uint32_t ns, const uint8_t *const *keys, uint32_t n)
{
	struct namespace *nsp = &e->ns[ns];

	for (uint32_t i = 0; i < n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

		if (b->state == KVT_BLOCK_READY)
			continue; /* listed twice */
		list_unlink(pending, b);
		b->state = KVT_BLOCK_READY;
		b->owner = NULL;
		list_push_head(&nsp->lru, b);
		nsp->pending--;
		nsp->ready++;
		e->st.committed_total++;
	}
}

typedef void (*owned_op)(struct kvt_engine *e, struct kvt_session *s,
			 uint32_t ns, const uint8_t *const *keys, uint32_t n);

static void commit_op(struct kvt_engine *e, struct kvt_session *s, uint32_t ns,
		      const uint8_t *const *keys, uint32_t n)
{
	commit_locked(e, &s->pending, ns, keys, n);
}

static void abort_op(struct kvt_engine *e, struct kvt_session *s, uint32_t ns,
		     const uint8_t *const *keys, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

		if (b) /* NULL when listed twice */
			pending_abort(e, &s->pending, b);
	}
}

/* Commit and Abort: all keys must be this session's reservations. */
static int owned_call(struct kvt_engine *e, const uint8_t *token, uint32_t ns,
		      const uint8_t *const *keys, uint32_t n, owned_op op,
		      struct kvt_err *err)
{
	struct kvt_session *s;
	int rc;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token);
	if (!s)
		rc = fail(err, -ENOENT, "unknown session");
	else if ((rc = ns_check(e, ns, err)) == 0 &&
		 (rc = check_owned(e, s, ns, keys, n, err)) == 0)
		op(e, s, ns, keys, n);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_commit(struct kvt_engine *e,
		      const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		      const uint8_t *const *keys, uint32_t n, struct kvt_err *err)
{
	return owned_call(e, token, ns, keys, n, commit_op, err);
}

int kvt_engine_abort(struct kvt_engine *e,
		     const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		     const uint8_t *const *keys, uint32_t n, struct kvt_err *err)
{
	return owned_call(e, token, ns, keys, n, abort_op, err);
}

/* ---- acquire / release / pin ---- */

/* Pins up to max blocks of the ready prefix. Caller holds the lock. */
static uint32_t pin_prefix(struct kvt_engine *e, uint32_t ns,
			   const uint8_t *const *keys, uint32_t n, uint32_t max,
			   struct kvt_block **out)
{
	uint32_t i;

	for (i = 0; i < n && i < max; i++) {
		struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

		if (!b || b->state != KVT_BLOCK_READY)
			break;
		block_pin(e, b);
		out[i] = b;
	}
	return i;
}

int kvt_engine_acquire(struct kvt_engine *e,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		       const uint8_t *const *keys, uint32_t n, uint64_t *lease,
		       struct kvt_location *locs, uint32_t *count,
		       struct kvt_err *err)
{
	struct lease *l = malloc(sizeof(*l) + sizeof(l->blocks[0]) * n);
	struct kvt_session *s;
	int rc;

	if (!l)
		return fail(err, -ENOMEM, "out of memory");
	*lease = 0;
	*count = 0;
	pthread_mutex_lock(&e->lock);
	s = session_find(e, token);
	if (!s) {
		rc = fail(err, -ENOENT, "unknown session");
		goto out;
	}
	if ((rc = ns_check(e, ns, err)) < 0)
		goto out;
	l->n = pin_prefix(e, ns, keys, n, n, l->blocks);
	for (uint32_t i = 0; i < l->n; i++) {
		locs[i].segment = l->blocks[i]->segment;
		locs[i].offset = kvt_slots_offset(e->slots, l->blocks[i]->segment,
						  l->blocks[i]->slot);
	}
	*count = l->n;
	if (l->n) {
		l->id = e->next_lease++;
		l->next = s->leases;
		s->leases = l;
		e->st.leases_active++;
		*lease = l->id;
		l = NULL;
	}
out:
	pthread_mutex_unlock(&e->lock);
	free(l);
	return rc;
}

int kvt_engine_release(struct kvt_engine *e,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES],
		       uint64_t lease, struct kvt_err *err)
{
	struct kvt_session *s;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token);
	if (!s) {
		rc = fail(err, -ENOENT, "unknown session");
		goto out;
	}
	for (struct lease **p = &s->leases; *p; p = &(*p)->next) {
		if ((*p)->id == lease) {
			struct lease *l = *p;

			*p = l->next;
			lease_free(e, l);
			goto out;
		}
	}
	rc = fail(err, -ENOENT, "lease %llu is not held by this session",
		  (unsigned long long)lease);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_pin(struct kvt_engine *e, uint32_t ns,
		   const uint8_t *const *keys, uint32_t n, uint32_t max_pins,
		   struct kvt_block **pinned, uint32_t *count, uint32_t *ready,
		   struct kvt_err *err)
{
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = ns_check(e, ns, err);
	if (rc == 0) {
		*ready = ready_prefix(e, ns, keys, n);
		*count = pin_prefix(e, ns, keys, *ready, max_pins, pinned);
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

int kvt_engine_put(struct kvt_engine *e, uint32_t ns, const uint8_t *parent,
		   const uint8_t *const *keys, const void *const *pages,
		   uint32_t n, uint32_t *stored, struct kvt_err *err)
{
	enum kvt_reserve_state *states = malloc(sizeof(*states) * n);
	struct kvt_location *locs = malloc(sizeof(*locs) * n);
	/* The reservations of this call, owned by nobody else. */
	struct block_list mine = { 0 };
	uint64_t page_bytes = 0;
	int rc;

	*stored = 0;
	if (!states || !locs) {
		rc = fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&e->lock);
	rc = ns_check(e, ns, err);
	if (rc == 0) {
		page_bytes = e->ns[ns].page_bytes;
		rc = reserve_locked(e, &mine, &mine, ns, parent, keys, n, states,
				    locs, err);
	}
	pthread_mutex_unlock(&e->lock);
	if (rc < 0)
		goto out_abort;

	/* The slots are PENDING and ours: copy without the lock. */
	for (uint32_t i = 0; i < n; i++)
		if (states[i] == KVT_RESERVE_RESERVED)
			memcpy(kvt_host_ptr(e->host, locs[i].segment,
					    locs[i].offset),
			       pages[i], page_bytes);

	pthread_mutex_lock(&e->lock);
	for (struct kvt_block *b = mine.head; b; b = b->lru_next)
		(*stored)++;
	for (uint32_t i = 0; i < n; i++) {
		if (states[i] != KVT_RESERVE_RESERVED)
			continue;
		commit_locked(e, &mine, ns, &keys[i], 1);
	}
	pthread_mutex_unlock(&e->lock);
	goto out;

out_abort:
	pthread_mutex_lock(&e->lock);
	while (mine.head)
		pending_abort(e, &mine, mine.head);
	pthread_mutex_unlock(&e->lock);
out:
	free(states);
	free(locs);
	return rc;
}

/* ---- drop ---- */

struct drop_all {
	struct kvt_engine *e;
	uint32_t ns, dropped;
};

static void drop_all_cb(struct kvt_block *b, void *arg)
{
	struct drop_all *d = arg;

	if (b->ns == d->ns && b->state == KVT_BLOCK_READY) {
		block_unindex(d->e, b);
		d->dropped++;
	}
}

int kvt_engine_drop(struct kvt_engine *e, uint32_t ns,
		    const uint8_t *const *keys, uint32_t n, bool all,
		    uint32_t *dropped, struct kvt_err *err)
{
	struct drop_all d = { .e = e, .ns = ns };
	int rc;

	pthread_mutex_lock(&e->lock);
	rc = ns_check(e, ns, err);
	if (rc < 0)
		goto out;
	if (all) {
		kvt_index_foreach(e->index, drop_all_cb, &d);
	} else {
		for (uint32_t i = 0; i < n; i++) {
			struct kvt_block *b = kvt_index_find(e->index, ns, keys[i]);

			if (b && b->state == KVT_BLOCK_READY) {
				block_unindex(e, b);
				d.dropped++;
			}
		}
	}
	e->st.dropped_total += d.dropped;
	*dropped = d.dropped;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- stats ---- */

void kvt_engine_stats(struct kvt_engine *e, struct kvt_engine_stats *st)
{
	pthread_mutex_lock(&e->lock);
	*st = e->st;
	st->ready_blocks = st->pending_blocks = 0;
	for (uint32_t i = 0; i < e->nns; i++) {
		st->ready_blocks += e->ns[i].ready;
		st->pending_blocks += e->ns[i].pending;
	}
	st->namespaces = e->nns;
	st->host_segments = kvt_slots_segments(e->slots);
	st->host_segments_used = kvt_slots_segments_carved(e->slots);
	pthread_mutex_unlock(&e->lock);
}

int kvt_engine_namespace_stats(struct kvt_engine *e, uint32_t ns,
			       struct kvt_namespace_stats *st)
{
	struct namespace *n;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (ns >= e->nns) {
		rc = -ENOENT;
		goto out;
	}
	n = &e->ns[ns];
	memcpy(st->name, n->name, sizeof(st->name));
	st->page_bytes = n->page_bytes;
	st->block_tokens = n->block_tokens;
	st->ready_blocks = n->ready;
	st->pending_blocks = n->pending;
	st->lookup_keys = n->lookup_keys;
	st->lookup_hits = n->lookup_hits;
	st->evictions = n->evictions;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

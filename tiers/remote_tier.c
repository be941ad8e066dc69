/*
 * The remote tier behind struct kvt_tier_ops (tier.h): a Redis or Redis
 * Cluster that nodes share (redis.c moves the bytes, remote_record.c names
 * and checks them). Committed blocks of at least min_priority are written
 * behind; a block evicted from host stays cached here (has_remote), and an
 * Acquire reads it back into a host slot, the page landing in the slot and
 * checked before it is served. A value that fails its check is a miss,
 * counted, logged and deleted from the store.
 *
 * Every op runs with the engine lock held; the store's completions run on
 * the Redis client's thread and take the engine lock themselves.
 *
 * A Lookup's keys found nowhere on this node are asked for in one EXISTS
 * batch within the Lookup's budget (probe); those found become blocks here
 * kept by this tier (adopt), which an Acquire then promotes.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "redis.h"
#include "remote_record.h"

/* Record bytes being written at most: a backlog the store drains well
 * within the timeout (64 MiB at 1 GB/s: 64 ms), so that written records
 * are skipped and counted when the store cannot keep up, rather than
 * queued until they time out. */
#define WRITE_BACKLOG_MAX (64ull << 20)

/* After a probe ran out of its Lookup's budget (a store too busy or too
 * far to answer in it), Lookups do not ask for this long: one slow Lookup
 * per interval, not every one, while the store is overloaded. */
#define PROBE_QUIET_NS (100 * KVT_MS)

struct remote_tier {
	struct kvt_lower_tier base;
	struct kvt_redis *redis;
	uint64_t writes, skipped, promotions, bad, lookups_unasked;
	uint64_t writing; /* record bytes being written */
	_Atomic uint64_t quiet_until; /* no probes before (engine clock) */
};

/* One request to the store, and what its completion needs. */
struct remote_job {
	struct remote_tier *t;
	struct kvt_block *b;
	void *promotion; /* the engine's, for engine_promoted */
	struct kvt_redis_item item;
	struct kvt_remote_id id; /* of tenant and key below */
	char tenant[KVT_REMOTE_TENANT_MAX];
	uint8_t key[16];
	uint32_t page_len;
	char name[KVT_REMOTE_NAME_MAX];
	uint8_t parent[16]; /* a SET's */
	bool has_parent;
	uint8_t hdr[KVT_REMOTE_HEADER_BYTES];
};

static struct remote_tier *remote_of(struct kvt_lower_tier *t)
{
	return (struct remote_tier *)t;
}

/* The record name's scope: namespace ns and tenant (a scope, as blocks
 * carry it) as every node knows them; the key left to fill. Locked: the
 * tenant's name is the engine's. */
static struct kvt_remote_id record_scope(const struct kvt_engine *e, uint32_t ns,
					 uint32_t tenant)
{
	const struct namespace *n = &e->ns[ns];

	return (struct kvt_remote_id){
		kvt_remote_fingerprint(n->name, n->page_bytes, n->block_tokens),
		n->shared ? "" : e->tenants[tenant].name, NULL
	};
}

/* A job naming b's record, with copies of what names it. */
static struct remote_job *job_new(struct remote_tier *t, struct kvt_block *b)
{
	struct kvt_engine *e = t->base.e;
	struct remote_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->t = t;
	j->b = b;
	j->id = record_scope(e, b->ns, b->tenant);
	snprintf(j->tenant, sizeof(j->tenant), "%s", j->id.tenant);
	memcpy(j->key, b->key, sizeof(j->key));
	j->id.tenant = j->tenant;
	j->id.key = j->key;
	j->page_len = (uint32_t)e->ns[b->ns].page_bytes;
	j->item.key = j->name;
	j->item.key_len = kvt_remote_name(&j->id, j->name);
	return j;
}

/* ---- write-behind ---- */

static void saved(void *arg, struct kvt_redis_item *items, uint32_t n, int rc)
{
	struct remote_job *j = arg;
	struct kvt_engine *e = j->t->base.e;
	struct kvt_block *b = j->b;

	(void)items;
	(void)n;
	pthread_mutex_lock(&e->lock);
	b->remote_saving = 0;
	j->t->writing -= KVT_REMOTE_HEADER_BYTES + j->page_len;
	if (rc == 0) {
		j->t->writes++;
		b->has_remote = b->indexed; /* a dropped block keeps nothing */
	} else {
		j->t->skipped++;
	}
	io_unpin(e, b);
	pthread_mutex_unlock(&e->lock);
	free(j);
}

/* On the store's thread, before the value is sent: the record's header,
 * whose checksum of the page is the costly part, kept off the engine lock. */
static void header_fill(struct kvt_redis_item *it)
{
	struct remote_job *j = (struct remote_job *)((char *)it -
						     offsetof(struct remote_job, item));

	kvt_remote_header(&j->id, j->has_parent ? j->parent : NULL, it->val,
			  j->page_len, j->hdr);
}

/*
 * Writes b's record: its header, then the page straight from its host
 * slot, where b stays pinned until written. Skipped, and counted, when the
 * store has queue_depth keys in flight or refuses.
 */
static bool remote_save(struct kvt_lower_tier *lt, struct kvt_block *b)
{
	struct remote_tier *t = remote_of(lt);
	struct kvt_engine *e = lt->e;
	struct remote_job *j;

	if (b->has_remote || b->remote_saving)
		return b->remote_saving;
	if (b->priority < e->cfg.remote.min_priority)
		return false;
	if (t->writing + KVT_REMOTE_HEADER_BYTES + e->ns[b->ns].page_bytes >
	    WRITE_BACKLOG_MAX && t->writing) {
		t->skipped++;
		return false;
	}
	j = job_new(t, b);
	if (!j) {
		t->skipped++;
		return false;
	}
	if (b->parent) {
		memcpy(j->parent, b->parent->key, sizeof(j->parent));
		j->has_parent = true;
	}
	j->item.head = j->hdr;
	j->item.head_len = sizeof(j->hdr);
	j->item.val = kvt_host_ptr(e->host, b->segment, slot_offset(e, b));
	j->item.len = j->page_len;
	j->item.prepare = header_fill;
	if (kvt_redis_set(t->redis, &j->item, 1, e->cfg.remote.ttl_ms, 0, saved,
			  j) < 0) {
		t->skipped++;
		free(j);
		return false;
	}
	b->remote_saving = 1;
	t->writing += KVT_REMOTE_HEADER_BYTES + j->page_len;
	block_pin(e, b);
	return true;
}

/* ---- promotion ---- */

static void dropped(void *arg, struct kvt_redis_item *items, uint32_t n, int rc)
{
	(void)items;
	(void)n;
	(void)rc;
	free(arg);
}

static void fetched(void *arg, struct kvt_redis_item *items, uint32_t n, int rc)
{
	struct remote_job *j = arg;
	struct remote_tier *t = j->t;
	struct kvt_engine *e = t->base.e;
	int64_t got = items[0].result;
	const char *why = NULL;
	char msg[256];

	(void)n;
	(void)rc;
	if (got == KVT_REDIS_MISS) {
		rc = -ENOENT; /* expired, or evicted by the store */
	} else if (got < 0) {
		rc = (int)got;
	} else {
		rc = kvt_remote_record_check(&j->id, j->hdr, j->item.dst,
					     (uint64_t)got, j->page_len, &why);
	}
	pthread_mutex_lock(&e->lock);
	if (rc == 0) {
		t->promotions++;
	} else {
		/* Not there (any more), or not to be trusted: a miss. */
		j->b->has_remote = 0;
		if (why)
			t->bad++;
	}
	engine_promoted(e, j->promotion, rc);
	pthread_mutex_unlock(&e->lock);
	engine_run_io_done(e);
	if (why) {
		snprintf(msg, sizeof(msg), "remote record %s refused (%s): a miss, deleted from the store",
			 j->name, why);
		engine_log(e, true, msg);
		/* The job (its name) lives until the DEL is done. */
		j->item = (struct kvt_redis_item){ .key = j->name,
						   .key_len = strlen(j->name) };
		if (kvt_redis_del(t->redis, &j->item, 1, 0, dropped, j) == 0)
			return;
	}
	free(j);
}

static int remote_promote(struct kvt_lower_tier *lt, struct kvt_block *b,
			  void *promotion, uint32_t seg, uint64_t offset)
{
	struct remote_tier *t = remote_of(lt);
	struct remote_job *j = job_new(t, b);
	int rc;

	if (!j)
		return -ENOMEM;
	j->promotion = promotion;
	j->item.head = j->hdr;
	j->item.head_len = sizeof(j->hdr);
	j->item.dst = kvt_host_ptr(lt->e->host, seg, offset);
	j->item.len = j->page_len;
	rc = kvt_redis_get(t->redis, &j->item, 1, 0, fetched, j);
	if (rc < 0)
		free(j);
	return rc;
}

/* ---- probes (a Lookup's keys found nowhere on this node) ---- */

struct probe_job {
	struct remote_tier *t;
	void *lookup; /* the engine's, for engine_probed */
	uint32_t n;
	struct kvt_redis_item *items;
	bool *found;
	char (*names)[KVT_REMOTE_NAME_MAX];
};

static void probed(void *arg, struct kvt_redis_item *items, uint32_t n, int rc)
{
	struct probe_job *j = arg;
	struct kvt_engine *e = j->t->base.e;

	if (rc == -ETIMEDOUT)
		atomic_store(&j->t->quiet_until,
			     e->cfg.clock(e->cfg.clock_arg) + PROBE_QUIET_NS);
	for (uint32_t i = 0; i < n; i++)
		j->found[i] = items[i].result == 1;
	engine_probed(e, j->lookup, j->found);
	free(j);
}

static int remote_probe(struct kvt_lower_tier *lt, uint32_t ns, uint32_t tenant,
			const uint8_t (*keys)[16], uint32_t n, uint64_t budget,
			void *lookup)
{
	struct remote_tier *t = remote_of(lt);
	struct kvt_engine *e = lt->e;
	size_t per_key = sizeof(struct kvt_redis_item) + sizeof(bool) +
			 KVT_REMOTE_NAME_MAX;
	struct kvt_remote_id id = record_scope(e, ns, tenant);
	struct probe_job *j;
	int rc;

	if (engine_now_locked(e) < atomic_load(&t->quiet_until)) {
		t->lookups_unasked++;
		return -EAGAIN; /* the Lookup is answered from this node */
	}
	j = calloc(1, sizeof(*j) + per_key * n);
	if (!j)
		return -ENOMEM;
	j->t = t;
	j->lookup = lookup;
	j->n = n;
	j->items = (struct kvt_redis_item *)(j + 1);
	j->names = (char (*)[KVT_REMOTE_NAME_MAX])(j->items + n);
	j->found = (bool *)(j->names + n);
	for (uint32_t i = 0; i < n; i++) {
		id.key = keys[i];
		j->items[i].key = j->names[i];
		j->items[i].key_len = kvt_remote_name(&id, j->names[i]);
	}
	rc = kvt_redis_exists(t->redis, j->items, n, budget, probed, j);
	if (rc < 0)
		free(j);
	return rc;
}

static void remote_adopt(struct kvt_lower_tier *lt, struct kvt_block *b)
{
	(void)lt;
	b->has_remote = 1;
}

/* ---- the rest of the ops ---- */

static bool remote_holds(const struct kvt_lower_tier *lt, const struct kvt_block *b)
{
	(void)lt;
	return b->has_remote;
}

/* The block leaves this node's cache; its record stays for other nodes
 * (and expires with ttl_ms, or by the store's maxmemory policy). */
static void remote_forget(struct kvt_lower_tier *lt, struct kvt_block *b)
{
	(void)lt;
	b->has_remote = 0;
}

static void remote_stats(struct kvt_lower_tier *lt, struct kvt_engine_stats *st)
{
	struct remote_tier *t = remote_of(lt);

	kvt_redis_stats(t->redis, &st->remote);
	st->remote_enabled = true;
	st->remote_writes_total = t->writes;
	st->remote_writes_skipped_total = t->skipped;
	st->remote_promotions_total = t->promotions;
	st->remote_bad_records_total = t->bad;
	st->remote_lookups_unasked_total = t->lookups_unasked;
}

static void remote_destroy(struct kvt_lower_tier *lt)
{
	struct remote_tier *t = remote_of(lt);

	kvt_redis_close(t->redis); /* what is in flight completes */
	free(t);
}

static const struct kvt_tier_ops remote_tier_ops = {
	.name = "remote",
	.tier = KVT_TIER_REMOTE,
	.save = remote_save,
	.holds = remote_holds,
	.forget = remote_forget,
	.promote = remote_promote,
	.probe = remote_probe,
	.adopt = remote_adopt,
	.stats = remote_stats,
	.destroy = remote_destroy,
};

static void remote_log(void *arg, bool error, const char *msg)
{
	struct remote_tier *t = arg;
	char line[320];

	snprintf(line, sizeof(line), "remote tier: %s", msg);
	engine_log(t->base.e, error, line);
}

struct kvt_lower_tier *kvt_remote_tier_open(struct kvt_engine *e,
					    struct kvt_err *err)
{
	const struct kvt_engine_remote *c = &e->cfg.remote;
	struct remote_tier *t = calloc(1, sizeof(*t));
	struct kvt_redis_config rc = {
		.endpoints = c->endpoints, .nendpoints = c->nendpoints,
		.username = c->username, .password = c->password,
		.timeout_ns = c->timeout, .queue_depth = c->queue_depth,
		.log = remote_log, .arg = t,
	};

	if (!t) {
		kvt_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	t->base.ops = &remote_tier_ops;
	t->base.e = e;
	if (kvt_redis_create(&rc, &t->redis, err->msg, sizeof(err->msg)) < 0) {
		free(t);
		return NULL;
	}
	return &t->base;
}

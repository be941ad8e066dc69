/*
 * The engine's life: create (the host tier, then the lower tiers, then the
 * timer), destroy, the clock, reconfigure, and stats. engine_int.h says
 * which file holds the rest.
 */
#include "engine_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index.h"
#include "policy.h"

int kvt_errf(struct kvt_err *err, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}

void engine_log(struct kvt_engine *e, bool error, const char *msg)
{
	if (e->cfg.log)
		e->cfg.log(error, msg);
}

const char *key_hex(const uint8_t *key, char buf[17])
{
	for (int i = 0; i < 8; i++)
		sprintf(buf + 2 * i, "%02x", key[i]);
	return buf;
}

static uint64_t monotonic_ns(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Strictly increasing, so that last-use times order every use. */
uint64_t engine_ticks_locked(struct kvt_engine *e, uint32_t n)
{
	uint64_t t = e->cfg.clock(e->cfg.clock_arg);

	if (t <= e->last_now)
		t = e->last_now + 1;
	e->last_now = t + (n ? n - 1 : 0);
	return t;
}

uint64_t engine_now_locked(struct kvt_engine *e)
{
	return engine_ticks_locked(e, 1);
}

uint64_t kvt_engine_now(struct kvt_engine *e)
{
	uint64_t t;

	pthread_mutex_lock(&e->lock);
	t = engine_now_locked(e);
	pthread_mutex_unlock(&e->lock);
	return t;
}

/* ---- create / destroy ---- */

/* Opens a lower tier; one that cannot open leaves the engine serving
 * without it, and the log says why. */
static void lower_open(struct kvt_engine *e, const char *name,
		       struct kvt_lower_tier *(*open)(struct kvt_engine *,
						      struct kvt_err *))
{
	struct kvt_err err = { "" };
	struct kvt_lower_tier *t = open(e, &err);
	char msg[sizeof(err.msg) + 64];

	if (t) {
		e->lower[e->nlower++] = t;
		return;
	}
	snprintf(msg, sizeof(msg), "%s tier unavailable: %s; serving without it",
		 name, err.msg);
	engine_log(e, true, msg);
}

int kvt_engine_create(const struct kvt_engine_config *cfg,
		      struct kvt_engine **out, struct kvt_err *err)
{
	struct kvt_engine *e;
	pthread_condattr_t ca;
	uint32_t segments;
	int rc;

	if (cfg->segment_bytes < KVT_SLOT_ALIGN ||
	    cfg->segment_bytes % KVT_SLOT_ALIGN)
		return kvt_errf(err, -EINVAL,
				   "segment size %llu is not a positive multiple of %d",
				   (unsigned long long)cfg->segment_bytes,
				   KVT_SLOT_ALIGN);
	if (cfg->host_bytes < cfg->segment_bytes)
		return kvt_errf(err, -EINVAL,
				   "host tier size %llu is smaller than one segment (%llu)",
				   (unsigned long long)cfg->host_bytes,
				   (unsigned long long)cfg->segment_bytes);
	if (cfg->host_bytes / cfg->segment_bytes > KVT_HOST_SEGMENTS_MAX)
		return kvt_errf(err, -EINVAL,
				   "the host tier may have at most %u segments",
				   KVT_HOST_SEGMENTS_MAX);
	if (cfg->timer_thread && cfg->clock)
		return kvt_errf(err, -EINVAL,
				   "the timer thread needs the default clock");
	if (cfg->max_namespaces == 0 || cfg->max_namespaces > UINT16_MAX)
		return kvt_errf(err, -EINVAL, "max_namespaces %u is outside 1..%u",
				   cfg->max_namespaces, UINT16_MAX);
	segments = (uint32_t)(cfg->host_bytes / cfg->segment_bytes);

	e = calloc(1, sizeof(*e));
	if (!e)
		return kvt_errf(err, -ENOMEM, "out of memory");
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->timer_cond, &ca);
	pthread_condattr_destroy(&ca);
	e->cfg = *cfg;
	if (!e->cfg.clock)
		e->cfg.clock = monotonic_ns;
	if (e->cfg.default_priority > KVT_PRIORITY_MAX)
		e->cfg.default_priority = KVT_PRIORITY_MAX;
	e->next_lease = 1;
	kvt_histogram_init(&e->eviction_age, &kvt_age_bounds);
	e->index = kvt_index_create();
	e->blocks = kvt_block_pool_create();
	e->slots = kvt_slots_create(segments, cfg->segment_bytes,
				    cfg->max_namespaces);
	e->policy = kvt_policy_create(cfg->eviction, cfg->max_namespaces);
	e->ns = calloc(cfg->max_namespaces, sizeof(*e->ns));
	e->tenants = calloc(KVT_TENANTS_MAX, sizeof(*e->tenants));
	e->quotas = calloc(cfg->nquotas ? cfg->nquotas : 1, sizeof(*e->quotas));
	e->segments = calloc(KVT_HOST_SEGMENTS_MAX, sizeof(*e->segments));
	e->damaged = calloc(KVT_HOST_SEGMENTS_MAX, sizeof(*e->damaged));
	if (!e->index || !e->blocks || !e->slots || !e->policy || !e->ns || !e->tenants ||
	    !e->quotas || !e->segments || !e->damaged) {
		kvt_engine_destroy(e);
		return kvt_errf(err, -ENOMEM, "out of memory");
	}
	if (cfg->nquotas)
		memcpy(e->quotas, cfg->quotas, sizeof(*e->quotas) * cfg->nquotas);
	e->cfg.quotas = e->quotas;
	e->tenants[KVT_TENANT_SHARED].uid = SHARED_UID;
	strcpy(e->tenants[KVT_TENANT_SHARED].name, "shared");
	e->ntenants = 1;
	{
		struct kvt_host_config hc = { .segment_bytes = cfg->segment_bytes,
					      .huge_pages = cfg->huge_pages,
					      .lock = cfg->lock_host,
					      .sparse = cfg->sparse_host };

		rc = kvt_host_create(&hc, segments, &e->host, err->msg,
				     sizeof(err->msg));
	}
	if (rc < 0) {
		kvt_engine_destroy(e);
		return rc;
	}
	e->st.host_capacity_bytes = (uint64_t)segments * cfg->segment_bytes;
	for (uint32_t i = 0; i < segments; i++)
		e->segments[i] = kvt_host_ptr(e->host, i, 0);
	if (cfg->hbm.ops)
		lower_open(e, "hbm", kvt_hbm_tier_open);
	e->st.nvme_paths = e->st.nvme_paths_failed = cfg->nvme.npaths;
	if (cfg->nvme.npaths)
		lower_open(e, "nvme", kvt_nvme_tier_open);
	if (cfg->remote.nendpoints)
		lower_open(e, "remote", kvt_remote_tier_open);
	if (cfg->timer_thread) {
		if (pthread_create(&e->timer, NULL, timer_main, e)) {
			kvt_engine_destroy(e);
			return kvt_errf(err, -EAGAIN, "cannot start the timer thread");
		}
		e->timer_running = true;
	}
	*out = e;
	return 0;
}

void kvt_engine_destroy(struct kvt_engine *e)
{
	if (!e)
		return;
	if (e->timer_running) {
		pthread_mutex_lock(&e->lock);
		e->timer_stop = true;
		pthread_cond_signal(&e->timer_cond);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->timer, NULL);
	}
	kvt_engine_stop_waiting(e);
	/* Copies in flight complete, and what is queued for nvme is written
	 * out, so that a clean stop keeps it. A tier leaves the list first:
	 * the others' threads may still call in while it stops. */
	for (;;) {
		struct kvt_lower_tier *t = NULL;

		pthread_mutex_lock(&e->lock);
		if (e->nlower) {
			t = e->lower[0];
			memmove(e->lower, e->lower + 1,
				--e->nlower * sizeof(e->lower[0]));
		}
		pthread_mutex_unlock(&e->lock);
		if (!t)
			break;
		t->ops->destroy(t);
	}
	done_run(&e->io_done);
	while (e->sessions)
		kvt_engine_session_close(e, e->sessions);
	/* Every block, husks and all, goes with the pool. */
	kvt_index_destroy(e->index);
	kvt_block_pool_destroy(e->blocks);
	kvt_policy_destroy(e->policy);
	kvt_slots_destroy(e->slots);
	kvt_host_destroy(e->host);
	free(e->ns);
	free(e->tenants);
	free(e->quotas);
	free(e->found);
	free(e->segments);
	free(e->damaged);
	pthread_cond_destroy(&e->timer_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

const char *kvt_engine_host_describe(const struct kvt_engine *e)
{
	return kvt_host_describe(e->host);
}

uint32_t kvt_engine_host_segments(const struct kvt_engine *e)
{
	return kvt_slots_segments(e->slots);
}

uint64_t kvt_engine_segment_bytes(const struct kvt_engine *e)
{
	return e->cfg.segment_bytes;
}

int kvt_engine_reconfigure(struct kvt_engine *e,
			   const struct kvt_engine_config *cfg,
			   struct kvt_err *err)
{
	struct kvt_quota *quotas = calloc(cfg->nquotas ? cfg->nquotas : 1,
					  sizeof(*quotas));
	int rc;

	if (!quotas)
		return kvt_errf(err, -ENOMEM, "out of memory");
	memcpy(quotas, cfg->quotas, sizeof(*quotas) * cfg->nquotas);
	pthread_mutex_lock(&e->lock);
	rc = host_resize(e, cfg->host_bytes, err);
	if (rc < 0) {
		pthread_mutex_unlock(&e->lock);
		free(quotas);
		return rc;
	}
	e->cfg.default_priority = cfg->default_priority < KVT_PRIORITY_MAX ?
				  cfg->default_priority : KVT_PRIORITY_MAX;
	e->cfg.lease_ttl = cfg->lease_ttl;
	e->cfg.max_wait = cfg->max_wait;
	e->cfg.max_sessions = cfg->max_sessions;
	e->cfg.max_tenant_namespaces = cfg->max_tenant_namespaces;
	e->cfg.max_leases = cfg->max_leases;
	e->cfg.idle_ttl = cfg->idle_ttl;
	for (uint32_t i = 0; i < e->nns; i++)
		if (!e->ns[i].own_ttl)
			e->ns[i].idle_ttl = cfg->idle_ttl;
	free(e->quotas);
	e->quotas = quotas;
	e->cfg.quotas = quotas;
	e->cfg.nquotas = cfg->nquotas;
	e->cfg.default_host_quota = cfg->default_host_quota;
	for (uint32_t i = 1; i < e->ntenants; i++)
		e->tenants[i].quota = tenant_quota(e, e->tenants[i].uid);
	/* New TTLs and a shrinking tier are the timer's to act on now. */
	e->timer_kick = true;
	pthread_cond_signal(&e->timer_cond);
	pthread_mutex_unlock(&e->lock);
	return 0;
}

/* ---- stats ---- */

void kvt_engine_stats(struct kvt_engine *e, struct kvt_engine_stats *st)
{
	pthread_mutex_lock(&e->lock);
	*st = e->st;
	st->ready_blocks = st->pending_blocks = st->namespaces = 0;
	for (uint32_t i = 0; i < e->nns; i++) {
		st->ready_blocks += e->ns[i].ready;
		st->pending_blocks += e->ns[i].pending;
		st->namespaces += e->ns[i].state == NS_LIVE;
	}
	st->tenants = e->ntenants;
	st->host_segments = kvt_slots_active(e->slots);
	st->host_segments_retiring = e->retiring;
	st->host_segments_used = kvt_slots_segments_carved(e->slots);
	st->host_segment_faults_total = kvt_host_faults(e->host);
	for (uint32_t i = 0; i < e->nlower; i++)
		if (e->lower[i]->ops->stats)
			e->lower[i]->ops->stats(e->lower[i], st);
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
	st->live = n->state == NS_LIVE;
	if (!st->live)
		goto out;
	st->id = ns_id(e, ns);
	memcpy(st->name, n->name, sizeof(st->name));
	st->tenant = n->tenant;
	memcpy(st->tenant_name, e->tenants[n->tenant].name, sizeof(st->tenant_name));
	st->page_bytes = n->page_bytes;
	st->block_tokens = n->block_tokens;
	st->shared = n->shared;
	st->idle_ttl = n->idle_ttl;
	st->ready_blocks = n->ready;
	st->pending_blocks = n->pending;
	st->lookup_keys = n->lookup_keys;
	st->lookup_hits = n->lookup_hits;
	st->evictions = n->evictions;
	st->expired = n->expired;
	st->lookup_hits_nvme = n->lookup_hits_nvme;
	st->lookup_hits_remote = n->lookup_hits_remote;
	st->nvme_blocks = n->nvme_blocks;
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int kvt_engine_tenant_stats(struct kvt_engine *e, uint32_t tenant,
			    struct kvt_tenant_stats *st)
{
	struct tenant *t;
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	if (tenant >= e->ntenants) {
		rc = -ENOENT;
		goto out;
	}
	t = &e->tenants[tenant];
	st->uid = t->uid;
	memcpy(st->name, t->name, sizeof(st->name));
	st->host_used_bytes = t->used;
	st->host_quota_bytes = t->quota;
	st->lookup_keys = t->lookup_keys;
	st->lookup_hits = t->lookup_hits;
	st->evictions = t->evictions;
	st->sessions = t->sessions;
	st->leases = t->leases;
	st->namespaces = ns_created_by(e, tenant);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

void kvt_engine_eviction_ages(struct kvt_engine *e,
			      struct kvt_histogram_snapshot *out)
{
	kvt_histogram_read(&e->eviction_age, out);
}

/*
 * Sessions and what they hold: leases (pinned blocks), reservations, and
 * Acquires that wait, for PENDING blocks (early reuse) or for promotions
 * from a lower tier; the deadlines of all of these and the timer thread
 * that fires them. Everything here runs under the engine lock
 * (engine_int.h) except done_run, the callbacks it makes, and the timer
 * thread between ticks.
 */
#include "engine_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "index.h"
#include "policy.h"

/* ---- sessions ---- */

struct kvt_session *session_find(struct kvt_engine *e,
					const uint8_t *token, uint32_t tenant)
{
	if (!token)
		return NULL;
	for (struct kvt_session *s = e->sessions; s; s = s->next)
		if (memcmp(s->token, token, KVT_SESSION_TOKEN_BYTES) == 0)
			return s->tenant == tenant ? s : NULL;
	return NULL;
}

int kvt_engine_session_open(struct kvt_engine *e, uint32_t tenant,
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
	s->tenant = tenant;
	s->gpu_pool = -1;
	memcpy(token, s->token, sizeof(s->token));
	pthread_mutex_lock(&e->lock);
	if (e->cfg.max_sessions && e->tenants[tenant].sessions >= e->cfg.max_sessions) {
		e->st.sessions_refused_total++;
		pthread_mutex_unlock(&e->lock);
		free(s);
		return -EDQUOT;
	}
	e->tenants[tenant].sessions++;
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

/* ---- leases ---- */

static void lease_unlink_age(struct kvt_engine *e, struct lease *l)
{
	if (l->older)
		l->older->newer = l->newer;
	else
		e->oldest_lease = l->newer;
	if (l->newer)
		l->newer->older = l->older;
	else
		e->newest_lease = l->older;
}

/* A lease over blocks (already pinned) for session s, or NULL. */
static struct lease *lease_new(struct kvt_engine *e, struct kvt_session *s,
			       struct kvt_block *const *blocks, uint32_t n)
{
	struct lease *l = malloc(sizeof(*l) + sizeof(l->blocks[0]) * n);

	if (!l)
		return NULL;
	memcpy(l->blocks, blocks, sizeof(l->blocks[0]) * n);
	l->n = n;
	l->id = e->next_lease++;
	l->born = engine_now_locked(e);
	l->session = s;
	l->next = s->leases;
	s->leases = l;
	l->newer = NULL;
	l->older = e->newest_lease;
	if (l->older)
		l->older->newer = l;
	else
		e->oldest_lease = l;
	e->newest_lease = l;
	e->st.leases_active++;
	e->tenants[s->tenant].leases++;
	e->st.pins_total += n;
	if (n)
		e->st.host_out_bytes_total += n * e->ns[blocks[0]->ns].page_bytes;
	return l;
}

/* Unpins and frees l, which the caller took off its session's list. */
static void lease_free(struct kvt_engine *e, struct lease *l)
{
	lease_unlink_age(e, l);
	for (uint32_t i = 0; i < l->n; i++)
		block_unpin(e, l->blocks[i]);
	e->st.leases_active--;
	e->tenants[l->session->tenant].leases--;
	free(l);
}

bool lease_remove(struct kvt_engine *e, struct kvt_session *s,
			 uint64_t id)
{
	for (struct lease **p = &s->leases; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct lease *l = *p;

			*p = l->next;
			lease_free(e, l);
			return true;
		}
	}
	return false;
}

/* ---- waits (early reuse) ---- */

static void deadline_unlink(struct kvt_engine *e, struct kvt_waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		e->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->queued = false;
}

static void waiter_detach(struct kvt_engine *e, struct kvt_waiter *w)
{
	if (w->list) {
		struct kvt_waiter **p = w->list;

		while (*p != w)
			p = &(*p)->next_on_block;
		*p = w->next_on_block;
		w->list = NULL;
	}
	if (w->queued)
		deadline_unlink(e, w);
	if (w->counted) {
		w->counted = false;
		e->st.waits_active--;
	}
}

/*
 * Where the reader of pinned block i of w finds it: a lower tier's copy
 * for its GPU (hbm) when there is one, else the host tier (and the tier
 * may start a copy, so that the next reader finds one).
 */
static void locate(struct kvt_engine *e, struct kvt_waiter *w, uint32_t i)
{
	struct kvt_block *b = w->pinned[i];
	struct kvt_location *loc = &w->locs[i];
	int pool = w->session ? w->session->gpu_pool : -1;

	loc->tier = KVT_TIER_HOST;
	loc->segment = b->segment;
	loc->generation = kvt_host_generation(e->host, b->segment);
	loc->offset = slot_offset(e, b);
	for (uint32_t t = 0; pool >= 0 && t < e->nlower; t++) {
		struct kvt_lower_tier *lt = e->lower[t];

		if (lt->ops->locate && lt->ops->locate(lt, b, (uint32_t)pool, loc))
			return;
	}
}

void waiter_finish(struct kvt_engine *e, struct kvt_waiter *w, int rc,
			  struct done_list *done)
{
	waiter_detach(e, w);
	if (w->session)
		e->tenants[w->session->tenant].acquiring--;
	w->rc = rc;
	if (rc == 0 && w->got && !w->session) { /* kvt_engine_pin_async */
		w->result.pinned = w->pinned;
		w->result.count = w->got;
		e->st.host_out_bytes_total += w->got * e->ns[w->ns].page_bytes;
	} else if (rc == 0 && w->got) {
		struct lease *l = lease_new(e, w->session, w->pinned, w->got);

		if (l) {
			w->result.lease = l->id;
			w->result.count = w->got;
			for (uint32_t i = 0; i < w->got; i++)
				locate(e, w, i);
		} else {
			w->rc = -ENOMEM;
		}
	}
	if (w->rc < 0)
		for (uint32_t i = 0; i < w->got; i++)
			block_unpin(e, w->pinned[i]);
	if (w->waited && w->rc == 0) {
		if (w->got == w->n)
			e->st.waits_completed_total++;
		else if (w->wait_deadline <= e->last_now || e->stop_waiting)
			e->st.waits_timed_out_total++;
		else
			e->st.waits_missed_total++;
	}
	w->next = done->head;
	done->head = w;
}

void done_run(struct done_list *done)
{
	while (done->head) {
		struct kvt_waiter *w = done->head;

		done->head = w->next;
		w->done(w->arg, w->rc, &w->result);
		free(w);
	}
}

/*
 * Puts w on list (the waiters of a PENDING block, or of a promotion) and in
 * e->waiters by deadline. Only waits for a PENDING block count as waits.
 */
static void waiter_queue(struct kvt_engine *e, struct kvt_waiter *w,
			 struct kvt_waiter **list, bool pending)
{
	struct kvt_waiter **p = &e->waiters, *prev = NULL;

	w->list = list;
	w->next_on_block = *list;
	*list = w;
	if (w->queued) /* its deadline may have moved: queue it anew */
		deadline_unlink(e, w);
	/* Linear, but the waits in flight are a few per worker. */
	while (*p && (*p)->deadline <= w->deadline) {
		prev = *p;
		p = &prev->next;
	}
	w->prev = prev;
	w->next = *p;
	if (w->next)
		w->next->prev = w;
	*p = w;
	w->queued = true;
	if (pending && !w->counted) {
		w->counted = true;
		e->st.waits_active++;
		if (!w->waited) {
			w->waited = true;
			e->st.waits_total++;
		}
	}
	if (e->waiters == w && e->timer_running) {
		e->timer_kick = true;
		pthread_cond_signal(&e->timer_cond);
	}
}

static struct promotion *promotion_of(struct kvt_engine *e,
				      const struct kvt_block *b)
{
	for (struct promotion *p = e->promotions; p; p = p->next)
		if (p->b == b)
			return p;
	return NULL;
}

/*
 * Reads b back from the lower tier that keeps it into a new host slot. Its
 * parent counts the slot first, as in block_reserve. false when no tier
 * keeps it, or no slot or no I/O could be had.
 */
bool block_promote(struct kvt_engine *e, struct kvt_block *b)
{
	struct kvt_lower_tier *t = tier_holding(e, b);
	struct promotion *p;
	uint32_t seg, slot;

	if (!t || !t->ops->promote || !(p = calloc(1, sizeof(*p))))
		return false;
	host_child(e, b->parent, true);
	block_pin(e, b); /* not a victim of its own host_slot_alloc */
	if (host_slot_alloc(e, b->ns, b->tenant, &seg, &slot) < 0)
		goto fail;
	p->b = b;
	p->tier = t;
	if (t->ops->promote(t, b, p, seg, kvt_slots_offset(e->slots, seg, slot)) < 0) {
		host_slot_free(e, seg, slot);
		goto fail;
	}
	host_attach(e, b, seg, slot);
	b->promoting = 1;
	p->next = e->promotions;
	if (p->next)
		p->next->prev = p;
	e->promotions = p;
	return true;
fail:
	host_child(e, b->parent, false);
	io_unpin(e, b);
	free(p);
	return false;
}

void engine_promoted(struct kvt_engine *e, void *job, int rc)
{
	struct promotion *p = job;
	struct kvt_block *b = p->b;

	if (p->prev)
		p->prev->next = p->next;
	else
		e->promotions = p->next;
	if (p->next)
		p->next->prev = p->prev;
	b->promoting = 0;
	if (rc == 0) {
		e->st.promotions_total++;
		e->st.host_in_bytes_total += e->ns[b->ns].page_bytes;
	} else {
		/* A corrupt or unreadable page is a miss, never served. Its
		 * tier forgets it itself: a tier that is stopping (in
		 * kvt_engine_destroy) has left e->lower already. */
		e->st.promotion_failures_total++;
		if (b->indexed) {
			if (p->tier->ops->forget)
				p->tier->ops->forget(p->tier, b);
			block_unindex(e, b);
		}
	}
	wake_waiters(e, p->waiters, &e->io_done);
	free(p);
	io_unpin(e, b);
}

void engine_run_io_done(struct kvt_engine *e)
{
	struct done_list done;

	pthread_mutex_lock(&e->lock);
	done = e->io_done;
	e->io_done.head = NULL;
	pthread_mutex_unlock(&e->lock);
	done_run(&done);
}

/* Starts promoting the blocks of w's ready prefix from w->got on. */
static void promote_prefix(struct kvt_engine *e, struct kvt_waiter *w)
{
	for (uint32_t i = w->got; i < w->n; i++) {
		struct kvt_block *b = kvt_index_find(e->index, w->ns, w->tenant,
						     w->keys[i]);

		if (!b || b->state != KVT_BLOCK_READY)
			return;
		if (!b->has_slot && !block_promote(e, b))
			return;
	}
}

/*
 * Pins w's keys from where it stopped: READY host blocks are pinned, blocks
 * on nvme are promoted and waited for, a PENDING one is waited for (until
 * the deadline), an absent one ends the prefix.
 */
void waiter_advance(struct kvt_engine *e, struct kvt_waiter *w,
			   struct done_list *done)
{
	uint64_t now = engine_now_locked(e);

	w->list = NULL;
	/* A dropped namespace's blocks are no longer to be had. */
	while (w->got < w->n && e->ns[w->ns].state == NS_LIVE) {
		struct kvt_block *b = kvt_index_find(e->index, w->ns, w->tenant,
						     w->keys[w->got]);
		struct promotion *p;

		if (!b)
			break;
		if (b->state == KVT_BLOCK_READY && b->has_slot && !b->promoting) {
			block_pin(e, b);
			w->pinned[w->got++] = b;
			continue;
		}
		if (b->state == KVT_BLOCK_READY) {
			if (e->stop_waiting)
				break;
			if (!b->has_slot)
				promote_prefix(e, w);
			if (!(p = promotion_of(e, b)))
				break; /* no room to promote into: a miss */
			w->deadline = w->wait_deadline;
			if (w->deadline < now + PROMOTE_TIMEOUT)
				w->deadline = now + PROMOTE_TIMEOUT;
			waiter_queue(e, w, &p->waiters, false);
			return;
		}
		if (e->stop_waiting || now >= w->wait_deadline)
			break;
		w->deadline = w->wait_deadline;
		waiter_queue(e, w, &b->u.pending.waiters, true);
		return;
	}
	waiter_finish(e, w, 0, done);
}

/* Wakes the waiters of b, which was just committed or taken away. */
void wake_waiters(struct kvt_engine *e, struct kvt_waiter *list,
			 struct done_list *done)
{
	while (list) {
		struct kvt_waiter *w = list;

		list = w->next_on_block;
		w->list = NULL;
		waiter_advance(e, w, done);
	}
}

/* Removes a PENDING block of a session (or of an inline Put). */
void pending_abort(struct kvt_engine *e, struct kvt_block_list *pending,
			  struct kvt_block *b, struct done_list *done)
{
	struct kvt_waiter *waiters = b->u.pending.waiters;

	kvt_block_list_unlink(pending, b);
	kvt_index_remove(e->index, b);
	b->indexed = 0;
	e->ns[b->ns].pending--;
	e->st.aborted_total++;
	kvt_policy_forget(e->policy, b);
	b->u.pending.waiters = NULL;
	block_settle(e, b);
	wake_waiters(e, waiters, done);
}

void kvt_engine_session_close(struct kvt_engine *e, struct kvt_session *s)
{
	struct done_list done = { 0 };

	pthread_mutex_lock(&e->lock);
	for (struct kvt_waiter *w = e->waiters, *next; w; w = next) {
		next = w->next;
		if (w->session == s)
			waiter_finish(e, w, -ENOENT, &done);
	}
	while (s->leases) {
		struct lease *l = s->leases;

		s->leases = l->next;
		lease_free(e, l);
	}
	while (s->pending.head)
		pending_abort(e, &s->pending, s->pending.head, &done);
	if (s->prev)
		s->prev->next = s->next;
	else
		e->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	e->st.sessions_active--;
	e->tenants[s->tenant].sessions--;
	pthread_mutex_unlock(&e->lock);
	done_run(&done);
	free(s);
}

int kvt_engine_segment_fd(struct kvt_engine *e, uint32_t tenant,
			  const uint8_t token[KVT_SESSION_TOKEN_BYTES],
			  uint32_t segment, uint32_t *generation,
			  struct kvt_err *err)
{
	struct kvt_session *s;
	uint32_t tag;
	int rc;

	pthread_mutex_lock(&e->lock);
	s = session_find(e, token, tenant);
	if (!s) {
		rc = kvt_errf(err, -ENOENT, "no such session");
		goto out;
	}
	/* Retiring segments too: their blocks are readable until they go. */
	if (segment >= kvt_slots_segments(e->slots)) {
		rc = kvt_errf(err, -ENOENT, "no host segment %u (the tier has %u)",
				 segment, kvt_slots_segments(e->slots));
		goto out;
	}
	tag = kvt_slots_segment_tag(e->slots, segment);
	if (tag != tenant && tag != KVT_TENANT_SHARED) {
		rc = kvt_errf(err, -EACCES,
				 "host segment %u holds none of tenant %s's blocks",
				 segment, e->tenants[tenant].name);
		goto out;
	}
	rc = kvt_host_share(e->host, segment, generation);
	if (rc < 0)
		kvt_errf(err, rc, "cannot share host segment %u: %s", segment,
			    strerror(-rc));
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}
/* ---- deadlines ---- */

static void expire_leases(struct kvt_engine *e, uint64_t now)
{
	while (e->cfg.lease_ttl && e->oldest_lease &&
	       e->oldest_lease->born + e->cfg.lease_ttl <= now) {
		struct lease *l = e->oldest_lease;

		e->st.leases_expired_total++;
		e->st.forced_unpins_total += l->n;
		lease_remove(e, l->session, l->id);
	}
}

static void expire_idle(struct kvt_engine *e, uint64_t now)
{
	for (uint32_t i = 0; i < e->nns; i++) {
		struct namespace *n = &e->ns[i];
		struct kvt_block *b;

		if (!n->idle_ttl || now < n->idle_ttl)
			continue;
		while ((b = kvt_policy_idle(e->policy, i, now - n->idle_ttl))) {
			n->expired++;
			e->st.expired_total++;
			block_unindex(e, b);
		}
	}
}

uint64_t kvt_engine_tick(struct kvt_engine *e)
{
	struct done_list done = { 0 };
	struct kvt_block *b;
	uint64_t now, next;

	pthread_mutex_lock(&e->lock);
	now = engine_now_locked(e);
	while (e->waiters && e->waiters->deadline <= now)
		waiter_finish(e, e->waiters, 0, &done);
	while ((b = kvt_policy_expired_priority(e->policy, now))) {
		e->st.priority_fallbacks_total++;
		(void)kvt_policy_set_priority(e->policy, b,
					      e->cfg.default_priority, 0);
	}
	expire_idle(e, now);
	expire_leases(e, now);
	next = now + TIMER_PERIOD;
	if (e->retiring && (e->retiring = retire_sweep(e)))
		next = now + RETIRE_PERIOD;
	if (e->ndamaged || kvt_host_faults(e->host) != e->faults_seen)
		damage_sweep(e);
	if (e->ndamaged)
		next = now + RETIRE_PERIOD;
	if (e->waiters && e->waiters->deadline < next)
		next = e->waiters->deadline;
	if (kvt_policy_next_deadline(e->policy) < next)
		next = kvt_policy_next_deadline(e->policy);
	pthread_mutex_unlock(&e->lock);
	done_run(&done);
	return next;
}

void kvt_engine_stop_waiting(struct kvt_engine *e)
{
	struct done_list done = { 0 };

	pthread_mutex_lock(&e->lock);
	e->stop_waiting = true;
	while (e->waiters)
		waiter_finish(e, e->waiters, 0, &done);
	pthread_mutex_unlock(&e->lock);
	done_run(&done);
}

void *timer_main(void *arg)
{
	struct kvt_engine *e = arg;

	pthread_mutex_lock(&e->lock);
	while (!e->timer_stop) {
		uint64_t next, now;
		struct timespec ts;

		pthread_mutex_unlock(&e->lock);
		next = kvt_engine_tick(e);
		pthread_mutex_lock(&e->lock);
		now = e->cfg.clock(e->cfg.clock_arg);
		/* A wait queued since the tick set timer_kick. */
		if (next > now && !e->timer_kick && !e->timer_stop) {
			/* The engine clock is CLOCK_MONOTONIC, as is the cond's. */
			ts.tv_sec = (time_t)(next / 1000000000ull);
			ts.tv_nsec = (long)(next % 1000000000ull);
			pthread_cond_timedwait(&e->timer_cond, &e->lock, &ts);
		}
		e->timer_kick = false;
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/*
 * The Redis client's cluster side: a key's slot (CRC16/XMODEM, {hash
 * tags}), the probe that tells a cluster from a single server, the slot
 * map read from CLUSTER SLOTS (at the probe, then at most once per
 * interval after a -MOVED or a node error), and freeing the nodes that
 * left it. The client's thread only.
 */
#include "redis_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- slots ---- */

static uint16_t crc16_xmodem(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;

	while (n--) {
		crc ^= (uint16_t)(*p++ << 8);
		for (int i = 0; i < 8; i++)
			crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

uint16_t kvt_redis_slot(const void *key, size_t len)
{
	const uint8_t *k = key;
	size_t s, e;

	for (s = 0; s < len && k[s] != '{'; s++)
		;
	if (s < len) {
		for (e = s + 1; e < len && k[e] != '}'; e++)
			;
		if (e < len && e > s + 1)
			return crc16_xmodem(k + s + 1, e - s - 1) & (REDIS_SLOTS - 1);
	}
	return crc16_xmodem(k, len) & (REDIS_SLOTS - 1);
}

/* ---- the probe and the map ---- */

/* The map from a CLUSTER SLOTS reply; logged when a slot changed owner. */
static void apply_map(struct kvt_redis *c, struct node *from, const redisReply *rep)
{
	uint32_t masters = 0, covered = 0, changed = 0;
	uint64_t seen[REDIS_SLOTS / 64] = { 0 };

	for (uint32_t i = 0; i < c->nnodes; i++)
		c->nodes[i]->master = false;
	for (size_t i = 0; i < rep->elements; i++) {
		const redisReply *e = rep->element[i], *m;
		long long lo, hi;
		struct node *t;
		const char *host;

		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3)
			continue;
		m = e->element[2];
		if (e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER || m->type != REDIS_REPLY_ARRAY ||
		    m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
		    m->element[1]->type != REDIS_REPLY_INTEGER)
			continue;
		lo = e->element[0]->integer;
		hi = e->element[1]->integer;
		if (lo < 0 || hi >= REDIS_SLOTS || lo > hi)
			continue;
		host = m->element[0]->str;
		if (!host[0] || !strcmp(host, "?"))
			host = from->host;
		t = node_get(c, host, (int)m->element[1]->integer);
		if (!t)
			continue;
		masters += !t->master;
		t->master = true;
		for (long long s = lo; s <= hi; s++) {
			changed += c->slots[s] != t;
			c->slots[s] = t;
			seen[s / 64] |= 1ull << (s % 64);
		}
	}
	for (uint32_t s = 0; s < REDIS_SLOTS; s++) {
		if (seen[s / 64] & (1ull << (s % 64))) {
			covered++;
		} else {
			changed += c->slots[s] != NULL;
			c->slots[s] = NULL;
		}
	}
	c->covered = covered;
	atomic_store(&c->st.nodes, masters);
	atomic_fetch_add_explicit(&c->st.refreshes, 1, memory_order_relaxed);
	if (changed)
		redis_say(c, covered < REDIS_SLOTS, NULL,
			  "redis: cluster map from %s: %u masters, %u of %u slots covered, %u changed owner",
			  from->name, masters, covered, REDIS_SLOTS, changed);
	c->gc_wanted = true;
}

/* The endpoints are tried in order; a round that finds none starts again
 * when the first of them may be tried again. */
void probe_start(struct kvt_redis *c)
{
	uint64_t at = UINT64_MAX;

	while (c->probe_idx < c->nseeds) {
		struct node *n = c->nodes[c->probe_idx];

		if (n->state == N_DOWN && c->now < n->retry_at) {
			c->probe_rc = n->down_rc;
			c->probe_idx++;
			continue;
		}
		c->probing = n;
		n->want_slots = true;
		node_dirty(n);
		return;
	}
	for (uint32_t i = 0; i < c->nseeds; i++)
		at = min_u64(at, c->nodes[i]->retry_at);
	c->probe_idx = 0;
	c->probe_at = max_u64(at, c->now + REDIS_BACKOFF_MIN);
	redis_say(c, true, &c->logged_probe, "redis: no endpoint answered (%s); trying again",
		  strerror(-c->probe_rc));
	while (c->unrouted.head)
		op_resolve(c, op_pop(&c->unrouted), c->probe_rc);
}

void probe_failed(struct kvt_redis *c, int rc)
{
	c->probing = NULL;
	c->probe_rc = rc;
	c->probe_idx++;
	probe_start(c);
}

static void probe_answer(struct kvt_redis *c, struct node *n, const redisReply *rep)
{
	c->probing = NULL;
	if (rep->type == REDIS_REPLY_ARRAY) {
		c->mode = MODE_CLUSTER;
		atomic_store(&c->st.cluster, true);
		c->last_refresh = c->now;
		apply_map(c, n, rep);
	} else if (rep->type == REDIS_REPLY_ERROR && strstr(rep->str, "cluster support disabled")) {
		c->mode = MODE_SINGLE;
		c->single = n;
		n->master = true;
		atomic_store(&c->st.nodes, 1);
		redis_say(c, false, NULL, "redis: %s is a single server (no cluster support)",
			  n->name);
	} else {
		redis_say(c, true, NULL, "redis: %s: CLUSTER SLOTS: %s", n->name,
			  rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
		probe_failed(c, rep->type == REDIS_REPLY_ERROR ? redis_server_error(rep->str) : -EPROTO);
		return;
	}
	c->probe_rc = 0;
	while (c->unrouted.head)
		op_dispatch(c, op_pop(&c->unrouted));
}

void slots_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct node *n = priv;
	struct kvt_redis *c = n->c;
	redisReply *rep = r;

	(void)ac;
	n->inflight--;
	if (!rep) /* node_down saw to the probe or refresh */
		return;
	n->backoff = 0;
	if (c->probing == n) {
		probe_answer(c, n, rep);
		return;
	}
	if (c->refreshing == n)
		c->refreshing = NULL;
	if (rep->type == REDIS_REPLY_ARRAY && c->mode == MODE_CLUSTER) {
		apply_map(c, n, rep);
	} else {
		redis_say(c, true, &c->logged_map, "redis: %s: CLUSTER SLOTS: %s", n->name,
			  rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
		c->refresh_wanted = true;
	}
}

/* Asks a master that answers (else any known master or endpoint) for the map. */
static void refresh_start(struct kvt_redis *c)
{
	struct node *pick = NULL;
	uint32_t nn = c->nnodes;

	for (uint32_t k = 0; k < nn && !pick; k++) {
		struct node *x = c->nodes[(c->refresh_rr + k) % nn];

		if (x->master && x->state == N_READY)
			pick = x;
	}
	for (uint32_t k = 0; k < nn && !pick; k++) {
		struct node *x = c->nodes[(c->refresh_rr + k) % nn];

		if ((x->master || x->seed) && !(x->state == N_DOWN && c->now < x->retry_at))
			pick = x;
	}
	c->refresh_rr++;
	c->last_refresh = c->now;
	if (!pick)
		return;
	c->refresh_wanted = false;
	c->refreshing = pick;
	pick->want_slots = true;
	node_dirty(pick);
}

/* Nodes no longer in the map, with nothing on them, are closed and freed. */
static void nodes_gc(struct kvt_redis *c)
{
	c->gc_wanted = false;
	for (uint32_t i = 0; i < c->nnodes;) {
		struct node *n = c->nodes[i];

		/* A write lane goes with its node. */
		if (n->master || n->seed || n->reader || n->dirty || n->pending.head ||
		    n->inflight || c->probing == n || c->refreshing == n) {
			i++;
			continue;
		}
		if (n->ac) {
			redisAsyncContext *ac = n->ac;

			n->ac = NULL;
			redisAsyncFree(ac);
		}
		if (n->reader) /* a write lane goes; another is made when needed */
			n->reader->writer = NULL;
		if (n->writer) /* an orphan lane, freed once idle */
			n->writer->reader = NULL;
		free(n);
		c->nodes[i] = c->nodes[--c->nnodes];
	}
}

/* The probe's retry, the map's refresh, and the nodes to free; returns
 * the next time it wants. */
uint64_t cluster_tick(struct kvt_redis *c)
{
	uint64_t next = UINT64_MAX, now = c->now;

	if (c->mode == MODE_PROBE && !c->probing) {
		if (now >= c->probe_at)
			probe_start(c);
		else
			next = c->probe_at;
	}
	if (c->mode == MODE_CLUSTER && c->refresh_wanted && !c->refreshing) {
		uint64_t at = c->last_refresh + c->cfg.interval_ns;

		if (now >= at)
			refresh_start(c);
		next = min_u64(next, max_u64(at, now + c->cfg.interval_ns / 8));
	}
	if (c->gc_wanted)
		nodes_gc(c);
	return next;
}

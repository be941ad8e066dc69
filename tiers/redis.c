/*
 * The Redis client: the submission queue, batches and their deadlines,
 * completions, stats and the thread's loop. Connections and routing are
 * redis_node.c, slots and the slot map redis_cluster.c.
 *
 * A submission allocates its batch (one op per key) outside the lock,
 * then only appends it to the queue under c->lock and, if the thread was
 * not already told, writes the eventfd. The thread splices the queue out,
 * routes each op to a node's pending list, sends what the nodes' windows
 * take, and collects finished batches; their completions run at the end of
 * each turn of the loop, after c->queued was lowered under the lock and
 * with no lock held, so that a completion may submit again.
 */
#include "redis_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define GRACE_MAX (250 * REDIS_MS)

uint64_t redis_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Logs, at most once per interval for the condition whose time is *last. */
void redis_say(struct kvt_redis *c, bool error, uint64_t *last, const char *fmt, ...)
{
	uint64_t now = redis_now();
	char msg[512];
	va_list ap;

	if (last) {
		if (*last && now - *last < c->cfg.interval_ns)
			return;
		*last = now;
	}
	if (!c->cfg.log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->cfg.log(c->cfg.arg, error, msg);
}

/* ---- lists ---- */

/* Inserts x after `after` (NULL: at the head). */
void redis_list_insert(struct redis_list *l, struct redis_link *after, struct redis_link *x)
{
	x->prev = after;
	x->next = after ? after->next : l->head;
	if (x->next)
		x->next->prev = x;
	else
		l->tail = x;
	if (after)
		after->next = x;
	else
		l->head = x;
}

void redis_list_unlink(struct redis_list *l, struct redis_link *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		l->head = x->next;
	if (x->next)
		x->next->prev = x->prev;
	else
		l->tail = x->prev;
	x->prev = x->next = NULL;
}

void redis_list_push(struct redis_list *l, struct redis_link *x)
{
	redis_list_insert(l, l->tail, x);
}

static struct redis_link *list_pop(struct redis_list *l)
{
	struct redis_link *x = l->head;

	if (x)
		redis_list_unlink(l, x);
	return x;
}

struct op *op_pop(struct redis_list *l)
{
	struct redis_link *x = list_pop(l);

	return x ? redis_entry(x, struct op, link) : NULL;
}

static struct batch *batch_of(struct redis_link *x)
{
	return x ? redis_entry(x, struct batch, link) : NULL;
}

/* Deadlines mostly come in order (one timeout): walk back from the tail. */
static void active_insert(struct kvt_redis *c, struct batch *b)
{
	struct redis_link *after = c->active.tail;

	while (after && batch_of(after)->deadline_ns > b->deadline_ns)
		after = after->prev;
	redis_list_insert(&c->active, after, &b->link);
}

void batch_release(struct batch *b)
{
	if (b->delivered && !b->sent)
		free(b);
}

/* ---- results ---- */

static enum kvt_redis_err err_kind(int64_t rc)
{
	switch (rc) {
	case -ETIMEDOUT:
		return KVT_REDIS_ERR_TIMEOUT;
	case -EIO:
	case -ECONNRESET:
		return KVT_REDIS_ERR_CONN;
	case -EACCES:
		return KVT_REDIS_ERR_AUTH;
	case -EMSGSIZE:
		return KVT_REDIS_ERR_SIZE;
	case -EPROTO:
		return KVT_REDIS_ERR_PROTO;
	default:
		return KVT_REDIS_ERR_SERVER;
	}
}

static bool is_error(int64_t rc)
{
	return rc < 0 && rc != KVT_REDIS_MISS;
}

static void batch_finish(struct kvt_redis *c, struct batch *b)
{
	b->finished = true;
	redis_list_unlink(&c->active, &b->link);
	redis_list_push(&c->done, &b->link);
	kvt_histogram_observe(&c->latency, c->now - b->start_ns);
}

/* A key's answer: counted, and its batch finished with its last key. */
void op_resolve(struct kvt_redis *c, struct op *op, int64_t rc)
{
	struct batch *b = op->b;

	op->state = OP_DONE;
	b->items[op->idx].result = rc;
	if (b->kind == OP_GET || b->kind == OP_EXISTS) {
		if (rc > 0 || (rc == 0 && b->kind == OP_GET))
			atomic_fetch_add_explicit(&c->st.hits, 1, memory_order_relaxed);
		else if (rc == 0 || rc == KVT_REDIS_MISS)
			atomic_fetch_add_explicit(&c->st.misses, 1, memory_order_relaxed);
		if (b->kind == OP_GET && rc > 0)
			atomic_fetch_add_explicit(&c->st.bytes_in, (uint64_t)rc,
						  memory_order_relaxed);
	} else if (b->kind == OP_SET && rc == 0) {
		atomic_fetch_add_explicit(&c->st.bytes_out,
					  b->items[op->idx].head_len +
						  b->items[op->idx].len,
					  memory_order_relaxed);
	}
	if (rc == -ETIMEDOUT && b->budget) {
		atomic_fetch_add_explicit(&c->st.budget_expired, 1, memory_order_relaxed);
		if (!b->rc)
			b->rc = (int)rc;
	} else if (is_error(rc)) {
		enum kvt_redis_err k = err_kind(rc);

		atomic_fetch_add_explicit(&c->st.errors[k], 1, memory_order_relaxed);
		if (k != KVT_REDIS_ERR_SIZE)
			c->last_error = c->now;
		if (!b->rc)
			b->rc = (int)rc;
	}
	if (--b->left == 0)
		batch_finish(c, b);
}

/* Every key not answered yet gets rc; sent ones stay with hiredis. */
static void batch_expire(struct kvt_redis *c, struct batch *b, int rc)
{
	uint32_t late = 0;

	for (uint32_t i = 0; i < b->n && !b->finished; i++) {
		struct op *op = &b->ops[i];

		if (op->state == OP_DONE)
			continue;
		if (op->state == OP_QUEUED)
			redis_list_unlink(op->node ? &op->node->pending : &c->unrouted, &op->link);
		late++;
		op_resolve(c, op, rc);
	}
	if (rc == -ETIMEDOUT && !b->budget)
		redis_say(c, true, &c->logged_timeout,
			  "redis: %u keys not answered within %llu ms (counted in errors{kind=\"timeout\"})",
			  late, (unsigned long long)((b->deadline_ns - b->start_ns) / REDIS_MS));
}

/* ---- submission ---- */

static int submit(struct kvt_redis *c, enum op_kind kind, struct kvt_redis_item *items,
		  uint32_t n, uint64_t ttl_ms, uint64_t timeout_ns, kvt_redis_done_fn done,
		  void *arg)
{
	struct batch *b;
	bool wake;

	if (!c || !items || !done || n == 0)
		return -EINVAL;
	if (n > c->cfg.queue_depth)
		return -E2BIG;
	for (uint32_t i = 0; i < n; i++) {
		if (!items[i].key && items[i].key_len)
			return -EINVAL;
		if ((kind == OP_GET || kind == OP_SET) && !items[i].dst && items[i].len)
			return -EINVAL;
		if ((kind == OP_GET || kind == OP_SET) && !items[i].head &&
		    items[i].head_len)
			return -EINVAL;
	}
	b = calloc(1, sizeof(*b) + n * sizeof(b->ops[0]));
	if (!b)
		return -ENOMEM;
	b->kind = kind;
	b->items = items;
	b->n = b->left = n;
	b->ttl_ms = ttl_ms;
	b->done = done;
	b->arg = arg;
	b->start_ns = redis_now();
	if (!timeout_ns || timeout_ns >= c->cfg.timeout_ns)
		timeout_ns = c->cfg.timeout_ns;
	else
		b->budget = true;
	b->deadline_ns = b->start_ns + timeout_ns;
	for (uint32_t i = 0; i < n; i++) {
		b->ops[i].b = b;
		b->ops[i].idx = i;
	}

	pthread_mutex_lock(&c->lock);
	if (c->closing || c->queued + n > c->cfg.queue_depth) {
		int rc = c->closing ? -ESHUTDOWN : -EAGAIN;

		pthread_mutex_unlock(&c->lock);
		free(b);
		return rc;
	}
	c->queued += n;
	redis_list_push(&c->submitted, &b->link);
	wake = !c->woken;
	c->woken = true;
	pthread_mutex_unlock(&c->lock);

	atomic_fetch_add_explicit(&c->st.requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->st.keys, n, memory_order_relaxed);
	if (wake)
		(void)eventfd_write(c->efd, 1);
	return 0;
}

int kvt_redis_get(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		  uint64_t timeout_ns, kvt_redis_done_fn done, void *arg)
{
	return submit(r, OP_GET, items, n, 0, timeout_ns, done, arg);
}

int kvt_redis_exists(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		     uint64_t timeout_ns, kvt_redis_done_fn done, void *arg)
{
	return submit(r, OP_EXISTS, items, n, 0, timeout_ns, done, arg);
}

int kvt_redis_set(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		  uint64_t ttl_ms, uint64_t timeout_ns, kvt_redis_done_fn done, void *arg)
{
	return submit(r, OP_SET, items, n, ttl_ms, timeout_ns, done, arg);
}

int kvt_redis_del(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		  uint64_t timeout_ns, kvt_redis_done_fn done, void *arg)
{
	return submit(r, OP_DEL, items, n, 0, timeout_ns, done, arg);
}

/* ---- the loop ---- */

static void take_submissions(struct kvt_redis *c)
{
	struct redis_list sub;
	struct batch *b;

	pthread_mutex_lock(&c->lock);
	sub = c->submitted;
	c->submitted = (struct redis_list){ 0 };
	c->woken = false;
	if (c->closing && !c->close_at) {
		uint64_t grace = c->cfg.timeout_ns < GRACE_MAX ? c->cfg.timeout_ns : GRACE_MAX;

		c->close_at = c->now + grace;
	}
	pthread_mutex_unlock(&c->lock);
	c->now = redis_now(); /* not before any batch taken was submitted */

	while ((b = batch_of(list_pop(&sub)))) {
		active_insert(c, b);
		for (uint32_t i = 0; i < b->n && !b->finished; i++)
			op_dispatch(c, &b->ops[i]);
	}
}

static void deliver(struct kvt_redis *c)
{
	struct redis_list done = c->done;
	struct batch *b;
	uint32_t keys = 0;

	if (!done.head)
		return;
	c->done = (struct redis_list){ 0 };
	for (struct redis_link *x = done.head; x; x = x->next)
		keys += batch_of(x)->n;
	pthread_mutex_lock(&c->lock);
	c->queued -= keys;
	pthread_mutex_unlock(&c->lock);
	while ((b = batch_of(list_pop(&done)))) {
		b->done(b->arg, b->items, b->n, b->rc);
		b->delivered = true;
		batch_release(b);
	}
}

/* Deadlines and closing; returns the next deadline. */
static uint64_t batches_tick(struct kvt_redis *c)
{
	struct batch *b;
	uint64_t next;

	while ((b = batch_of(c->active.head)) && b->deadline_ns <= c->now)
		batch_expire(c, b, -ETIMEDOUT);
	if (c->close_at && (c->now >= c->close_at || !c->active.head)) {
		while ((b = batch_of(c->active.head)))
			batch_expire(c, b, -ECANCELED);
		c->stop = true;
	}
	next = c->active.head ? batch_of(c->active.head)->deadline_ns : UINT64_MAX;
	return c->close_at && !c->stop && c->close_at < next ? c->close_at : next;
}

static void *client_main(void *arg)
{
	struct kvt_redis *c = arg;
	struct epoll_event evs[64];
	uint64_t next = 0;

	c->now = redis_now();
	probe_start(c);
	nodes_flush(c);
	for (;;) {
		int timeout = -1, nev;

		if (next != UINT64_MAX) {
			uint64_t now = redis_now();

			timeout = next <= now ? 0 : (int)((next - now + REDIS_MS - 1) / REDIS_MS);
		}
		nev = epoll_wait(c->ep, evs, 64, timeout);
		c->now = redis_now();
		for (int i = 0; i < nev; i++) {
			if (!evs[i].data.ptr) {
				eventfd_t v;

				(void)eventfd_read(c->efd, &v);
			} else {
				node_event(evs[i].data.ptr, evs[i].events);
			}
		}
		take_submissions(c);
		next = batches_tick(c);
		if (!c->stop) {
			uint64_t t = nodes_tick(c);

			next = t < next ? t : next;
			nodes_flush(c);
		}
		deliver(c);
		if (c->stop)
			break;
	}
	nodes_free(c);
	return NULL;
}

/* ---- create, close, stats ---- */

static void client_free(struct kvt_redis *c)
{
	nodes_free(c);
	if (c->ep >= 0)
		close(c->ep);
	if (c->efd >= 0)
		close(c->efd);
	pthread_mutex_destroy(&c->lock);
	free(c->user);
	free(c->pass);
	free(c);
}

int kvt_redis_create(const struct kvt_redis_config *cfg, struct kvt_redis **out,
		     char *err, size_t errlen)
{
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
	struct kvt_redis *c;
	int rc;

	if (!cfg->nendpoints || cfg->nendpoints > KVT_REDIS_ENDPOINTS_MAX) {
		snprintf(err, errlen, "redis: %u endpoints (1..%d)", cfg->nendpoints,
			 KVT_REDIS_ENDPOINTS_MAX);
		return -EINVAL;
	}
	if (cfg->username && !cfg->password) {
		snprintf(err, errlen, "redis: a username needs a password");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	c->cfg.endpoints = NULL;
	if (!c->cfg.timeout_ns)
		c->cfg.timeout_ns = 1000 * REDIS_MS;
	if (!c->cfg.interval_ns)
		c->cfg.interval_ns = 1000 * REDIS_MS;
	if (!c->cfg.queue_depth)
		c->cfg.queue_depth = 1024;
	c->ep = c->efd = -1;
	pthread_mutex_init(&c->lock, NULL);
	kvt_histogram_init(&c->latency, &kvt_latency_bounds);
	c->user = cfg->username ? strdup(cfg->username) : NULL;
	c->pass = cfg->password ? strdup(cfg->password) : NULL;
	if ((cfg->username && !c->user) || (cfg->password && !c->pass)) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (uint32_t i = 0; i < cfg->nendpoints; i++) {
		char host[256];
		int port;
		struct node *n;

		if (redis_parse_endpoint(cfg->endpoints[i], host, sizeof(host), &port) < 0 ||
		    !host[0]) {
			snprintf(err, errlen, "redis: endpoint \"%s\" is not host:port",
				 cfg->endpoints[i]);
			rc = -EINVAL;
			goto out_free;
		}
		n = node_get(c, host, port);
		if (!n) {
			rc = -ENOMEM;
			goto out_free;
		}
		n->seed = true;
	}
	c->nseeds = c->nnodes;
	c->ep = epoll_create1(EPOLL_CLOEXEC);
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->ep < 0 || c->efd < 0 || epoll_ctl(c->ep, EPOLL_CTL_ADD, c->efd, &e) < 0) {
		rc = -errno;
		snprintf(err, errlen, "redis: epoll: %s", strerror(errno));
		goto out_free;
	}
	rc = -pthread_create(&c->thread, NULL, client_main, c);
	if (rc) {
		snprintf(err, errlen, "redis: cannot start the client thread: %s", strerror(-rc));
		goto out_free;
	}
	*out = c;
	return 0;

out_free:
	client_free(c);
	return rc;
}

void kvt_redis_close(struct kvt_redis *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->closing = true;
	pthread_mutex_unlock(&c->lock);
	(void)eventfd_write(c->efd, 1);
	pthread_join(c->thread, NULL);
	client_free(c);
}

void kvt_redis_stats(struct kvt_redis *c, struct kvt_redis_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->requests = atomic_load_explicit(&c->st.requests, memory_order_relaxed);
	st->keys = atomic_load_explicit(&c->st.keys, memory_order_relaxed);
	st->hits = atomic_load_explicit(&c->st.hits, memory_order_relaxed);
	st->misses = atomic_load_explicit(&c->st.misses, memory_order_relaxed);
	st->bytes_in = atomic_load_explicit(&c->st.bytes_in, memory_order_relaxed);
	st->bytes_out = atomic_load_explicit(&c->st.bytes_out, memory_order_relaxed);
	for (int k = 0; k < KVT_REDIS_ERR_KINDS; k++)
		st->errors[k] = atomic_load_explicit(&c->st.errors[k], memory_order_relaxed);
	kvt_histogram_read(&c->latency, &st->latency);
	st->degraded = atomic_load(&c->st.degraded);
	st->cluster = atomic_load(&c->st.cluster);
	st->nodes = atomic_load(&c->st.nodes);
	st->refreshes = atomic_load_explicit(&c->st.refreshes, memory_order_relaxed);
	st->budget_expired = atomic_load_explicit(&c->st.budget_expired,
						  memory_order_relaxed);
}

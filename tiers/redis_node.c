/*
 * The Redis client's nodes: a hiredis async context per node driven by
 * the client's epoll loop (the adapter below maps hiredis's addRead,
 * delRead, addWrite, delWrite and cleanup hooks onto epoll_ctl), AUTH on
 * every new connection, routing a key to its node, -MOVED and -ASK. The
 * probe of the endpoints and the slot map are redis_cluster.c.
 *
 * Only the client's thread runs this. hiredis calls back from inside
 * redisAsyncHandleRead/Write and redisAsyncFree; a callback never frees a
 * context (it asks the loop to, with drop_rc) and never frees a node, so
 * neither can disappear under hiredis. A node is freed only with no
 * context, nothing queued and no callback to come.
 */
#include "redis_int.h"

#include <hiredis/sds.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Bytes of commands hiredis may hold unsent per node: past it, ops wait in
 * the node's pending list (hiredis moves what follows an unfinished write
 * to the front of its buffer, so a long buffer costs a copy per write). */
#define WINDOW (1u << 20)

/* ---- the epoll adapter ---- */

static void ev_set(struct node *n, uint32_t want)
{
	struct epoll_event e = { .events = want, .data.ptr = n };

	if (n->registered && want == n->ev)
		return;
	if (epoll_ctl(n->c->ep, n->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, n->fd, &e) == 0) {
		n->registered = true;
		n->ev = want;
	}
	/* else the connection never progresses, and the tick drops it */
}

static void ev_change(struct node *n, uint32_t add, uint32_t del)
{
	ev_set(n, (n->ev | add) & ~del);
}

static void ev_add_read(void *p) { ev_change(p, EPOLLIN, 0); }
static void ev_del_read(void *p) { ev_change(p, 0, EPOLLIN); }
static void ev_add_write(void *p) { ev_change(p, EPOLLOUT, 0); }
static void ev_del_write(void *p) { ev_change(p, 0, EPOLLOUT); }

static void ev_cleanup(void *p)
{
	struct node *n = p;

	if (n->registered)
		(void)epoll_ctl(n->c->ep, EPOLL_CTL_DEL, n->fd, NULL);
	n->registered = false;
	n->ev = 0;
}

/* ---- nodes ---- */

struct node *node_get(struct kvt_redis *c, const char *host, int port)
{
	struct node *n;

	for (uint32_t i = 0; i < c->nnodes; i++)
		if (c->nodes[i]->port == port && !strcmp(c->nodes[i]->host, host) &&
		    !c->nodes[i]->is_writer)
			return c->nodes[i];
	if (c->nnodes == REDIS_NODES_MAX || strlen(host) >= sizeof(n->host))
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->c = c;
	strcpy(n->host, host);
	n->port = port;
	snprintf(n->name, sizeof(n->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
	n->fd = -1;
	c->nodes[c->nnodes++] = n;
	return n;
}

void node_dirty(struct node *n)
{
	if (n->dirty)
		return;
	n->dirty = true;
	n->dirty_next = n->c->dirty;
	n->c->dirty = n;
}

/*
 * The node failed (could not connect, lost its connection, or refused
 * AUTH): what waits for it fails with rc, and so does what is routed to it
 * until retry_at. Its context is gone or going already.
 */
static void node_down(struct node *n, int rc, const char *why)
{
	struct kvt_redis *c = n->c;
	struct op *op;

	n->state = N_DOWN;
	n->down_rc = rc;
	if (rc == -EACCES)
		n->backoff = c->cfg.interval_ns;
	else
		n->backoff = n->backoff ? min_u64(2 * n->backoff, REDIS_BACKOFF_MAX) : REDIS_BACKOFF_MIN;
	n->retry_at = c->now + n->backoff;
	while ((op = op_pop(&n->pending)))
		op_resolve(c, op, rc);
	c->last_error = c->now;
	if (rc == -EACCES) {
		if (!n->auth_logged)
			redis_say(c, true, NULL, "redis: %s: %s; its requests fail (kind auth)",
				  n->name, why);
		n->auth_logged = true;
	} else {
		redis_say(c, true, &n->logged_at, "redis: %s: %s; connecting again in %llu ms",
			  n->name, why, (unsigned long long)(n->backoff / REDIS_MS));
		n->down_logged = true;
	}
	if (c->mode == MODE_CLUSTER)
		c->refresh_wanted = true;
	if (c->refreshing == n)
		c->refreshing = NULL;
	if (c->probing == n)
		probe_failed(c, rc);
}

/* From the loop only: frees the context (commands on it get NULL replies). */
void node_drop(struct node *n, int rc, const char *why)
{
	redisAsyncContext *ac = n->ac;

	if (!ac)
		return;
	n->ac = NULL;
	redisAsyncFree(ac);
	node_down(n, rc, why);
}

static void node_ready(struct node *n)
{
	n->state = N_READY;
	if (n->down_logged)
		redis_say(n->c, false, NULL, "redis: %s answers again", n->name);
	n->down_logged = false;
	node_dirty(n);
}

/* Queues a command formatted as RESP (hiredis copies it). */
static int node_send(struct node *n, redisCallbackFn *fn, void *priv,
		     const char *cmd, size_t len)
{
	if (redisAsyncFormattedCommand(n->ac, fn, priv, cmd, len) != REDIS_OK)
		return -EIO;
	if (!n->inflight++)
		n->progress = n->c->now;
	return 0;
}

static int node_command(struct node *n, redisCallbackFn *fn, void *priv, int argc,
			const char **argv, const size_t *lens)
{
	char *cmd;
	int len = redisFormatCommandArgv(&cmd, argc, argv, lens), rc;

	if (len < 0)
		return -EIO;
	rc = node_send(n, fn, priv, cmd, (size_t)len);
	redisFreeCommand(cmd);
	return rc;
}

static void ignore_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct node *n = priv;

	(void)ac;
	(void)r;
	n->inflight--;
}

static void auth_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct node *n = priv;
	redisReply *rep = r;

	n->inflight--;
	if (!rep || n->ac != ac)
		return;
	if (rep->type == REDIS_REPLY_STATUS && !strcasecmp(rep->str, "OK")) {
		n->auth_logged = false;
		node_ready(n);
		return;
	}
	n->drop_rc = -EACCES;
	snprintf(n->drop_why, sizeof(n->drop_why), "AUTH failed: %s",
		 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
	node_dirty(n);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct node *n = ac->data;

	if (n->ac != ac)
		return;
	if (status != REDIS_OK) {
		n->ac = NULL; /* hiredis frees it after this */
		node_down(n, -EIO, ac->errstr[0] ? ac->errstr : "cannot connect");
		return;
	}
	n->progress = n->c->now;
	if (!n->c->pass)
		node_ready(n);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct node *n = ac->data;

	(void)status;
	if (n->ac != ac)
		return;
	n->ac = NULL;
	node_down(n, -EIO, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void op_reply(redisAsyncContext *ac, void *r, void *priv);

/*
 * hiredis builds a reply by copying each string out of its read buffer; a
 * GET's value would then be copied again into the caller's buffer. This
 * builder copies it straight to dst instead, when the reply being parsed
 * (the head of the context's callback list: replies come in order) is a
 * live GET's, leaving an empty string in the reply.
 */
/* A GET's value into the item's head, then dst; false: it does not fit. */
static bool get_copy(struct kvt_redis_item *it, const char *str, size_t len)
{
	size_t head = len < it->head_len ? len : it->head_len;

	if (len > it->head_len + it->len)
		return false;
	if (head)
		memcpy(it->head, str, head);
	if (len > head)
		memcpy(it->dst, str + head, len - head);
	return true;
}

static void *direct_string(const redisReadTask *task, char *str, size_t len)
{
	struct node *n = task->privdata;
	redisCallback *cb = n->ac && !task->parent ? n->ac->replies.head : NULL;

	if (cb && cb->fn == op_reply && task->type == REDIS_REPLY_STRING) {
		struct op *op = cb->privdata;
		struct kvt_redis_item *it = &op->b->items[op->idx];

		if (op->b->kind == OP_GET && !op->b->finished && get_copy(it, str, len)) {
			op->copied = true;
			op->got = len;
			return n->c->plain_string(task, str, 0);
		}
	}
	return n->c->plain_string(task, str, len);
}

static void node_connect(struct node *n)
{
	struct kvt_redis *c = n->c;
	redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);

	if (!ac || ac->err) {
		char why[160];

		snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		node_down(n, -EIO, why);
		return;
	}
	if (!c->plain_string) {
		c->fns = *ac->c.reader->fn;
		c->plain_string = c->fns.createString;
		c->fns.createString = direct_string;
	}
	ac->c.reader->fn = &c->fns;
	redisReaderSetPrivdata(ac->c.reader, n);
	n->ac = ac;
	n->fd = ac->c.fd;
	ac->data = n;
	ac->ev.data = n;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	n->state = N_CONNECTING;
	n->since = c->now;
	if (c->pass) {
		const char *argv[3] = { "AUTH", c->user ? c->user : c->pass, c->pass };
		size_t lens[3] = { 4, strlen(argv[1]), strlen(c->pass) };

		/* Sent first; commands wait for its answer. */
		if (node_command(n, auth_reply, n, c->user ? 3 : 2, argv, lens) < 0) {
			node_drop(n, -EIO, "cannot queue AUTH");
			return;
		}
	}
	ev_add_write(n); /* the connection is made when the socket is writable */
}

/* ---- replies ---- */

/* "host:port", "[v6]:port", or ":port" (host empty: the node that said it). */
int redis_parse_endpoint(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(s, ':');
	const char *h = s;
	size_t hl;
	char *end;
	long p;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (*s == '[') {
		if (hl < 2 || s[hl - 1] != ']')
			return -EINVAL;
		h++;
		hl -= 2;
	}
	p = strtol(colon + 1, &end, 10);
	if (hl >= hostlen || end == colon + 1 || *end || p <= 0 || p > 65535)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return 0;
}

/* What an error reply means for its key. */
int redis_server_error(const char *s)
{
	static const struct {
		const char *prefix;
		int rc;
	} map[] = {
		{ "NOAUTH", -EACCES },   { "WRONGPASS", -EACCES }, { "NOPERM", -EACCES },
		{ "OOM", -ENOSPC },      { "LOADING", -EIO },      { "CLUSTERDOWN", -EIO },
		{ "TRYAGAIN", -EIO },    { "MASTERDOWN", -EIO },   { "READONLY", -EIO },
		{ "BUSY", -EIO },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strncmp(s, map[i].prefix, strlen(map[i].prefix)))
			return map[i].rc;
	return -EPROTO;
}

bool node_serves(const struct node *n)
{
	return n->master || (n->reader && n->reader->master);
}

/* The connection op goes on: n's, or n's write lane for a write. */
static struct node *lane(struct node *n, const struct op *op)
{
	struct kvt_redis *c = n->c;
	struct node *w;

	/* A DEL stays with the reads: a read sent after it sees it done. */
	if (op->b->kind != OP_SET)
		return n;
	if (n->writer)
		return n->writer;
	if (c->nnodes == REDIS_NODES_MAX || !(w = calloc(1, sizeof(*w))))
		return n; /* writes share the node's connection */
	w->c = c;
	strcpy(w->host, n->host);
	w->port = n->port;
	snprintf(w->name, sizeof(w->name), "%s", n->name);
	w->fd = -1;
	w->reader = n;
	w->is_writer = true;
	n->writer = w;
	c->nodes[c->nnodes++] = w;
	return w;
}

static void op_queue(struct node *n, struct op *op)
{
	struct kvt_redis *c = n->c;

	n = lane(n, op);
	if (n->state == N_DOWN && c->now < n->retry_at) {
		if (c->mode == MODE_CLUSTER) /* its slots may have moved (failover) */
			c->refresh_wanted = true;
		op_resolve(c, op, n->down_rc);
		return;
	}
	op->node = n;
	op->state = OP_QUEUED;
	redis_list_push(&n->pending, &op->link);
	node_dirty(n);
}

/* -MOVED <slot> <endpoint>: the slot lives there now (the map learns it at
 * once and is read again); -ASK: this key only, once, after ASKING. */
static void op_redirect(struct node *n, struct op *op, const char *s, bool ask)
{
	struct kvt_redis *c = n->c;
	const char *p = s + (ask ? 4 : 6);
	char host[256], *end;
	unsigned long slot = strtoul(p, &end, 10);
	struct node *t;
	int port;

	atomic_fetch_add_explicit(&c->st.errors[ask ? KVT_REDIS_ERR_ASK : KVT_REDIS_ERR_MOVED], 1,
				  memory_order_relaxed);
	if (end == p || *end != ' ' || slot >= REDIS_SLOTS ||
	    redis_parse_endpoint(end + 1, host, sizeof(host), &port) < 0 ||
	    c->mode != MODE_CLUSTER || ++op->redirects > REDIS_REDIRECTS_MAX) {
		redis_say(c, true, &n->logged_at, "redis: %s: redirection not followed: %s",
			  n->name, s);
		op_resolve(c, op, -EPROTO);
		return;
	}
	t = node_get(c, host[0] ? host : n->host, port);
	if (!t) {
		op_resolve(c, op, -EIO);
		return;
	}
	if (!ask) {
		c->slots[slot] = t;
		t->master = true;
		c->refresh_wanted = true;
	}
	op->asking = ask;
	op_queue(t, op);
}

static int64_t reply_value(struct batch *b, uint32_t idx, const redisReply *rep)
{
	struct kvt_redis_item *it = &b->items[idx];

	switch (b->kind) {
	case OP_GET:
		if (b->ops[idx].copied)
			return (int64_t)b->ops[idx].got;
		if (rep->type == REDIS_REPLY_NIL)
			return KVT_REDIS_MISS;
		if (rep->type != REDIS_REPLY_STRING)
			return -EPROTO;
		if (!get_copy(it, rep->str, (size_t)rep->len))
			return -EMSGSIZE;
		return rep->len;
	case OP_EXISTS:
	case OP_DEL:
		return rep->type == REDIS_REPLY_INTEGER ? rep->integer > 0 : -EPROTO;
	case OP_SET:
		return rep->type == REDIS_REPLY_STATUS ? 0 : -EPROTO;
	}
	return -EPROTO;
}

static void op_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct op *op = priv;
	struct batch *b = op->b;
	struct node *n = ac->data;
	struct kvt_redis *c = n->c;
	redisReply *rep = r;

	n->inflight--;
	b->sent--;
	if (b->finished) { /* timed out or cancelled: the caller has it back */
		batch_release(b);
		return;
	}
	if (!rep) {
		op_resolve(c, op, -ECONNRESET);
		return;
	}
	n->backoff = 0;
	if (rep->type == REDIS_REPLY_ERROR) {
		bool ask = !strncmp(rep->str, "ASK ", 4);
		int rc;

		if (ask || !strncmp(rep->str, "MOVED ", 6)) {
			op_redirect(n, op, rep->str, ask);
			return;
		}
		rc = redis_server_error(rep->str);
		if (rc == -EIO && c->mode == MODE_CLUSTER)
			c->refresh_wanted = true;
		redis_say(c, true, &n->logged_at, "redis: %s: %s", n->name, rep->str);
		op_resolve(c, op, rc);
		return;
	}
	op_resolve(c, op, reply_value(b, op->idx, rep));
}

/* SET key head+val [PX ttl] as one formatted command: the value's two
 * parts are copied once, into the command, which hiredis then queues. */
static int set_send(struct node *n, struct op *op)
{
	struct batch *b = op->b;
	struct kvt_redis_item *it = &b->items[op->idx];
	size_t vlen = it->head_len + it->len, cap, len;
	char px[24], *cmd;
	int pxlen = snprintf(px, sizeof(px), "%llu", (unsigned long long)b->ttl_ms);
	int rc;

	if (it->prepare) {
		it->prepare(it);
		it->prepare = NULL;
	}
	cap = 128 + it->key_len + vlen + (size_t)pxlen;
	cmd = malloc(cap);
	if (!cmd)
		return -EIO;
	len = (size_t)snprintf(cmd, cap, "*%d\r\n$3\r\nSET\r\n$%zu\r\n",
			       b->ttl_ms ? 5 : 3, it->key_len);
	if (it->key_len)
		memcpy(cmd + len, it->key, it->key_len);
	len += it->key_len;
	len += (size_t)snprintf(cmd + len, cap - len, "\r\n$%zu\r\n", vlen);
	if (it->head_len)
		memcpy(cmd + len, it->head, it->head_len);
	if (it->len)
		memcpy(cmd + len + it->head_len, it->val, it->len);
	len += vlen;
	if (b->ttl_ms)
		len += (size_t)snprintf(cmd + len, cap - len,
					"\r\n$2\r\nPX\r\n$%d\r\n%s", pxlen, px);
	len += (size_t)snprintf(cmd + len, cap - len, "\r\n");
	rc = node_send(n, op_reply, op, cmd, len);
	free(cmd);
	return rc;
}

static void op_send(struct node *n, struct op *op)
{
	static const char *const names[] = { "GET", "EXISTS", "SET", "DEL" };
	struct batch *b = op->b;
	struct kvt_redis_item *it = &b->items[op->idx];
	const char *argv[2] = { names[b->kind], it->key ? it->key : "" };
	size_t lens[2] = { strlen(names[b->kind]), it->key_len };
	int rc;

	if (op->asking) {
		const char *asking = "ASKING";
		size_t len = 6;

		op->asking = false;
		(void)node_command(n, ignore_reply, n, 1, &asking, &len);
	}
	rc = b->kind == OP_SET ? set_send(n, op) :
				 node_command(n, op_reply, op, 2, argv, lens);
	if (rc < 0) {
		op_resolve(n->c, op, -EIO);
		return;
	}
	op->state = OP_SENT;
	b->sent++;
}

void op_dispatch(struct kvt_redis *c, struct op *op)
{
	const struct kvt_redis_item *it = &op->b->items[op->idx];
	struct node *n;

	switch (c->mode) {
	case MODE_PROBE:
		if (!c->probing) { /* the last probe failed: no waiting */
			op_resolve(c, op, c->probe_rc);
			return;
		}
		op->node = NULL;
		op->state = OP_QUEUED;
		redis_list_push(&c->unrouted, &op->link);
		return;
	case MODE_SINGLE:
		n = c->single;
		break;
	default:
		n = c->slots[kvt_redis_slot(it->key ? it->key : "", it->key_len)];
		if (!n) {
			c->refresh_wanted = true;
			op_resolve(c, op, -EIO);
			return;
		}
	}
	op_queue(n, op);
}

/* ---- the loop's part ---- */

/* Not in hiredis's headers, but exported (async.c, since 0.11): runs the
 * callbacks of the replies its reader holds, as redisAsyncHandleRead does
 * after its read. (hiredis 1.x has it too.) */
void redisProcessCallbacks(redisAsyncContext *ac);

/*
 * redisAsyncHandleRead reads 16 KiB per call into a buffer of its own and
 * copies that into its reader: a 2 MiB value took 128 turns of the loop
 * and a copy. Here the socket is read straight into the reader's buffer
 * (what redisReaderFeed does, less its copy), REDIS_READ_CHUNK at a time
 * and at most 4 times per event, to let other nodes in. At the end of the
 * stream or on an error, what was read has been answered already, and
 * hiredis's own read finds the end again and closes the context. The
 * buffer keeps its size between replies, up to REDIS_READ_KEEP.
 */
static void node_read(struct node *n)
{
	redisReader *rd;

	if (!(n->ac->c.flags & REDIS_CONNECTED)) {
		redisAsyncHandleRead(n->ac); /* the connect's outcome */
		return;
	}
	for (int i = 0; i < 4 && n->ac; i++) {
		sds buf;
		ssize_t k;

		rd = n->ac->c.reader;
		buf = rd->err ? NULL : sdsMakeRoomFor(rd->buf, REDIS_READ_CHUNK);
		if (!buf) { /* the reader failed, or no memory: hiredis closes it */
			redisAsyncHandleRead(n->ac);
			return;
		}
		rd->buf = buf;
		k = read(n->fd, buf + sdslen(buf), REDIS_READ_CHUNK);
		if (k > 0) {
			sdsIncrLen(buf, (int)k);
			rd->len = sdslen(buf);
			redisProcessCallbacks(n->ac); /* may close the context */
			if (k < REDIS_READ_CHUNK)
				break;
		} else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
			break;
		} else {
			redisAsyncHandleRead(n->ac);
			return;
		}
	}
	rd = n->ac ? n->ac->c.reader : NULL;
	if (rd && !rd->len && sdsavail(rd->buf) > REDIS_READ_KEEP) {
		sds empty = sdsempty();

		if (empty) {
			sdsfree(rd->buf);
			rd->buf = empty;
			rd->pos = 0;
		}
	}
}

void node_event(struct node *n, uint32_t events)
{
	if (!n->ac)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		n->progress = n->c->now;
		node_read(n);
	}
	if (n->ac && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		redisAsyncHandleWrite(n->ac);
	if (n->ac)
		node_dirty(n);
}

/* Connects, drops, and sends what each node touched since the last flush
 * has waiting, as far as its window goes. */
void nodes_flush(struct kvt_redis *c)
{
	struct node *n;

	while ((n = c->dirty)) {
		c->dirty = n->dirty_next;
		n->dirty = false;
		if (n->drop_rc) {
			int rc = n->drop_rc;

			n->drop_rc = 0;
			node_drop(n, rc, n->drop_why);
			continue;
		}
		if ((n->state == N_IDLE || (n->state == N_DOWN && c->now >= n->retry_at)) &&
		    (n->pending.head || n->want_slots || node_serves(n)))
			node_connect(n);
		if (n->state != N_READY)
			continue;
		if (n->want_slots) {
			const char *argv[2] = { "CLUSTER", "SLOTS" };
			size_t lens[2] = { 7, 5 };

			n->want_slots = false;
			if (node_command(n, slots_reply, n, 2, argv, lens) < 0)
				c->refresh_wanted = true;
		}
		while (n->pending.head && n->ac && sdslen(n->ac->c.obuf) < WINDOW)
			op_send(n, op_pop(&n->pending));
		if (n->ac && sdslen(n->ac->c.obuf))
			redisAsyncHandleWrite(n->ac); /* now, not after another epoll_wait */
	}
}

/* Timers: retries, connect and reply stalls, probe, refresh, degraded. */
uint64_t nodes_tick(struct kvt_redis *c)
{
	uint64_t next = UINT64_MAX, now = c->now;
	uint64_t patience = max_u64(c->cfg.timeout_ns, c->cfg.interval_ns);
	bool degraded = c->mode == MODE_PROBE && c->probe_rc;

	for (uint32_t i = 0; i < c->nnodes; i++) {
		struct node *n = c->nodes[i];

		switch (n->state) {
		case N_DOWN:
			degraded |= node_serves(n);
			if (!node_serves(n) && c->probing != n)
				break;
			if (now >= n->retry_at)
				node_dirty(n);
			else
				next = min_u64(next, n->retry_at);
			break;
		case N_CONNECTING:
			if (now - n->since >= patience)
				node_drop(n, -EIO, "no connection (or no AUTH answer) in time");
			else
				next = min_u64(next, n->since + patience);
			break;
		case N_READY:
			if (!n->inflight)
				break;
			if (now - n->progress >= 2 * patience)
				node_drop(n, -EIO, "no reply in time: connection dropped");
			else
				next = min_u64(next, n->progress + 2 * patience);
			break;
		case N_IDLE:
			break;
		}
	}
	/* A cluster with slots nobody serves (a master failed without a
	 * replica to take over) is degraded until a map covers them again. */
	if (c->mode == MODE_CLUSTER && c->covered < REDIS_SLOTS) {
		degraded = true;
		c->refresh_wanted = true;
	}
	next = min_u64(next, cluster_tick(c));
	if (c->last_error && now - c->last_error < c->cfg.interval_ns) {
		degraded = true;
		next = min_u64(next, c->last_error + c->cfg.interval_ns);
	}
	atomic_store(&c->st.degraded, degraded);
	return next;
}

/* At the end: every context freed (late callbacks release their batches),
 * then the nodes. */
void nodes_free(struct kvt_redis *c)
{
	for (uint32_t i = 0; i < c->nnodes; i++) {
		struct node *n = c->nodes[i];
		redisAsyncContext *ac = n->ac;

		if (ac) {
			n->ac = NULL;
			redisAsyncFree(ac);
		}
	}
	for (uint32_t i = 0; i < c->nnodes; i++)
		free(c->nodes[i]);
	c->nnodes = 0;
}

/*
 * The Redis client's shared state: batches and their per-key operations
 * (redis.c: the API, the queue, the loop, deadlines, completions), the
 * nodes (redis_node.c: connections on the epoll loop, AUTH, routing,
 * redirections) and the cluster (redis_cluster.c: slots, the probe, the
 * slot map). Everything below the queue lock is the
 * client thread's alone.
 */
#ifndef KVT_REDIS_INT_H
#define KVT_REDIS_INT_H

#include "redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#define REDIS_SLOTS 16384
#define REDIS_MS 1000000ull
#define REDIS_BACKOFF_MIN (10 * REDIS_MS)
#define REDIS_BACKOFF_MAX (1000 * REDIS_MS)
#define REDIS_REDIRECTS_MAX 5
#define REDIS_NODES_MAX 1024
#define REDIS_READ_CHUNK (256 * 1024)
#define REDIS_READ_KEEP (4u << 20) /* a node's idle read buffer, at most */

/* The client's lists (a node's queue, the batches by deadline, ...):
 * doubly linked through a link in each element. */
struct redis_link {
	struct redis_link *prev, *next;
};

struct redis_list {
	struct redis_link *head, *tail;
};

#define redis_entry(link, type, member) ((type *)((char *)(link) - offsetof(type, member)))

enum op_kind { OP_GET, OP_EXISTS, OP_SET, OP_DEL };

/* A key of a batch: queued on a node (or waiting for the probe), sent
 * (hiredis holds it as its reply callback's argument), or done. */
enum op_state { OP_NEW, OP_QUEUED, OP_SENT, OP_DONE };

struct op {
	struct redis_link link; /* in a queue while OP_QUEUED */
	struct batch *b;
	struct node *node; /* queued on or sent to */
	uint32_t idx;
	uint8_t state, redirects;
	bool asking; /* send ASKING before it */
	bool copied; /* a GET's value went to dst as it was parsed: got bytes */
	size_t got;
};

/*
 * A batch lives until its completion was called and no op of it is left
 * with hiredis: an op sent before the deadline stays hiredis's callback
 * argument after it, and its late reply (or the NULL reply of a closing
 * connection) only counts down `sent`.
 */
struct batch {
	struct redis_link link; /* submitted, then by deadline, then done */
	enum op_kind kind;
	struct kvt_redis_item *items;
	uint32_t n, left, sent;
	uint64_t ttl_ms, start_ns, deadline_ns;
	int rc;
	bool budget;    /* its deadline is the caller's, before the timeout */
	bool finished;  /* results final: items are the caller's again */
	bool delivered; /* done() was called */
	kvt_redis_done_fn done;
	void *arg;
	struct op ops[];
};

enum node_state {
	N_IDLE,       /* no connection; one is made when needed */
	N_CONNECTING, /* connecting, then AUTH */
	N_READY,
	N_DOWN,       /* failed: requests fail with down_rc until retry_at */
};

struct node {
	struct kvt_redis *c;
	char host[256];
	int port;
	char name[272]; /* host:port, for the log */
	redisAsyncContext *ac;
	int fd;
	uint32_t ev; /* epoll events asked for */
	bool registered;
	enum node_state state;
	struct redis_list pending; /* ops not sent yet */
	uint32_t inflight;     /* commands whose callbacks are to come */
	uint64_t since;        /* connect started */
	uint64_t progress;     /* last read, or first send after idle */
	uint64_t retry_at, backoff;
	int down_rc;           /* -EIO, or -EACCES after a failed AUTH */
	int drop_rc;           /* set in a callback: drop in the loop */
	char drop_why[160];
	bool master; /* in the slot map, or the single server */
	bool seed;   /* one of the configured endpoints */
	bool want_slots;
	bool auth_logged, down_logged;
	uint64_t logged_at;
	bool dirty; /* on the flush list */
	struct node *dirty_next;
	/* SETs go to a second connection to the same server,
	 * its write lane, so that a Lookup's EXISTS or a promotion's GET
	 * never waits behind pages being written; the lane is never a
	 * master, a seed, or found by node_get. NULL: none yet (or freed). */
	struct node *writer;
	struct node *reader; /* of a write lane: its node; NULL: freed */
	bool is_writer;
};

enum client_mode { MODE_PROBE, MODE_SINGLE, MODE_CLUSTER };

struct counters {
	atomic_uint_fast64_t requests, keys, hits, misses, bytes_in, bytes_out;
	atomic_uint_fast64_t errors[KVT_REDIS_ERR_KINDS];
	atomic_uint_fast64_t refreshes, budget_expired;
	atomic_uint nodes;
	atomic_bool degraded, cluster;
};

struct kvt_redis {
	struct kvt_redis_config cfg;
	char *user, *pass;
	pthread_t thread;
	int ep, efd;

	/* Taken by submitters and, briefly, by the thread. */
	pthread_mutex_t lock;
	struct redis_list submitted;
	uint32_t queued; /* keys of batches not yet delivered */
	bool closing, woken;

	/* The thread's. */
	uint64_t now;
	enum client_mode mode;
	struct node *nodes[REDIS_NODES_MAX];
	uint32_t nnodes, nseeds;
	struct node *single;
	struct node *slots[REDIS_SLOTS];
	struct node *probing, *refreshing;
	uint32_t probe_idx, refresh_rr;
	/* Slots the last cluster map gave an owner: fewer than all keeps the
	 * client degraded and the map read again every interval. */
	uint32_t covered;
	uint64_t probe_at, probe_backoff;
	int probe_rc;
	struct redis_list unrouted; /* ops waiting for the probe */
	bool refresh_wanted, gc_wanted;
	uint64_t last_refresh, last_error;
	struct redis_list active; /* batches by deadline */
	struct redis_list done;
	struct node *dirty;
	uint64_t close_at;
	bool stop;
	uint64_t logged_map, logged_timeout, logged_probe;

	/* hiredis's reply builders, but for GET values (redis_node.c) */
	redisReplyObjectFunctions fns;
	void *(*plain_string)(const redisReadTask *task, char *str, size_t len);

	struct counters st;
	struct kvt_histogram latency;
};

static inline uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* redis.c */
uint64_t redis_now(void);
void redis_say(struct kvt_redis *c, bool error, uint64_t *last, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void op_resolve(struct kvt_redis *c, struct op *op, int64_t rc);
void redis_list_insert(struct redis_list *l, struct redis_link *after, struct redis_link *x);
void redis_list_unlink(struct redis_list *l, struct redis_link *x);
void redis_list_push(struct redis_list *l, struct redis_link *x);
struct op *op_pop(struct redis_list *l); /* NULL: empty */
void batch_release(struct batch *b);

/* redis_node.c */
int redis_parse_endpoint(const char *s, char *host, size_t hostlen, int *port);
int redis_server_error(const char *s); /* an error reply's -errno */
struct node *node_get(struct kvt_redis *c, const char *host, int port);
/* A connection to a master of the map (or the single server), for reads
 * or for writes: it is kept connected, and its failure is degradation. */
bool node_serves(const struct node *n);
void node_dirty(struct node *n);
void node_event(struct node *n, uint32_t events);
void node_drop(struct node *n, int rc, const char *why);
void nodes_flush(struct kvt_redis *c);
uint64_t nodes_tick(struct kvt_redis *c); /* the next time it wants */
void nodes_free(struct kvt_redis *c);
void op_dispatch(struct kvt_redis *c, struct op *op);

/* redis_cluster.c */
void probe_start(struct kvt_redis *c);
void probe_failed(struct kvt_redis *c, int rc); /* the node probed is down */
void slots_reply(redisAsyncContext *ac, void *r, void *priv); /* CLUSTER SLOTS */
uint64_t cluster_tick(struct kvt_redis *c);

#endif

/*
 * A Redis or Redis Cluster client for the remote tier: moves byte strings
 * by key (GET, EXISTS, SET, DEL), in batches over many keys, pipelined per
 * node, with one completion per batch. It knows nothing of kvtier blocks.
 *
 * One thread of its own runs an epoll loop with a hiredis async context
 * per node. At start it probes the endpoints in order: the first that
 * answers CLUSTER SLOTS with a map makes it a cluster client (keys hashed
 * to slots by CRC16 with {hash tags}, each sent to its slot's master,
 * -MOVED and -ASK followed, the map refreshed at most once per interval
 * after a MOVED or a node error); one without cluster support makes it a
 * client of that one server, which it keeps (a failure there is not a
 * reason to try the other endpoints). Connections are made when first needed, each
 * authenticated (AUTH [user] pass) before any command, and made again with
 * backoff (10 ms doubling to 1 s) after a failure.
 *
 * Threads: create, close and stats from any thread; the submissions
 * (get, exists, set, del) from any thread, also with the caller's own
 * locks held and from a completion: they take only the client's short
 * queue lock, never wait for the network, and wake the client's thread.
 * Completions run on the client's thread with no lock of the client held.
 *
 * Contract of every submission: returns 0 -> done() will be called exactly
 * once, on the client's thread; returns -errno -> it will not be, and
 * nothing was queued. -EAGAIN is back-pressure (queue_depth keys are
 * queued or in flight): retry after a completion. Until done() the items,
 * their keys and values (and a GET's buffers) belong to the client; after
 * it, to the caller again, whatever late replies do.
 */
#ifndef KVT_REDIS_H
#define KVT_REDIS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"

#define KVT_REDIS_ENDPOINTS_MAX 16

/* A GET's result for a key with no value (never set, expired, or evicted
 * by the server's maxmemory policy): a miss, not an error. */
#define KVT_REDIS_MISS (-ENOENT)

/*
 * One key of a batch. result, per operation:
 *   GET     the value's length (copied to head, then dst), KVT_REDIS_MISS,
 *           or -EMSGSIZE when it is longer than head_len + len (nothing
 *           copied)
 *   EXISTS  1 or 0
 *   SET     0
 *   DEL     1 (deleted) or 0 (there was none)
 * or an error: -ETIMEDOUT (no answer by the deadline), -EIO (its node is
 * down or unknown, or the cluster refused: CLUSTERDOWN, LOADING),
 * -ECONNRESET (the connection broke with the request on it), -EACCES (AUTH
 * failed, or the user may not), -ENOSPC (the server is out of memory),
 * -EPROTO (an unexpected reply, or too many redirections), -ECANCELED
 * (the client closed first).
 */
struct kvt_redis_item {
	const void *key;
	size_t key_len;
	union {
		void *dst;       /* GET: room for the value */
		const void *val; /* SET: the value */
	};
	size_t len; /* GET: bytes at dst; SET: bytes of val */
	/* GET: the value's first head_len bytes go to head, the rest to dst,
	 * so that a record's header and its page land apart in one copy.
	 * SET: the value is head_len bytes at head, then val's len bytes, so
	 * that a page is sent from where it is. head_len 0: all of it at
	 * dst or val. */
	void *head;
	size_t head_len;
	/* SET, optional: called once on the client's thread before the value
	 * is first sent, to fill head from val (work the submitter keeps off
	 * its own thread, such as a checksum of the page). */
	void (*prepare)(struct kvt_redis_item *it);
	int64_t result;
};

/* rc: 0 when every key has a result that is not an error (a miss is
 * not), else the first key's error. */
typedef void (*kvt_redis_done_fn)(void *arg, struct kvt_redis_item *items,
				  uint32_t n, int rc);

struct kvt_redis_config {
	const char *const *endpoints; /* "host:port" or "[v6]:port", in order */
	uint32_t nendpoints;
	const char *username; /* NULL: AUTH with the password alone */
	const char *password; /* NULL: no AUTH */
	uint64_t timeout_ns;  /* a batch's deadline; 0: 1 s */
	/* The slot map is refreshed at most this often; an error within it
	 * keeps the client degraded; a condition is logged at most once in
	 * it. 0: 1 s. */
	uint64_t interval_ns;
	uint32_t queue_depth; /* keys queued and in flight; 0: 1024 */
	void (*log)(void *arg, bool error, const char *msg);
	void *arg;
};

enum kvt_redis_err {
	KVT_REDIS_ERR_TIMEOUT,  /* -ETIMEDOUT */
	KVT_REDIS_ERR_CONN,     /* -EIO, -ECONNRESET */
	KVT_REDIS_ERR_AUTH,     /* -EACCES */
	KVT_REDIS_ERR_PROTO,    /* -EPROTO */
	KVT_REDIS_ERR_SERVER,   /* -ENOSPC and other refusals */
	KVT_REDIS_ERR_SIZE,     /* -EMSGSIZE */
	KVT_REDIS_ERR_MOVED,    /* -MOVED followed (not a key's error) */
	KVT_REDIS_ERR_ASK,      /* -ASK followed (not a key's error) */
	KVT_REDIS_ERR_KINDS
};

struct kvt_redis_stats {
	uint64_t requests;  /* batches submitted */
	uint64_t keys;      /* keys submitted */
	uint64_t hits, misses;        /* GET (and EXISTS) keys found, not found */
	uint64_t bytes_in, bytes_out; /* value bytes got, value bytes set */
	uint64_t errors[KVT_REDIS_ERR_KINDS]; /* keys, or redirections */
	/* Keys not answered by a deadline shorter than the timeout (a
	 * Lookup's budget): -ETIMEDOUT to the caller, but not an error of
	 * the store, nor a reason to be degraded. */
	uint64_t budget_expired;
	struct kvt_histogram_snapshot latency; /* batch round trips */
	bool degraded;   /* a node down, or an error in the last interval */
	bool cluster;    /* the endpoints are a cluster */
	uint32_t nodes;  /* masters known (1 for a single server) */
	uint64_t refreshes; /* slot maps read */
};

struct kvt_redis;

/* Checks the config and starts the client's thread, which probes the
 * endpoints; requests made before it knows them wait for it. -errno with
 * the reason in err. */
int kvt_redis_create(const struct kvt_redis_config *cfg, struct kvt_redis **out,
		     char *err, size_t errlen);

/* Stops taking requests (-ESHUTDOWN), lets those in flight finish for a
 * short grace (at most 250 ms, or the timeout), completes the rest with
 * -ECANCELED, joins the thread and frees. Not from a completion. */
void kvt_redis_close(struct kvt_redis *r);

/*
 * The batch operations. n keys (1..queue_depth, else -E2BIG; 0: -EINVAL);
 * timeout_ns: 0 for the configured timeout, else the shorter of the two
 * (a Lookup's budget). set: ttl_ms 0 keeps the value until evicted or
 * deleted, else it expires after ttl_ms (PX).
 */
int kvt_redis_get(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		  uint64_t timeout_ns, kvt_redis_done_fn done, void *arg);
int kvt_redis_exists(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		     uint64_t timeout_ns, kvt_redis_done_fn done, void *arg);
int kvt_redis_set(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		  uint64_t ttl_ms, uint64_t timeout_ns, kvt_redis_done_fn done,
		  void *arg);
int kvt_redis_del(struct kvt_redis *r, struct kvt_redis_item *items, uint32_t n,
		  uint64_t timeout_ns, kvt_redis_done_fn done, void *arg);

/* A reading of the counters, from any thread. */
void kvt_redis_stats(struct kvt_redis *r, struct kvt_redis_stats *st);

/* The cluster slot of a key (CRC16/XMODEM of the key, or of the first
 * non-empty {tag} in it, modulo 16384), as CLUSTER KEYSLOT says. */
uint16_t kvt_redis_slot(const void *key, size_t len);

#endif

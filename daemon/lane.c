#include "lane.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "kvtier/v1/lane.h"
#include "log.h"
#include "rpc.h"

/* Bytes of a request and of a reply per key, beyond a fixed part: a key
 * is 16 bytes packed (18 as a repeated field); a Location under 40. */
#define REQUEST_PER_KEY 20u
#define REPLY_PER_KEY 48u
#define FIXED_BYTES 4096u

/* Events one epoll_wait takes; the rest wait for the next (the poller
 * scans every lane whichever woke it). */
#define POLLER_EVENTS 16

static const char *const lane_paths[] = {
	[KVT_LANE_LOOKUP] = "/kvtier.v1.KvTier/Lookup",
	[KVT_LANE_RESERVE] = "/kvtier.v1.KvTier/Reserve",
	[KVT_LANE_COMMIT] = "/kvtier.v1.KvTier/Commit",
	[KVT_LANE_ABORT] = "/kvtier.v1.KvTier/Abort",
	[KVT_LANE_ACQUIRE] = "/kvtier.v1.KvTier/Acquire",
	[KVT_LANE_RELEASE] = "/kvtier.v1.KvTier/Release",
};
#define LANE_METHODS (sizeof(lane_paths) / sizeof(lane_paths[0]))

/* Set on the poller thread: an answer given there needs no wake-up. */
static _Thread_local bool on_poller;

/*
 * A session on the unix socket, and its lane once asked for. Freed with
 * its last reference: the session's (until it closes), the poller's (while
 * the lane is in its set) and the call in hand's (until its answer), so
 * that a deferred answer after the session closed still has its lane.
 */
struct lane {
	struct kvt_lanes *owner;
	struct lane *next;          /* the owner's sessions, under its lock */
	struct lane *join_next;     /* the owner's joining, under its lock */
	struct lane *poll_next;     /* the poller's set, the poller's alone */
	uint8_t token[16];
	uid_t uid;
	atomic_uint refs;
	bool laned;                 /* under the owner's lock: it has its lane */
	atomic_bool stop;           /* the session closed: the poller drops it */

	int conn;                   /* the worker's segment-socket connection */
	int efd;                    /* the worker writes 1 to wake the poller */
	uint8_t *map;
	size_t bytes;
	struct kvt_lane_header *h;
	/* The layout as made: the worker may rewrite the header's copy. */
	uint32_t request_offset, request_capacity, reply_offset, reply_capacity;
	uint8_t *request;           /* the request, copied out of the mapping */
	struct kvt_call *call;      /* reused for every call */

	uint32_t seen;              /* the poller's: the last request_seq taken */
	/* The call in hand: set by the poller before the handler runs,
	 * cleared by whichever thread answers it (lane_answer). The lane
	 * takes no request while busy. */
	atomic_bool busy;
	uint32_t call_seq;
};

struct kvt_lanes {
	struct kvt_daemon *d;
	/* Each lane method's handler in kvt_rpc_methods (NULL: unknown), and
	 * its index there, which is its counters' slot in the server. */
	const struct kvt_method *methods[LANE_METHODS];
	size_t slots[LANE_METHODS];
	uint64_t spin_ns;
	int epfd;                   /* every lane's eventfd, and kick */
	int kick;                   /* the daemon's own wake-up of the poller */
	pthread_t poller;
	bool poller_started;
	struct lane *set;           /* the lanes the poller serves, its alone */

	pthread_mutex_t lock;       /* the fields below */
	pthread_cond_t ended;
	struct lane *sessions;
	struct lane *joining;       /* opened, not yet in the poller's set */
	unsigned active;            /* lanes opened and not yet ended */
	unsigned alive;             /* lanes not yet freed (an answer may hold one) */
	bool quit;
	atomic_bool changed;        /* a lane to take in or drop, or quit */
	atomic_uint_fast64_t opened, calls;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lane_free(struct lane *ln);
static void *poller_main(void *arg);

/* Wakes the poller (nonblocking: a counter already set wakes it anyway). */
static void poller_kick(struct kvt_lanes *l)
{
	uint64_t one = 1;

	atomic_store(&l->changed, true);
	if (write(l->kick, &one, sizeof(one)) < 0 && errno != EAGAIN)
		kvt_log(KVT_LOG_WARN, "cannot wake the lane poller: %s", strerror(errno));
}

/*
 * Edge-triggered, so that the poller never reads a lane's eventfd: the
 * worker shares its file description and could make a read block (by
 * clearing O_NONBLOCK) and so stall every lane. Each write queues one
 * event whether or not the counter was read.
 */
static int poller_watch(struct kvt_lanes *l, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };

	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int poller_start(struct kvt_lanes *l)
{
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->epfd < 0 || l->kick < 0 || poller_watch(l, l->kick) < 0)
		return -errno;
	errno = pthread_create(&l->poller, NULL, poller_main, l);
	if (errno)
		return -errno;
	l->poller_started = true;
	return 0;
}

int kvt_lanes_new(struct kvt_daemon *d, unsigned spin_us, struct kvt_lanes **out)
{
	struct kvt_lanes *l = calloc(1, sizeof(*l));
	int rc;

	if (!l)
		return -ENOMEM;
	l->d = d;
	for (size_t i = 1; i < LANE_METHODS; i++)
		for (size_t j = 0; j < kvt_rpc_nmethods; j++)
			if (strcmp(kvt_rpc_methods[j].path, lane_paths[i]) == 0) {
				l->methods[i] = &kvt_rpc_methods[j];
				l->slots[i] = j;
			}
	l->spin_ns = (uint64_t)spin_us * 1000;
	l->epfd = l->kick = -1;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->ended, NULL);
	rc = poller_start(l);
	if (rc < 0) {
		kvt_lanes_free(l);
		return rc;
	}
	*out = l;
	return 0;
}

void kvt_lanes_free(struct kvt_lanes *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	while (l->alive)
		pthread_cond_wait(&l->ended, &l->lock);
	l->quit = true;
	pthread_mutex_unlock(&l->lock);
	if (l->poller_started) {
		poller_kick(l);
		pthread_join(l->poller, NULL);
	}
	while (l->sessions) {
		struct lane *ln = l->sessions;

		l->sessions = ln->next;
		lane_free(ln);
	}
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->kick >= 0)
		close(l->kick);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->ended);
	free(l);
}

int kvt_lanes_session_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid)
{
	struct lane *ln = calloc(1, sizeof(*ln));

	if (!ln)
		return -ENOMEM;
	ln->owner = l;
	memcpy(ln->token, token, sizeof(ln->token));
	ln->uid = uid;
	ln->conn = ln->efd = -1;
	atomic_init(&ln->refs, 1); /* the session's */
	pthread_mutex_lock(&l->lock);
	ln->next = l->sessions;
	l->sessions = ln;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

/* The worker's descriptors of the lane: it sees the lane end. */
static void lane_disconnect(struct lane *ln)
{
	if (ln->efd >= 0) {
		/* Before the close: the worker's copy keeps the file, and
		 * with it the registration, alive. */
		epoll_ctl(ln->owner->epfd, EPOLL_CTL_DEL, ln->efd, NULL);
		close(ln->efd);
	}
	if (ln->conn >= 0)
		close(ln->conn);
	ln->efd = ln->conn = -1;
}

/* Back to a session without a lane. */
static void lane_unmake(struct lane *ln)
{
	lane_disconnect(ln);
	if (ln->call)
		kvt_call_local_free(ln->call);
	if (ln->map)
		munmap(ln->map, ln->bytes);
	free(ln->request);
	ln->call = NULL;
	ln->map = NULL;
	ln->h = NULL;
	ln->request = NULL;
}

static void lane_free(struct lane *ln)
{
	lane_unmake(ln);
	free(ln);
}

/* Drops a reference; the last frees the lane. Touches nothing of the
 * owner's after its lock: kvt_lanes_free may be waiting on it. */
static void lane_put(struct lane *ln)
{
	struct kvt_lanes *l = ln->owner;
	bool laned;

	if (atomic_fetch_sub(&ln->refs, 1) != 1)
		return;
	laned = ln->laned; /* no one else holds it now */
	lane_free(ln);
	if (laned) {
		pthread_mutex_lock(&l->lock);
		l->alive--;
		pthread_cond_broadcast(&l->ended);
		pthread_mutex_unlock(&l->lock);
	}
}

void kvt_lanes_session_close(struct kvt_lanes *l, const uint8_t token[16])
{
	struct lane **pp, *ln = NULL;
	bool kick = false;

	pthread_mutex_lock(&l->lock);
	for (pp = &l->sessions; *pp; pp = &(*pp)->next)
		if (memcmp((*pp)->token, token, 16) == 0) {
			ln = *pp;
			*pp = ln->next;
			break;
		}
	if (ln && ln->laned) {
		/* The poller drops it on its next look: its own flag and its
		 * own wake-up, nothing the worker can take from it. */
		atomic_store(&ln->stop, true);
		kick = true;
	}
	pthread_mutex_unlock(&l->lock);
	if (kick)
		poller_kick(l);
	if (ln)
		lane_put(ln);
}

/* The call in hand is over: the lane takes its next request. */
static void lane_done(struct lane *ln, uint32_t seq)
{
	atomic_store(&ln->busy, false);
	/* Off the poller, which may have passed this lane by while it was
	 * busy and gone to sleep: a request already there (a worker that
	 * did not wait for its answer) would wait for its next wake-up. The
	 * store above and this load order against the poller's
	 * daemon_waiting and busy, as the worker's do. */
	if (!on_poller && !atomic_load(&ln->stop) &&
	    __atomic_load_n(&ln->h->request_seq, __ATOMIC_SEQ_CST) != seq)
		poller_kick(ln->owner);
	lane_put(ln);
}

/* kvt_call_reply's end for a lane's call, on whichever thread answers:
 * the poller's for most calls, another for a deferred one. */
static void lane_answer(void *arg, grpc_status_code code, struct kvt_reply *r)
{
	struct lane *ln = arg;
	struct kvt_lane_header *h = ln->h;
	uint32_t seq = ln->call_seq;

	if (code == GRPC_STATUS_OK && r->len > ln->reply_capacity) {
		/* Cannot happen while max_keys bounds the request. */
		code = GRPC_STATUS_INTERNAL;
		snprintf(r->msg, sizeof(r->msg), "the reply is %zu bytes, over the lane's %u",
			 r->len, ln->reply_capacity);
	}
	if (code == GRPC_STATUS_OK)
		memcpy(ln->map + ln->reply_offset, r->buf, r->len);
	else
		memcpy(h->message, r->msg, sizeof(h->message));
	h->reply_len = code == GRPC_STATUS_OK ? (uint32_t)r->len : 0;
	h->status = (int32_t)code;
	free(r->buf);
	r->buf = NULL;
	atomic_fetch_add(&ln->owner->calls, 1);
	__atomic_store_n(&h->reply_seq, seq, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&h->worker_waiting, __ATOMIC_SEQ_CST))
		kvt_lane_futex_wake(&h->reply_seq);
	lane_done(ln, seq);
}

/* Runs the request in the lane (copied out first: the worker may change
 * the mapping at any time). lane_answer writes the answer back, now or,
 * for a deferred call, later from another thread. */
static void lane_serve(struct lane *ln, uint32_t seq)
{
	struct kvt_lane_header *h = ln->h;
	uint32_t method = __atomic_load_n(&h->method, __ATOMIC_RELAXED);
	uint32_t len = __atomic_load_n(&h->request_len, __ATOMIC_RELAXED);
	uint32_t cap = ln->request_capacity;
	const struct kvt_method *m = method < LANE_METHODS ? ln->owner->methods[method] : NULL;
	struct kvt_reply r = { 0 };
	grpc_status_code code;

	atomic_store_explicit(&ln->busy, true, memory_order_relaxed);
	atomic_fetch_add(&ln->refs, 1); /* the call's, dropped by its answer */
	ln->call_seq = seq;
	kvt_call_local_start(ln->call, m ? ln->owner->slots[method] :
			     kvt_server_method_index(ln->owner->d->server, ""));
	if (!m) {
		snprintf(r.msg, sizeof(r.msg),
			 "fast lane method %u is not one of 1..%zu (lane.h)",
			 method, LANE_METHODS - 1);
		kvt_call_reply(ln->call, GRPC_STATUS_UNIMPLEMENTED, &r);
	} else if (len > cap) {
		snprintf(r.msg, sizeof(r.msg),
			 "request_len %u exceeds the lane's request_capacity %u",
			 len, cap);
		kvt_call_reply(ln->call, GRPC_STATUS_INVALID_ARGUMENT, &r);
	} else {
		memcpy(ln->request, ln->map + ln->request_offset, len);
		code = m->fn(ln->owner->d, m->data, ln->call, ln->request, len, &r);
		if (code != KVT_STATUS_DEFERRED)
			kvt_call_reply(ln->call, code, &r);
	}
}

/* Serves the lane's next request if it has one and no call in hand. */
static bool lane_poll(struct lane *ln)
{
	uint32_t seq;

	if (atomic_load_explicit(&ln->busy, memory_order_acquire))
		return false;
	seq = __atomic_load_n(&ln->h->request_seq, __ATOMIC_ACQUIRE);
	if (seq == ln->seen)
		return false;
	ln->seen = seq;
	lane_serve(ln, seq);
	return true;
}

/* Whether the lane has a request the poller would take (before it
 * sleeps: after its daemon_waiting store, sequentially consistent). */
static bool lane_pending(struct lane *ln)
{
	return !atomic_load(&ln->busy) &&
	       __atomic_load_n(&ln->h->request_seq, __ATOMIC_SEQ_CST) != ln->seen;
}

/* One request at most from each lane, in turn: a tenant that floods its
 * lane waits its turn like the others. How many were served. */
static unsigned poller_pass(struct kvt_lanes *l)
{
	unsigned served = 0;

	for (struct lane *ln = l->set; ln; ln = ln->poll_next)
		served += lane_poll(ln);
	return served;
}

/* Takes the lanes opened since, drops those whose session closed (the
 * worker sees its connection close). false once the daemon stops. */
static bool poller_sync(struct kvt_lanes *l)
{
	struct lane **pp, *gone = NULL, *ln;
	bool quit;

	atomic_store(&l->changed, false);
	pthread_mutex_lock(&l->lock);
	while ((ln = l->joining)) {
		l->joining = ln->join_next;
		ln->poll_next = l->set;
		l->set = ln;
	}
	quit = l->quit;
	pthread_mutex_unlock(&l->lock);
	for (pp = &l->set; (ln = *pp);) {
		if (atomic_load(&ln->stop)) {
			*pp = ln->poll_next;
			ln->poll_next = gone;
			gone = ln;
		} else {
			pp = &ln->poll_next;
		}
	}
	while ((ln = gone)) {
		gone = ln->poll_next;
		lane_disconnect(ln);
		pthread_mutex_lock(&l->lock);
		l->active--;
		pthread_mutex_unlock(&l->lock);
		lane_put(ln);
	}
	return !quit;
}

/*
 * Sleeps until a worker or the daemon wakes the poller. A worker stores
 * its request_seq and then loads daemon_waiting, the poller stores
 * daemon_waiting on every lane and then loads every request_seq (all
 * sequentially consistent): one of them sees the other, so no request is
 * left asleep. The wake-up is the lane's eventfd, made by the daemon and
 * watched by the poller's own epoll: a worker can wake the poller (at the
 * cost of a scan) but cannot take another lane's wake-up.
 */
static void poller_sleep(struct kvt_lanes *l)
{
	struct epoll_event ev[POLLER_EVENTS];
	struct lane *ln;
	bool pending = false;

	for (ln = l->set; ln; ln = ln->poll_next)
		__atomic_store_n(&ln->h->daemon_waiting, 1, __ATOMIC_SEQ_CST);
	for (ln = l->set; ln && !pending; ln = ln->poll_next)
		pending = lane_pending(ln);
	if (!pending && !atomic_load(&l->changed))
		(void)epoll_wait(l->epfd, ev, POLLER_EVENTS, -1);
	for (ln = l->set; ln; ln = ln->poll_next)
		__atomic_store_n(&ln->h->daemon_waiting, 0, __ATOMIC_RELAXED);
}

/*
 * The one thread that serves every lane: passes over them while requests
 * come, spins daemon.poll_us after the last (a pause between looks, the
 * core yielded every KVT_LANE_SPINS), then sleeps. One thread, so that a
 * node's workers and the daemon's lane work fit the cores without a
 * daemon-side wake-up per call while traffic lasts.
 */
static void *poller_main(void *arg)
{
	struct kvt_lanes *l = arg;
	uint64_t idle_from = 0;
	unsigned empty = 0;

	on_poller = true;
	for (;;) {
		if (atomic_load(&l->changed) && !poller_sync(l))
			break;
		if (poller_pass(l)) {
			empty = 0;
			continue;
		}
		if (empty++ == 0)
			idle_from = now_ns();
		if (l->spin_ns && empty % KVT_LANE_SPINS) {
			kvt_lane_cpu_relax();
			continue;
		}
		if (l->spin_ns && now_ns() - idle_from < l->spin_ns) {
			sched_yield();
			continue;
		}
		poller_sleep(l);
		empty = 0;
	}
	return NULL;
}

/* The shared memory of a lane for max_keys: sealed at its size, so that
 * the worker cannot shrink it under the daemon. */
static int lane_map(struct lane *ln, uint32_t max_keys, int *fd,
		    struct kvt_err *err)
{
	uint64_t req = FIXED_BYTES + (uint64_t)REQUEST_PER_KEY * max_keys;
	uint64_t rep = FIXED_BYTES + (uint64_t)REPLY_PER_KEY * max_keys;
	uint64_t page = 4096, req_off = page;
	uint64_t rep_off = req_off + (req + page - 1) / page * page;
	uint64_t bytes = rep_off + (rep + page - 1) / page * page;
	int mfd = memfd_create("kvtier-lane", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (bytes > UINT32_MAX)
		return kvt_errf(err, -E2BIG, "max_keys_per_request %u is too many for a fast lane",
				max_keys);
	if (mfd < 0 || ftruncate(mfd, (off_t)bytes) < 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
	    (ln->map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)) == MAP_FAILED) {
		int rc = -errno;

		ln->map = NULL;
		if (mfd >= 0)
			close(mfd);
		return kvt_errf(err, rc, "cannot make a fast lane: %s", strerror(-rc));
	}
	ln->bytes = bytes;
	ln->request_offset = (uint32_t)req_off;
	ln->request_capacity = (uint32_t)req;
	ln->reply_offset = (uint32_t)rep_off;
	ln->reply_capacity = (uint32_t)rep;
	ln->h = (struct kvt_lane_header *)ln->map;
	*ln->h = (struct kvt_lane_header){
		.magic = KVT_LANE_MAGIC, .version = KVT_LANE_VERSION,
		.request_offset = (uint32_t)req_off, .request_capacity = (uint32_t)req,
		.reply_offset = (uint32_t)rep_off, .reply_capacity = (uint32_t)rep,
		.max_keys = max_keys };
	*fd = mfd;
	return 0;
}

/* Everything the poller needs but the mapping; -ENOMEM. */
static int lane_prepare(struct lane *ln, gid_t gid, pid_t pid, uint32_t max_keys)
{
	struct kvt_daemon *d = ln->owner->d;
	struct kvt_peer peer = { .unix_socket = true, .uid = ln->uid, .gid = gid,
				 .pid = pid };

	ln->request = malloc(FIXED_BYTES + (size_t)REQUEST_PER_KEY * max_keys);
	ln->call = kvt_call_local(d->server, &peer, max_keys, lane_answer, ln);
	return ln->request && ln->call ? 0 : -ENOMEM;
}

/* The lane's descriptors beside its memory: the connection, kept, and
 * the eventfd, watched by the poller; the worker gets a copy of it in
 * *efd (the caller's to close, as the memfd: the poller closes the lane's
 * own when the session ends, maybe before the reply is sent). */
static int lane_connect(struct lane *ln, int conn, int *efd, struct kvt_err *err)
{
	ln->conn = fcntl(conn, F_DUPFD_CLOEXEC, 0);
	if (ln->conn < 0)
		return kvt_errf(err, -errno, "cannot keep the connection: %s", strerror(errno));
	ln->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ln->efd < 0)
		return kvt_errf(err, -errno, "cannot make the lane's eventfd: %s", strerror(errno));
	if (poller_watch(ln->owner, ln->efd) < 0) {
		int rc = -errno;

		close(ln->efd);
		ln->efd = -1;
		return kvt_errf(err, rc, "cannot watch the lane's eventfd: %s", strerror(-rc));
	}
	*efd = fcntl(ln->efd, F_DUPFD_CLOEXEC, 0);
	if (*efd < 0)
		return kvt_errf(err, -errno, "cannot hand over the lane's eventfd: %s",
				strerror(errno));
	return 0;
}

/* The checks and the making of kvt_lanes_open, under the owner's lock. */
static int lane_open_locked(struct kvt_lanes *l, struct lane *ln, uid_t uid,
			    gid_t gid, pid_t pid, int conn, int *fd, int *efd,
			    struct kvt_err *err)
{
	uint32_t max_keys = atomic_load(&l->d->max_keys);
	uint32_t max_lanes = atomic_load(&l->d->max_lanes), held = 0;
	int rc;

	/* Each lane is scanned by the poller and holds descriptors: bounded
	 * per tenant, as gRPC's calls are by its thread pool. */
	for (struct lane *it = l->sessions; it; it = it->next)
		held += it->uid == uid && it->laned;
	if (!ln)
		return kvt_errf(err, -ENOENT, "no such session");
	if (ln->laned)
		return kvt_errf(err, -EBUSY, "the session has its fast lane already");
	if (max_lanes && held >= max_lanes)
		return kvt_errf(err, -EUSERS,
				"tenants.max_lanes (%u) reached for uid %u: this session calls over gRPC",
				max_lanes, (unsigned)uid);
	if (lane_prepare(ln, gid, pid, max_keys) < 0)
		rc = kvt_errf(err, -ENOMEM, "out of memory");
	else if ((rc = lane_map(ln, max_keys, fd, err)) == 0 &&
		 (rc = lane_connect(ln, conn, efd, err)) < 0)
		close(*fd);
	if (rc < 0)
		lane_unmake(ln);
	return rc;
}

int kvt_lanes_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid,
		   gid_t gid, pid_t pid, int conn, int *fd, int *efd,
		   uint64_t *bytes, struct kvt_err *err)
{
	struct lane *ln;
	int rc;

	pthread_mutex_lock(&l->lock);
	for (ln = l->sessions; ln; ln = ln->next)
		if (memcmp(ln->token, token, 16) == 0 && ln->uid == uid)
			break;
	rc = lane_open_locked(l, ln, uid, gid, pid, conn, fd, efd, err);
	if (rc == 0) {
		ln->laned = true;
		atomic_fetch_add(&ln->refs, 1); /* the poller's */
		ln->join_next = l->joining;
		l->joining = ln;
		l->active++;
		l->alive++;
		*bytes = ln->bytes;
		atomic_fetch_add(&l->opened, 1);
	}
	pthread_mutex_unlock(&l->lock);
	if (rc == 0)
		poller_kick(l);
	return rc;
}

void kvt_lanes_stats(struct kvt_lanes *l, struct kvt_lane_stats *st)
{
	*st = (struct kvt_lane_stats){ 0 };
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	st->active = l->active;
	pthread_mutex_unlock(&l->lock);
	st->opened_total = atomic_load(&l->opened);
	st->calls_total = atomic_load(&l->calls);
}

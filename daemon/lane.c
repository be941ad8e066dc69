#include "lane.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
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

/* How long a sleeping lane thread goes before it looks at its stop flag
 * again. The futex word is in the worker's memory, so a wake-up on it is
 * not ours to rely on: the worker can queue waiters of its own ahead of
 * the daemon's (a FUTEX_WAKE of one wakes theirs) or move the daemon's
 * waiter to another word (FUTEX_CMP_REQUEUE). Well under the 1 s within
 * which a closed session's lane must be gone. */
#define STOP_CHECK_NS (250 * 1000 * 1000L)

static const char *const lane_paths[] = {
	[KVT_LANE_LOOKUP] = "/kvtier.v1.KvTier/Lookup",
	[KVT_LANE_RESERVE] = "/kvtier.v1.KvTier/Reserve",
	[KVT_LANE_COMMIT] = "/kvtier.v1.KvTier/Commit",
	[KVT_LANE_ABORT] = "/kvtier.v1.KvTier/Abort",
	[KVT_LANE_ACQUIRE] = "/kvtier.v1.KvTier/Acquire",
	[KVT_LANE_RELEASE] = "/kvtier.v1.KvTier/Release",
};
#define LANE_METHODS (sizeof(lane_paths) / sizeof(lane_paths[0]))

/* A session on the unix socket, and its lane once asked for. */
struct lane {
	struct kvt_lanes *owner;
	struct lane *next;          /* the owner's sessions, under its lock */
	uint8_t token[16];
	uid_t uid;
	bool running;               /* a thread serves it */
	atomic_bool stop;

	int conn;                   /* the worker's segment-socket connection */
	uint8_t *map;
	size_t bytes;
	struct kvt_lane_header *h;
	/* The layout as made: the worker may rewrite the header's copy. */
	uint32_t request_offset, request_capacity, reply_offset, reply_capacity;
	uint8_t *request;           /* the request, copied out of the mapping */
	struct kvt_call *call;      /* reused for every call */

	/* The answer to the call in hand (kvt_call_reply may come from
	 * another thread when the handler deferred it). */
	pthread_mutex_t lock;
	pthread_cond_t answered_cond;
	bool answered;
	grpc_status_code code;
	struct kvt_reply reply;
};

struct kvt_lanes {
	struct kvt_daemon *d;
	/* Each lane method's handler in kvt_rpc_methods (NULL: unknown), and
	 * its index there, which is its counters' slot in the server. */
	const struct kvt_method *methods[LANE_METHODS];
	size_t slots[LANE_METHODS];
	uint64_t spin_ns;
	unsigned max_spinners;
	atomic_uint spinners;
	pthread_mutex_t lock;       /* sessions, threads */
	pthread_cond_t ended;
	struct lane *sessions;
	unsigned threads;           /* lane threads not yet ended */
	atomic_uint_fast64_t opened, calls;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lane_free(struct lane *ln);

int kvt_lanes_new(struct kvt_daemon *d, unsigned spin_us, struct kvt_lanes **out)
{
	struct kvt_lanes *l = calloc(1, sizeof(*l));
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

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
	l->max_spinners = cpus >= 2 ? (unsigned)cpus / 2 * KVT_LANE_SPINNERS_PER_2_CPUS : 1;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->ended, NULL);
	*out = l;
	return 0;
}

void kvt_lanes_free(struct kvt_lanes *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	while (l->threads)
		pthread_cond_wait(&l->ended, &l->lock);
	while (l->sessions) {
		struct lane *ln = l->sessions;

		l->sessions = ln->next;
		lane_free(ln);
	}
	pthread_mutex_unlock(&l->lock);
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
	ln->conn = -1;
	pthread_mutex_init(&ln->lock, NULL);
	pthread_cond_init(&ln->answered_cond, NULL);
	pthread_mutex_lock(&l->lock);
	ln->next = l->sessions;
	l->sessions = ln;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

/* Back to a session without a lane. */
static void lane_unmake(struct lane *ln)
{
	if (ln->call)
		kvt_call_local_free(ln->call);
	if (ln->map)
		munmap(ln->map, ln->bytes);
	if (ln->conn >= 0)
		close(ln->conn);
	free(ln->request);
	ln->call = NULL;
	ln->map = NULL;
	ln->h = NULL;
	ln->request = NULL;
	ln->conn = -1;
}

/* The session, unlinked: its thread's last act (under the owner's lock,
 * so that a session_close still waking it is done), or session_close's
 * when it had no lane. */
static void lane_free(struct lane *ln)
{
	lane_unmake(ln);
	pthread_mutex_destroy(&ln->lock);
	pthread_cond_destroy(&ln->answered_cond);
	free(ln);
}

void kvt_lanes_session_close(struct kvt_lanes *l, const uint8_t token[16])
{
	struct lane **pp, *ln = NULL;

	pthread_mutex_lock(&l->lock);
	for (pp = &l->sessions; *pp; pp = &(*pp)->next)
		if (memcmp((*pp)->token, token, 16) == 0) {
			ln = *pp;
			*pp = ln->next;
			break;
		}
	if (ln && ln->running) {
		/* The thread frees it, under the lock we hold; the bump wakes
		 * it however the worker left the words. Every waiter: the
		 * worker's own may be queued ahead of the thread; and where the
		 * worker moved the thread off the word, its next look at stop
		 * (STOP_CHECK_NS) ends it. */
		atomic_store(&ln->stop, true);
		__atomic_fetch_add(&ln->h->request_seq, 1, __ATOMIC_SEQ_CST);
		kvt_lane_futex_wake(&ln->h->request_seq);
		ln = NULL;
	}
	pthread_mutex_unlock(&l->lock);
	if (ln)
		lane_free(ln);
}

/* kvt_call_reply's end for a lane's call. */
static void lane_answer(void *arg, grpc_status_code code, struct kvt_reply *r)
{
	struct lane *ln = arg;

	pthread_mutex_lock(&ln->lock);
	ln->code = code;
	ln->reply = *r;
	r->buf = NULL;
	ln->answered = true;
	pthread_cond_signal(&ln->answered_cond);
	pthread_mutex_unlock(&ln->lock);
}

/* The next request's seq (not seen), or anything once stopped. Spins
 * first, while few enough lanes spin, then sleeps on the futex. */
static uint32_t lane_wait(struct lane *ln, uint32_t seen)
{
	struct kvt_lanes *l = ln->owner;
	uint32_t *seq = &ln->h->request_seq, *waiting = &ln->h->daemon_waiting;
	uint32_t s;

	if (l->spin_ns && atomic_fetch_add(&l->spinners, 1) < l->max_spinners) {
		uint64_t until = now_ns() + l->spin_ns;

		do {
			for (int i = 0; i < KVT_LANE_SPINS; i++) {
				s = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
				if (s != seen || atomic_load(&ln->stop))
					break;
				kvt_lane_cpu_relax();
			}
			if (s != seen || atomic_load(&ln->stop))
				break;
			sched_yield();
		} while (now_ns() < until);
		atomic_fetch_sub(&l->spinners, 1);
		if (s != seen || atomic_load(&ln->stop))
			return s;
	} else if (l->spin_ns) {
		atomic_fetch_sub(&l->spinners, 1);
	}
	for (;;) {
		__atomic_store_n(waiting, 1, __ATOMIC_SEQ_CST);
		s = __atomic_load_n(seq, __ATOMIC_SEQ_CST);
		if (s != seen || atomic_load(&ln->stop))
			break;
		kvt_lane_futex_wait(seq, seen,
				    &(struct timespec){ 0, STOP_CHECK_NS });
	}
	__atomic_store_n(waiting, 0, __ATOMIC_RELAXED);
	return s;
}

/* Runs the request in the lane (copied out first: the worker may change
 * the mapping at any time) and writes the answer back. */
static void lane_serve(struct lane *ln, uint32_t seq)
{
	struct kvt_lane_header *h = ln->h;
	uint32_t method = __atomic_load_n(&h->method, __ATOMIC_RELAXED);
	uint32_t len = __atomic_load_n(&h->request_len, __ATOMIC_RELAXED);
	uint32_t cap = ln->request_capacity;
	const struct kvt_method *m = method < LANE_METHODS ? ln->owner->methods[method] : NULL;
	struct kvt_reply r = { 0 };
	grpc_status_code code;

	ln->answered = false;
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
	pthread_mutex_lock(&ln->lock);
	while (!ln->answered)
		pthread_cond_wait(&ln->answered_cond, &ln->lock);
	pthread_mutex_unlock(&ln->lock);
	atomic_fetch_add(&ln->owner->calls, 1);

	code = ln->code;
	if (code == GRPC_STATUS_OK && ln->reply.len > ln->reply_capacity) {
		/* Cannot happen while max_keys bounds the request. */
		code = GRPC_STATUS_INTERNAL;
		snprintf(ln->reply.msg, sizeof(ln->reply.msg),
			 "the reply is %zu bytes, over the lane's %u",
			 ln->reply.len, ln->reply_capacity);
	}
	if (code == GRPC_STATUS_OK)
		memcpy(ln->map + ln->reply_offset, ln->reply.buf, ln->reply.len);
	else
		memcpy(h->message, ln->reply.msg, sizeof(h->message));
	h->reply_len = code == GRPC_STATUS_OK ? (uint32_t)ln->reply.len : 0;
	h->status = (int32_t)code;
	free(ln->reply.buf);
	ln->reply.buf = NULL;
	__atomic_store_n(&h->reply_seq, seq, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&h->worker_waiting, __ATOMIC_SEQ_CST))
		kvt_lane_futex_wake(&h->reply_seq);
}

static void *lane_main(void *arg)
{
	struct lane *ln = arg;
	struct kvt_lanes *l = ln->owner;
	uint32_t seen = 0;

	for (;;) {
		uint32_t seq = lane_wait(ln, seen);

		if (atomic_load(&ln->stop))
			break;
		seen = seq;
		lane_serve(ln, seq);
	}
	pthread_mutex_lock(&l->lock);
	lane_free(ln);
	l->threads--;
	pthread_cond_broadcast(&l->ended);
	pthread_mutex_unlock(&l->lock);
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

/* Everything the thread needs but the mapping; -ENOMEM. */
static int lane_prepare(struct lane *ln, gid_t gid, pid_t pid, uint32_t max_keys)
{
	struct kvt_daemon *d = ln->owner->d;
	struct kvt_peer peer = { .unix_socket = true, .uid = ln->uid, .gid = gid,
				 .pid = pid };

	ln->request = malloc(FIXED_BYTES + (size_t)REQUEST_PER_KEY * max_keys);
	ln->call = kvt_call_local(d->server, &peer, max_keys, lane_answer, ln);
	return ln->request && ln->call ? 0 : -ENOMEM;
}

int kvt_lanes_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid,
		   gid_t gid, pid_t pid, int conn, int *fd, uint64_t *bytes,
		   struct kvt_err *err)
{
	uint32_t max_keys = atomic_load(&l->d->max_keys);
	uint32_t max_lanes = atomic_load(&l->d->max_lanes), held = 0;
	struct lane *ln, *it;
	pthread_attr_t attr;
	pthread_t thread;
	int rc = 0;

	pthread_mutex_lock(&l->lock);
	for (ln = l->sessions; ln; ln = ln->next)
		if (memcmp(ln->token, token, 16) == 0 && ln->uid == uid)
			break;
	/* Each lane is a thread of the daemon's: bounded per tenant, as
	 * gRPC's calls are by its thread pool. */
	for (it = l->sessions; it; it = it->next)
		held += it->uid == uid && it->running;
	if (!ln)
		rc = kvt_errf(err, -ENOENT, "no such session");
	else if (ln->running || ln->map)
		rc = kvt_errf(err, -EBUSY, "the session has its fast lane already");
	else if (max_lanes && held >= max_lanes)
		rc = kvt_errf(err, -EUSERS,
			      "tenants.max_lanes (%u) reached for uid %u: this session calls over gRPC",
			      max_lanes, (unsigned)uid);
	else if (lane_prepare(ln, gid, pid, max_keys) < 0)
		rc = kvt_errf(err, -ENOMEM, "out of memory");
	else if ((rc = lane_map(ln, max_keys, fd, err)) == 0 &&
		 (ln->conn = fcntl(conn, F_DUPFD_CLOEXEC, 0)) < 0)
		rc = kvt_errf(err, -errno, "cannot keep the connection: %s", strerror(errno));
	if (rc == 0) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if ((rc = pthread_create(&thread, &attr, lane_main, ln)) != 0)
			rc = kvt_errf(err, -rc, "cannot start the lane's thread: %s", strerror(rc));
		pthread_attr_destroy(&attr);
	}
	if (rc == 0) {
		ln->running = true;
		l->threads++;
		*bytes = ln->bytes;
		atomic_fetch_add(&l->opened, 1);
	} else if (ln && !ln->running) {
		if (ln->map)
			close(*fd);
		lane_unmake(ln);
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

void kvt_lanes_stats(struct kvt_lanes *l, struct kvt_lane_stats *st)
{
	*st = (struct kvt_lane_stats){ 0 };
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	st->active = l->threads;
	pthread_mutex_unlock(&l->lock);
	st->opened_total = atomic_load(&l->opened);
	st->calls_total = atomic_load(&l->calls);
}

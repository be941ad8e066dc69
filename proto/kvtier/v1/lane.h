/*
 * The fast lane: a session's hot calls through shared memory instead of
 * gRPC.
 *
 * A worker with a session (Attach) on the unix socket asks the segment
 * socket (segments.h) for segment KVT_LANE_SEGMENT: the reply carries two
 * descriptors, a memfd of reply.bytes, mapped MAP_SHARED read-write, and
 * the lane's eventfd (the worker's way to wake the daemon), and the worker
 * keeps that connection open for as long as it uses the lane (the daemon
 * closes its end when the session ends: the worker sees POLLHUP). The daemon
 * checks the caller's uid (SO_PEERCRED) against the session's tenant, as
 * for segments, and every call on the lane acts as that uid, so a lane is
 * no wider than the socket it came from. One lane per session.
 *
 * The calls are the gRPC methods' own messages: the request is a packed
 * kvtier.v1.<Method>Request, the reply a packed <Method>Response or a gRPC
 * status code and message, decided by the same handlers as over gRPC.
 * One call at a time:
 *
 *   worker: writes request, stores request_seq + 1 (sequentially
 *           consistent), and if daemon_waiting is then set, writes 1 (8
 *           bytes) to the lane's eventfd;
 *   daemon: copies the request out of shared memory before reading it,
 *           answers into reply, stores reply_seq = request_seq (release),
 *           and if worker_waiting is set, FUTEX_WAKEs reply_seq.
 *
 * A side sets its *_waiting word (sequentially consistent) and reads the
 * other's seq once more before it sleeps, so no wake-up is lost. The
 * worker sleeps in FUTEX_WAIT on reply_seq; the daemon, one thread for
 * every lane, in epoll on the lanes' eventfds: no wake-up of the daemon's
 * lives in memory a worker can write. Each side spins a little (yielding
 * the core) before it sleeps. The daemon serves the next request only
 * once the call in hand is answered: a request_seq bumped meanwhile is
 * seen then. A request with more keys than max_keys, or one longer than
 * request_capacity, is the worker's to send over gRPC instead (the daemon
 * refuses it here).
 *
 * Fields are in host byte order; offsets are from the start of the mapping.
 */
#ifndef KVTIER_V1_LANE_H
#define KVTIER_V1_LANE_H

#include <stdint.h>

/* kvt_segment_request.segment that asks for the session's lane. */
#define KVT_LANE_SEGMENT 0xffffffffu
#define KVT_LANE_MAGIC 0x6b766c6eu /* "kvln" */
#define KVT_LANE_VERSION 2u /* 2: the eventfd, no futex on request_seq */

enum kvt_lane_method {
	KVT_LANE_LOOKUP = 1,
	KVT_LANE_RESERVE = 2,
	KVT_LANE_COMMIT = 3,
	KVT_LANE_ABORT = 4,
	KVT_LANE_ACQUIRE = 5,
	KVT_LANE_RELEASE = 6,
};

struct kvt_lane_header {
	/* Set by the daemon before the worker sees the lane; read-only. */
	uint32_t magic, version;
	uint32_t request_offset, request_capacity;
	uint32_t reply_offset, reply_capacity;
	uint32_t max_keys; /* keys a request may carry on this lane */
	uint32_t reserved0;
	uint8_t pad0[32];

	/* The worker's cache line. */
	uint32_t request_seq;    /* bumped once per request */
	uint32_t worker_waiting; /* the worker sleeps on reply_seq */
	uint32_t method;         /* enum kvt_lane_method */
	uint32_t request_len;    /* bytes at request_offset */
	uint8_t pad1[48];

	/* The daemon's cache line. */
	uint32_t reply_seq;      /* futex: = request_seq once answered */
	uint32_t daemon_waiting; /* the daemon sleeps: write the eventfd */
	int32_t status;          /* a gRPC status code */
	uint32_t reply_len;      /* bytes at reply_offset (status 0) */
	uint8_t pad2[48];

	char message[320];       /* why, when status is not 0 */
};

_Static_assert(sizeof(struct kvt_lane_header) == 512, "wire layout");

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The futex calls on reply_seq, the worker's sleep (shared: the mapping
 * is MAP_SHARED, so no FUTEX_PRIVATE_FLAG). wait returns at once when
 * *word is no longer val; timeout NULL waits for a wake-up. The daemon
 * only wakes: the words are the worker's to tamper with. */
static inline void kvt_lane_futex_wait(uint32_t *word, uint32_t val,
				       const struct timespec *timeout)
{
	syscall(SYS_futex, word, FUTEX_WAIT, val, timeout, NULL, 0);
}

/* Wakes every waiter: the worker may have more than one. */
static inline void kvt_lane_futex_wake(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

/* The worker's wake-up of the daemon: 1 on the lane's eventfd. A counter
 * at its bound (EAGAIN) has a wake-up pending already. */
static inline void kvt_lane_wake(int efd)
{
	uint64_t one = 1;

	(void)!write(efd, &one, sizeof(one));
}
#endif

/* Spins a peer runs between looks at a lane word before it gives its core
 * away (sched_yield, a system call): a Lookup's answer mostly comes within
 * them. 64 took the one-client Lookup from 194k to 210k calls/s and its
 * CPU per call from 4.0 to 3.5 us each side (BENCHMARKS.md). */
#define KVT_LANE_SPINS 64

static inline void kvt_lane_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

#endif

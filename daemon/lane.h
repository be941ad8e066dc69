/*
 * Fast lanes (proto/kvtier/v1/lane.h): a session's hot calls (Lookup,
 * Reserve, Commit, Abort, Acquire, Release) through shared memory, served
 * by the gRPC methods' own handlers (rpc.c) so that every check holds on
 * both paths, counted and timed as those methods' calls.
 *
 * One thread per lane, made when the worker asks for it and gone when its
 * session closes. Between calls it spins a little, yielding the core, and
 * then sleeps on a futex (waking 4 times a second to look whether its
 * session closed: lane.c's STOP_CHECK_NS): an idle lane costs no CPU to
 * speak of, and at most
 * KVT_LANE_SPINNERS_PER_2_CPUS lanes per two CPUs spin at once, so lanes
 * that outnumber the cores sleep rather than take the cores their workers
 * need.
 *
 * Threads: session_open and session_close run on completion-queue threads
 * (Attach), open on the segment socket's thread, stats anywhere; new and
 * free on the main thread, free once the server has stopped (every session
 * closed).
 */
#ifndef KVT_LANE_H
#define KVT_LANE_H

#include <stdint.h>
#include <sys/types.h>

struct kvt_daemon;
struct kvt_err;
struct kvt_lanes;

#define KVT_LANE_SPINNERS_PER_2_CPUS 1

struct kvt_lane_stats {
	uint64_t active;       /* lanes open now */
	uint64_t opened_total;
	uint64_t calls_total;  /* requests served on lanes */
};

/* spin_us: how long a lane spins for the next request before it sleeps. */
int kvt_lanes_new(struct kvt_daemon *d, unsigned spin_us, struct kvt_lanes **out);
/* Waits for every lane thread to end (they end with their sessions). */
void kvt_lanes_free(struct kvt_lanes *l);

/* A session that may have a lane (Attach on the unix socket): uid is its
 * peer's. 0 or -ENOMEM. */
int kvt_lanes_session_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid);
/* Ends the session's lane, if any: its thread finishes the call in hand
 * and exits, the worker sees its connection close. */
void kvt_lanes_session_close(struct kvt_lanes *l, const uint8_t token[16]);

/*
 * Opens the lane of session token for a peer (uid, gid, pid) on the
 * segment socket connection conn, which the lane keeps (dup'd) while it
 * lasts. The memfd to hand over in *fd (the caller closes it), its size
 * in *bytes. The daemon's max_keys_per_request now sizes the lane (a
 * later reload does not resize it: lane.h's max_keys). -ENOENT (no such
 * session of this uid), -EBUSY (it has one), -EUSERS (the uid holds
 * tenants.max_lanes), or another -errno, with err.
 */
int kvt_lanes_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid,
		   gid_t gid, pid_t pid, int conn, int *fd, uint64_t *bytes,
		   struct kvt_err *err);

void kvt_lanes_stats(struct kvt_lanes *l, struct kvt_lane_stats *st);

#endif

/*
 * Fast lanes (proto/kvtier/v1/lane.h): a session's hot calls (Lookup,
 * Reserve, Commit, Abort, Acquire, Release) through shared memory, served
 * by the gRPC methods' own handlers (rpc.c) so that every check holds on
 * both paths, counted and timed as those methods' calls.
 *
 * One thread, the poller, serves every lane: it passes over the lanes
 * while requests come (one request per lane per pass, so a tenant that
 * floods its lane cannot starve the others), spins for daemon.poll_us
 * after the last, then sleeps in epoll on an eventfd per lane, made by the
 * daemon and handed to the worker with the lane's memory: a worker wakes
 * the poller through its own lane's eventfd and can take no one else's
 * wake-up. A handler that defers its answer (an Acquire that waits) does
 * not hold the poller: whichever thread answers writes the reply to the
 * lane, which takes no request meanwhile. An idle daemon's poller sleeps
 * without a timeout: a session's close and the daemon's stop wake it.
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

struct kvt_lane_stats {
	uint64_t active;       /* lanes open now */
	uint64_t opened_total;
	uint64_t calls_total;  /* requests served on lanes */
};

/* spin_us: how long the poller spins for the next request before it sleeps. */
int kvt_lanes_new(struct kvt_daemon *d, unsigned spin_us, struct kvt_lanes **out);
/* Waits for every lane to end (they end with their sessions, once their
 * call in hand is answered), then stops the poller. */
void kvt_lanes_free(struct kvt_lanes *l);

/* A session that may have a lane (Attach on the unix socket): uid is its
 * peer's. 0 or -ENOMEM. */
int kvt_lanes_session_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid);
/* Ends the session's lane, if any: the poller drops it and the worker
 * sees its connection close; a call in hand still gets its answer. */
void kvt_lanes_session_close(struct kvt_lanes *l, const uint8_t token[16]);

/*
 * Opens the lane of session token for a peer (uid, gid, pid) on the
 * segment socket connection conn, which the lane keeps (dup'd) while it
 * lasts. The memfd and the lane's eventfd to hand over in *fd and *efd
 * (the caller closes both), the memfd's size in *bytes. The daemon's
 * max_keys_per_request now sizes the lane (a later reload does not resize
 * it: lane.h's max_keys). -ENOENT (no such
 * session of this uid), -EBUSY (it has one), -EUSERS (the uid holds
 * tenants.max_lanes), or another -errno, with err.
 */
int kvt_lanes_open(struct kvt_lanes *l, const uint8_t token[16], uid_t uid,
		   gid_t gid, pid_t pid, int conn, int *fd, int *efd,
		   uint64_t *bytes, struct kvt_err *err);

void kvt_lanes_stats(struct kvt_lanes *l, struct kvt_lane_stats *st);

#endif

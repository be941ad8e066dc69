/*
 * The worker's end of the segment socket (proto/kvtier/v1/segments.h) and
 * of a session's fast lane (proto/kvtier/v1/lane.h). libkvtier's own, and
 * the tests', which speak the lane directly.
 *
 * Threads: a kvt_lane serves one call at a time; its caller serializes
 * (libkvtier calls it under the client's lock).
 */
#ifndef KVT_CLIENT_LANE_H
#define KVT_CLIENT_LANE_H

#include <stddef.h>
#include <stdint.h>

#include "kvtier/v1/segments.h"

/*
 * One exchange on the segment socket at path: asks for segment of session.
 * 0 with the reply in *rep and its descriptor in *fd; *sock, when not NULL,
 * keeps the connection open (else it is closed). -errno otherwise, with
 * the reason in err (the daemon's when it refused: rep->status).
 */
int kvt_segsock_ask(const char *path, const uint8_t session[16],
		    uint32_t segment, struct kvt_segment_reply *rep, int *fd,
		    int *sock, char *err, size_t len);

/* The most descriptors a reply carries: a lane's memfd and eventfd. */
#define KVT_SEGSOCK_FDS 2

/* As kvt_segsock_ask, with up to nfds descriptors in fds (the first is
 * always there on success; the rest -1 when the reply had fewer). */
int kvt_segsock_ask_fds(const char *path, const uint8_t session[16],
			uint32_t segment, struct kvt_segment_reply *rep, int *fds,
			unsigned nfds, int *sock, char *err, size_t len);

struct kvt_lane;

/* Asks for the session's lane and maps it. 0 or -errno with err. */
int kvt_lane_open(const char *path, const uint8_t session[16],
		  struct kvt_lane **out, char *err, size_t len);
void kvt_lane_close(struct kvt_lane *l);

/* Keys a request may carry, and where to write the request (cap bytes). */
uint32_t kvt_lane_max_keys(const struct kvt_lane *l);
uint8_t *kvt_lane_request(struct kvt_lane *l, size_t *cap);

/*
 * Sends the len-byte request already written at kvt_lane_request for
 * method (enum kvt_lane_method) and waits for the answer: spins for
 * spin_us (yielding the core), then sleeps, up to timeout_ms.
 *
 * Returns the gRPC status (>= 0): 0 with the reply's bytes at *reply
 * (valid until the next call), else the daemon's message in msg. Or
 * -ETIMEDOUT (no answer in time: the lane is unusable after) or
 * -ECONNRESET (the daemon ended the lane), with msg.
 */
int kvt_lane_call(struct kvt_lane *l, uint32_t method, size_t len,
		  unsigned spin_us, int timeout_ms, const uint8_t **reply,
		  size_t *reply_len, char *msg, size_t msglen);

#endif

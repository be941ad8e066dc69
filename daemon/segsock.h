/*
 * The segment socket (proto/kvtier/v1/segments.h): hands host segments'
 * file descriptors to the workers of their own tenant.
 *
 * One thread serves it: it accepts, reads one request per connection,
 * answers from the engine (kvt_engine_segment_fd) and closes. A connection
 * that sends nothing within a second is closed, and at most
 * KVT_SEGSOCK_PENDING wait at once (the oldest goes first), so a silent or
 * flooding client holds nothing for long. start and stop are called from
 * the main thread; the counters may be read from any thread.
 */
#ifndef KVT_SEGSOCK_H
#define KVT_SEGSOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KVT_SEGSOCK_PENDING 64

struct kvt_engine;
struct kvt_lanes;
struct kvt_segsock;

struct kvt_segsock_stats {
	uint64_t served_total;  /* descriptors handed out */
	uint64_t refused_total; /* requests answered with an error */
	uint64_t dropped_total; /* connections closed without a request */
};

/* Listens on path (mode, group gid unless (gid_t)-1). 0 or -errno with the
 * reason in err. */
int kvt_segsock_start(const char *path, mode_t mode, gid_t gid,
		      struct kvt_engine *engine, struct kvt_lanes *lanes,
		      struct kvt_segsock **out, char *err, size_t len);
/* Stops the thread, closes and unlinks the socket. NULL is fine. */
void kvt_segsock_stop(struct kvt_segsock *s);
void kvt_segsock_stats(const struct kvt_segsock *s, struct kvt_segsock_stats *st);
const char *kvt_segsock_path(const struct kvt_segsock *s);

#endif

/*
 * Host tier memory: POSIX shared-memory segments that workers map to read
 * and write pages without a copy through the daemon.
 *
 * Segment i is the object "<prefix><i>". The daemon creates them at start
 * (memory is committed lazily, page by page, as slots are first written) and
 * unlinks them at stop. The tier grows by adding segments; it shrinks by
 * giving back the memory of segments the engine has emptied, while their
 * objects stay (a worker's mapping of segment i must never see another
 * object). Pointers never move, so reading one needs no lock.
 */
#ifndef KVT_HOST_H
#define KVT_HOST_H

#include <stdint.h>
#include <sys/types.h>

/* Most segments a host tier may have: io_uring registers at most 16384
 * buffers, and the nvme tier registers one per segment. */
#define KVT_HOST_SEGMENTS_MAX 16384u

struct kvt_host;

/*
 * Creates `segments` objects of `segment_bytes`, mode `mode`, group `gid`
 * unless it is (gid_t)-1. A stale object of the same name (left by a killed
 * daemon that used the same run directory) is replaced.
 * 0 or -errno; on failure nothing is left behind.
 */
int kvt_host_create(const char *prefix, uint32_t segments,
		    uint64_t segment_bytes, mode_t mode, gid_t gid,
		    struct kvt_host **out);

/* Creates segments up to `segments` (at most KVT_HOST_SEGMENTS_MAX), like
 * create. 0 or -errno, with the segments made so far kept. */
int kvt_host_grow(struct kvt_host *h, uint32_t segments);
uint32_t kvt_host_segments(const struct kvt_host *h);

/* Gives segment i's memory back to the system; it reads as zeros after. */
void kvt_host_release(struct kvt_host *h, uint32_t segment);

/* Unmaps and unlinks every segment. */
void kvt_host_destroy(struct kvt_host *h);

void *kvt_host_ptr(const struct kvt_host *h, uint32_t segment, uint64_t offset);
const char *kvt_host_prefix(const struct kvt_host *h);

#endif

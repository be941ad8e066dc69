/*
 * Host tier memory: segments of committed memory that workers map to read
 * and write pages without a copy through the daemon.
 *
 * A segment is a memfd, sealed so that nobody can shrink or grow it, its
 * memory allocated when the segment is made (fallocate, then mapped with
 * MADV_POPULATE_WRITE; optionally huge pages, optionally locked), so no later
 * access faults for want of memory. It has no name: workers get its file
 * descriptor from the daemon (kvt_host_share), only for segments that hold
 * their own tenant's blocks. A segment that changes hands is renewed: a new
 * memfd at the same address in the daemon, the old one's memory punched out
 * so that a previous holder's mapping of it reads zeros and holds nothing.
 * Each making of a segment bumps its generation, which locations carry so
 * that a worker knows when its mapping is stale.
 *
 * The tier grows by making segments and shrinks by releasing them (the
 * memory goes back to the system; the address range stays reserved, so
 * addresses never move and reading one needs no lock).
 *
 * A worker can still punch holes in its segments. On huge pages the
 * daemon's next touch there may find no free huge page: while a tier
 * lives, a SIGBUS handler (installed by the first kvt_host_create, the
 * previous one put back by the last kvt_host_destroy, and called for any
 * other SIGBUS) puts zeros (anonymous memory) over the page and marks the
 * segment damaged, for its owner to empty and remake.
 * Not thread-safe: the engine calls it under its lock (kvt_host_damaged
 * and kvt_host_faults excepted: they may be called from any thread).
 */
#ifndef KVT_HOST_H
#define KVT_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most segments a host tier may have: io_uring registers at most 16384
 * buffers, and the nvme tier registers one per segment. */
#define KVT_HOST_SEGMENTS_MAX 16384u

/* Values of host.huge_pages. */
enum kvt_huge_pages {
	KVT_HUGE_AUTO = 0, /* 2M pages if enough are free, else 4K (with THP advice) */
	KVT_HUGE_OFF,
	KVT_HUGE_2M,
	KVT_HUGE_1G,
};

struct kvt_host_config {
	uint64_t segment_bytes;
	enum kvt_huge_pages huge_pages;
	bool lock; /* mlock the tier: it is never swapped out */
	/* Neither check nor commit the memory up front: for benchmarks of
	 * metadata, whose pages are never written. Never in the daemon: a
	 * write may then fault. */
	bool sparse;
};

struct kvt_host;

/*
 * Makes `segments` segments. 0 or -errno with the reason in why (naming the
 * knob to change and the size that would fit); on failure nothing is left.
 */
int kvt_host_create(const struct kvt_host_config *cfg, uint32_t segments,
		    struct kvt_host **out, char *why, size_t len);

/* Makes (again) segments up to `segments`, at most KVT_HOST_SEGMENTS_MAX,
 * after checking that they fit. 0 or -errno with why; on failure the
 * segments made so far are kept. */
int kvt_host_grow(struct kvt_host *h, uint32_t segments, char *why, size_t len);
/* Segments known: made ones and released ones below the highest made. */
uint32_t kvt_host_segments(const struct kvt_host *h);

/* Gives segment i's memory back: its memfd is punched out and closed. A
 * later grow makes it again. */
void kvt_host_release(struct kvt_host *h, uint32_t segment);

/* Gives segment i a new, unshared memfd at the same address (see above).
 * 0 or -errno; on failure the old one stays. */
int kvt_host_renew(struct kvt_host *h, uint32_t segment, char *why, size_t len);

/* A descriptor of segment i's memfd for a worker (close it when sent), and
 * its generation. Marks the segment shared with a worker. -ENOENT for a
 * segment not made. */
int kvt_host_share(struct kvt_host *h, uint32_t segment, uint32_t *generation);
/* Whether segment i has memory (made, not released). */
bool kvt_host_backed(const struct kvt_host *h, uint32_t segment);
/* Whether a worker may have mapped the segment's current memfd. */
bool kvt_host_shared(const struct kvt_host *h, uint32_t segment);
uint32_t kvt_host_generation(const struct kvt_host *h, uint32_t segment);
/* Whether the SIGBUS guard put zeros over a page of segment i since it was
 * last made or released: a worker punched a hole there. */
bool kvt_host_damaged(const struct kvt_host *h, uint32_t segment);
/* How many times a segment went from whole to damaged. */
uint64_t kvt_host_faults(const struct kvt_host *h);

/* Unmaps and closes every segment. */
void kvt_host_destroy(struct kvt_host *h);

void *kvt_host_ptr(const struct kvt_host *h, uint32_t segment, uint64_t offset);

/* What backs the tier, for the start-up line: "2M huge pages, locked". */
const char *kvt_host_describe(const struct kvt_host *h);

#endif

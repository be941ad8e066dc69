/*
 * The nvme store's private header: the on-disk formats and the in-memory
 * state shared by nvme.c (open, the queue, regions, the mover) and
 * nvme_recover.c (reading back what the paths hold at start). Everything
 * here is called under cfg.lock, or before the mover starts.
 *
 * Layout of a path: [superblock 4 KiB][region 0][region 1]... A region is
 * [region header 4 KiB][record 0][record 1]..., a record [header 4 KiB]
 * [page, padded to the namespace's stride]. Every header ends with an
 * xxh3 of itself; a record header names its region's generation (seq),
 * which changes each time the region is reused, so a header left from an
 * earlier use is never mistaken for a current one.
 *
 * Slot state lives in memory (user pointer and page checksum per slot).
 * A region's inflight count covers every queued or running I/O on it; a
 * region with I/O outstanding is never reused, so no late write lands in
 * a region that has moved on.
 */
#ifndef KVT_NVME_INT_H
#define KVT_NVME_INT_H

#include <liburing.h>
#include <stddef.h>
#include <time.h>
#include <xxhash.h>

#include "host.h"
#include "nvme.h"

#define HDR KVT_NVME_HEADER_BYTES
#define SUPER_MAGIC 0x314e56524954564bull  /* "KVTIERN1" */
#define REGION_MAGIC 0x3247455254564b00ull /* "\0KVTREG2" */
#define RECORD_MAGIC 0x3143455254564b00ull /* "\0KVTREC1" */
#define NO_REGION UINT32_MAX
#define WAKE_TAG 1ull /* user_data of the eventfd read; ios are aligned */
#define RECOVERY_BATCH 64

struct disk_super {
	uint64_t magic, path_bytes, region_bytes;
	uint8_t tier_id[16];
	uint64_t sum;
};

struct disk_region {
	uint64_t magic, seq, page_bytes, stride;
	uint8_t tier_id[16];
	uint32_t block_tokens, shared, uid;
	char ns[KVT_NVME_NAME_MAX + 1];
	char tenant[KVT_NVME_TENANT_MAX];
	uint64_t sum;
};

struct disk_record {
	uint64_t magic, seq, page_bytes, page_sum;
	uint32_t slot, uid, has_parent;
	uint8_t key[16], parent[16];
	char tenant[KVT_NVME_TENANT_MAX];
	uint64_t sum;
};

enum region_state { REGION_FREE, REGION_OPEN, REGION_SEALED };

struct rslot {
	void *user; /* NULL: no live record */
	uint64_t sum;
};

struct region {
	uint32_t path, ns, nslots, next, live, inflight;
	uint8_t state;
	uint64_t seq, stride, page_bytes;
	struct rslot *slots;
};

struct path {
	char name[256];
	int fd;
	uint64_t bytes;
	uint32_t first_region, nregions;
	uint8_t tier_id[16];
	uint64_t failed_until; /* CLOCK_MONOTONIC ns; 0: healthy */
	bool usable;
};

struct nsdesc {
	struct kvt_nvme_ns d;
	bool known;
	uint32_t open[KVT_NVME_PATHS_MAX]; /* the region being filled, per path */
};

enum io_kind { IO_WRITE, IO_READ, IO_INVALIDATE };

struct io {
	struct io *next;
	enum io_kind kind;
	int rc;
	unsigned pending; /* CQEs still due */
	void *user;
	uint32_t ns, segment;
	uint64_t offset, sum;
	struct kvt_nvme_loc loc;
	struct kvt_nvme_block blk;
	void *hdr; /* 4 KiB, aligned: a record header */
};

struct kvt_nvme {
	struct kvt_nvme_config cfg;
	struct path paths[KVT_NVME_PATHS_MAX];
	uint32_t npaths, next_path;
	struct region *regions;
	uint32_t nregions;
	struct nsdesc *ns;
	uint64_t seq;
	struct io_uring ring;
	bool ring_ok, fixed;
	/* Segments registered as fixed buffers (the table has room for
	 * KVT_HOST_SEGMENTS_MAX; the host tier may grow and shrink). */
	bool fixed_bufs, seg_fixed[KVT_HOST_SEGMENTS_MAX];
	int efd;
	uint64_t efd_buf;
	void *zero; /* 4 KiB of zeros: an invalidated header */

	/* Under cfg.lock. */
	struct io *head, *tail;
	uint32_t queued, writes_queued, inflight;
	bool sleeping, stopping, started;
	pthread_t mover;
	struct kvt_nvme_stats st;
};

static inline uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void nvme_say(struct kvt_nvme *nv, bool error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* xxh3 of a header up to its trailing sum field. */
static inline uint64_t hdr_sum(const void *h, size_t sum_offset)
{
	return XXH3_64bits(h, sum_offset);
}

#define SEAL(h) ((h)->sum = hdr_sum((h), offsetof(__typeof__(*(h)), sum)))
#define SEALED_OK(h) ((h)->sum == hdr_sum((h), offsetof(__typeof__(*(h)), sum)))

static inline uint64_t region_offset(const struct kvt_nvme *nv, uint32_t r)
{
	const struct path *p = &nv->paths[nv->regions[r].path];

	return HDR + (uint64_t)(r - p->first_region) * nv->cfg.region_bytes;
}

/* File offset of slot's record header; its page follows. */
static inline uint64_t record_offset(const struct kvt_nvme *nv, uint32_t r,
				     uint32_t slot)
{
	return region_offset(nv, r) + HDR +
	       (uint64_t)slot * kvt_nvme_record_bytes(nv->regions[r].stride);
}

int nvme_write_at(int fd, const void *buf, size_t len, uint64_t off);

#endif

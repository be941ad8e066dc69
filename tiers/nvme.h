/*
 * The nvme tier: pages kept in files or block devices, opened O_DIRECT and
 * driven by one io_uring thread (the mover).
 *
 * On disk, each path holds a superblock and then regions. A region is
 * carved for one namespace and filled front to back with records: a 4 KiB
 * header (key, parent key, tenant, checksum of the page) and the page. The
 * data of a record is written before its header (linked writes), and both
 * name the generation of their region, so after a crash or kill -9 a
 * record is either whole and findable or ignored. Regions are reused
 * oldest first (FIFO, as flash caches do): reusing one takes the disk copy
 * away from every block in it.
 *
 * The engine calls everything under the mutex it hands in (cfg.lock); the
 * mover takes the same mutex to pick up work and to report completions,
 * and computes and verifies checksums and waits for the disk without it.
 */
#ifndef KVT_NVME_H
#define KVT_NVME_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVT_NVME_PATHS_MAX 16
#define KVT_NVME_HEADER_BYTES 4096
#define KVT_NVME_NAME_MAX 128
#define KVT_NVME_TENANT_MAX 32

/* Where a record lives: region (global over paths) and slot in it. */
struct kvt_nvme_loc {
	uint32_t region, slot;
};

/* A namespace as regions record it, so that recovery can recreate it. */
struct kvt_nvme_ns {
	char name[KVT_NVME_NAME_MAX + 1];
	uint64_t page_bytes, stride;
	uint32_t block_tokens;
	bool shared;
	uint32_t uid; /* the owner of a namespace that is not shared */
	char tenant[KVT_NVME_TENANT_MAX];
};

/* What a record's header says of its block. */
struct kvt_nvme_block {
	uint8_t key[16], parent[16];
	bool has_parent;
	uint32_t uid;
	char tenant[KVT_NVME_TENANT_MAX];
};

/* A record found by recovery. */
struct kvt_nvme_record {
	uint32_t ns; /* index into the namespaces recovery reports */
	struct kvt_nvme_block block;
	struct kvt_nvme_loc loc;
};

/*
 * Called by the mover with cfg.lock held. written: a demotion ended, rc 0
 * with the record at loc, or -errno. read: a promotion ended, rc 0, -EBADMSG
 * (checksum mismatch: the page must not be served) or -errno. reclaimed:
 * a region is being reused and user's record goes with it. unlocked: called
 * after each batch of the others, without the lock.
 */
struct kvt_nvme_ops {
	void (*written)(void *arg, void *user, int rc, struct kvt_nvme_loc loc);
	void (*read)(void *arg, void *user, int rc);
	void (*reclaimed)(void *arg, void *user);
	void (*unlocked)(void *arg);
	void (*log)(void *arg, bool error, const char *msg);
};

struct kvt_nvme_config {
	const char *const *paths;
	uint32_t npaths;
	uint64_t path_bytes;   /* per path; a block device gives at most its size */
	uint64_t region_bytes; /* at least one record of the largest page */
	uint32_t queue_depth;  /* I/Os in flight */
	uint64_t retry_ns;     /* a failed path takes no writes this long */
	uint32_t max_namespaces;
	/* The host tier's segments: registered as fixed buffers, and the
	 * memory every read lands in and every write comes from. The array
	 * has room for KVT_HOST_SEGMENTS_MAX; see kvt_nvme_segment. */
	void *const *segments;
	uint32_t nsegments;
	uint64_t segment_bytes;
	pthread_mutex_t *lock;
	struct kvt_nvme_ops ops;
	void *arg;
};

struct kvt_nvme_stats {
	uint64_t capacity_bytes, used_bytes, regions, regions_used;
	uint32_t paths, paths_failed;
	bool fixed_buffers;
	uint64_t queued, inflight;
	uint64_t writes_total, write_bytes_total, write_errors_total;
	uint64_t reads_total, read_bytes_total, read_errors_total;
	uint64_t bad_checksum_total, reclaimed_total;
	uint64_t recovered_records, recovery_ms;
};

struct kvt_nvme;

/*
 * Opens (creating files as needed) and checks every path. A path that
 * cannot be opened is logged and left out, as one whose superblock does
 * not match is formatted anew; only when none is usable does it fail
 * (-errno, reason in err).
 */
int kvt_nvme_open(const struct kvt_nvme_config *cfg, struct kvt_nvme **out,
		  char *err, size_t errlen);

/*
 * Reads back what the paths hold: per region with a whole record, ns_fn
 * for the namespace it names (returns the engine's id for it, or <0 to
 * skip its records), then rec_fn once per whole record (returns the user
 * pointer of its block, or NULL to drop it). A namespace none of whose
 * records survive is not brought back. Before start, without the lock.
 */
int kvt_nvme_recover(struct kvt_nvme *nv,
		     int (*ns_fn)(void *arg, const struct kvt_nvme_ns *ns),
		     void *(*rec_fn)(void *arg, const struct kvt_nvme_record *r),
		     void *arg);

/* Starts the mover. */
int kvt_nvme_start(struct kvt_nvme *nv);

/* Finishes what is queued and in flight, stops the mover, closes. */
void kvt_nvme_close(struct kvt_nvme *nv);

/* Tells the tier how the engine's namespace ns looks (an entry reused
 * for a new namespace: closed first, see below). Locked. */
int kvt_nvme_namespace(struct kvt_nvme *nv, uint32_t ns,
		       const struct kvt_nvme_ns *desc);
/* The engine dropped namespace ns: its open regions are sealed, so that
 * a namespace that later takes its entry opens its own, and writes for it
 * are refused. Writes already queued still land (their blocks are no
 * longer indexed: the engine forgets them). Locked. */
void kvt_nvme_namespace_close(struct kvt_nvme *nv, uint32_t ns);

/*
 * Queues a demotion of the page at host (segment, offset) of namespace ns.
 * The page must stay put until written() is called. Locked. -EAGAIN when
 * the backlog is full, -EIO while every path is failed.
 */
int kvt_nvme_write(struct kvt_nvme *nv, void *user, uint32_t ns,
		   const struct kvt_nvme_block *blk, uint32_t segment,
		   uint64_t offset);

/* Queues a promotion of the record at loc into host (segment, offset). Locked. */
int kvt_nvme_read(struct kvt_nvme *nv, void *user, struct kvt_nvme_loc loc,
		  uint32_t segment, uint64_t offset);

/* The block of the record at loc left the cache: forget it, on disk too. Locked. */
void kvt_nvme_forget(struct kvt_nvme *nv, struct kvt_nvme_loc loc);

/* Host segment `segment` now lives at base (NULL: it was released, and no
 * I/O may use it); keeps the io_uring buffer table in step. Locked. */
void kvt_nvme_segment(struct kvt_nvme *nv, uint32_t segment, void *base);

/* Record bytes per page of ns's stride (its page plus the header). */
uint64_t kvt_nvme_record_bytes(uint64_t stride);

void kvt_nvme_stats(struct kvt_nvme *nv, struct kvt_nvme_stats *st);

#endif

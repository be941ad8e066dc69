/*
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
#include "nvme.h"
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

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

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void say(struct kvt_nvme *nv, bool error, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (nv->cfg.ops.log)
		nv->cfg.ops.log(nv->cfg.arg, error, msg);
}

/* xxh3 of a header up to its trailing sum field. */
static uint64_t hdr_sum(const void *h, size_t sum_offset)
{
	return XXH3_64bits(h, sum_offset);
}

#define SEAL(h) ((h)->sum = hdr_sum((h), offsetof(__typeof__(*(h)), sum)))
#define SEALED_OK(h) ((h)->sum == hdr_sum((h), offsetof(__typeof__(*(h)), sum)))

uint64_t kvt_nvme_record_bytes(uint64_t stride)
{
	return HDR + stride;
}

static uint64_t region_offset(const struct kvt_nvme *nv, uint32_t r)
{
	const struct path *p = &nv->paths[nv->regions[r].path];

	return HDR + (uint64_t)(r - p->first_region) * nv->cfg.region_bytes;
}

/* File offset of slot's record header; its page follows. */
static uint64_t record_offset(const struct kvt_nvme *nv, uint32_t r,
			      uint32_t slot)
{
	return region_offset(nv, r) + HDR +
	       (uint64_t)slot * kvt_nvme_record_bytes(nv->regions[r].stride);
}

static void *host_page(const struct kvt_nvme *nv, uint32_t seg, uint64_t off)
{
	return (uint8_t *)nv->cfg.segments[seg] + off;
}

/* ---- open ---- */

static int open_path(struct kvt_nvme *nv, struct path *p, const char *name)
{
	struct stat st;
	uint64_t bytes = nv->cfg.path_bytes;

	snprintf(p->name, sizeof(p->name), "%s", name);
	p->fd = open(name, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (p->fd < 0) {
		int rc = -errno;

		say(nv, true, "nvme: %s: cannot open: %s; path left out", name,
		    strerror(-rc));
		return rc;
	}
	if (fstat(p->fd, &st) < 0) {
		int rc = -errno;

		say(nv, true, "nvme: %s: cannot stat: %s; path left out", name,
		    strerror(-rc));
		return rc;
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t dev = 0;

		if (ioctl(p->fd, BLKGETSIZE64, &dev) == 0 && dev < bytes)
			bytes = dev;
	} else if ((uint64_t)st.st_size < bytes) {
		int rc = posix_fallocate(p->fd, 0, (off_t)bytes);

		if (rc) {
			/* A sparse file still works until the disk fills. */
			say(nv, false, "nvme: %s: cannot preallocate %llu bytes (%s); using a sparse file",
			    name, (unsigned long long)bytes, strerror(rc));
			if (ftruncate(p->fd, (off_t)bytes) < 0) {
				rc = -errno;
				say(nv, true, "nvme: %s: cannot size to %llu bytes: %s; path left out",
				    name, (unsigned long long)bytes, strerror(-rc));
				return rc;
			}
		}
	}
	p->bytes = bytes;
	p->nregions = bytes > HDR ? (uint32_t)((bytes - HDR) / nv->cfg.region_bytes) : 0;
	if (p->nregions == 0) {
		say(nv, true, "nvme: %s: %llu bytes hold no region of %llu bytes; path left out",
		    name, (unsigned long long)bytes,
		    (unsigned long long)nv->cfg.region_bytes);
		return -ENOSPC;
	}
	p->usable = true;
	return 0;
}

static int segment_register(struct kvt_nvme *nv, uint32_t segment, void *base)
{
	struct iovec iov = { base, base ? nv->cfg.segment_bytes : 0 };
	int rc = io_uring_register_buffers_update_tag(&nv->ring, segment, &iov,
						      NULL, 1);

	nv->seg_fixed[segment] = base && rc == 1;
	return rc < 0 ? rc : 0;
}

void kvt_nvme_segment(struct kvt_nvme *nv, uint32_t segment, void *base)
{
	int rc;

	if (!nv || !nv->fixed_bufs || segment >= KVT_HOST_SEGMENTS_MAX)
		return;
	rc = segment_register(nv, segment, base);
	if (rc < 0 && base)
		say(nv, false, "nvme: host segment %u not registered with io_uring (%s): its I/O goes through an unregistered buffer",
		    segment, strerror(-rc));
}

static void register_buffers(struct kvt_nvme *nv)
{
	int fds[KVT_NVME_PATHS_MAX];
	int rc;

	for (uint32_t i = 0; i < nv->npaths; i++)
		fds[i] = nv->paths[i].usable ? nv->paths[i].fd : -1;
	rc = io_uring_register_files(&nv->ring, fds, nv->npaths);
	if (rc < 0) {
		say(nv, true, "nvme: cannot register files: %s", strerror(-rc));
		return;
	}
	nv->fixed = true;
	rc = io_uring_register_buffers_sparse(&nv->ring, KVT_HOST_SEGMENTS_MAX);
	nv->fixed_bufs = rc == 0;
	for (uint32_t i = 0; rc == 0 && i < nv->cfg.nsegments; i++)
		rc = segment_register(nv, i, nv->cfg.segments[i]);
	if (rc < 0)
		say(nv, false, "nvme: host segments not registered with io_uring (%s; is LimitMEMLOCK too low?): I/O goes through unregistered buffers",
		    strerror(-rc));
}

int kvt_nvme_open(const struct kvt_nvme_config *cfg, struct kvt_nvme **out,
		  char *err, size_t errlen)
{
	struct kvt_nvme *nv;
	uint32_t usable = 0;
	int rc;

	if (cfg->npaths == 0 || cfg->npaths > KVT_NVME_PATHS_MAX) {
		snprintf(err, errlen, "nvme: %u paths (1..%d)", cfg->npaths,
			 KVT_NVME_PATHS_MAX);
		return -EINVAL;
	}
	if (cfg->region_bytes % HDR || cfg->region_bytes < 2 * HDR +
	    kvt_nvme_record_bytes(cfg->segment_bytes)) {
		snprintf(err, errlen,
			 "nvme: region size %llu must be a multiple of 4096 that holds a record of the largest page (%llu)",
			 (unsigned long long)cfg->region_bytes,
			 (unsigned long long)(2 * HDR + kvt_nvme_record_bytes(cfg->segment_bytes)));
		return -EINVAL;
	}
	nv = calloc(1, sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	nv->cfg = *cfg;
	nv->efd = -1;
	nv->npaths = cfg->npaths;
	nv->st.paths = cfg->npaths;
	for (uint32_t i = 0; i < cfg->npaths; i++) {
		nv->paths[i].fd = -1;
		if (open_path(nv, &nv->paths[i], cfg->paths[i]) == 0)
			usable++;
		else if (nv->paths[i].fd >= 0) {
			close(nv->paths[i].fd);
			nv->paths[i].fd = -1;
		}
	}
	if (!usable) {
		snprintf(err, errlen, "nvme: none of the %u paths is usable (see the log)",
			 cfg->npaths);
		kvt_nvme_close(nv);
		return -ENODEV;
	}
	for (uint32_t i = 0; i < nv->npaths; i++) {
		nv->paths[i].first_region = nv->nregions;
		nv->nregions += nv->paths[i].nregions;
	}
	nv->regions = calloc(nv->nregions, sizeof(*nv->regions));
	nv->ns = calloc(cfg->max_namespaces, sizeof(*nv->ns));
	nv->zero = aligned_alloc(HDR, HDR);
	if (!nv->regions || !nv->ns || !nv->zero) {
		kvt_nvme_close(nv);
		return -ENOMEM;
	}
	memset(nv->zero, 0, HDR);
	for (uint32_t i = 0; i < nv->npaths; i++)
		for (uint32_t r = 0; r < nv->paths[i].nregions; r++) {
			nv->regions[nv->paths[i].first_region + r].path = i;
			nv->regions[nv->paths[i].first_region + r].ns = NO_REGION;
		}
	for (uint32_t n = 0; n < cfg->max_namespaces; n++)
		for (uint32_t i = 0; i < KVT_NVME_PATHS_MAX; i++)
			nv->ns[n].open[i] = NO_REGION;
	rc = io_uring_queue_init(cfg->queue_depth * 2 + 8, &nv->ring, 0);
	if (rc < 0) {
		snprintf(err, errlen, "nvme: io_uring_queue_init: %s", strerror(-rc));
		kvt_nvme_close(nv);
		return rc;
	}
	nv->ring_ok = true;
	nv->efd = eventfd(0, EFD_CLOEXEC);
	if (nv->efd < 0) {
		rc = -errno;
		kvt_nvme_close(nv);
		return rc;
	}
	register_buffers(nv);
	nv->st.fixed_buffers = nv->fixed_bufs && nv->seg_fixed[0];
	for (uint32_t i = 0; i < nv->npaths; i++)
		if (nv->paths[i].usable)
			nv->st.capacity_bytes += (uint64_t)nv->paths[i].nregions *
						 cfg->region_bytes;
	nv->st.regions = nv->nregions;
	*out = nv;
	return 0;
}

/* ---- recovery ---- */

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread(fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

static int write_at(int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = pwrite(fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

/* Checks a path's superblock; a missing or foreign one is written anew. */
static int check_super(struct kvt_nvme *nv, struct path *p, void *buf)
{
	struct disk_super *s = buf;

	if (read_at(p->fd, buf, HDR, 0) == 0 && s->magic == SUPER_MAGIC &&
	    SEALED_OK(s) && s->region_bytes == nv->cfg.region_bytes &&
	    s->path_bytes == p->bytes) {
		memcpy(p->tier_id, s->tier_id, sizeof(p->tier_id));
		return 1;
	}
	memset(buf, 0, HDR);
	s->magic = SUPER_MAGIC;
	s->path_bytes = p->bytes;
	s->region_bytes = nv->cfg.region_bytes;
	if (getrandom(s->tier_id, sizeof(s->tier_id), 0) != sizeof(s->tier_id))
		return -EIO;
	SEAL(s);
	memcpy(p->tier_id, s->tier_id, sizeof(p->tier_id));
	say(nv, false, "nvme: %s: formatting (%u regions of %llu bytes)",
	    p->name, p->nregions, (unsigned long long)nv->cfg.region_bytes);
	return write_at(p->fd, buf, HDR, 0);
}

static bool region_hdr_valid(const struct kvt_nvme *nv, const struct path *p,
			     const struct disk_region *h)
{
	return h->magic == REGION_MAGIC && SEALED_OK(h) &&
	       memcmp(h->tier_id, p->tier_id, sizeof(h->tier_id)) == 0 &&
	       h->stride % HDR == 0 && h->page_bytes && h->page_bytes <= h->stride &&
	       h->stride <= nv->cfg.segment_bytes &&
	       memchr(h->ns, 0, sizeof(h->ns)) != NULL && h->ns[0] &&
	       memchr(h->tenant, 0, sizeof(h->tenant)) != NULL;
}

/* The namespace a recovered region's header names. */
static void region_ns(const struct disk_region *h, struct kvt_nvme_ns *d)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", h->ns);
	d->page_bytes = h->page_bytes;
	d->stride = h->stride;
	d->block_tokens = h->block_tokens;
	d->shared = h->shared != 0;
	d->uid = h->uid;
	snprintf(d->tenant, sizeof(d->tenant), "%s", h->tenant);
}

/* The engine's id (from ns_fn) for a recovered namespace, or -1. */
static int recovered_ns(struct kvt_nvme *nv, const struct kvt_nvme_ns *d,
			int (*ns_fn)(void *, const struct kvt_nvme_ns *),
			void *arg)
{
	int id = ns_fn(arg, d);

	if (id < 0 || (uint32_t)id >= nv->cfg.max_namespaces)
		return -1;
	if (!nv->ns[id].known) {
		nv->ns[id].d = *d;
		nv->ns[id].known = true;
	}
	return id;
}

/* A recovered region that holds nothing to keep is free again. */
static void region_forget(struct region *g)
{
	free(g->slots);
	g->slots = NULL;
	g->state = REGION_FREE;
	g->ns = NO_REGION;
}

/*
 * Reads the record headers of region r in batches through the ring. Its
 * namespace (d) is brought back at its first whole record only, so that
 * a dropped namespace, whose records were all invalidated, stays dropped;
 * a region with none is free.
 */
static void recover_records(struct kvt_nvme *nv, uint32_t r, uint8_t *bufs,
			    const struct kvt_nvme_ns *d,
			    int (*ns_fn)(void *, const struct kvt_nvme_ns *),
			    void *(*rec_fn)(void *, const struct kvt_nvme_record *),
			    void *arg)
{
	struct region *g = &nv->regions[r];
	struct path *p = &nv->paths[g->path];
	int id = -1;

	for (uint32_t base = 0; base < g->nslots; base += RECOVERY_BATCH) {
		uint32_t n = g->nslots - base < RECOVERY_BATCH ? g->nslots - base :
								 RECOVERY_BATCH;
		struct io_uring_cqe *cqe;
		int res[RECOVERY_BATCH];

		for (uint32_t i = 0; i < n; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&nv->ring);

			if (!sqe) {
				io_uring_submit(&nv->ring);
				sqe = io_uring_get_sqe(&nv->ring);
			}
			io_uring_prep_read(sqe, p->fd, bufs + (size_t)i * HDR, HDR,
					   record_offset(nv, r, base + i));
			io_uring_sqe_set_data64(sqe, i);
		}
		io_uring_submit(&nv->ring);
		for (uint32_t i = 0; i < n; i++) {
			if (io_uring_wait_cqe(&nv->ring, &cqe) < 0)
				goto out;
			res[io_uring_cqe_get_data64(cqe)] = cqe->res;
			io_uring_cqe_seen(&nv->ring, cqe);
		}
		for (uint32_t i = 0; i < n; i++) {
			const struct disk_record *h =
				(const void *)(bufs + (size_t)i * HDR);
			struct kvt_nvme_record rec = { 0 };
			void *user;

			if (res[i] != HDR || h->magic != RECORD_MAGIC ||
			    !SEALED_OK(h) || h->seq != g->seq ||
			    h->slot != base + i || h->page_bytes != g->page_bytes)
				continue;
			if (id < 0 && (id = recovered_ns(nv, d, ns_fn, arg)) < 0)
				goto out; /* the engine does not take it */
			g->ns = (uint32_t)id;
			rec.ns = g->ns;
			memcpy(rec.block.key, h->key, 16);
			memcpy(rec.block.parent, h->parent, 16);
			rec.block.has_parent = h->has_parent != 0;
			rec.block.uid = h->uid;
			memcpy(rec.block.tenant, h->tenant, sizeof(h->tenant));
			rec.block.tenant[KVT_NVME_TENANT_MAX - 1] = 0;
			rec.loc.region = r;
			rec.loc.slot = base + i;
			user = rec_fn(arg, &rec);
			if (!user)
				continue;
			g->slots[base + i].user = user;
			g->slots[base + i].sum = h->page_sum;
			g->live++;
			nv->st.recovered_records++;
		}
	}
out:
	if (g->live == 0)
		region_forget(g);
}

static int by_seq(const void *a, const void *b, void *arg)
{
	const struct region *rg = arg;
	uint64_t x = rg[*(const uint32_t *)a].seq, y = rg[*(const uint32_t *)b].seq;

	return x < y ? -1 : x > y;
}

int kvt_nvme_recover(struct kvt_nvme *nv,
		     int (*ns_fn)(void *arg, const struct kvt_nvme_ns *ns),
		     void *(*rec_fn)(void *arg, const struct kvt_nvme_record *r),
		     void *arg)
{
	uint8_t *bufs = aligned_alloc(HDR, (size_t)HDR * RECOVERY_BATCH);
	uint32_t *order = calloc(nv->nregions ? nv->nregions : 1, sizeof(*order));
	/* Per region: the namespace its header names. */
	struct kvt_nvme_ns *descs = calloc(nv->nregions ? nv->nregions : 1,
					   sizeof(*descs));
	uint32_t nfound = 0;
	uint64_t t0 = mono_ns();

	if (!bufs || !order || !descs) {
		free(bufs);
		free(order);
		free(descs);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < nv->npaths; i++) {
		struct path *p = &nv->paths[i];
		int rc;

		if (!p->usable)
			continue;
		rc = check_super(nv, p, bufs);
		if (rc < 0) {
			say(nv, true, "nvme: %s: cannot write the superblock: %s; path left out",
			    p->name, strerror(-rc));
			p->usable = false;
			nv->st.capacity_bytes -= (uint64_t)p->nregions * nv->cfg.region_bytes;
			continue;
		}
		for (uint32_t r = p->first_region; rc == 1 &&
		     r < p->first_region + p->nregions; r++) {
			const struct disk_region *h = (const void *)bufs;
			struct region *g = &nv->regions[r];

			if (read_at(p->fd, bufs, HDR, region_offset(nv, r)) < 0 ||
			    !region_hdr_valid(nv, p, h))
				continue;
			region_ns(h, &descs[r]);
			g->seq = h->seq;
			g->stride = h->stride;
			g->page_bytes = h->page_bytes;
			g->nslots = (uint32_t)((nv->cfg.region_bytes - HDR) /
					       kvt_nvme_record_bytes(g->stride));
			g->next = g->nslots;
			g->state = REGION_SEALED;
			g->slots = calloc(g->nslots, sizeof(*g->slots));
			if (!g->slots) {
				region_forget(g);
				continue;
			}
			if (g->seq >= nv->seq)
				nv->seq = g->seq + 1;
			order[nfound++] = r;
		}
	}
	/* Oldest first, so that a key found twice ends up with its newest record. */
	qsort_r(order, nfound, sizeof(*order), by_seq, nv->regions);
	for (uint32_t i = 0; i < nfound; i++)
		recover_records(nv, order[i], bufs, &descs[order[i]], ns_fn,
				rec_fn, arg);
	nv->st.recovery_ms = (mono_ns() - t0) / 1000000;
	free(bufs);
	free(order);
	free(descs);
	return 0;
}

/* ---- the queue (locked) ---- */

static void enqueue(struct kvt_nvme *nv, struct io *io)
{
	io->next = NULL;
	if (nv->tail)
		nv->tail->next = io;
	else
		nv->head = io;
	nv->tail = io;
	nv->queued++;
	if (io->kind == IO_WRITE)
		nv->writes_queued++;
	if (nv->sleeping) {
		nv->sleeping = false;
		(void)eventfd_write(nv->efd, 1);
	}
}

static struct io *dequeue(struct kvt_nvme *nv)
{
	struct io *io = nv->head;

	if (!io)
		return NULL;
	nv->head = io->next;
	if (!nv->head)
		nv->tail = NULL;
	nv->queued--;
	return io;
}

static bool path_writable(const struct path *p, uint64_t now)
{
	return p->usable && p->failed_until <= now;
}

void kvt_nvme_namespace_close(struct kvt_nvme *nv, uint32_t ns)
{
	for (uint32_t r = 0; r < nv->nregions; r++) {
		struct region *g = &nv->regions[r];

		if (g->ns == ns && g->state == REGION_OPEN)
			g->state = REGION_SEALED;
	}
	for (uint32_t p = 0; p < KVT_NVME_PATHS_MAX; p++)
		nv->ns[ns].open[p] = NO_REGION;
	nv->ns[ns].known = false;
}

int kvt_nvme_namespace(struct kvt_nvme *nv, uint32_t ns,
		       const struct kvt_nvme_ns *desc)
{
	if (ns >= nv->cfg.max_namespaces)
		return -EINVAL;
	kvt_nvme_namespace_close(nv, ns);
	nv->ns[ns].d = *desc;
	nv->ns[ns].known = true;
	return 0;
}

int kvt_nvme_write(struct kvt_nvme *nv, void *user, uint32_t ns,
		   const struct kvt_nvme_block *blk, uint32_t segment,
		   uint64_t offset)
{
	uint64_t now = mono_ns();
	bool any = false;
	struct io *io;

	if (nv->stopping || !nv->ns[ns].known ||
	    nv->writes_queued >= 4 * nv->cfg.queue_depth + 64)
		return -EAGAIN;
	for (uint32_t i = 0; i < nv->npaths && !any; i++)
		any = path_writable(&nv->paths[i], now);
	if (!any)
		return -EIO;
	io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	io->kind = IO_WRITE;
	io->user = user;
	io->ns = ns;
	io->blk = *blk;
	io->segment = segment;
	io->offset = offset;
	enqueue(nv, io);
	return 0;
}

int kvt_nvme_read(struct kvt_nvme *nv, void *user, struct kvt_nvme_loc loc,
		  uint32_t segment, uint64_t offset)
{
	struct region *g = &nv->regions[loc.region];
	struct io *io = calloc(1, sizeof(*io));

	if (!io)
		return -ENOMEM;
	io->kind = IO_READ;
	io->user = user;
	io->loc = loc;
	io->segment = segment;
	io->offset = offset;
	io->sum = g->slots[loc.slot].sum;
	g->inflight++;
	enqueue(nv, io);
	return 0;
}

void kvt_nvme_forget(struct kvt_nvme *nv, struct kvt_nvme_loc loc)
{
	struct region *g = &nv->regions[loc.region];
	struct io *io;

	if (!g->slots[loc.slot].user)
		return;
	g->slots[loc.slot].user = NULL;
	g->live--;
	io = calloc(1, sizeof(*io));
	if (!io)
		return; /* the header stays; recovery may bring the block back */
	io->kind = IO_INVALIDATE;
	io->loc = loc;
	g->inflight++;
	enqueue(nv, io);
}

/* ---- regions (the mover, locked) ---- */

static void reclaim(struct kvt_nvme *nv, struct region *g)
{
	for (uint32_t s = 0; s < g->nslots; s++) {
		void *user = g->slots[s].user;

		if (!user)
			continue;
		g->slots[s].user = NULL;
		g->live--;
		nv->st.reclaimed_total++;
		nv->cfg.ops.reclaimed(nv->cfg.arg, user);
	}
	if (g->state == REGION_OPEN)
		nv->ns[g->ns].open[g->path] = NO_REGION;
	free(g->slots);
	g->slots = NULL;
	g->state = REGION_FREE;
	g->ns = NO_REGION;
}

/* A free region of path p: an unused one, else the oldest sealed one with no
 * I/O outstanding (preferring one without live records). */
static struct region *region_take(struct kvt_nvme *nv, uint32_t p)
{
	struct path *pa = &nv->paths[p];
	struct region *best = NULL;

	for (uint32_t r = pa->first_region; r < pa->first_region + pa->nregions; r++) {
		struct region *g = &nv->regions[r];

		if (g->state == REGION_FREE)
			return g;
		if (g->state != REGION_SEALED || g->inflight)
			continue;
		if (!best || (g->live == 0 && best->live) ||
		    ((g->live == 0) == (best->live == 0) && g->seq < best->seq))
			best = g;
	}
	if (best)
		reclaim(nv, best);
	return best;
}

static void path_failed(struct kvt_nvme *nv, struct path *p, int rc)
{
	uint64_t now = mono_ns();

	if (p->failed_until <= now) {
		say(nv, true, "nvme: %s: write failed: %s; no writes to it for %llu s",
		    p->name, strerror(-rc),
		    (unsigned long long)(nv->cfg.retry_ns / 1000000000ull));
	}
	p->failed_until = now + nv->cfg.retry_ns;
}

/*
 * Gives a queued write its record slot: the next slot of the region its
 * namespace fills on the next writable path, opening a region (and writing
 * its header, without the lock) when there is none.
 */
static int place_write(struct kvt_nvme *nv, struct io *io)
{
	struct nsdesc *d = &nv->ns[io->ns];
	uint64_t now = mono_ns();
	struct region *g = NULL;
	struct disk_region *h;
	uint32_t p = 0, r;
	int rc;

	if (!d->known)
		return -ECANCELED; /* its namespace was dropped */
	for (uint32_t i = 0; i < nv->npaths; i++) {
		p = (nv->next_path + i) % nv->npaths;
		if (path_writable(&nv->paths[p], now))
			break;
		p = NO_REGION;
	}
	if (p == NO_REGION)
		return -EIO;
	nv->next_path = p + 1;
	if (d->open[p] != NO_REGION) {
		g = &nv->regions[d->open[p]];
	} else {
		g = region_take(nv, p);
		if (!g)
			return -EAGAIN; /* every region has I/O outstanding */
		r = (uint32_t)(g - nv->regions);
		g->ns = io->ns;
		g->stride = d->d.stride;
		g->page_bytes = d->d.page_bytes;
		g->nslots = (uint32_t)((nv->cfg.region_bytes - HDR) /
				       kvt_nvme_record_bytes(g->stride));
		g->slots = calloc(g->nslots, sizeof(*g->slots));
		if (!g->slots) {
			g->ns = NO_REGION;
			return -ENOMEM;
		}
		g->seq = nv->seq++;
		g->next = 0;
		g->state = REGION_OPEN;
		g->inflight++;
		h = aligned_alloc(HDR, HDR);
		if (!h) {
			g->inflight--;
			reclaim(nv, g);
			return -ENOMEM;
		}
		memset(h, 0, HDR);
		h->magic = REGION_MAGIC;
		h->seq = g->seq;
		h->page_bytes = g->page_bytes;
		h->stride = g->stride;
		memcpy(h->tier_id, nv->paths[p].tier_id, sizeof(h->tier_id));
		h->block_tokens = d->d.block_tokens;
		h->shared = d->d.shared;
		h->uid = d->d.uid;
		snprintf(h->ns, sizeof(h->ns), "%s", d->d.name);
		snprintf(h->tenant, sizeof(h->tenant), "%s", d->d.tenant);
		SEAL(h);
		/* One 4 KiB write per region: done here, off the lock. */
		pthread_mutex_unlock(nv->cfg.lock);
		rc = write_at(nv->paths[p].fd, h, HDR, region_offset(nv, r));
		pthread_mutex_lock(nv->cfg.lock);
		free(h);
		g->inflight--;
		if (rc < 0) {
			nv->st.write_errors_total++;
			path_failed(nv, &nv->paths[p], rc);
			reclaim(nv, g);
			return rc;
		}
		if (g->state == REGION_OPEN) /* else closed meanwhile */
			d->open[p] = r;
	}
	io->loc.region = (uint32_t)(g - nv->regions);
	io->loc.slot = g->next++;
	if (g->next == g->nslots) {
		g->state = REGION_SEALED;
		d->open[p] = NO_REGION;
	}
	g->inflight++;
	return 0;
}

/* ---- the mover ---- */

/* Fills in and queues the SQEs of io. Without the lock. */
static int submit_io(struct kvt_nvme *nv, struct io *io)
{
	struct region *g = &nv->regions[io->loc.region];
	struct path *p = &nv->paths[g->path];
	uint64_t rec = record_offset(nv, io->loc.region, io->loc.slot);
	void *page = host_page(nv, io->segment, io->offset);
	struct io_uring_sqe *sqe;
	unsigned flags = 0;
	int fd = p->fd;

	if (nv->fixed) {
		fd = (int)g->path;
		flags = IOSQE_FIXED_FILE;
	}
	if (io->kind == IO_INVALIDATE) {
		sqe = io_uring_get_sqe(&nv->ring);
		io_uring_prep_write(sqe, fd, nv->zero, HDR, rec);
		sqe->flags |= flags;
		io_uring_sqe_set_data(sqe, io);
		io->pending = 1;
		return 0;
	}
	if (io->kind == IO_READ) {
		sqe = io_uring_get_sqe(&nv->ring);
		if (nv->seg_fixed[io->segment])
			io_uring_prep_read_fixed(sqe, fd, page, (unsigned)g->stride,
						 rec + HDR, (int)io->segment);
		else
			io_uring_prep_read(sqe, fd, page, (unsigned)g->stride,
					   rec + HDR);
		sqe->flags |= flags;
		io_uring_sqe_set_data(sqe, io);
		io->pending = 1;
		return 0;
	}
	/* A demotion: the page, then (linked: only if the page made it) its header. */
	struct disk_record *h = io->hdr = aligned_alloc(HDR, HDR);

	if (!h)
		return -ENOMEM;
	memset(h, 0, HDR);
	h->magic = RECORD_MAGIC;
	h->seq = g->seq;
	h->page_bytes = g->page_bytes;
	h->page_sum = io->sum = XXH3_64bits(page, g->page_bytes);
	h->slot = io->loc.slot;
	h->uid = io->blk.uid;
	h->has_parent = io->blk.has_parent;
	memcpy(h->key, io->blk.key, 16);
	memcpy(h->parent, io->blk.parent, 16);
	memcpy(h->tenant, io->blk.tenant, sizeof(h->tenant));
	SEAL(h);
	sqe = io_uring_get_sqe(&nv->ring);
	if (nv->seg_fixed[io->segment])
		io_uring_prep_write_fixed(sqe, fd, page, (unsigned)g->stride,
					  rec + HDR, (int)io->segment);
	else
		io_uring_prep_write(sqe, fd, page, (unsigned)g->stride, rec + HDR);
	sqe->flags |= flags | IOSQE_IO_LINK;
	io_uring_sqe_set_data(sqe, io);
	sqe = io_uring_get_sqe(&nv->ring);
	io_uring_prep_write(sqe, fd, h, HDR, rec);
	sqe->flags |= flags;
	io_uring_sqe_set_data(sqe, io);
	io->pending = 2;
	return 0;
}

/* Reports a finished io to the engine and frees it. Locked. */
static void complete_io(struct kvt_nvme *nv, struct io *io)
{
	struct region *g = &nv->regions[io->loc.region];

	g->inflight--;
	switch (io->kind) {
	case IO_WRITE:
		if (io->rc == 0) {
			g->slots[io->loc.slot].user = io->user;
			g->slots[io->loc.slot].sum = io->sum;
			g->live++;
			nv->st.writes_total++;
			nv->st.write_bytes_total += g->page_bytes;
		} else {
			nv->st.write_errors_total++;
			if (io->rc != -ENOMEM) /* our memory, not the disk */
				path_failed(nv, &nv->paths[g->path], io->rc);
		}
		nv->cfg.ops.written(nv->cfg.arg, io->user, io->rc, io->loc);
		break;
	case IO_READ:
		if (io->rc == 0) {
			nv->st.reads_total++;
			nv->st.read_bytes_total += g->page_bytes;
		} else if (io->rc == -EBADMSG) {
			nv->st.bad_checksum_total++;
			say(nv, true, "nvme: %s: record %u/%u failed its checksum: not served",
			    nv->paths[g->path].name, io->loc.region, io->loc.slot);
		} else {
			nv->st.read_errors_total++;
			say(nv, true, "nvme: %s: read of record %u/%u failed: %s",
			    nv->paths[g->path].name, io->loc.region,
			    io->loc.slot, strerror(-io->rc));
		}
		nv->cfg.ops.read(nv->cfg.arg, io->user, io->rc);
		break;
	case IO_INVALIDATE:
		break;
	}
	free(io->hdr);
	free(io);
}

/* Records the first failure of io's CQEs; a short transfer is -EIO. */
static void check_result(struct kvt_nvme *nv, struct io *io, int res)
{
	const struct region *g = &nv->regions[io->loc.region];
	/* A demotion's page completes before its header. */
	bool page = io->kind == IO_READ || (io->kind == IO_WRITE && io->pending == 2);
	int want = page ? (int)g->stride : HDR;

	/* A short write is what a full disk gives; a short read, a bad one. */
	if (io->rc == 0 && res != want)
		io->rc = res < 0 ? res : io->kind == IO_READ ? -EIO : -ENOSPC;
}

static void arm_wakeup(struct kvt_nvme *nv)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&nv->ring);

	io_uring_prep_read(sqe, nv->efd, &nv->efd_buf, sizeof(nv->efd_buf), 0);
	io_uring_sqe_set_data64(sqe, WAKE_TAG);
}

/* Moves finished ios off the ring onto *done; returns how many left the
 * device. Reads are not verified yet. */
static uint32_t harvest(struct kvt_nvme *nv, struct io **done)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;
	uint32_t n = 0;

	io_uring_for_each_cqe(&nv->ring, head, cqe) {
		struct io *io = io_uring_cqe_get_data(cqe);

		seen++;
		if (io_uring_cqe_get_data64(cqe) == WAKE_TAG) {
			arm_wakeup(nv);
			continue;
		}
		check_result(nv, io, cqe->res);
		if (--io->pending)
			continue;
		io->next = *done;
		*done = io;
		n++;
	}
	io_uring_cq_advance(&nv->ring, seen);
	return n;
}

/* A promoted page is checked before anybody may see it. */
static void verify(struct kvt_nvme *nv, struct io *done)
{
	for (struct io *io = done; io; io = io->next)
		if (io->rc == 0 && io->kind == IO_READ &&
		    XXH3_64bits(host_page(nv, io->segment, io->offset),
				nv->regions[io->loc.region].page_bytes) != io->sum)
			io->rc = -EBADMSG;
}

/*
 * The mover: keeps up to queue_depth ios on the device, and checks and
 * reports finished ones while the next ones run, so that checksums do not
 * leave the disk idle.
 */
static void *mover_main(void *arg)
{
	struct kvt_nvme *nv = arg;
	uint32_t qd = nv->cfg.queue_depth, left = 0;
	struct io **batch = calloc(qd, sizeof(*batch));
	struct io *done = NULL; /* off the device, not reported yet */
	bool report = false;

	arm_wakeup(nv);
	pthread_mutex_lock(nv->cfg.lock);
	for (;;) {
		uint32_t n = 0;

		nv->inflight -= left;
		while (batch && nv->inflight < qd && nv->head) {
			struct io *io = dequeue(nv);

			if (io->kind == IO_WRITE) {
				nv->writes_queued--;
				io->rc = place_write(nv, io);
				if (io->rc < 0) {
					nv->cfg.ops.written(nv->cfg.arg, io->user,
							    io->rc, io->loc);
					free(io);
					report = true;
					continue;
				}
			}
			nv->inflight++;
			batch[n++] = io;
		}
		if (nv->stopping && !nv->inflight && !nv->head && !done)
			break;
		nv->sleeping = !done && !report;
		pthread_mutex_unlock(nv->cfg.lock);

		left = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (submit_io(nv, batch[i]) < 0) {
				batch[i]->rc = -ENOMEM;
				batch[i]->next = done;
				done = batch[i];
				left++;
			}
		}
		if (done || report) {
			io_uring_submit(&nv->ring);
			verify(nv, done);
			pthread_mutex_lock(nv->cfg.lock);
			while (done) {
				struct io *io = done;

				done = io->next;
				complete_io(nv, io);
			}
			report = false;
			pthread_mutex_unlock(nv->cfg.lock);
			if (nv->cfg.ops.unlocked)
				nv->cfg.ops.unlocked(nv->cfg.arg);
		} else {
			io_uring_submit_and_wait(&nv->ring, 1);
		}
		left += harvest(nv, &done);
		pthread_mutex_lock(nv->cfg.lock);
		nv->sleeping = false;
	}
	pthread_mutex_unlock(nv->cfg.lock);
	free(batch);
	return NULL;
}

int kvt_nvme_start(struct kvt_nvme *nv)
{
	if (pthread_create(&nv->mover, NULL, mover_main, nv))
		return -EAGAIN;
	nv->started = true;
	return 0;
}

void kvt_nvme_close(struct kvt_nvme *nv)
{
	if (!nv)
		return;
	if (nv->started) {
		pthread_mutex_lock(nv->cfg.lock);
		nv->stopping = true;
		if (nv->sleeping) {
			nv->sleeping = false;
			(void)eventfd_write(nv->efd, 1);
		}
		pthread_mutex_unlock(nv->cfg.lock);
		pthread_join(nv->mover, NULL);
	}
	while (nv->head) /* queued before start, or never started */
		free(dequeue(nv));
	if (nv->ring_ok)
		io_uring_queue_exit(&nv->ring);
	if (nv->efd >= 0)
		close(nv->efd);
	for (uint32_t i = 0; i < nv->npaths; i++)
		if (nv->paths[i].fd >= 0)
			close(nv->paths[i].fd);
	for (uint32_t r = 0; nv->regions && r < nv->nregions; r++)
		free(nv->regions[r].slots);
	free(nv->regions);
	free(nv->ns);
	free(nv->zero);
	free(nv);
}

void kvt_nvme_stats(struct kvt_nvme *nv, struct kvt_nvme_stats *st)
{
	uint64_t now = mono_ns();

	*st = nv->st;
	st->used_bytes = 0;
	st->regions_used = 0;
	st->paths_failed = 0;
	for (uint32_t r = 0; r < nv->nregions; r++) {
		const struct region *g = &nv->regions[r];

		if (g->state == REGION_FREE)
			continue;
		st->regions_used++;
		st->used_bytes += (uint64_t)g->live * g->page_bytes;
	}
	for (uint32_t i = 0; i < nv->npaths; i++)
		st->paths_failed += !path_writable(&nv->paths[i], now);
	st->queued = nv->queued;
	st->inflight = nv->inflight;
}

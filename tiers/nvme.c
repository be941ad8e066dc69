/*
 * The nvme store: opening the paths, the queue of demotions and
 * promotions, regions (taken oldest first, reclaimed, sealed) and the
 * mover thread that drives io_uring. The on-disk format and the shared
 * state are in nvme_int.h; reading back what the paths hold at start is
 * nvme_recover.c.
 */
#include "nvme_int.h"

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

void nvme_say(struct kvt_nvme *nv, bool error, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (nv->cfg.ops.log)
		nv->cfg.ops.log(nv->cfg.arg, error, msg);
}

uint64_t kvt_nvme_record_bytes(uint64_t stride)
{
	return HDR + stride;
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

		nvme_say(nv, true, "nvme: %s: cannot open: %s; path left out", name,
		    strerror(-rc));
		return rc;
	}
	if (fstat(p->fd, &st) < 0) {
		int rc = -errno;

		nvme_say(nv, true, "nvme: %s: cannot stat: %s; path left out", name,
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
			nvme_say(nv, false, "nvme: %s: cannot preallocate %llu bytes (%s); using a sparse file",
			    name, (unsigned long long)bytes, strerror(rc));
			if (ftruncate(p->fd, (off_t)bytes) < 0) {
				rc = -errno;
				nvme_say(nv, true, "nvme: %s: cannot size to %llu bytes: %s; path left out",
				    name, (unsigned long long)bytes, strerror(-rc));
				return rc;
			}
		}
	}
	p->bytes = bytes;
	p->nregions = bytes > HDR ? (uint32_t)((bytes - HDR) / nv->cfg.region_bytes) : 0;
	if (p->nregions == 0) {
		nvme_say(nv, true, "nvme: %s: %llu bytes hold no region of %llu bytes; path left out",
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
		nvme_say(nv, false, "nvme: host segment %u not registered with io_uring (%s): its I/O goes through an unregistered buffer",
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
		nvme_say(nv, true, "nvme: cannot register files: %s", strerror(-rc));
		return;
	}
	nv->fixed = true;
	rc = io_uring_register_buffers_sparse(&nv->ring, KVT_HOST_SEGMENTS_MAX);
	nv->fixed_bufs = rc == 0;
	for (uint32_t i = 0; rc == 0 && i < nv->cfg.nsegments; i++)
		rc = segment_register(nv, i, nv->cfg.segments[i]);
	if (rc < 0)
		nvme_say(nv, false, "nvme: host segments not registered with io_uring (%s; is LimitMEMLOCK too low?): I/O goes through unregistered buffers",
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
		nvme_say(nv, true, "nvme: %s: write failed: %s; no writes to it for %llu s",
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
		rc = nvme_write_at(nv->paths[p].fd, h, HDR, region_offset(nv, r));
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
			nvme_say(nv, true, "nvme: %s: record %u/%u failed its checksum: not served",
			    nv->paths[g->path].name, io->loc.region, io->loc.slot);
		} else {
			nv->st.read_errors_total++;
			nvme_say(nv, true, "nvme: %s: read of record %u/%u failed: %s",
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


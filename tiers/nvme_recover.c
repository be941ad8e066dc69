/*
 * Reading back what the nvme paths hold, at start (before the mover
 * runs): superblocks checked (or written anew), then per region with a
 * valid header its namespace and its whole records, newest region first
 * for a key found twice. A record is whole when its header's checksum and
 * its region's generation match; its page is checked when promoted.
 */
#include "nvme_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread(fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

int nvme_write_at(int fd, const void *buf, size_t len, uint64_t off)
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
	nvme_say(nv, false, "nvme: %s: formatting (%u regions of %llu bytes)",
	    p->name, p->nregions, (unsigned long long)nv->cfg.region_bytes);
	return nvme_write_at(p->fd, buf, HDR, 0);
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
			nvme_say(nv, true, "nvme: %s: cannot write the superblock: %s; path left out",
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


/*
 * The hbm tier: one pool of GPU memory per configured device, allocated once
 * and carved into page slots like the host tier (slots.c), holding copies of
 * the hot blocks of the host tier.
 *
 * Copies, not moves: a block enters a pool by the daemon copying its host
 * page in (on its own stream, when a worker on that GPU acquires it), and
 * keeps its host slot. So leaving hbm costs no copy and loses nothing (the
 * flow hbm -> host -> nvme is a drop, then the host tier's own demotion),
 * a GPU reset or a daemon crash loses no block, and a worker on another GPU
 * or on none reads the same block from the host tier. A block's copy goes
 * when its host slot goes. Workers on the pool's GPU read it device to
 * device through the pool's CUDA IPC handle.
 *
 * A pool that is full makes room by dropping the least recently used of 16
 * sampled copies of the same namespace that nobody has pinned.
 *
 * The device side (allocation, IPC handles, host registration, copies) is a
 * table of functions (struct kvt_hbm_ops): tiers/hbm_cuda.c on a CUDA build.
 * Not thread-safe: the engine calls it under its lock; copies complete on
 * the ops' own thread, which calls back into the engine.
 */
#ifndef KVT_HBM_H
#define KVT_HBM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index.h"

#define KVT_GPU_UUID_BYTES 16
#define KVT_HBM_IPC_BYTES 64 /* sizeof(cudaIpcMemHandle_t) */
#define KVT_HBM_DEVICES_MAX 16

struct kvt_hbm_pool {
	int device;                       /* the daemon's CUDA ordinal */
	uint8_t uuid[KVT_GPU_UUID_BYTES]; /* names the GPU across processes */
	uint8_t ipc[KVT_HBM_IPC_BYTES];   /* workers open this once */
	void *base;                       /* device address */
	uint64_t bytes;
	void *impl;                       /* the ops' own state */
};

typedef void (*kvt_hbm_done)(void *arg, int rc);

struct kvt_hbm_ops {
	/* Allocates bytes on device (an ordinal, or -1: the next one not yet
	 * opened) and fills pool. 0 or -errno with a reason in err. */
	int (*open)(void *ctx, int device, uint64_t bytes,
		    struct kvt_hbm_pool *pool, char *err, size_t errlen);
	/* Waits until every copy started has completed (done called), then
	 * frees the pool. */
	void (*close)(void *ctx, struct kvt_hbm_pool *pool);
	/* Host tier segments, registered so that copies from them are DMA. */
	int (*host_register)(void *ctx, void *base, uint64_t len);
	void (*host_unregister)(void *ctx, void *base);
	/* Starts copying len bytes from host src to pool offset off; done is
	 * called once, later, on another thread. 0 or -errno (not called). */
	int (*copy_in)(void *ctx, struct kvt_hbm_pool *pool, uint64_t off,
		       const void *src, uint64_t len, kvt_hbm_done done,
		       void *arg);
	void *ctx;
};

struct kvt_hbm_stats {
	uint32_t devices;
	uint64_t capacity_bytes, used_bytes, blocks;
	uint64_t loads_total, load_failures_total, loads_skipped_total;
	uint64_t in_bytes_total; /* page bytes of the copies started */
	uint64_t drops_total, evictions_total, hits_total, out_bytes_total;
};

struct kvt_hbm;

/*
 * Opens a pool of bytes on each of devices[0..n) (segment_bytes slots
 * apart in namespaces' strides). 0 or -errno with the reason in err.
 */
int kvt_hbm_create(const struct kvt_hbm_ops *ops, const int *devices,
		   uint32_t n, uint64_t bytes, uint64_t segment_bytes,
		   uint32_t max_namespaces, struct kvt_hbm **out, char *err,
		   size_t errlen);
void kvt_hbm_destroy(struct kvt_hbm *h);

const struct kvt_hbm_ops *kvt_hbm_ops(const struct kvt_hbm *h);
uint32_t kvt_hbm_devices(const struct kvt_hbm *h);
const struct kvt_hbm_pool *kvt_hbm_pool(const struct kvt_hbm *h, uint32_t i);
/* The pool index of the GPU with this uuid, or -1. */
int kvt_hbm_find(const struct kvt_hbm *h, const uint8_t uuid[KVT_GPU_UUID_BYTES]);

/* b has a ready copy in pool dev: its offset there. Counts a hit. */
bool kvt_hbm_hit(struct kvt_hbm *h, const struct kvt_block *b, uint32_t dev,
		 uint64_t page_bytes, uint64_t *offset);

/*
 * Starts copying b's host page (src, len; slots stride apart) into pool
 * dev, dropping another copy if the pool must make room. The caller keeps
 * b's host page from going away until done(arg, rc) has been called and
 * then calls kvt_hbm_loaded. 0; -EBUSY when b has a copy or one is on its
 * way; -ENOSPC when there is no room (counted as skipped); -errno.
 */
int kvt_hbm_load(struct kvt_hbm *h, struct kvt_block *b, uint32_t dev,
		 uint64_t stride, const void *src, uint64_t len,
		 kvt_hbm_done done, void *arg);
/* The end of b's load: rc 0 and keep make the copy readable; else it goes. */
void kvt_hbm_loaded(struct kvt_hbm *h, struct kvt_block *b, int rc, bool keep);

/* Drops b's copy (its host page is going). b must not be loading. */
void kvt_hbm_drop(struct kvt_hbm *h, struct kvt_block *b);

void kvt_hbm_stats(const struct kvt_hbm *h, struct kvt_hbm_stats *st);

#endif

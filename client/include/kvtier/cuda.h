/*
 * libkvtier-cuda: the GPU data path of a kvtier worker. It moves KV pages
 * between the worker's paged KV cache (device memory, described by a
 * struct kvt_kv_layout) and kvtierd's tiers with kernels on the worker's
 * own CUDA stream, and finishes each transfer without blocking the caller:
 * offloaded blocks are committed, and onloaded leases released, by the
 * library's thread once the stream has passed the copy.
 *
 *   kvt_connect(NULL, &c);
 *   kvt_cuda_bind(c, device, 0, &g);      // before attach
 *   kvt_cuda_attach(g, "vllm-worker-0");  // attach, open the hbm pool
 *   kvt_open_namespace(c, ..., kvt_kv_page_bytes(&layout), ...);
 *   offload: kvt_reserve(..., slots) -> kvt_cuda_offload(g, ..., slots, stream)
 *   onload:  kvt_acquire(..., &lease) -> kvt_cuda_onload(g, ..., &lease, stream)
 *   kvt_cuda_sync(g);                      // optional: wait for commits/releases
 *   kvt_cuda_close(g); kvt_close(c);
 *
 * Where pages come from: blocks the daemon holds in its hbm pool on this
 * GPU are read device to device through the pool's CUDA IPC handle (opened
 * once); host-tier pages are registered with CUDA once per segment and
 * either read in place by the kernel where the GPU reads host memory
 * coherently (GH200 over NVLink-C2C: cudaDevAttrPageableMemoryAccessUses-
 * HostPageTables) or copied through a device staging buffer with one DMA
 * per page (PCIe GPUs). $KVTIER_HOST_DIRECT=0 or 1 overrides the choice.
 *
 * A kvt_cuda may be used from several threads (its calls are serialized).
 * Errors: 0 or -errno as in kvtier.h; kvt_cuda_errmsg says why.
 */
#ifndef KVTIER_CUDA_H
#define KVTIER_CUDA_H

#include <cuda_runtime_api.h>
#include <stdbool.h>

#include "kv_layout.h"
#include "kvtier.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvt_cuda kvt_cuda;

/* Default size of the staging buffer (staging_bytes 0). */
#define KVT_CUDA_STAGING_DEFAULT (64u << 20)

/* Binds c (not attached yet) to CUDA device `device` of this process. */
int kvt_cuda_bind(kvt_client *c, int device, size_t staging_bytes,
		  kvt_cuda **out);
/* kvt_attach, then opens the daemon's hbm pool on this GPU if it has one. */
int kvt_cuda_attach(kvt_cuda *g, const char *client_name);

/*
 * Gathers cache blocks block_ids[i] into slots[i] where slots[i].state is
 * KVT_SLOT_RESERVED (others are skipped), on stream, and commits keys[i]
 * of those once the stream has passed the copy.
 */
int kvt_cuda_offload(kvt_cuda *g, const struct kvt_namespace *ns,
		     const struct kvt_kv_layout *layout,
		     const uint32_t *block_ids, const struct kvt_key *keys,
		     const struct kvt_slot *slots, size_t n,
		     cudaStream_t stream);

/*
 * Scatters the lease's pages into cache blocks block_ids[0..lease->count)
 * on stream, and releases the lease once the stream has passed the copy.
 * Takes the lease over (*lease is zeroed), also on error.
 */
int kvt_cuda_onload(kvt_cuda *g, const struct kvt_kv_layout *layout,
		    const uint32_t *block_ids, struct kvt_lease *lease,
		    cudaStream_t stream);

/* Waits until every commit and release queued so far is done; the first
 * error any of them met (then cleared), or 0. */
int kvt_cuda_sync(kvt_cuda *g);

/* Whether host pages are read in place (see above); whether the daemon's
 * hbm pool on this GPU is open. */
bool kvt_cuda_host_direct(const kvt_cuda *g);
bool kvt_cuda_hbm_open(const kvt_cuda *g);

const char *kvt_cuda_errmsg(const kvt_cuda *g);

/* Syncs, closes the pool, frees the staging buffer. Before kvt_close. */
void kvt_cuda_close(kvt_cuda *g);

#ifdef __cplusplus
}
#endif

#endif

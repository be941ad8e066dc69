/*
 * The CUDA gather/scatter kernels: many blocks, all layers, one launch per
 * KVT_KV_BATCH blocks, 16-byte accesses. Same arguments and results as the
 * CPU reference versions in kv_layout.h, plus the stream they run on.
 *
 * Pages are addresses the device can read or write: a staging buffer or the
 * daemon's hbm pool (device memory), or host-tier pages (registered host
 * memory) where the GPU reads host memory in place (GH200, NVLink-C2C).
 * Block ids and page addresses travel in the launch's arguments, so the
 * caller's arrays may be reused as soon as the call returns.
 *
 * 0; -EINVAL for a bad block id or page (nothing launched); -EIO when a
 * launch failed (cudaGetLastError; earlier batches may have run).
 */
#ifndef KVT_KV_COPY_H
#define KVT_KV_COPY_H

#include <cuda_runtime_api.h>

#include "kv_layout.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Blocks per launch: keeps the arguments under CUDA's 4 KiB limit. */
#define KVT_KV_BATCH 192

int kvt_kv_gather_cuda(const struct kvt_kv_layout *l,
		       const uint32_t *block_ids, void *const *pages,
		       uint32_t n, cudaStream_t stream);
int kvt_kv_scatter_cuda(const struct kvt_kv_layout *l,
			const uint32_t *block_ids, const void *const *pages,
			uint32_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

/*
 * What the daemon can see of CUDA, and the hbm tier's device side. The build
 * picks one implementation: gpu_cuda.c + hbm_cuda.c (CUDA runtime linked)
 * or gpu_none.c (built without CUDA).
 */
#ifndef KVT_GPU_H
#define KVT_GPU_H

#include <stddef.h>

/* Number of usable CUDA devices (0 without a GPU or driver); describes what
 * was found in buf (truncated to len): each device by number, name and
 * memory, e.g. "CUDA runtime 13.0, 1 device(s): 0 NVIDIA H200 (143771 MiB)",
 * or why there is none, e.g. "CUDA runtime 13.0, no device (...): hbm tier
 * unavailable" or "built without CUDA: hbm tier unavailable". */
int kvt_gpu_probe(char *buf, size_t len);

struct kvt_hbm_ops;
/* The hbm tier's device functions (hbm.h), or NULL in a build without CUDA. */
const struct kvt_hbm_ops *kvt_gpu_hbm_ops(void);

#endif

/*
 * What the daemon can see of CUDA. The build picks one implementation:
 * gpu_cuda.c (CUDA runtime linked) or gpu_none.c (built without CUDA).
 * The hbm tier (a later release) uses the devices this reports.
 */
#ifndef KVT_GPU_H
#define KVT_GPU_H

#include <stddef.h>

/* Number of usable CUDA devices (0 without a GPU or driver); describes what
 * was found in buf, e.g. "CUDA runtime 13.0, no device: hbm tier unavailable". */
int kvt_gpu_probe(char *buf, size_t len);

#endif

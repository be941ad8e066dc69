#include "gpu.h"

#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>

/* Appends to buf at off as snprintf would; returns the new end (past len
 * once truncated, after which nothing more is written). */
static size_t append(char *buf, size_t len, size_t off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (off >= len)
		return off;
	va_start(ap, fmt);
	n = vsnprintf(buf + off, len - off, fmt, ap);
	va_end(ap);
	return n < 0 ? off : off + (size_t)n;
}

int kvt_gpu_probe(char *buf, size_t len)
{
	int runtime = 0, count = 0;
	cudaError_t rc;
	size_t off;

	cudaRuntimeGetVersion(&runtime);
	rc = cudaGetDeviceCount(&count);
	if (rc != cudaSuccess || count <= 0) {
		snprintf(buf, len, "CUDA runtime %d.%d, no device (%s): hbm tier unavailable",
			 runtime / 1000, runtime % 1000 / 10,
			 rc != cudaSuccess ? cudaGetErrorString(rc) : "none found");
		return 0;
	}
	off = append(buf, len, 0, "CUDA runtime %d.%d, %d device(s):", runtime / 1000,
		     runtime % 1000 / 10, count);
	for (int i = 0; i < count; i++) {
		struct cudaDeviceProp p;

		if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
			off = append(buf, len, off, "%s %d %s (%zu MiB)", i ? "," : "", i,
				     p.name, (size_t)(p.totalGlobalMem >> 20));
		else
			off = append(buf, len, off, "%s %d (no properties)", i ? "," : "", i);
	}
	return count;
}

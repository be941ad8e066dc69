#include "gpu.h"

#include <cuda_runtime_api.h>
#include <stdio.h>

int kvt_gpu_probe(char *buf, size_t len)
{
	int runtime = 0, count = 0;
	cudaError_t rc;

	cudaRuntimeGetVersion(&runtime);
	rc = cudaGetDeviceCount(&count);
	if (rc != cudaSuccess || count <= 0) {
		snprintf(buf, len, "CUDA runtime %d.%d, no device (%s): hbm tier unavailable",
			 runtime / 1000, runtime % 1000 / 10,
			 rc != cudaSuccess ? cudaGetErrorString(rc) : "none found");
		return 0;
	}
	snprintf(buf, len, "CUDA runtime %d.%d, %d device(s)", runtime / 1000,
		 runtime % 1000 / 10, count);
	return count;
}

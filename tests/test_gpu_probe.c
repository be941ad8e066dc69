/*
 * The CUDA probe, checked against the CUDA runtime asked directly: with a
 * GPU, its count is cudaGetDeviceCount's, its description gives that count
 * and the runtime's version, and names every device (number, name, memory
 * as cudaGetDeviceProperties has them). Without one, or in a build without
 * CUDA (KVT_TEST_CUDA undefined: gpu_none.c), the count is 0 and the
 * description says why; then the test is skipped (77), as on CI.
 */
#include <stdio.h>
#include <string.h>

#include "gpu.h"
#include "harness.h"

#ifdef KVT_TEST_CUDA
#include <cuda_runtime_api.h>

/* Devices the runtime reports (0 when it reports an error). */
static int runtime_devices(void)
{
	int count = 0;

	return cudaGetDeviceCount(&count) == cudaSuccess && count > 0 ? count : 0;
}

/* "CUDA runtime X.Y", as the probe must begin. */
static void runtime_version(char *buf, size_t len)
{
	int v = 0;

	CHECK(cudaRuntimeGetVersion(&v) == cudaSuccess);
	snprintf(buf, len, "CUDA runtime %d.%d", v / 1000, v % 1000 / 10);
}

/* Device i as the probe must name it: " i NAME (MiB MiB)". */
static void device_named(int i, char *buf, size_t len)
{
	struct cudaDeviceProp p;

	CHECK(cudaGetDeviceProperties(&p, i) == cudaSuccess);
	snprintf(buf, len, " %d %s (%zu MiB)", i, p.name, (size_t)(p.totalGlobalMem >> 20));
}
#endif

int main(void)
{
	char desc[4096];
	int n = kvt_gpu_probe(desc, sizeof(desc)), said = -1;

	printf("%s\n", desc);
	CHECK(strlen(desc) > 0 && strlen(desc) < sizeof(desc) - 1);
#ifdef KVT_TEST_CUDA
	{
		char version[64];

		CHECK(n == runtime_devices());
		runtime_version(version, sizeof(version));
		CHECK(strncmp(desc, version, strlen(version)) == 0);
		if (n == 0)
			CHECK(strstr(desc, ", no device (") != NULL);
	}
#else
	CHECK(n == 0);
	CHECK(strstr(desc, "built without CUDA") != NULL);
#endif
	if (n == 0) {
		CHECK(strstr(desc, "hbm tier unavailable") != NULL);
		return 77;
	}
	CHECK(n > 0);
	CHECK(sscanf(desc, "CUDA runtime %*d.%*d, %d device(s):", &said) == 1 && said == n);
	CHECK(strstr(desc, "unavailable") == NULL);
#ifdef KVT_TEST_CUDA
	for (int i = 0; i < n; i++) {
		char dev[320];

		device_named(i, dev, sizeof(dev));
		CHECK(strstr(desc, dev) != NULL);
	}
#endif
	return 0;
}

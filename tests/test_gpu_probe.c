/* The CUDA probe: skipped (77) where there is no GPU, as on CI. */
#include <stdio.h>
#include <string.h>

#include "gpu.h"

int main(void)
{
	char desc[256];
	int n = kvt_gpu_probe(desc, sizeof(desc));

	printf("%s\n", desc);
	if (n == 0)
		return 77;
	return strstr(desc, "device") ? 0 : 1;
}

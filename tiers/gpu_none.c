#include "gpu.h"

#include <stdio.h>

int kvt_gpu_probe(char *buf, size_t len)
{
	snprintf(buf, len, "built without CUDA: hbm tier unavailable");
	return 0;
}

const struct kvt_hbm_ops *kvt_gpu_hbm_ops(void)
{
	return NULL;
}

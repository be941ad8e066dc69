#include "allocator.h"

#include <stdio.h>

void kvt_allocator_describe(char *buf, size_t len)
{
	snprintf(buf, len, "libc malloc (built without jemalloc)");
}

#include "allocator.h"

#include <jemalloc/jemalloc.h>
#include <stdio.h>

void kvt_allocator_describe(char *buf, size_t len)
{
	const char *version = "unknown";
	size_t sz = sizeof(version);

	if (mallctl("version", &version, &sz, NULL, 0) != 0)
		version = "unknown";
	snprintf(buf, len, "jemalloc %s", version);
}

#include "allocator.h"

#include <jemalloc/jemalloc.h>
#include <stdbool.h>
#include <stdio.h>

/*
 * jemalloc keeps freed pages (dirty, then muzzy) and returns them to the
 * kernel only as allocations go on: an idle daemon never did. 20,000
 * sessions (gRPC's call and stream state, about 13 KiB each) left 200 MiB
 * resident after they closed. A background thread purges them after
 * dirty_decay_ms (10 s) whatever the traffic: back to 24 MiB
 * (scripts/rss-sessions.py). MALLOC_CONF still overrides.
 */
const char *malloc_conf = "background_thread:true,max_background_threads:1";

void kvt_allocator_describe(char *buf, size_t len)
{
	const char *version = "unknown";
	bool bg = false;
	size_t sz = sizeof(version), bsz = sizeof(bg);

	if (mallctl("version", &version, &sz, NULL, 0) != 0)
		version = "unknown";
	if (mallctl("background_thread", &bg, &bsz, NULL, 0) != 0)
		bg = false;
	snprintf(buf, len, "jemalloc %s%s", version, bg ? ", background purge" : "");
}

#include "huge_alloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *kvt_huge_calloc(size_t bytes)
{
	size_t rounded = (bytes + KVT_HUGE_PAGE - 1) / KVT_HUGE_PAGE * KVT_HUGE_PAGE;
	void *p;

	if (bytes < KVT_HUGE_PAGE)
		return calloc(1, bytes);
	p = aligned_alloc(KVT_HUGE_PAGE, rounded);
	if (!p)
		return NULL;
	/* Advice only: where THP is off this is 4 KiB pages, as calloc's. */
	(void)madvise(p, rounded, MADV_HUGEPAGE);
	memset(p, 0, rounded);
	return p;
}

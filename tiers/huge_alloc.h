/*
 * Zeroed heap memory the kernel is asked to back with 2 MiB pages, for the
 * engine's large metadata tables (the index's buckets, block chunks): at
 * millions of blocks every probe misses the TLB, and under a hypervisor a
 * 4 KiB page walk costs as much as the miss itself (2 MiB pages halved a
 * random read over 1.2 GB on the development VM). Allocations below 2 MiB
 * are plain calloc. Release with free(). Any thread.
 */
#ifndef KVT_HUGE_ALLOC_H
#define KVT_HUGE_ALLOC_H

#include <stddef.h>

#define KVT_HUGE_PAGE (2u << 20)

void *kvt_huge_calloc(size_t bytes);

#endif

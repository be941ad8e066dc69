/*
 * Which allocator the daemon runs on, for `kvtierctl status`. The build
 * links jemalloc (allocator_jemalloc.c) except in sanitizer builds, whose
 * runtime must own malloc (allocator_libc.c).
 */
#ifndef KVT_ALLOCATOR_H
#define KVT_ALLOCATOR_H

#include <stddef.h>

void kvt_allocator_describe(char *buf, size_t len);

#endif

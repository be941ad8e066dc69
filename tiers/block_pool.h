/*
 * Where struct kvt_block lives: 2 MiB chunks (huge_alloc.h) cut into
 * blocks, with a free list through the freed ones. The index and the
 * policy's lists chase block pointers at random, so at millions of blocks
 * the TLB reach of huge pages decides what a probe costs; jemalloc's small
 * size classes come from 4 KiB pages.
 *
 * Chunks go back only when the pool is destroyed: the engine's block count
 * is bounded by its tiers' capacity, and a freed block is reused by the
 * next. Not thread-safe: the engine calls it under its lock.
 */
#ifndef KVT_BLOCK_POOL_H
#define KVT_BLOCK_POOL_H

#include <stddef.h>

#include "index.h"

struct kvt_block_pool;

struct kvt_block_pool *kvt_block_pool_create(void);
/* Frees every chunk, and so every block still allocated. */
void kvt_block_pool_destroy(struct kvt_block_pool *p);

/* A zeroed block, or NULL. */
struct kvt_block *kvt_block_pool_alloc(struct kvt_block_pool *p);
void kvt_block_pool_free(struct kvt_block_pool *p, struct kvt_block *b);

#endif

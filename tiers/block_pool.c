/*
 * The first chunk is small (a calloc'd table of 64 blocks would do for a
 * test; a daemon with a handful of blocks should not hold 2 MiB), then
 * chunks double up to KVT_HUGE_PAGE and stay that size.
 *
 * Under AddressSanitizer a free block is poisoned (bar its free-list link),
 * so a use after free of a block is still reported.
 */
#include "block_pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "huge_alloc.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define FIRST_CHUNK (64 * sizeof(struct kvt_block))

/* A free block holds only the link to the next free one. */
struct free_block {
	struct free_block *next;
};

struct kvt_block_pool {
	struct free_block *free;
	char *carve, *carve_end; /* the newest chunk's never-used tail */
	void **chunks;
	size_t nchunks, chunks_cap, next_chunk;
};

struct kvt_block_pool *kvt_block_pool_create(void)
{
	struct kvt_block_pool *p = calloc(1, sizeof(*p));

	if (p)
		p->next_chunk = FIRST_CHUNK;
	return p;
}

void kvt_block_pool_destroy(struct kvt_block_pool *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nchunks; i++)
		free(p->chunks[i]);
	free(p->chunks);
	free(p);
}

static int add_chunk(struct kvt_block_pool *p)
{
	size_t bytes = p->next_chunk;
	char *c;

	if (p->nchunks == p->chunks_cap) {
		size_t cap = p->chunks_cap ? p->chunks_cap * 2 : 16;
		void **a = realloc(p->chunks, sizeof(*a) * cap);

		if (!a)
			return -1;
		p->chunks = a;
		p->chunks_cap = cap;
	}
	if (!(c = kvt_huge_calloc(bytes)))
		return -1;
	p->chunks[p->nchunks++] = c;
	p->carve = c;
	p->carve_end = c + bytes / sizeof(struct kvt_block) * sizeof(struct kvt_block);
	if (p->next_chunk < KVT_HUGE_PAGE)
		p->next_chunk *= 2;
	if (p->next_chunk > KVT_HUGE_PAGE)
		p->next_chunk = KVT_HUGE_PAGE;
	return 0;
}

struct kvt_block *kvt_block_pool_alloc(struct kvt_block_pool *p)
{
	struct kvt_block *b;

	if (p->free) {
		struct free_block *f = p->free;

		UNPOISON(f, sizeof(struct kvt_block));
		p->free = f->next;
		b = (struct kvt_block *)f;
		memset(b, 0, sizeof(*b));
		return b;
	}
	if (p->carve == p->carve_end && add_chunk(p) < 0)
		return NULL;
	b = (struct kvt_block *)p->carve;
	p->carve += sizeof(*b);
	return b; /* fresh chunks are zeroed */
}

void kvt_block_pool_free(struct kvt_block_pool *p, struct kvt_block *b)
{
	struct free_block *f = (struct free_block *)b;

	if (!b)
		return;
	f->next = p->free;
	p->free = f;
	POISON((char *)b + sizeof(*f), sizeof(*b) - sizeof(*f));
}

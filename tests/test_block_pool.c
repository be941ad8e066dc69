/* Block pool: zeroed, distinct blocks across chunks; freed ones come back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"
#include "harness.h"

int main(void)
{
	/* Past the small first chunks and into several 2 MiB ones. */
	enum { N = 100000 };
	struct kvt_block_pool *p = kvt_block_pool_create();
	struct kvt_block **b = calloc(N, sizeof(*b));
	static const struct kvt_block zero;

	CHECK(p && b);
	for (uint32_t i = 0; i < N; i++) {
		CHECK((b[i] = kvt_block_pool_alloc(p)) != NULL);
		CHECK(memcmp(b[i], &zero, sizeof(zero)) == 0);
		CHECK((uintptr_t)b[i] % _Alignof(struct kvt_block) == 0);
		memset(b[i]->key, (int)(i & 0xff), KVT_KEY_BYTES);
		b[i]->slot = i;
	}
	/* No two overlap: each still holds what was written into it. */
	for (uint32_t i = 0; i < N; i++)
		CHECK(b[i]->slot == i && b[i]->key[KVT_KEY_BYTES - 1] == (i & 0xff));

	/* A freed block is handed out again, zeroed. */
	for (uint32_t i = 0; i < N; i += 2)
		kvt_block_pool_free(p, b[i]);
	for (uint32_t i = 0; i < N; i += 2) {
		struct kvt_block *again = kvt_block_pool_alloc(p);

		CHECK(again && memcmp(again, &zero, sizeof(zero)) == 0);
		b[i] = again;
	}
	for (uint32_t i = 1; i < N; i += 2)
		CHECK(b[i]->slot == i);
	kvt_block_pool_destroy(p);
	free(b);
	return 0;
}

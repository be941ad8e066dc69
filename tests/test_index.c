/* Block index: find/insert/remove, namespaces and tenants kept apart, growth,
 * clusters of colliding keys. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "index.h"

static void make_key(uint8_t key[KVT_KEY_BYTES], uint32_t i)
{
	memset(key, 0, KVT_KEY_BYTES);
	test_fill(key, KVT_KEY_BYTES, i + 1);
}

/* foreach: counts visits and removes the blocks whose key byte 15 is odd. */
struct visits {
	struct kvt_index *idx;
	int seen[64];
};

static void visit(struct kvt_block *b, void *arg)
{
	struct visits *v = arg;

	v->seen[b->key[15]]++;
	if (b->key[15] % 2)
		kvt_index_remove(v->idx, b);
}

/*
 * Keys that share a home slot (the last one, so that the cluster wraps to
 * the array's start) and a tag, so that only the whole key tells them
 * apart: removal from the middle of a cluster and foreach that removes as
 * it goes must leave every other block findable exactly once.
 */
static void colliding_keys(void)
{
	enum { M = 40 };
	struct kvt_index *idx = kvt_index_create();
	struct kvt_block b[M] = { 0 };
	struct visits v = { .idx = idx };

	CHECK(idx);
	for (int i = 0; i < M; i++) {
		uint64_t home = 1023; /* the first table's last slot */

		memcpy(b[i].key, &home, sizeof(home));
		b[i].key[15] = (uint8_t)i;
		CHECK(kvt_index_insert(idx, &b[i]) == 0);
	}
	for (int i = 0; i < M; i += 3)
		kvt_index_remove(idx, &b[i]);
	for (int i = 0; i < M; i++)
		CHECK(kvt_index_find(idx, 0, 0, b[i].key) == (i % 3 ? &b[i] : NULL));
	kvt_index_foreach(idx, visit, &v);
	for (int i = 0; i < M; i++) {
		CHECK(v.seen[i] == (i % 3 ? 1 : 0));
		CHECK(kvt_index_find(idx, 0, 0, b[i].key) ==
		      (i % 3 && i % 2 == 0 ? &b[i] : NULL));
	}
	kvt_index_destroy(idx);
}

int main(void)
{
	enum { N = 200000 };
	struct kvt_index *idx = kvt_index_create();
	struct kvt_block *blocks = calloc(N, sizeof(*blocks));
	struct kvt_block other = { 0 }, tenant_b = { 0 };

	CHECK(idx && blocks);
	/* The per-block budget of BENCHMARKS.md: keep the struct this small. */
	CHECK(sizeof(struct kvt_block) <= 96);
	for (uint32_t i = 0; i < N; i++) {
		make_key(blocks[i].key, i);
		blocks[i].ns = 0;
		CHECK(kvt_index_insert(idx, &blocks[i]) == 0);
	}
	CHECK(kvt_index_count(idx) == N);
	for (uint32_t i = 0; i < N; i++)
		CHECK(kvt_index_find(idx, 0, 0, blocks[i].key) == &blocks[i]);

	/* The same key twice is refused; in another namespace it is another block. */
	CHECK(kvt_index_insert(idx, &blocks[7]) == -EEXIST);
	memcpy(other.key, blocks[7].key, KVT_KEY_BYTES);
	other.ns = 1;
	CHECK(kvt_index_find(idx, 1, 0, other.key) == NULL);
	CHECK(kvt_index_insert(idx, &other) == 0);
	CHECK(kvt_index_find(idx, 1, 0, other.key) == &other);
	CHECK(kvt_index_find(idx, 0, 0, other.key) == &blocks[7]);

	/* Same key and namespace, another tenant: another block. */
	memcpy(tenant_b.key, blocks[7].key, KVT_KEY_BYTES);
	tenant_b.tenant = 3;
	CHECK(kvt_index_find(idx, 0, 3, tenant_b.key) == NULL);
	CHECK(kvt_index_insert(idx, &tenant_b) == 0);
	CHECK(kvt_index_find(idx, 0, 3, tenant_b.key) == &tenant_b);
	CHECK(kvt_index_find(idx, 0, 0, tenant_b.key) == &blocks[7]);
	kvt_index_remove(idx, &tenant_b);

	/* Remove every other block; the rest stay findable. */
	for (uint32_t i = 0; i < N; i += 2)
		kvt_index_remove(idx, &blocks[i]);
	CHECK(kvt_index_count(idx) == N / 2 + 1);
	for (uint32_t i = 0; i < N; i++)
		CHECK(kvt_index_find(idx, 0, 0, blocks[i].key) ==
		      (i % 2 ? &blocks[i] : NULL));

	kvt_index_destroy(idx);
	free(blocks);
	colliding_keys();
	return 0;
}

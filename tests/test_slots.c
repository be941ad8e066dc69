/* Slot allocator: carving per namespace, offsets, exhaustion, segment reuse. */
#include <errno.h>

#include "harness.h"
#include "slots.h"

static bool retagged;

/* Tag 7 for every carve unless a test says otherwise. */
static int alloc(struct kvt_slots *s, uint32_t ns, uint64_t stride,
		 uint32_t *g, uint32_t *k)
{
	return kvt_slots_alloc(s, ns, stride, 7, g, k, &retagged);
}

/* A carve takes a free segment of its own tag first, and says when it
 * took one of another tag. */
static void test_tags(void)
{
	struct kvt_slots *s = kvt_slots_create(3, 65536, 2);
	uint32_t g, k;

	CHECK(kvt_slots_segment_tag(s, 0) == KVT_SLOTS_NO_TAG);
	CHECK(kvt_slots_alloc(s, 0, 65536, 1, &g, &k, &retagged) == 0 && g == 0 && retagged);
	CHECK(kvt_slots_alloc(s, 1, 65536, 2, &g, &k, &retagged) == 0 && g == 1 && retagged);
	CHECK(kvt_slots_segment_tag(s, 1) == 2);
	kvt_slots_free(s, 0, 0);
	kvt_slots_free(s, 1, 0);
	/* Free: 0 (tag 1), 1 (tag 2), 2 (none). Tag 2 gets its own back. */
	CHECK(kvt_slots_alloc(s, 0, 65536, 2, &g, &k, &retagged) == 0 && g == 1 && !retagged);
	/* Tag 3 has none of its own: the lowest free one, retagged. */
	CHECK(kvt_slots_alloc(s, 1, 65536, 3, &g, &k, &retagged) == 0 && g == 0 && retagged);
	CHECK(kvt_slots_segment_tag(s, 0) == 3);
	kvt_slots_set_tag(s, 0, 1);
	CHECK(kvt_slots_segment_tag(s, 0) == 1);
	kvt_slots_destroy(s);
}

/* A held segment takes no new slots, says when it empties, and is carved
 * for no one until let go. */
static void test_hold(void)
{
	struct kvt_slots *s = kvt_slots_create(2, 65536, 2);
	uint32_t g, k, k2;

	CHECK(alloc(s, 0, 32768, &g, &k) == 0 && g == 0);
	kvt_slots_hold(s, 0, true);
	/* Namespace 0's half-free segment 0 is passed over. */
	CHECK(alloc(s, 0, 32768, &g, &k2) == 0 && g == 1);
	CHECK(kvt_slots_free(s, 1, k2) == false);
	/* Empty and held: reported, and not carved again... */
	CHECK(kvt_slots_free(s, 0, k) == true);
	CHECK(kvt_slots_segment_owner(s, 0) == KVT_SLOTS_FREE_SEGMENT);
	CHECK(alloc(s, 1, 65536, &g, &k) == 0 && g == 1);
	CHECK(alloc(s, 1, 65536, &g, &k) == -ENOSPC);
	/* ...until let go. */
	kvt_slots_hold(s, 0, false);
	CHECK(alloc(s, 1, 65536, &g, &k) == 0 && g == 0);
	kvt_slots_destroy(s);
}

int main(void)
{
	/* 3 segments of 64 KiB; namespaces 0 (16 KiB stride) and 1 (8 KiB). */
	struct kvt_slots *s = kvt_slots_create(3, 65536, 2);
	uint32_t seg[16], slot[16], g, k;

	CHECK(s);
	for (int i = 0; i < 4; i++) {
		CHECK(alloc(s, 0, 16384, &seg[i], &slot[i]) == 0);
		CHECK(seg[i] == 0);
		CHECK(kvt_slots_offset(s, seg[i], slot[i]) == 16384ull * (uint64_t)i);
	}
	CHECK(kvt_slots_segment_owner(s, 0) == 0);
	CHECK(kvt_slots_segment_used(s, 0) == 4);
	/* Namespace 0's segment is full: the next slot carves segment 1. */
	CHECK(alloc(s, 0, 16384, &g, &k) == 0 && g == 1);
	/* Namespace 1 gets its own segment, with its own stride. */
	for (int i = 0; i < 8; i++) {
		CHECK(alloc(s, 1, 8192, &seg[i + 4], &slot[i + 4]) == 0);
		CHECK(seg[i + 4] == 2);
	}
	CHECK(kvt_slots_segments_carved(s) == 3);
	CHECK(alloc(s, 1, 8192, &g, &k) == -ENOSPC);
	CHECK(alloc(s, 2, 8192, &g, &k) == -EINVAL);
	CHECK(alloc(s, 0, 65537, &g, &k) == -EINVAL);

	/* Freeing segment 1's only slot gives it back to every namespace. */
	kvt_slots_free(s, 1, 0);
	CHECK(kvt_slots_segment_owner(s, 1) == KVT_SLOTS_FREE_SEGMENT);
	CHECK(alloc(s, 1, 8192, &g, &k) == 0 && g == 1);
	CHECK(kvt_slots_segment_owner(s, 1) == 1);

	/* A freed slot is handed out again, and user pointers are per slot. */
	kvt_slots_set_user(s, seg[2], slot[2], &g);
	CHECK(kvt_slots_user(s, seg[2], slot[2]) == &g);
	kvt_slots_free(s, seg[2], slot[2]);
	CHECK(kvt_slots_user(s, seg[2], slot[2]) == NULL);
	CHECK(alloc(s, 0, 16384, &g, &k) == 0);
	CHECK(g == seg[2] && k == slot[2]);
	kvt_slots_destroy(s);
	test_tags();
	test_hold();
	return 0;
}

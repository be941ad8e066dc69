/*
 * Slot allocator: hands out fixed-size page slots inside a fixed set of
 * equally sized segments (the host tier's memfds).
 *
 * A free segment is carved for one namespace at a time, into slots of that
 * namespace's stride; when its last slot is freed it returns to the pool and
 * may be carved again for another namespace. Each slot carries one user
 * pointer (the engine's block) so that a whole segment can be reclaimed.
 *
 * The set of segments can grow and shrink (kvt_slots_resize). Shrinking
 * retires the highest-numbered segments: nothing new is placed in them, and
 * each leaves use when its last slot is freed, so that its memory can be
 * given back. Growing brings retired segments back first.
 * Not thread-safe: the engine calls it under its lock.
 */
#ifndef KVT_SLOTS_H
#define KVT_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#define KVT_SLOTS_FREE_SEGMENT UINT32_MAX

struct kvt_slots;

/* namespaces bounds the namespace ids that alloc accepts. */
struct kvt_slots *kvt_slots_create(uint32_t segments, uint64_t segment_bytes,
				   uint32_t namespaces);
void kvt_slots_destroy(struct kvt_slots *s);

/*
 * Takes a free slot for namespace ns (stride bytes apart, stride at most the
 * segment size), carving a free segment when ns has no free slot left. A
 * segment carries the tag of the last carve (the engine's tenant, whose
 * workers may map it): a carve for `tag` takes a free segment of that tag
 * first, else the lowest free one, and then sets *retagged when that
 * segment last had another tag. 0, -ENOSPC when there is none, -ENOMEM.
 */
int kvt_slots_alloc(struct kvt_slots *s, uint32_t ns, uint64_t stride,
		    uint32_t tag, uint32_t *segment, uint32_t *slot,
		    bool *retagged);

/* Returns a slot taken by alloc. true: that emptied a retired or held
 * segment. */
bool kvt_slots_free(struct kvt_slots *s, uint32_t segment, uint32_t slot);

/* A held segment takes no new slots and, once empty, is carved for no one
 * until let go (hold false); its blocks stay until freed. */
void kvt_slots_hold(struct kvt_slots *s, uint32_t segment, bool hold);

/* Makes segments [0, active) usable and retires the rest (see above);
 * segments past the last one known are added free. 0 or -ENOMEM. */
int kvt_slots_resize(struct kvt_slots *s, uint32_t active);
uint32_t kvt_slots_active(const struct kvt_slots *s);

uint64_t kvt_slots_offset(const struct kvt_slots *s, uint32_t segment,
			  uint32_t slot);
void kvt_slots_set_user(struct kvt_slots *s, uint32_t segment, uint32_t slot,
			void *user);
void *kvt_slots_user(const struct kvt_slots *s, uint32_t segment,
		     uint32_t slot);

/* Segments known: the active ones and the retired ones after them. */
uint32_t kvt_slots_segments(const struct kvt_slots *s);
/* A segment's tag (KVT_SLOTS_NO_TAG before its first carve); set_tag puts
 * one back after a carve the engine could not use. */
#define KVT_SLOTS_NO_TAG UINT32_MAX
uint32_t kvt_slots_segment_tag(const struct kvt_slots *s, uint32_t segment);
void kvt_slots_set_tag(struct kvt_slots *s, uint32_t segment, uint32_t tag);
/* The namespace a segment is carved for, or KVT_SLOTS_FREE_SEGMENT. */
uint32_t kvt_slots_segment_owner(const struct kvt_slots *s, uint32_t segment);
/* Slots of a carved segment (0 for a free one), and how many are taken. */
uint32_t kvt_slots_segment_slots(const struct kvt_slots *s, uint32_t segment);
uint32_t kvt_slots_segment_used(const struct kvt_slots *s, uint32_t segment);
uint32_t kvt_slots_segments_carved(const struct kvt_slots *s);

#endif

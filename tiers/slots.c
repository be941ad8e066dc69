/*
 * Each carved segment keeps a stack of its free slot numbers. Segments of one
 * namespace that still have free slots are linked in that namespace's
 * "partial" list, so alloc is O(1); free segments form a stack of their own.
 */
#include "slots.h"

#include <errno.h>
#include <stdlib.h>

#define NIL UINT32_MAX

struct segment {
	uint32_t owner, tag;
	uint32_t nslots, nfree;
	uint64_t stride;
	uint32_t *free_stack;
	void **users;
	uint32_t prev, next; /* partial list of the owner, or free list */
	bool in_partial;
	bool held; /* kvt_slots_hold: in neither list */
};

struct kvt_slots {
	struct segment *segs;
	uint32_t nsegs, nactive, ncarved;
	uint64_t seg_bytes;
	uint32_t *partial; /* per namespace: head of its partial list */
	uint32_t namespaces;
	uint32_t free_head;
};

struct kvt_slots *kvt_slots_create(uint32_t segments, uint64_t segment_bytes,
				   uint32_t namespaces)
{
	struct kvt_slots *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->partial = malloc(sizeof(*s->partial) * (namespaces ? namespaces : 1));
	s->seg_bytes = segment_bytes;
	s->namespaces = namespaces;
	s->free_head = NIL;
	for (uint32_t i = 0; s->partial && i < namespaces; i++)
		s->partial[i] = NIL;
	if (!s->partial || kvt_slots_resize(s, segments) < 0) {
		kvt_slots_destroy(s);
		return NULL;
	}
	return s;
}

void kvt_slots_destroy(struct kvt_slots *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; s->segs && i < s->nsegs; i++) {
		free(s->segs[i].free_stack);
		free(s->segs[i].users);
	}
	free(s->segs);
	free(s->partial);
	free(s);
}

static void partial_push(struct kvt_slots *s, uint32_t i)
{
	struct segment *g = &s->segs[i];

	g->prev = NIL;
	g->next = s->partial[g->owner];
	if (g->next != NIL)
		s->segs[g->next].prev = i;
	s->partial[g->owner] = i;
	g->in_partial = true;
}

static void partial_unlink(struct kvt_slots *s, uint32_t i)
{
	struct segment *g = &s->segs[i];

	if (g->prev != NIL)
		s->segs[g->prev].next = g->next;
	else
		s->partial[g->owner] = g->next;
	if (g->next != NIL)
		s->segs[g->next].prev = g->prev;
	g->in_partial = false;
}

/* Unlinks and returns the first free segment tagged tag, else the first. */
static uint32_t free_take(struct kvt_slots *s, uint32_t tag)
{
	uint32_t prev = NIL, i = s->free_head;

	while (i != NIL && s->segs[i].tag != tag) {
		prev = i;
		i = s->segs[i].next;
	}
	if (i == NIL) {
		prev = NIL;
		i = s->free_head;
	}
	if (i == NIL)
		return NIL;
	if (prev == NIL)
		s->free_head = s->segs[i].next;
	else
		s->segs[prev].next = s->segs[i].next;
	return i;
}

static void free_push(struct kvt_slots *s, uint32_t i)
{
	s->segs[i].next = s->free_head;
	s->free_head = i;
}

static int carve(struct kvt_slots *s, uint32_t ns, uint64_t stride,
		 uint32_t tag, bool *retagged)
{
	uint32_t i = free_take(s, tag);
	struct segment *g;

	if (i == NIL)
		return -ENOSPC;
	g = &s->segs[i];
	g->nslots = (uint32_t)(s->seg_bytes / stride);
	g->free_stack = malloc(sizeof(*g->free_stack) * g->nslots);
	g->users = calloc(g->nslots, sizeof(*g->users));
	if (!g->free_stack || !g->users) {
		free(g->free_stack);
		free(g->users);
		g->free_stack = NULL;
		g->users = NULL;
		free_push(s, i);
		return -ENOMEM;
	}
	*retagged = g->tag != tag;
	g->tag = tag;
	/* Pop order 0, 1, 2...: consecutive pages land in consecutive slots. */
	for (uint32_t k = 0; k < g->nslots; k++)
		g->free_stack[k] = g->nslots - 1 - k;
	g->nfree = g->nslots;
	g->owner = ns;
	g->stride = stride;
	s->ncarved++;
	partial_push(s, i);
	return 0;
}

int kvt_slots_alloc(struct kvt_slots *s, uint32_t ns, uint64_t stride,
		    uint32_t tag, uint32_t *segment, uint32_t *slot,
		    bool *retagged)
{
	struct segment *g;
	uint32_t i;
	int rc;

	*retagged = false;
	if (ns >= s->namespaces || stride == 0 || stride > s->seg_bytes)
		return -EINVAL;
	if (s->partial[ns] == NIL && (rc = carve(s, ns, stride, tag, retagged)) < 0)
		return rc;
	i = s->partial[ns];
	g = &s->segs[i];
	*segment = i;
	*slot = g->free_stack[--g->nfree];
	if (g->nfree == 0)
		partial_unlink(s, i);
	return 0;
}

/* Lowest segment first, so that a small workload touches few segments. */
static void free_list_rebuild(struct kvt_slots *s)
{
	s->free_head = NIL;
	for (uint32_t i = s->nactive; i-- > 0;)
		if (s->segs[i].owner == KVT_SLOTS_FREE_SEGMENT && !s->segs[i].held) {
			s->segs[i].next = s->free_head;
			s->free_head = i;
		}
}

bool kvt_slots_free(struct kvt_slots *s, uint32_t segment, uint32_t slot)
{
	struct segment *g = &s->segs[segment];
	bool retired = segment >= s->nactive || g->held;

	g->users[slot] = NULL;
	g->free_stack[g->nfree++] = slot;
	if (g->nfree < g->nslots) {
		if (!g->in_partial && !retired)
			partial_push(s, segment);
		return false;
	}
	/* Empty again: give the segment back to every namespace. */
	if (g->in_partial)
		partial_unlink(s, segment);
	free(g->free_stack);
	free(g->users);
	g->free_stack = NULL;
	g->users = NULL;
	g->owner = KVT_SLOTS_FREE_SEGMENT;
	g->nslots = g->nfree = 0;
	s->ncarved--;
	if (retired)
		return true;
	free_push(s, segment);
	return false;
}

int kvt_slots_resize(struct kvt_slots *s, uint32_t active)
{
	if (active > s->nsegs) {
		struct segment *segs = realloc(s->segs, sizeof(*segs) * active);

		if (!segs)
			return -ENOMEM;
		s->segs = segs;
		for (uint32_t i = s->nsegs; i < active; i++)
			s->segs[i] = (struct segment){ .owner = KVT_SLOTS_FREE_SEGMENT,
						       .tag = KVT_SLOTS_NO_TAG };
		s->nsegs = active;
	}
	/* Retired segments leave their partial lists; returning ones rejoin. */
	for (uint32_t i = 0; i < s->nsegs; i++) {
		struct segment *g = &s->segs[i];
		bool carved = g->owner != KVT_SLOTS_FREE_SEGMENT;

		if (i >= active && g->in_partial)
			partial_unlink(s, i);
		else if (i < active && carved && !g->in_partial && g->nfree &&
			 !g->held)
			partial_push(s, i);
	}
	s->nactive = active;
	free_list_rebuild(s);
	return 0;
}

void kvt_slots_hold(struct kvt_slots *s, uint32_t segment, bool hold)
{
	struct segment *g = &s->segs[segment];

	if (g->held == hold)
		return;
	g->held = hold;
	if (hold && g->in_partial)
		partial_unlink(s, segment);
	else if (!hold && segment < s->nactive && g->owner != KVT_SLOTS_FREE_SEGMENT &&
		 g->nfree)
		partial_push(s, segment);
	if (g->owner == KVT_SLOTS_FREE_SEGMENT)
		free_list_rebuild(s);
}

uint32_t kvt_slots_active(const struct kvt_slots *s)
{
	return s->nactive;
}

uint64_t kvt_slots_offset(const struct kvt_slots *s, uint32_t segment,
			  uint32_t slot)
{
	return s->segs[segment].stride * slot;
}

void kvt_slots_set_user(struct kvt_slots *s, uint32_t segment, uint32_t slot,
			void *user)
{
	s->segs[segment].users[slot] = user;
}

void *kvt_slots_user(const struct kvt_slots *s, uint32_t segment, uint32_t slot)
{
	return s->segs[segment].users[slot];
}

uint32_t kvt_slots_segments(const struct kvt_slots *s)
{
	return s->nsegs;
}

uint32_t kvt_slots_segment_tag(const struct kvt_slots *s, uint32_t segment)
{
	return s->segs[segment].tag;
}

void kvt_slots_set_tag(struct kvt_slots *s, uint32_t segment, uint32_t tag)
{
	s->segs[segment].tag = tag;
}

uint32_t kvt_slots_segment_owner(const struct kvt_slots *s, uint32_t segment)
{
	return s->segs[segment].owner;
}

uint32_t kvt_slots_segment_slots(const struct kvt_slots *s, uint32_t segment)
{
	return s->segs[segment].nslots;
}

uint32_t kvt_slots_segment_used(const struct kvt_slots *s, uint32_t segment)
{
	return s->segs[segment].nslots - s->segs[segment].nfree;
}

uint32_t kvt_slots_segments_carved(const struct kvt_slots *s)
{
	return s->ncarved;
}

/*
 * A doubly-linked list of blocks through their prev/next fields: a
 * producer's pending blocks (engine) or one retention class (policy). A
 * block is on at most one list at a time.
 */
#ifndef KVT_BLOCK_LIST_H
#define KVT_BLOCK_LIST_H

#include <stddef.h>

#include "index.h"

struct kvt_block_list {
	struct kvt_block *head, *tail;
};

/* Inserts b after `after` (NULL: at the head). */
static inline void kvt_block_list_insert(struct kvt_block_list *l,
					 struct kvt_block *after,
					 struct kvt_block *b)
{
	b->prev = after;
	b->next = after ? after->next : l->head;
	if (b->next)
		b->next->prev = b;
	else
		l->tail = b;
	if (after)
		after->next = b;
	else
		l->head = b;
}

static inline void kvt_block_list_unlink(struct kvt_block_list *l,
					 struct kvt_block *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		l->head = b->next;
	if (b->next)
		b->next->prev = b->prev;
	else
		l->tail = b->prev;
	b->prev = b->next = NULL;
}

#endif

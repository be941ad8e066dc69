/*
 * The cache engine: namespaces, blocks and their life cycle
 * (absent -> PENDING -> READY -> evicted/dropped), sessions with their
 * reservations and leases, LRU eviction, and the host tier's slots.
 *
 * Thread-safe: every call takes the engine's one mutex, so callers (the
 * daemon's completion-queue threads) need no locking of their own. Page bytes
 * are copied outside the lock: a slot is either PENDING (only its producer
 * writes it) or pinned (nobody frees it) while it is copied.
 *
 * Keys are passed as arrays of pointers to 16-byte keys; the caller has
 * checked their length. Errors are -errno with a message in *err:
 *   -EINVAL  a bad argument              -ENOENT  unknown namespace/session/lease
 *   -EPERM   not allowed in this state   -ENOSPC  no slot or no room
 *   -ENOMEM  out of memory
 */
#ifndef KVT_ENGINE_H
#define KVT_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "index.h"

#define KVT_NAMESPACE_NAME_MAX 128
#define KVT_BLOCK_TOKENS_MAX 4096
#define KVT_SESSION_TOKEN_BYTES 16
#define KVT_SLOT_ALIGN 4096

struct kvt_engine_config {
	uint64_t host_bytes;    /* capacity of the host tier */
	uint64_t segment_bytes; /* size of one shm segment: the largest page */
	const char *shm_prefix; /* e.g. "/kvtier-1a2b3c4d-" */
	mode_t shm_mode;
	gid_t shm_gid; /* (gid_t)-1: leave the group alone */
	uint32_t max_namespaces;
};

struct kvt_err {
	char msg[256];
};

struct kvt_location {
	uint32_t segment;
	uint64_t offset;
};

/* Values match kvtier.v1.ReserveState. */
enum kvt_reserve_state {
	KVT_RESERVE_RESERVED = 1,
	KVT_RESERVE_PRESENT = 2,
	KVT_RESERVE_BUSY = 3,
	KVT_RESERVE_NO_SPACE = 4,
};

struct kvt_engine_stats {
	uint64_t sessions_active, sessions_total, leases_active, pinned_blocks;
	uint64_t ready_blocks, pending_blocks, lookup_keys, lookup_hits;
	uint64_t reserved_total, committed_total, aborted_total;
	uint64_t evictions_total, dropped_total, reserve_no_space_total;
	uint64_t host_capacity_bytes, host_used_bytes;
	uint32_t host_segments, host_segments_used, namespaces;
};

struct kvt_namespace_stats {
	char name[KVT_NAMESPACE_NAME_MAX + 1];
	uint64_t page_bytes;
	uint32_t block_tokens;
	uint64_t ready_blocks, pending_blocks, lookup_keys, lookup_hits;
	uint64_t evictions;
};

struct kvt_engine;
struct kvt_session;

int kvt_engine_create(const struct kvt_engine_config *cfg,
		      struct kvt_engine **out, struct kvt_err *err);
/* Frees everything and unlinks the shm segments. No call may be running. */
void kvt_engine_destroy(struct kvt_engine *e);

/* Host tier layout, as workers need it to map the segments. */
const char *kvt_engine_shm_prefix(const struct kvt_engine *e);
uint32_t kvt_engine_host_segments(const struct kvt_engine *e);
uint64_t kvt_engine_segment_bytes(const struct kvt_engine *e);

/* Opens a session; its token (random) is written to token. */
int kvt_engine_session_open(struct kvt_engine *e,
			    uint8_t token[KVT_SESSION_TOKEN_BYTES],
			    struct kvt_session **out);
/* Ends a session: releases its leases, aborts its reservations. */
void kvt_engine_session_close(struct kvt_engine *e, struct kvt_session *s);

int kvt_engine_open_namespace(struct kvt_engine *e, const char *name,
			      uint64_t page_bytes, uint32_t block_tokens,
			      uint32_t *ns, bool *created, uint64_t *stride,
			      struct kvt_err *err);
/* -ENOENT for an unknown ns. */
int kvt_engine_page_bytes(struct kvt_engine *e, uint32_t ns,
			  uint64_t *page_bytes, struct kvt_err *err);

int kvt_engine_lookup(struct kvt_engine *e, uint32_t ns,
		      const uint8_t *const *keys, uint32_t n, uint32_t *ready,
		      struct kvt_err *err);

/*
 * parent may be NULL. states[n] and locs[n] receive the outcome per key.
 * -ENOSPC when some key needed a slot and none was reserved.
 */
int kvt_engine_reserve(struct kvt_engine *e,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		       const uint8_t *parent, const uint8_t *const *keys,
		       uint32_t n, enum kvt_reserve_state *states,
		       struct kvt_location *locs, struct kvt_err *err);
int kvt_engine_commit(struct kvt_engine *e,
		      const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		      const uint8_t *const *keys, uint32_t n,
		      struct kvt_err *err);
int kvt_engine_abort(struct kvt_engine *e,
		     const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		     const uint8_t *const *keys, uint32_t n, struct kvt_err *err);

/* Pins the ready prefix under a new lease (0 when nothing is ready). */
int kvt_engine_acquire(struct kvt_engine *e,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES], uint32_t ns,
		       const uint8_t *const *keys, uint32_t n, uint64_t *lease,
		       struct kvt_location *locs, uint32_t *count,
		       struct kvt_err *err);
int kvt_engine_release(struct kvt_engine *e,
		       const uint8_t token[KVT_SESSION_TOKEN_BYTES],
		       uint64_t lease, struct kvt_err *err);

/* Copies pages (each page_bytes long) in as ready blocks; see Put. */
int kvt_engine_put(struct kvt_engine *e, uint32_t ns, const uint8_t *parent,
		   const uint8_t *const *keys, const void *const *pages,
		   uint32_t n, uint32_t *stored, struct kvt_err *err);

/*
 * Pins at most max_pins blocks of the ready prefix without a session, for a
 * caller that copies them out at once and then calls kvt_engine_unpin.
 * *ready is the whole ready prefix length.
 */
int kvt_engine_pin(struct kvt_engine *e, uint32_t ns,
		   const uint8_t *const *keys, uint32_t n, uint32_t max_pins,
		   struct kvt_block **pinned, uint32_t *count, uint32_t *ready,
		   struct kvt_err *err);
void kvt_engine_unpin(struct kvt_engine *e, struct kvt_block **blocks,
		      uint32_t n);
const void *kvt_engine_page(const struct kvt_engine *e,
			    const struct kvt_block *b);

/* keys (n of them) or, with all, every ready block of ns. */
int kvt_engine_drop(struct kvt_engine *e, uint32_t ns,
		    const uint8_t *const *keys, uint32_t n, bool all,
		    uint32_t *dropped, struct kvt_err *err);

void kvt_engine_stats(struct kvt_engine *e, struct kvt_engine_stats *st);
/* -ENOENT past the last namespace. */
int kvt_engine_namespace_stats(struct kvt_engine *e, uint32_t ns,
			       struct kvt_namespace_stats *st);

#endif

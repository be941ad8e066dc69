/*
 * The tiers below host, as the engine sees them: a table of operations
 * (struct kvt_tier_ops) that nvme_tier.c and hbm_tier.c implement, and the
 * next tier (remote) will.
 *
 * The host tier is the engine's own: readers read host slots (or a copy
 * in their GPU's hbm pool), and a READY block either holds a host slot or
 * is kept by a lower tier that can read it back into one. So a lower tier
 * is told what happens to blocks in host, and is asked to keep, locate and
 * bring back copies:
 *
 *   save          a block is READY in host (on commit; again when a
 *                 shrinking host tier empties its segment): write-behind
 *   holds         does it keep a copy that promote can read back?
 *   host_leave    the block's host slot is freed
 *   forget        the block leaves the cache: its copy and record go
 *   segment       a host segment is made, remade or given back
 *                 (registration of host memory for I/O or DMA)
 *   promote       read a kept copy into a host slot, asynchronously
 *   locate        where a reader on GPU pool `pool` should read a block
 *   namespace     a namespace is opened (created) or dropped
 *   stats         its part of kvt_engine_stats
 *
 * Every op is called with the engine lock held, except destroy; an op
 * left NULL has nothing to do. A tier whose work completes on its own
 * thread reports back with the engine lock held (taking it itself, or
 * called with it, as nvme.c's mover is) through the engine's functions in
 * engine_int.h: block_pin/io_unpin around an I/O, engine_promoted for a
 * promotion, block_copy_lost when it loses a copy.
 *
 * Adding a tier: a file implementing these ops with a constructor that the
 * engine calls from kvt_engine_create (under a config section of its own,
 * struct kvt_engine_config), its value in enum kvt_tier if Lookup can
 * report blocks as kept there only, and its stats. See README.md, "Design
 * notes".
 */
#ifndef KVT_TIER_H
#define KVT_TIER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

struct kvt_lower_tier;

struct kvt_tier_ops {
	const char *name;
	/* What Lookup reports for a block kept here and not in host. */
	enum kvt_tier tier;
	/* Starts keeping a copy of b, a READY block in a host slot. true
	 * while a write of b is under way (b is pinned until it ends). */
	bool (*save)(struct kvt_lower_tier *t, struct kvt_block *b);
	bool (*holds)(const struct kvt_lower_tier *t, const struct kvt_block *b);
	void (*host_leave)(struct kvt_lower_tier *t, struct kvt_block *b);
	void (*forget)(struct kvt_lower_tier *t, struct kvt_block *b);
	/* Host segment seg now lives at base; NULL: it is being remade or
	 * given back, and must not be used until named again. */
	void (*segment)(struct kvt_lower_tier *t, uint32_t seg, void *base);
	/*
	 * Reads b's copy into host segment seg at offset. 0: the tier calls
	 * engine_promoted(e, job, rc) exactly once, later, with the engine
	 * lock held; -errno: it will not.
	 */
	int (*promote)(struct kvt_lower_tier *t, struct kvt_block *b,
		       void *job, uint32_t seg, uint64_t offset);
	/* true with *loc filled in when the reader on GPU pool `pool` reads
	 * b here; false: from host (and the tier may start a copy, so that
	 * the next reader finds one). */
	bool (*locate)(struct kvt_lower_tier *t, struct kvt_block *b,
		       uint32_t pool, struct kvt_location *loc);
	/*
	 * Asks whether the n keys (of namespace entry ns, tenant's scope) that
	 * a Lookup found nowhere on this node are kept here, within budget
	 * ns. 0: the tier calls engine_probed(e, job, found) exactly once,
	 * later, WITHOUT the engine lock; -errno: it will not. Blocks it
	 * found become stubs kept here (adopt).
	 */
	int (*probe)(struct kvt_lower_tier *t, uint32_t ns, uint32_t tenant,
		     const uint8_t (*keys)[16], uint32_t n, uint64_t budget,
		     void *job);
	void (*adopt)(struct kvt_lower_tier *t, struct kvt_block *b);
	/* Namespace entry ns was created (open) or dropped (!open). */
	void (*namespace)(struct kvt_lower_tier *t, uint32_t ns, bool open);
	void (*stats)(struct kvt_lower_tier *t, struct kvt_engine_stats *st);
	/* Completes or ends what is under way, then frees the tier. Called
	 * without the engine lock; its callbacks may still take it. */
	void (*destroy)(struct kvt_lower_tier *t);
};

/* Each tier's own struct starts with this. */
struct kvt_lower_tier {
	const struct kvt_tier_ops *ops;
	struct kvt_engine *e;
};

/* Constructors, called by kvt_engine_create before the timer starts.
 * NULL with the reason in *err: the engine serves without that tier. */
struct kvt_lower_tier *kvt_nvme_tier_open(struct kvt_engine *e,
					  struct kvt_err *err);
struct kvt_lower_tier *kvt_hbm_tier_open(struct kvt_engine *e,
					 struct kvt_err *err);
struct kvt_lower_tier *kvt_remote_tier_open(struct kvt_engine *e,
					    struct kvt_err *err);

/* A promotion (job from the engine) ended: rc 0, b is in its host slot. */
void engine_promoted(struct kvt_engine *e, void *job, int rc);
/* A probe (job from the engine) ended: found[i] for its keys; without
 * the engine lock: it finishes the Lookup. */
void engine_probed(struct kvt_engine *e, void *job, const bool *found);
/* Runs the waits that tier threads completed (call without the lock). */
void engine_run_io_done(struct kvt_engine *e);

#endif

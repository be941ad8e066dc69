/*
 * The daemon's configuration over its life: what it started with, and each
 * reload (SIGHUP) of the same file and --set overrides. A reload that does
 * not parse changes nothing; one that does applies the knobs that can change
 * live and keeps the rest, noting them as waiting for a restart. The RPC
 * threads read it (GetConfig, Stats) while the main thread reloads.
 */
#ifndef KVT_RELOAD_H
#define KVT_RELOAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"

/* Applies the live knobs of next; 0, or -errno with the reason in err. */
typedef int (*kvt_reload_apply_fn)(void *arg, const struct kvt_config *next,
				   char *err, size_t len);

struct kvt_reload {
	pthread_mutex_t lock;
	const char *file; /* NULL: none */
	const char *const *sets;
	size_t nsets;
	struct kvt_config running; /* what the daemon runs with */
	struct kvt_config wanted;  /* the file as last read */
	uint64_t reloads_total, failures_total;
	bool last_ok;
	time_t last_time;
	char last_error[512];
};

/* Builds the starting configuration. 0, or -errno with the reason in err. */
int kvt_reload_init(struct kvt_reload *r, const char *file,
		    const char *const *sets, size_t nsets, char *err,
		    size_t len);

/* Reads the file again and applies it; logs what changed and what waits for
 * a restart. 0, or -errno (logged; the running configuration is untouched). */
int kvt_reload_run(struct kvt_reload *r, kvt_reload_apply_fn apply, void *arg);

#endif

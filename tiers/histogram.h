/*
 * Histograms with fixed bucket bounds, in the shape Prometheus exposes:
 * counts per bucket (not cumulative here), their sum and total. Any thread
 * may observe and read at once (relaxed atomics: a reader may see a count
 * one observation ahead of the sum, which a scrape tolerates).
 */
#ifndef KVT_HISTOGRAM_H
#define KVT_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#define KVT_HISTOGRAM_BOUNDS_MAX 24

struct kvt_histogram_bounds {
	uint32_t n;
	uint64_t le[KVT_HISTOGRAM_BOUNDS_MAX]; /* ascending upper bounds, ns */
};

/* RPC latency: 10 µs to 10 s in 1-2.5-5 steps. */
extern const struct kvt_histogram_bounds kvt_latency_bounds;
/* Ages of cached blocks: 1 ms to a day. */
extern const struct kvt_histogram_bounds kvt_age_bounds;

struct kvt_histogram {
	const struct kvt_histogram_bounds *bounds;
	/* counts[n]: above the last bound */
	atomic_uint_fast64_t counts[KVT_HISTOGRAM_BOUNDS_MAX + 1];
	atomic_uint_fast64_t sum_ns;
};

void kvt_histogram_init(struct kvt_histogram *h,
			const struct kvt_histogram_bounds *bounds);
void kvt_histogram_observe(struct kvt_histogram *h, uint64_t ns);

/* A copy taken for reading. */
struct kvt_histogram_snapshot {
	uint32_t n;
	uint64_t le[KVT_HISTOGRAM_BOUNDS_MAX];
	uint64_t counts[KVT_HISTOGRAM_BOUNDS_MAX + 1];
	uint64_t sum_ns, count;
};
void kvt_histogram_read(const struct kvt_histogram *h,
			struct kvt_histogram_snapshot *out);

#endif

/*
 * What the benchmarks share: a monotonic clock in seconds, the keys of a
 * seed, and percentiles of samples. Header-only; any thread.
 */
#ifndef KVT_BENCH_UTIL_H
#define KVT_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

#include <kvtier/key.h>

#include "harness.h"

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n keys, each filled from seed base + i. */
static inline void bench_keys(struct kvt_key *keys, int n, unsigned base)
{
	for (int i = 0; i < n; i++)
		test_fill(keys[i].bytes, KVT_KEY_SIZE, base + (unsigned)i);
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The p-quantile (0.5: the median) of the n samples at v, which it sorts. */
static inline double bench_percentile(double *v, size_t n, double p)
{
	size_t i = (size_t)((double)n * p);

	qsort(v, n, sizeof(*v), bench_cmp_double);
	return v[i < n ? i : n - 1];
}

#endif

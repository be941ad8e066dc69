#include "histogram.h"

#include <string.h>

#define US 1000ull
#define MS 1000000ull
#define S 1000000000ull

const struct kvt_histogram_bounds kvt_latency_bounds = {
	19,
	{ 10 * US, 25 * US, 50 * US, 100 * US, 250 * US, 500 * US, 1 * MS,
	  2500 * US, 5 * MS, 10 * MS, 25 * MS, 50 * MS, 100 * MS, 250 * MS,
	  500 * MS, 1 * S, 2500 * MS, 5 * S, 10 * S },
};

const struct kvt_histogram_bounds kvt_age_bounds = {
	14,
	{ 1 * MS, 10 * MS, 100 * MS, 1 * S, 10 * S, 30 * S, 60 * S, 300 * S,
	  900 * S, 1800 * S, 3600 * S, 6 * 3600 * S, 12 * 3600 * S, 86400 * S },
};

void kvt_histogram_init(struct kvt_histogram *h,
			const struct kvt_histogram_bounds *bounds)
{
	memset(h, 0, sizeof(*h));
	h->bounds = bounds;
}

void kvt_histogram_observe(struct kvt_histogram *h, uint64_t ns)
{
	uint32_t i = 0;

	while (i < h->bounds->n && ns > h->bounds->le[i])
		i++;
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void kvt_histogram_read(const struct kvt_histogram *h,
			struct kvt_histogram_snapshot *out)
{
	out->n = h->bounds->n;
	memcpy(out->le, h->bounds->le, sizeof(out->le));
	out->count = 0;
	for (uint32_t i = 0; i <= out->n; i++) {
		out->counts[i] = atomic_load_explicit(&h->counts[i],
						      memory_order_relaxed);
		out->count += out->counts[i];
	}
	out->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

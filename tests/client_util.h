/*
 * Client helpers for tests and benchmarks that link libkvtier: numbered
 * keys, an attached client on a namespace, one statistic.
 */
#ifndef KVT_TEST_CLIENT_UTIL_H
#define KVT_TEST_CLIENT_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kvtier/kvtier.h"

/* Key i under an 8-byte tag. */
static inline struct kvt_key test_key(const char tag[8], unsigned i)
{
	struct kvt_key k;

	memset(&k, 0, sizeof(k));
	memcpy(k.bytes, tag, 8);
	memcpy(k.bytes + 8, &i, sizeof(i));
	return k;
}

/* Connects to addr, attaches as name, opens namespace ns_name. */
static inline kvt_client *test_client(const char *addr, const char *name,
				      const char *ns_name, uint64_t page,
				      struct kvt_namespace *ns)
{
	kvt_client *c;

	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, name), 0);
	CHECK_RC(c, kvt_open_namespace(c, ns_name, page, 16, 0, ns), 0);
	return c;
}

struct test_stat_find {
	const char *name;
	char value[64];
};

static inline void test_stat_cb(void *arg, const char *name, const char *value)
{
	struct test_stat_find *f = arg;

	if (strcmp(name, f->name) == 0)
		snprintf(f->value, sizeof(f->value), "%s", value);
}

/* A counter's value; a bool is 1 or 0; an absent one (proto default) 0. */
static inline unsigned long long test_stat(kvt_client *c, const char *name)
{
	struct test_stat_find f = { name, "0" };

	CHECK_RC(c, kvt_stats(c, test_stat_cb, &f), 0);
	return strcmp(f.value, "true") == 0 ? 1 : strtoull(f.value, NULL, 10);
}

#endif

/*
 * The cache policy through the real engine (real shm, fake clock, no
 * sleeps): leaf-first order, retention priorities and their fallback, idle
 * TTL, tenant quotas, a stress of random pins that must never be evicted,
 * and a trace of shared system prompts with conversations branching off
 * them, replayed under leaf-first+priority and under plain LRU: leaf-first
 * must hit more tokens. The trace's figures are printed for BENCHMARKS.md.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "harness.h"

#define PAGE 4096
#define BLOCK_TOKENS 16

static uint64_t fake_now = 1;

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

/* Key of block `pos` of chain `chain`: distinct per (chain, pos). */
static void make_key(uint8_t key[KVT_KEY_BYTES], uint32_t chain, uint32_t pos)
{
	memset(key, 0, KVT_KEY_BYTES);
	test_fill(key, KVT_KEY_BYTES, chain * 100003u + pos + 1);
}

static struct kvt_engine *engine(uint32_t blocks, enum kvt_eviction mode,
				 uint64_t quota, uint32_t *ns)
{
	struct kvt_engine_config cfg = {
		.host_bytes = (uint64_t)blocks * PAGE, .segment_bytes = 16 * PAGE,
		.max_namespaces = 2,
		.eviction = mode, .default_priority = 35,
		.max_wait = 1000 * KVT_MS, .default_host_quota = quota,
		.clock = fake_clock,
	};
	struct kvt_engine *e;
	struct kvt_err err;
	uint64_t stride;
	uint32_t t;
	bool created;

	CHECK(kvt_engine_create(&cfg, &e, &err) == 0);
	/* Tenant uid 1 is the engine's first (index 1): ns is its namespace. */
	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0 && t == 1);
	CHECK(kvt_engine_open_namespace(e, t, "m", PAGE, BLOCK_TOKENS, false, 0,
					ns, &created, &stride, &err) == 0);
	return e;
}

/* Writes chain[0..n) (as one Put, so parents are recorded); keys given. */
static void put_chain(struct kvt_engine *e, uint32_t tenant, uint32_t ns,
		      const uint8_t *const *keys, uint32_t n,
		      const struct kvt_retention *ret)
{
	static uint8_t page[PAGE];
	const void *pages[256];
	struct kvt_req q = { .tenant = tenant, .ns = ns, .keys = keys, .n = n };
	struct kvt_err err;
	uint32_t stored;

	for (uint32_t i = 0; i < n; i++)
		pages[i] = page;
	CHECK(kvt_engine_put(e, &q, NULL, ret, pages, &stored, &err) == 0);
}

static uint32_t ready_len(struct kvt_engine *e, uint32_t tenant, uint32_t ns,
			  const uint8_t *const *keys, uint32_t n)
{
	struct kvt_req q = { .tenant = tenant, .ns = ns, .keys = keys, .n = n };
	struct kvt_err err;
	uint32_t r, p;

	CHECK(kvt_engine_lookup(e, &q, &r, &p, NULL, &err) == 0);
	return r;
}

/* keys[i] -> bytes of (chain, i), for n blocks. */
struct chain {
	uint8_t bytes[256][KVT_KEY_BYTES];
	const uint8_t *keys[256];
};

static void chain_init(struct chain *c, uint32_t id, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		make_key(c->bytes[i], id, i);
		c->keys[i] = c->bytes[i];
	}
}

/* A root block with two long branches: the branches' leaves go first. */
static void test_leaf_first(void)
{
	struct chain a, b;
	uint32_t ns, t;
	struct kvt_engine *e = engine(32, KVT_EVICT_LEAF_FIRST, 0, &ns);

	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0);
	/* Chain a: 16 blocks; chain b shares a's first 4 (same keys). */
	chain_init(&a, 1, 16);
	chain_init(&b, 2, 16);
	for (int i = 0; i < 4; i++)
		memcpy(b.bytes[i], a.bytes[i], KVT_KEY_BYTES);
	put_chain(e, t, ns, a.keys, 16, NULL);
	fake_now += 10;
	put_chain(e, t, ns, b.keys, 16, NULL); /* 12 new blocks: 28 of 32 */
	fake_now += 10;
	/* The shared 4 were used last of all (a's lookup touches them)... */
	CHECK(ready_len(e, t, ns, a.keys, 4) == 4);
	fake_now += 10;
	/* ...yet 16 more blocks evict only leaves, never the shared root. */
	{
		struct chain c;

		chain_init(&c, 3, 16);
		put_chain(e, t, ns, c.keys, 16, NULL);
	}
	CHECK(ready_len(e, t, ns, a.keys, 4) == 4);
	CHECK(ready_len(e, t, ns, b.keys, 4) == 4);
	/* Leaves went first: what is left of each branch is a prefix. */
	{
		uint32_t ra = ready_len(e, t, ns, a.keys, 16);
		uint32_t rb = ready_len(e, t, ns, b.keys, 16);
		struct kvt_engine_stats st;

		kvt_engine_stats(e, &st);
		CHECK(st.ready_blocks == 32);
		/* 32 = 4 shared + (ra - 4) + (rb - 4) + 16 of c: no orphans. */
		CHECK(4 + (ra - 4) + (rb - 4) + 16 == 32);
	}
	kvt_engine_destroy(e);
}

/* Extending a chain never evicts the block it extends: a full tier holding
 * one chain refuses its next block rather than orphan it. */
static void test_extend_keeps_parent(void)
{
	static uint8_t page[PAGE];
	const void *pages[1] = { page };
	struct chain c;
	uint32_t ns, t, stored;
	struct kvt_err err;
	struct kvt_req q;
	struct kvt_engine *e = engine(16, KVT_EVICT_LEAF_FIRST, 0, &ns);

	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0);
	chain_init(&c, 50, 17);
	put_chain(e, t, ns, c.keys, 16, NULL);
	q = (struct kvt_req){ .tenant = t, .ns = ns, .keys = &c.keys[16], .n = 1 };
	CHECK(kvt_engine_put(e, &q, c.keys[15], NULL, pages, &stored, &err) == -ENOSPC);
	CHECK(ready_len(e, t, ns, c.keys, 16) == 16);
	kvt_engine_destroy(e);
}

/* High priority outlives low priority; the priority falls back in time. */
static void test_priority(void)
{
	struct kvt_retention high = { 90, 1000 * KVT_MS }, low = { 10, 0 };
	struct chain hot, cold, fill;
	uint32_t ns, t;
	struct kvt_engine_stats st;
	struct kvt_engine *e = engine(32, KVT_EVICT_LEAF_FIRST, 0, &ns);

	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0);
	chain_init(&hot, 10, 8);
	chain_init(&cold, 11, 8);
	chain_init(&fill, 12, 32);
	put_chain(e, t, ns, hot.keys, 8, &high); /* oldest, but priority 90 */
	fake_now += 10;
	put_chain(e, t, ns, cold.keys, 8, &low);
	fake_now += 10;
	put_chain(e, t, ns, fill.keys, 16, NULL); /* full now */
	fake_now += 10;
	put_chain(e, t, ns, &fill.keys[16], 8, NULL); /* evicts 8 */
	/* Cold went though hot is older (a lookup would touch hot: count). */
	CHECK(ready_len(e, t, ns, cold.keys, 8) == 0);
	kvt_engine_stats(e, &st);
	CHECK(st.ready_blocks == 32 && st.evictions_total == 8);
	/* After its duration, hot falls back to 35 and, the oldest, goes next. */
	fake_now += 1000 * KVT_MS;
	kvt_engine_tick(e);
	kvt_engine_stats(e, &st);
	CHECK(st.priority_fallbacks_total == 8);
	fake_now += 10;
	put_chain(e, t, ns, &fill.keys[24], 8, NULL);
	CHECK(ready_len(e, t, ns, hot.keys, 1) == 0);
	CHECK(ready_len(e, t, ns, fill.keys, 1) == 1);
	kvt_engine_destroy(e);
}

/* Unused blocks expire after the namespace's idle TTL; used ones stay. */
static void test_idle_ttl(void)
{
	struct chain used, idle;
	uint32_t ns, t;
	struct kvt_engine_stats st;
	struct kvt_err err;
	uint64_t stride;
	bool created;
	struct kvt_engine *e = engine(32, KVT_EVICT_LEAF_FIRST, 0, &ns);

	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0);
	CHECK(kvt_engine_open_namespace(e, 1, "m", PAGE, BLOCK_TOKENS, false,
					500 * KVT_MS, &ns, &created, &stride,
					&err) == 0 && !created);
	chain_init(&used, 20, 4);
	chain_init(&idle, 21, 4);
	put_chain(e, t, ns, used.keys, 4, NULL);
	put_chain(e, t, ns, idle.keys, 4, NULL);
	fake_now += 400 * KVT_MS;
	CHECK(ready_len(e, t, ns, used.keys, 4) == 4);
	fake_now += 200 * KVT_MS;
	kvt_engine_tick(e);
	CHECK(ready_len(e, t, ns, idle.keys, 4) == 0);
	CHECK(ready_len(e, t, ns, used.keys, 4) == 4);
	kvt_engine_stats(e, &st);
	CHECK(st.expired_total == 4 && st.ready_blocks == 4);
	kvt_engine_destroy(e);
}

/* Tenant a floods; b keeps its quota's worth; a evicts its own first. */
static void test_quota(void)
{
	struct chain b_chain, a_chain;
	uint32_t ns, nsb, ta, tb;
	struct kvt_tenant_stats sa, sb;
	struct kvt_err err;
	uint64_t stride;
	bool created;
	struct kvt_engine *e = engine(64, KVT_EVICT_LEAF_FIRST, 16 * PAGE, &ns);

	/* Namespaces are per tenant: b opens its own "m". */
	CHECK(kvt_engine_tenant(e, 1, "a", &ta) == 0);
	CHECK(kvt_engine_tenant(e, 2, "b", &tb) == 0);
	CHECK(kvt_engine_open_namespace(e, tb, "m", PAGE, BLOCK_TOKENS, false, 0,
					&nsb, &created, &stride, &err) == 0 &&
	      created && nsb != ns);
	chain_init(&b_chain, 30, 16);
	put_chain(e, tb, nsb, b_chain.keys, 16, NULL); /* b: exactly its quota */
	for (uint32_t i = 0; i < 40; i++) {
		chain_init(&a_chain, 100 + i, 8);
		fake_now += 10;
		put_chain(e, ta, ns, a_chain.keys, 8, NULL);
	}
	CHECK(ready_len(e, tb, nsb, b_chain.keys, 16) == 16);
	kvt_engine_tenant_stats(e, ta, &sa);
	kvt_engine_tenant_stats(e, tb, &sb);
	CHECK(sb.host_used_bytes == 16 * PAGE && sa.host_used_bytes == 48 * PAGE);
	CHECK(sb.evictions == 0 && sa.evictions > 0);
	/* The same keys in another tenant are another block. */
	CHECK(ready_len(e, ta, ns, b_chain.keys, 16) == 0);
	kvt_engine_destroy(e);
}

/* Random puts, pins and unpins: a pinned block is never evicted and its
 * bytes never change; usage never passes capacity. */
static void test_pin_stress(void)
{
	enum { BLOCKS = 48, KEYS = 400, MAXPINS = 40 };
	static uint8_t bytes[KEYS][KVT_KEY_BYTES], page[PAGE];
	struct kvt_block *pinned[MAXPINS];
	int pinned_key[MAXPINS], npinned = 0;
	uint32_t ns, t;
	struct kvt_engine_stats st;
	struct kvt_err err;
	struct kvt_engine *e = engine(BLOCKS, KVT_EVICT_LEAF_FIRST, 0, &ns);

	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0);
	for (int i = 0; i < KEYS; i++)
		make_key(bytes[i], 40, (uint32_t)i);
	for (int step = 0; step < 20000; step++) {
		int k = (int)rnd(KEYS);
		const uint8_t *key = bytes[k];
		struct kvt_req q = { .tenant = t, .ns = ns, .keys = &key, .n = 1 };
		uint32_t op = rnd(10), count, ready, stored;
		const void *pages[1] = { page };

		fake_now++;
		if (op < 5) {
			test_fill(page, PAGE, (unsigned)k);
			(void)kvt_engine_put(e, &q, NULL, NULL, pages, &stored, &err);
		} else if (op < 8 && npinned < MAXPINS) {
			CHECK(kvt_engine_pin(e, &q, 1, &pinned[npinned], &count,
					     &ready, &err) == 0);
			if (count)
				pinned_key[npinned++] = k;
		} else if (npinned) {
			int i = (int)rnd((uint32_t)npinned);

			kvt_engine_unpin(e, &pinned[i], 1);
			pinned[i] = pinned[--npinned];
			pinned_key[i] = pinned_key[npinned];
		}
		for (int i = 0; i < npinned; i++) {
			const uint8_t *pk = bytes[pinned_key[i]];

			CHECK(ready_len(e, t, ns, &pk, 1) == 1);
			test_fill(page, PAGE, (unsigned)pinned_key[i]);
			CHECK(memcmp(kvt_engine_page(e, pinned[i]), page, PAGE) == 0);
		}
		kvt_engine_stats(e, &st);
		CHECK(st.host_used_bytes <= st.host_capacity_bytes);
	}
	kvt_engine_unpin(e, pinned, (uint32_t)npinned);
	kvt_engine_destroy(e);
}

/*
 * The trace: PROMPTS system prompts of PROMPT_BLOCKS blocks, picked with a
 * Zipf-like skew; each request either starts a conversation (a prompt plus
 * a question) or continues one of the last RECENT conversations with a new
 * turn. The prompt's blocks ask for priority 80; the rest for the default.
 */
enum { PROMPTS = 8, PROMPT_BLOCKS = 24, CONVS = 4096, RECENT = 48,
       REQUESTS = 6000, CAPACITY = 384 };

struct conv {
	uint32_t prompt, id, len; /* len blocks after the prompt */
};

struct trace_result {
	uint64_t hit_tokens, total_tokens;
};

static uint32_t zipf_prompt(void)
{
	/* P(i) ~ 1/(i+1): draw from the cumulative weights. */
	static const uint32_t cum[PROMPTS] = { 368, 552, 675, 767, 840, 902, 954, 1000 };
	uint32_t r = rnd(1000);

	for (uint32_t i = 0; i < PROMPTS; i++)
		if (r < cum[i])
			return i;
	return PROMPTS - 1;
}

static struct trace_result run_trace(enum kvt_eviction mode, bool priority)
{
	static struct conv convs[CONVS];
	static uint8_t key_bytes[PROMPT_BLOCKS + 128][KVT_KEY_BYTES];
	const uint8_t *keys[PROMPT_BLOCKS + 128];
	struct kvt_retention prompt_ret = { 80, 0 };
	struct trace_result res = { 0, 0 };
	uint32_t ns, t, nconv = 0;
	struct kvt_engine *e = engine(CAPACITY, mode, 0, &ns);

	rng_state = 0x9e3779b97f4a7c15ull; /* the same trace for both modes */
	CHECK(kvt_engine_tenant(e, 1, "t", &t) == 0);
	for (int r = 0; r < REQUESTS; r++) {
		struct conv *c;
		uint32_t n, ready;

		if (nconv == 0 || rnd(100) < 55) {
			c = &convs[nconv % CONVS];
			c->prompt = zipf_prompt();
			c->id = nconv++;
			c->len = 4 + rnd(9); /* the first question */
		} else {
			uint32_t back = rnd(nconv < RECENT ? nconv : RECENT);

			c = &convs[(nconv - 1 - back) % CONVS];
			c->len += 2 + rnd(5); /* answer and next question */
			if (PROMPT_BLOCKS + c->len > PROMPT_BLOCKS + 127)
				c->len = 127;
		}
		n = PROMPT_BLOCKS + c->len;
		for (uint32_t i = 0; i < n; i++) {
			if (i < PROMPT_BLOCKS)
				make_key(key_bytes[i], 1000000 + c->prompt, i);
			else
				make_key(key_bytes[i], c->id, i);
			keys[i] = key_bytes[i];
		}
		fake_now += 1000;
		ready = ready_len(e, t, ns, keys, n);
		res.hit_tokens += (uint64_t)ready * BLOCK_TOKENS;
		res.total_tokens += (uint64_t)n * BLOCK_TOKENS;
		/* Recompute and store what missed: prompt blocks at 80. */
		if (ready < PROMPT_BLOCKS)
			put_chain(e, t, ns, &keys[ready], PROMPT_BLOCKS - ready,
				  priority ? &prompt_ret : NULL);
		if (ready < n) {
			uint32_t from = ready > PROMPT_BLOCKS ? ready : PROMPT_BLOCKS;
			struct kvt_req q = { .tenant = t, .ns = ns,
					     .keys = &keys[from], .n = n - from };
			static uint8_t page[PAGE];
			const void *pages[128 + PROMPT_BLOCKS];
			struct kvt_err err;
			uint32_t stored;

			for (uint32_t i = 0; i < n - from; i++)
				pages[i] = page;
			(void)kvt_engine_put(e, &q, keys[from - 1], NULL, pages,
					     &stored, &err);
		}
	}
	kvt_engine_destroy(e);
	return res;
}

static void test_trace(void)
{
	struct trace_result leaf = run_trace(KVT_EVICT_LEAF_FIRST, true);
	struct trace_result bare = run_trace(KVT_EVICT_LEAF_FIRST, false);
	struct trace_result lru = run_trace(KVT_EVICT_LRU, true);
	double hl = (double)leaf.hit_tokens / (double)leaf.total_tokens;
	double hb = (double)bare.hit_tokens / (double)bare.total_tokens;
	double hr = (double)lru.hit_tokens / (double)lru.total_tokens;

	printf("trace: %d requests, %d prompts x %d blocks, capacity %d blocks\n",
	       REQUESTS, PROMPTS, PROMPT_BLOCKS, CAPACITY);
	printf("token hit rate: leaf-first+priority %.4f, leaf-first alone %.4f, lru %.4f (%.2fx lru)\n",
	       hl, hb, hr, hl / hr);
	CHECK(leaf.total_tokens == lru.total_tokens);
	CHECK(hl > hr && hb > hr);
}

int main(void)
{
	test_leaf_first();
	test_extend_keeps_parent();
	test_priority();
	test_idle_ttl();
	test_quota();
	test_pin_stress();
	test_trace();
	return 0;
}

/*
 * Two worker processes share one cache: A offloads a prompt's pages through
 * shared memory (reserve -> write -> commit); B, another process, looks up
 * the same prefix, acquires it and reads identical bytes through its own
 * mapping. Then the same through the inline Put/Get path.
 */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE (256 * 1024)
#define BLOCK_TOKENS 16
#define NBLOCKS 12

static const uint8_t secret[32] = "kvtier-test-secret-0123456789ab";

static void prompt_keys(struct kvt_key *keys, uint32_t salt)
{
	uint32_t tokens[NBLOCKS * BLOCK_TOKENS + 5];

	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
		tokens[i] = (uint32_t)i * 7 + salt;
	CHECK(kvt_key_prompt(secret, sizeof(secret), tokens,
			     sizeof(tokens) / sizeof(tokens[0]), BLOCK_TOKENS,
			     NULL, 0, keys, NBLOCKS) == NBLOCKS);
}

static kvt_client *open_client(const char *addr, const char *name,
			       struct kvt_namespace *ns)
{
	kvt_client *c;

	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, name), 0);
	CHECK_RC(c, kvt_open_namespace(c, "test-model:bf16:tp0of1:bt16", PAGE,
				       BLOCK_TOKENS, 0, ns), 0);
	return c;
}

static void producer(const char *addr)
{
	struct kvt_key keys[NBLOCKS];
	struct kvt_slot slots[NBLOCKS];
	struct kvt_namespace ns;
	kvt_client *c = open_client(addr, "producer", &ns);
	const void *pages[NBLOCKS];
	size_t stored, ready;

	prompt_keys(keys, 0);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, NBLOCKS, NULL, slots), 0);
	for (int i = 0; i < NBLOCKS; i++) {
		CHECK(slots[i].state == KVT_SLOT_RESERVED && slots[i].page);
		test_fill(slots[i].page, PAGE, (unsigned)i);
	}
	/* Reserved but uncommitted blocks are not readable. */
	CHECK_RC(c, kvt_lookup(c, &ns, keys, NBLOCKS, &ready, NULL), 0);
	CHECK(ready == 0);
	CHECK_RC(c, kvt_commit(c, &ns, keys, NBLOCKS), 0);
	/* A second reservation of the same prompt finds it present. */
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, NBLOCKS, NULL, slots), 0);
	CHECK(slots[0].state == KVT_SLOT_PRESENT && slots[NBLOCKS - 1].state == KVT_SLOT_PRESENT);

	/* The inline path, for another prompt. */
	prompt_keys(keys, 1);
	for (int i = 0; i < NBLOCKS; i++) {
		uint8_t *p = malloc(PAGE);

		CHECK(p);
		test_fill(p, PAGE, 100u + (unsigned)i);
		pages[i] = p;
	}
	CHECK_RC(c, kvt_put(c, &ns, NULL, keys, pages, NBLOCKS, NULL, &stored), 0);
	CHECK(stored == NBLOCKS);
	for (int i = 0; i < NBLOCKS; i++)
		free((void *)pages[i]);
	kvt_close(c);
}

static void consumer(const char *addr)
{
	struct kvt_key keys[NBLOCKS + 1];
	struct kvt_namespace ns;
	struct kvt_lease lease;
	kvt_client *c = open_client(addr, "consumer", &ns);
	uint8_t *want = malloc(PAGE), *got[NBLOCKS];
	size_t ready, n;

	CHECK(want && !ns.created);
	prompt_keys(keys, 0);
	/* One key past the cached prompt: the prefix stops before it. */
	memset(&keys[NBLOCKS], 0xab, sizeof(keys[0]));
	CHECK_RC(c, kvt_lookup(c, &ns, keys, NBLOCKS + 1, &ready, NULL), 0);
	CHECK(ready == NBLOCKS);
	CHECK_RC(c, kvt_acquire(c, &ns, keys, NBLOCKS + 1, 0, &lease), 0);
	CHECK(lease.id != 0 && lease.count == NBLOCKS);
	for (int i = 0; i < NBLOCKS; i++) {
		test_fill(want, PAGE, (unsigned)i);
		CHECK(memcmp(lease.pages[i], want, PAGE) == 0);
	}
	CHECK_RC(c, kvt_release(c, &lease), 0);

	/* Get returns the Put pages, and the shm path reads them too. */
	prompt_keys(keys, 1);
	for (int i = 0; i < NBLOCKS; i++)
		CHECK((got[i] = malloc(PAGE)) != NULL);
	CHECK_RC(c, kvt_get(c, &ns, keys, NBLOCKS, (void *const *)got, &n), 0);
	CHECK(n == NBLOCKS);
	CHECK_RC(c, kvt_acquire(c, &ns, keys, NBLOCKS, 0, &lease), 0);
	for (int i = 0; i < NBLOCKS; i++) {
		test_fill(want, PAGE, 100u + (unsigned)i);
		CHECK(memcmp(got[i], want, PAGE) == 0);
		CHECK(memcmp(lease.pages[i], want, PAGE) == 0);
		free(got[i]);
	}
	CHECK_RC(c, kvt_release(c, &lease), 0);
	free(want);
	kvt_close(c);
}

static void run_child(void (*fn)(const char *), const char *addr, int wait_fd,
		      int done_fd, pid_t *pid)
{
	*pid = fork();
	CHECK(*pid >= 0);
	if (*pid == 0) {
		char x;

		if (wait_fd >= 0)
			CHECK(read(wait_fd, &x, 1) == 1);
		fn(addr);
		if (done_fd >= 0)
			CHECK(write(done_fd, "x", 1) == 1);
		_exit(0);
	}
}

int main(void)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=64M", "host.segment_size=4M", NULL };
	int go[2], status;
	pid_t a, b;

	test_daemon_start(&d, sets);
	CHECK(pipe(go) == 0);
	run_child(producer, d.addr, -1, go[1], &a);
	/* Only the producer may hold the write end: a producer that fails
	 * then ends the consumer's wait (EOF) instead of hanging it. */
	close(go[1]);
	run_child(consumer, d.addr, go[0], -1, &b);
	CHECK(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(waitpid(b, &status, 0) == b && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

/*
 * Early reuse across processes. One producer reserves a chain and commits
 * it block by block; 8 readers, each with its own connection, wait for each
 * block with Acquire(wait_ms). The producer commits block i+1 only after
 * every reader has got block i, so a reader that got a block only at a
 * later commit (or at its deadline) would deadlock the test: ordering is
 * asserted, never wall time. The daemon runs one completion-queue thread,
 * so a wait that blocked it would stall the producer's commits too.
 *
 * Then the producer reserves more blocks and is killed with SIGKILL while
 * every reader waits for them: each wait ends with a miss, counted as
 * missed (not timed out) by the daemon.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE 8192
#define BLOCKS 16
#define TAIL 4     /* blocks reserved by the producer before it is killed */
#define READERS 8
#define WAIT_MS 60000 /* far beyond the test's own timeout */

struct shared {
	atomic_int reserved;       /* the producer holds the BLOCKS */
	atomic_int committed;      /* blocks the producer has committed */
	atomic_int got[BLOCKS];    /* readers that have block i */
	atomic_int tail_reserved;  /* the producer holds the TAIL blocks */
	atomic_int waiting;        /* readers about to wait for the tail */
	atomic_int failures;
};

static struct shared *sh;
static struct kvt_key keys[BLOCKS + TAIL];

/* Waits for *v to reach want; gives up when some process failed. */
static void wait_until(atomic_int *v, int want)
{
	while (atomic_load(v) < want) {
		if (atomic_load(&sh->failures))
			exit(1);
		usleep(200);
	}
}

static kvt_client *open_client(const char *addr, const char *name,
			       struct kvt_namespace *ns)
{
	kvt_client *c;

	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, name), 0);
	CHECK_RC(c, kvt_open_namespace(c, "early-reuse", PAGE, 16, 0, ns), 0);
	return c;
}

static void producer(const char *addr)
{
	struct kvt_slot slots[BLOCKS + TAIL];
	struct kvt_namespace ns;
	kvt_client *c = open_client(addr, "producer", &ns);

	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, BLOCKS, NULL, slots), 0);
	for (int i = 0; i < BLOCKS; i++) {
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
		test_fill(slots[i].page, PAGE, (unsigned)i);
	}
	atomic_store(&sh->reserved, 1);
	for (int i = 0; i < BLOCKS; i++) {
		if (i > 0)
			wait_until(&sh->got[i - 1], READERS);
		/* Count first: a reader that has block i must see it counted. */
		atomic_store(&sh->committed, i + 1);
		CHECK_RC(c, kvt_commit(c, &ns, &keys[i], 1), 0);
	}
	CHECK_RC(c, kvt_reserve(c, &ns, &keys[BLOCKS - 1], &keys[BLOCKS], TAIL,
				NULL, slots), 0);
	atomic_store(&sh->tail_reserved, 1);
	pause(); /* until SIGKILL */
}

static void reader(const char *addr, int id)
{
	char name[32];
	struct kvt_namespace ns;
	struct kvt_lease lease;
	uint8_t want[PAGE];
	size_t ready, pending;
	kvt_client *c;

	snprintf(name, sizeof(name), "reader-%d", id);
	c = open_client(addr, name, &ns);
	wait_until(&sh->reserved, 1);
	for (int i = 0; i < BLOCKS; i++) {
		/* Ask for the whole prefix up to block i; wait for block i. */
		CHECK_RC(c, kvt_acquire(c, &ns, keys, (size_t)i + 1, WAIT_MS, &lease), 0);
		if (lease.count != (size_t)i + 1 || atomic_load(&sh->committed) < i + 1) {
			fprintf(stderr, "reader %d: block %d: got %zu blocks, %d committed\n",
				id, i, lease.count, atomic_load(&sh->committed));
			atomic_fetch_add(&sh->failures, 1);
			exit(1);
		}
		test_fill(want, PAGE, (unsigned)i);
		CHECK(memcmp(lease.pages[i], want, PAGE) == 0);
		CHECK_RC(c, kvt_release(c, &lease), 0);
		atomic_fetch_add(&sh->got[i], 1);
	}
	/* The tail: pending (Lookup says so), then its producer dies. */
	wait_until(&sh->tail_reserved, 1);
	CHECK_RC(c, kvt_lookup(c, &ns, keys, BLOCKS + TAIL, &ready, &pending), 0);
	CHECK(ready == BLOCKS && pending == TAIL);
	atomic_fetch_add(&sh->waiting, 1);
	CHECK_RC(c, kvt_acquire(c, &ns, &keys[BLOCKS], TAIL, WAIT_MS, &lease), 0);
	CHECK(lease.count == 0 && lease.id == 0);
	kvt_close(c);
}

struct counters {
	long active, missed, timed_out, completed, pending;
};

static void collect(void *arg, const char *name, const char *value)
{
	struct counters *k = arg;

	if (strcmp(name, "waits_active") == 0)
		k->active = atol(value);
	else if (strcmp(name, "waits_missed_total") == 0)
		k->missed = atol(value);
	else if (strcmp(name, "waits_timed_out_total") == 0)
		k->timed_out = atol(value);
	else if (strcmp(name, "waits_completed_total") == 0)
		k->completed = atol(value);
	else if (strcmp(name, "pending_blocks") == 0)
		k->pending = atol(value);
}

int main(void)
{
	static const char *const sets[] = { "daemon.threads=1", "policy.max_wait=10m",
					    NULL };
	struct test_daemon d;
	pid_t prod, readers[READERS];
	struct counters k = { 0 };
	kvt_client *c;
	int status;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	for (int i = 0; i < BLOCKS + TAIL; i++)
		test_fill(keys[i].bytes, sizeof(keys[i].bytes), 7000u + (unsigned)i);
	test_daemon_start(&d, sets);

	/* Fork everyone before any gRPC client exists in this process. */
	prod = fork();
	CHECK(prod >= 0);
	if (prod == 0) {
		producer(d.addr);
		_exit(0);
	}
	for (int r = 0; r < READERS; r++) {
		readers[r] = fork();
		CHECK(readers[r] >= 0);
		if (readers[r] == 0) {
			reader(d.addr, r);
			_exit(0);
		}
	}

	/* Kill the producer once all readers wait for its tail. */
	CHECK(kvt_connect(d.addr, &c) == 0);
	wait_until(&sh->waiting, READERS);
	do {
		usleep(1000);
		CHECK(atomic_load(&sh->failures) == 0);
		CHECK_RC(c, kvt_stats(c, collect, &k), 0);
	} while (k.active < READERS);
	kill(prod, SIGKILL);
	CHECK(waitpid(prod, &status, 0) == prod);
	for (int r = 0; r < READERS; r++) {
		CHECK(waitpid(readers[r], &status, 0) == readers[r]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK(atomic_load(&sh->failures) == 0);
	CHECK_RC(c, kvt_stats(c, collect, &k), 0);
	printf("waits: %ld completed, %ld missed, %ld timed out\n", k.completed,
	       k.missed, k.timed_out);
	CHECK(k.active == 0 && k.missed == READERS && k.timed_out == 0);
	CHECK(k.pending == 0);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

/*
 * A hostile worker against a host tier on 2M huge pages: it punches a hole
 * through its own segment, then takes every free huge page for itself, so
 * that the daemon's next touch of that segment finds no page to fault in
 * (SIGBUS, without the host tier's guard). Then it makes the daemon touch
 * it: a Put into the same namespace (a copy in) and a Get of its blocks (a
 * copy out). The daemon must:
 *   - live on and answer (Lookup, Stats), and count the segment
 *     (host_segment_faults_total), its blocks there read as zeros;
 *   - serve a fresh namespace while the worker holds the pages, drop the
 *     punched blocks and give the segment back (it cannot be made anew
 *     yet: no free huge page);
 *   - once the pages are free again, make the segment anew (its memfd is
 *     back, whole), and round-trip pages in it.
 * Needs root (nr_hugepages; given back at exit): skipped otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE (64 << 10)
#define HUGE (2 << 20)
#define SEGMENTS 2
#define BLOCKS 8 /* in the victim namespace: a quarter of a segment */
#define FRESH 8
#define AFTER (HUGE / PAGE) /* a whole segment */

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#endif

struct shared {
	atomic_int step;
	long punched, grabbed;
};

static struct shared *sh;
static pid_t worker_pid; /* in the parent */

static void wait_step(int step)
{
	for (int i = 0; atomic_load(&sh->step) < step; i++) {
		CHECK(i < 60000); /* 30 s: the other side failed */
		/* The worker failed (or the daemon died under it). */
		CHECK(!worker_pid || waitpid(worker_pid, NULL, WNOHANG) == 0);
		usleep(500);
	}
}

static void keys_for(struct kvt_key *k, int n, unsigned base)
{
	for (int i = 0; i < n; i++)
		test_fill(k[i].bytes, sizeof(k[i].bytes), base + (unsigned)i);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* Puts n pages (seeded base + i) under keys, then gets them back whole. */
static void round_trip(kvt_client *c, const struct kvt_namespace *ns,
		       const struct kvt_key *keys, int n, unsigned base)
{
	static uint8_t page[PAGE], got[PAGE];
	const void *in[1] = { page };
	void *out[1] = { got };
	size_t stored, nget;

	for (int i = 0; i < n; i++) {
		test_fill(page, PAGE, base + (unsigned)i);
		CHECK_RC(c, kvt_put(c, ns, NULL, &keys[i], in, 1, NULL, &stored), 0);
		CHECK(stored == 1);
	}
	for (int i = 0; i < n; i++) {
		test_fill(page, PAGE, base + (unsigned)i);
		CHECK_RC(c, kvt_get(c, ns, &keys[i], 1, out, &nget), 0);
		CHECK(nget == 1 && memcmp(got, page, PAGE) == 0);
	}
}

/* Every huge page it can get, in a hugetlb memfd of its own (kept open). */
static long grab_huge_pages(void)
{
	int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
	long n = 0;

	CHECK(fd >= 0);
	CHECK(ftruncate(fd, (off_t)4096 * HUGE) == 0);
	while (n < 4096 && fallocate(fd, 0, (off_t)n * HUGE, HUGE) == 0)
		n++;
	CHECK(n == 4096 || errno == ENOSPC);
	return n;
}

static void worker(const char *addr)
{
	static struct kvt_key keys[BLOCKS + FRESH], fresh[FRESH];
	static uint8_t page[PAGE], got[PAGE];
	struct kvt_slot slots[BLOCKS];
	struct kvt_namespace ns, ns2;
	void *out[1] = { got };
	const void *in[1] = { page };
	size_t stored, nget;
	kvt_client *c;

	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "hostile-worker"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "victim", PAGE, 16, 0, &ns), 0);
	keys_for(keys, BLOCKS + FRESH, 100);
	/* Blocks of its own: half put inline, half reserved and committed. */
	for (int i = 0; i < BLOCKS / 2; i++) {
		test_fill(page, PAGE, (unsigned)i);
		CHECK_RC(c, kvt_put(c, &ns, NULL, &keys[i], in, 1, NULL, &stored), 0);
	}
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, &keys[BLOCKS / 2], BLOCKS / 2, NULL,
				slots), 0);
	for (int i = 0; i < BLOCKS / 2; i++) {
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
		test_fill(slots[i].page, PAGE, (unsigned)(BLOCKS / 2 + i));
	}
	CHECK_RC(c, kvt_commit(c, &ns, &keys[BLOCKS / 2], BLOCKS / 2), 0);

	/* Punch out every segment it may map (the one holding its blocks),
	 * then take the freed huge pages and every other free one. */
	for (uint32_t g = 0; g < SEGMENTS; g++) {
		uint32_t gen;
		int fd = kvt_segment_fd(c, g, &gen);

		if (fd < 0)
			continue;
		CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				HUGE) == 0);
		close(fd);
		sh->punched++;
	}
	CHECK(sh->punched >= 1);
	sh->grabbed = grab_huge_pages();
	CHECK(sh->grabbed >= sh->punched);
	printf("worker: punched %ld segment(s), holds %ld huge pages; %ld free\n",
	       sh->punched, sh->grabbed, test_hugepages_free());
	fflush(stdout);

	/* The daemon copies into the punched range (Put)... */
	for (int i = BLOCKS; i < BLOCKS + FRESH; i++) {
		test_fill(page, PAGE, (unsigned)i);
		CHECK_RC(c, kvt_put(c, &ns, NULL, &keys[i], in, 1, NULL, &stored), 0);
	}
	/* ...and out of it (Get): the punched blocks are zeros, or gone. */
	for (int i = 0; i < BLOCKS; i++) {
		CHECK_RC(c, kvt_get(c, &ns, &keys[i], 1, out, &nget), 0);
		CHECK(nget == 0 || all_zero(got, PAGE));
	}
	/* A fresh namespace lands in the other segment and serves whole. */
	CHECK_RC(c, kvt_open_namespace(c, "fresh", PAGE, 16, 0, &ns2), 0);
	keys_for(fresh, FRESH, 500);
	round_trip(c, &ns2, fresh, FRESH, 500);
	atomic_store(&sh->step, 1);
	/* Holds the pages until the parent has looked. */
	wait_step(2);
	kvt_close(c);
}

/* Waits (10 s at most) for the daemon to hold `want` host memfds, all of
 * their memory committed; returns how many it holds. */
static int wait_memfds(pid_t daemon, int want, long long *blocks)
{
	int memfds = 0;

	for (int i = 0; i < 100; i++) {
		memfds = test_memfds(daemon, "kvtier-host-", blocks);
		if (memfds == want && *blocks * 512 == (long long)want * HUGE)
			break;
		usleep(100 * 1000);
	}
	printf("daemon memfds %d, %lld bytes\n", memfds, *blocks * 512);
	return memfds;
}

struct counters {
	long faults, used;
};

static void collect(void *arg, const char *name, const char *value)
{
	struct counters *n = arg;

	if (strcmp(name, "host_segment_faults_total") == 0)
		n->faults = atol(value);
	else if (strcmp(name, "host_segments_used") == 0)
		n->used = atol(value);
}

int main(void)
{
	static const char *const sets[] = {
		"host.huge_pages=2M", "host.size=4M", "host.segment_size=2M", NULL,
	};
	static struct kvt_key victim[BLOCKS], after[AFTER];
	struct kvt_namespace ns;
	struct counters n = { 0 };
	struct test_daemon d;
	long long blocks = 0;
	size_t ready, pending;
	kvt_client *c;
	int status, memfds = 0;
	pid_t w;

	if (geteuid() != 0) {
		fprintf(stderr, "needs root to reserve huge pages: skipped\n");
		return 77;
	}
	if (test_hugepages_reserve(SEGMENTS + 2) < 0) {
		fprintf(stderr, "cannot reserve %d 2M huge pages: skipped\n", SEGMENTS + 2);
		return 77;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	test_daemon_start(&d, sets);
	CHECK(strstr(d.said, "2M pages (hugetlb)"));

	w = fork();
	CHECK(w >= 0);
	if (w == 0) {
		worker(d.addr);
		_exit(0);
	}
	worker_pid = w;
	wait_step(1);
	/* Alive, answering, and it counted the punched segment. */
	CHECK(kill(d.pid, 0) == 0);
	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "hostile-check"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "victim", PAGE, 16, 0, &ns), 0);
	keys_for(victim, BLOCKS, 100);
	CHECK_RC(c, kvt_lookup(c, &ns, victim, BLOCKS, &ready, &pending), 0);
	CHECK_RC(c, kvt_stats(c, collect, &n), 0);
	printf("host_segment_faults_total %ld\n", n.faults);
	CHECK(n.faults >= 1);
	/* Its timer drops the punched blocks and gives the segment back, but
	 * cannot make it anew while the worker holds every huge page. */
	memfds = wait_memfds(d.pid, SEGMENTS - 1, &blocks);
	CHECK(memfds == SEGMENTS - 1);
	CHECK_RC(c, kvt_lookup(c, &ns, victim, BLOCKS, &ready, &pending), 0);
	CHECK(ready == 0 && pending == 0);
	atomic_store(&sh->step, 2);
	CHECK(waitpid(w, &status, 0) == w && WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* The worker's pages are free again: the segment is made anew (its
	 * memfd is back, whole) and the punched blocks are gone. */
	memfds = wait_memfds(d.pid, SEGMENTS, &blocks);
	CHECK(memfds == SEGMENTS && blocks * 512 == (long long)SEGMENTS * HUGE);
	CHECK_RC(c, kvt_lookup(c, &ns, victim, BLOCKS, &ready, &pending), 0);
	CHECK(ready == 0 && pending == 0);

	/* A new namespace fills the remade segment, and its pages round-trip. */
	CHECK_RC(c, kvt_open_namespace(c, "after", PAGE, 16, 0, &ns), 0);
	keys_for(after, AFTER, 900);
	round_trip(c, &ns, after, AFTER, 900);
	CHECK_RC(c, kvt_stats(c, collect, &n), 0);
	CHECK(n.used == SEGMENTS);
	kvt_close(c);
	CHECK(kill(d.pid, 0) == 0);
	CHECK(test_daemon_stop(&d) == 0);
	test_hugepages_give_back();
	return 0;
}

/*
 * A worker holding pins and reservations (taken over its fast lane) is
 * killed with SIGKILL: within 1 s the daemon has released all of it, and
 * the slots can be reserved again.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE 65536
#define SLOTS 64 /* host.size / PAGE */

struct counters {
	long pinned, pending, sessions, leases;
};

static void collect(void *arg, const char *name, const char *value)
{
	struct counters *c = arg;

	if (strcmp(name, "pinned_blocks") == 0)
		c->pinned = atol(value);
	else if (strcmp(name, "pending_blocks") == 0)
		c->pending = atol(value);
	else if (strcmp(name, "sessions_active") == 0)
		c->sessions = atol(value);
	else if (strcmp(name, "leases_active") == 0)
		c->leases = atol(value);
}

static void make_keys(struct kvt_key *keys, int n, int base)
{
	for (int i = 0; i < n; i++)
		test_fill(keys[i].bytes, sizeof(keys[i].bytes), (unsigned)(base + i));
}

/* Fills the tier: 32 ready blocks pinned, 32 reserved; then waits to die. */
static void victim(const char *addr, int ready_fd)
{
	struct kvt_key keys[SLOTS];
	struct kvt_slot slots[SLOTS];
	struct kvt_namespace ns;
	struct kvt_lease lease;
	kvt_client *c;

	make_keys(keys, SLOTS, 0);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "victim"), 0);
	CHECK(kvt_fast_lane(c, NULL)); /* its calls go through its lane */
	CHECK_RC(c, kvt_open_namespace(c, "kill-test", PAGE, 16, 0, &ns), 0);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, SLOTS, NULL, slots), 0);
	for (int i = 0; i < SLOTS; i++)
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
	CHECK_RC(c, kvt_commit(c, &ns, keys, SLOTS / 2), 0);
	CHECK_RC(c, kvt_acquire(c, &ns, keys, SLOTS / 2, 0, &lease), 0);
	CHECK(lease.count == SLOTS / 2);
	CHECK(write(ready_fd, "x", 1) == 1);
	pause();
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=4M", "host.segment_size=1M", NULL };
	struct kvt_key keys[SLOTS];
	struct kvt_slot slots[SLOTS];
	struct kvt_namespace ns;
	struct counters cnt = { 0 };
	int ready[2], status;
	double killed, waited;
	kvt_client *c;
	pid_t pid;
	char x;

	test_daemon_start(&d, sets);
	CHECK(pipe(ready) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		victim(d.addr, ready[1]);
	CHECK(read(ready[0], &x, 1) == 1);

	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "observer"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "kill-test", PAGE, 16, 0, &ns), 0);
	CHECK_RC(c, kvt_stats(c, collect, &cnt), 0);
	CHECK(cnt.pinned == SLOTS / 2 && cnt.pending == SLOTS / 2 && cnt.sessions == 2);
	/* Everything is pinned or pending: no room for anyone. */
	make_keys(keys, SLOTS, 1000);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, 1, NULL, slots), -ENOSPC);

	CHECK(kill(pid, SIGKILL) == 0);
	killed = now();
	CHECK(waitpid(pid, &status, 0) == pid);
	do {
		usleep(2000);
		CHECK_RC(c, kvt_stats(c, collect, &cnt), 0);
		waited = now() - killed;
	} while ((cnt.pinned || cnt.pending || cnt.sessions != 1 || cnt.leases) &&
		 waited < 5);
	printf("released %ld pins and reservations %.1f ms after SIGKILL\n",
	       (long)SLOTS, waited * 1e3);
	CHECK(cnt.pinned == 0 && cnt.pending == 0 && cnt.leases == 0 && cnt.sessions == 1);
	CHECK(waited < 1.0);

	/* Every slot is usable again: the whole tier can be reserved. */
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, SLOTS, NULL, slots), 0);
	for (int i = 0; i < SLOTS; i++)
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

/*
 * Test harness: starts the real kvtierd (path in $KVTIERD) on a fresh
 * temporary run directory and stops it. Tests fork their worker processes
 * before any of them creates a gRPC client (gRPC does not survive fork).
 * Tests exit 0 pass, 1 fail, 77 skip.
 */
#ifndef KVT_TEST_HARNESS_H
#define KVT_TEST_HARNESS_H

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

struct test_daemon {
	pid_t pid;
	char dir[128];
	char addr[160]; /* "unix:<dir>/kvtierd.sock" */
	int metrics_port; /* on 127.0.0.1; 0: none */
	char config[192];  /* a file for -c (restart only; start clears it) */
	char said[1024];   /* its start-up line ("... listening on ...") */
};

/* sets: NULL-terminated "section.key=value" overrides. Exits on failure. */
void test_daemon_start(struct test_daemon *d, const char *const *sets);
/* Runs kvtierd with sets (in a run directory of its own) expecting it to
 * refuse to start: its exit status, its output (stdout and stderr) in out. */
int test_daemon_refuses(const char *const *sets, char *out, size_t len);
/* Starts it again in the same directory (after a stop without cleanup). */
void test_daemon_restart(struct test_daemon *d, const char *const *sets);
/* Lets workers running under other uids reach the socket: the run
 * directory is the daemon's (0750, its group), the temp dir above it the
 * test's (0700 from mkdtemp). */
void test_daemon_open_to_workers(struct test_daemon *d);
/* Sends sig, waits, leaves the directory for a restart; returns the exit
 * status as test_daemon_stop does. */
int test_daemon_signal(struct test_daemon *d, int sig);
/* SIGTERM, wait; returns the daemon's exit status (0 for a clean stop). */
int test_daemon_stop(struct test_daemon *d);

/* A script's position shared by a test and the workers it forks after
 * test_steps_init (shared memory): whoever finishes a step moves it on. */
void test_steps_init(void);
void test_step_set(int step);
int test_step(void);
void test_step_wait(int step); /* until the position is at least step */

/* Forks a worker process that runs fn(arg) and exits 0 (or as fn's CHECKs
 * say). Exits on failure to fork. */
pid_t test_spawn(void (*fn)(const char *arg), const char *arg);

/* Fills a page with bytes derived from seed. */
void test_fill(void *page, size_t len, unsigned seed);

/* Becomes uid, in group gid only (root only: a worker of another tenant). */
void test_become(uid_t uid, gid_t gid);

/* Process pid's open memfds whose name starts with prefix: how many, and
 * the 512-byte blocks they hold together. */
int test_memfds(pid_t pid, const char *prefix, long long *blocks);

/* A number from a /proc or /sys file: the first one, or with key the one
 * after key at the start of a line ("HugePages_Free:"). -1: none. */
long test_read_long(const char *path, const char *key);
/* 2M huge pages free for new mappings (free less reserved); -1: no hugetlb. */
long test_hugepages_free(void);
/* As root: n more 2M huge pages in the pool (vm.nr_hugepages), given back
 * at exit (also after a failed CHECK) or by test_hugepages_give_back.
 * 0 when n more are free after it; -1 (nothing kept) when not. */
int test_hugepages_reserve(long n);
void test_hugepages_give_back(void);

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			exit(1);                                             \
		}                                                            \
	} while (0)

/* Checks an action's return code, printing the client's message if not. */
#define CHECK_RC(c, expr, want)                                                \
	do {                                                                   \
		int rc_ = (expr);                                              \
		if (rc_ != (want)) {                                           \
			fprintf(stderr, "%s:%d: %s returned %d, want %d: %s\n", \
				__FILE__, __LINE__, #expr, rc_, (want),        \
				kvt_errmsg(c));                                \
			exit(1);                                               \
		}                                                              \
	} while (0)

#endif

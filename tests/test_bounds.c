/*
 * No client can hurt the daemon or another tenant (issue 14):
 *   idle: a daemon limited to 256 fds; 300 silent connections would lock
 *     every new client out. With daemon.idle_timeout=1s they are shut down
 *     (the client reads EOF), a new client is served, an attached worker
 *     keeps its session, and a client whose connection went idle
 *     reconnects on its next call.
 *   bounds: tenant A (uid 61001) goes over tenants.max_connections,
 *     max_sessions and max_leases: RESOURCE_EXHAUSTED naming the knob and
 *     its value, counted; tenant B (uid 61002) is served all along; A's
 *     Stats show A only, root's show both.
 * Needs root (other uids, prlimit): skipped otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE 4096
#define UID_A 61001
#define UID_B 61002
#define GID 65534 /* nogroup: the socket's group */
#define SILENT 300

struct stat_want {
	const char *name;
	long value; /* -1: not seen */
};

struct stats {
	struct stat_want *want;
	size_t n;
	int seen_other; /* names mentioning the other tenant or its namespace */
	const char *other[2];
};

static void collect(void *arg, const char *name, const char *value)
{
	struct stats *s = arg;

	for (size_t i = 0; i < s->n; i++)
		if (strcmp(name, s->want[i].name) == 0)
			s->want[i].value = atol(value);
	for (int i = 0; i < 2; i++)
		if (s->other[i] && strstr(name, s->other[i]))
			s->seen_other++;
}

static long stat_of(kvt_client *c, const char *name)
{
	struct stat_want w = { name, -1 };
	struct stats s = { &w, 1, 0, { NULL, NULL } };

	CHECK_RC(c, kvt_stats(c, collect, &s), 0);
	return w.value;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int raw_connect(const char *addr)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	CHECK(strlen(addr) - strlen("unix:") < sizeof(sa.sun_path));
	memcpy(sa.sun_path, addr + strlen("unix:"), strlen(addr) - strlen("unix:"));
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}

static void idle_connections(void)
{
	static const char *const sets[] = {
		"host.size=1M", "host.segment_size=64K", "daemon.idle_timeout=1s",
		"tenants.max_connections=0", NULL,
	};
	struct rlimit few = { 256, 256 };
	struct test_daemon d;
	struct kvt_namespace ns;
	struct kvt_key keys[2];
	struct kvt_slot slots[2];
	struct pollfd *pfd = calloc(SILENT, sizeof(*pfd));
	kvt_client *worker, *casual, *late;
	size_t ready, closed = 0;
	double t0;

	CHECK(pfd != NULL);
	test_fill(keys, sizeof(keys), 7);
	test_daemon_start(&d, sets);
	/* The daemon raised its soft limit at start; now it has 256 fds,
	 * fewer than the silent clients will take. */
	CHECK(prlimit(d.pid, RLIMIT_NOFILE, &few, NULL) == 0);

	/* An attached worker and a casual client that calls once. */
	CHECK(kvt_connect(d.addr, &worker) == 0);
	CHECK_RC(worker, kvt_attach(worker, "worker"), 0);
	CHECK_RC(worker, kvt_open_namespace(worker, "idle", PAGE, 16, 0, &ns), 0);
	CHECK(kvt_connect(d.addr, &casual) == 0);
	CHECK_RC(casual, kvt_lookup(casual, &ns, keys, 1, &ready, NULL), 0);

	for (int i = 0; i < SILENT; i++) {
		pfd[i].fd = raw_connect(d.addr);
		pfd[i].events = POLLIN;
	}
	/* Every silent one is shut down (EOF), those the daemon could not
	 * accept at first once the earlier ones have gone. */
	t0 = now_s();
	while (closed < SILENT && now_s() - t0 < 20) {
		CHECK(poll(pfd, SILENT, 200) >= 0);
		for (int i = 0; i < SILENT; i++) {
			char b;

			if (pfd[i].fd >= 0 && pfd[i].revents &&
			    read(pfd[i].fd, &b, 1) <= 0) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				closed++;
			}
		}
	}
	printf("idle: %zu of %d silent connections shut down in %.1f s\n", closed,
	       SILENT, now_s() - t0);
	CHECK(closed == SILENT);

	/* A new client is served. */
	CHECK(kvt_connect(d.addr, &late) == 0);
	CHECK_RC(late, kvt_lookup(late, &ns, keys, 1, &ready, NULL), 0);
	/* The worker's session outlived it all: its stream kept it. */
	CHECK_RC(worker, kvt_reserve(worker, &ns, NULL, keys, 2, NULL, slots), 0);
	CHECK(slots[0].state == KVT_SLOT_RESERVED);
	CHECK_RC(worker, kvt_abort(worker, &ns, keys, 2), 0);
	/* The casual client was idle too long: it reconnects on its next call. */
	CHECK_RC(casual, kvt_lookup(casual, &ns, keys, 1, &ready, NULL), 0);
	/* Those the daemon had fds for (two each, of 256) by the idle
	 * timeout; the others it closed at accept, having no fd left to watch
	 * them with. How many of each depends on timing. */
	closed = (size_t)stat_of(late, "connections_idle_closed_total");
	printf("idle: the daemon counts %zu idle closures\n", closed);
	CHECK(closed >= 64);
	kvt_close(late);
	kvt_close(casual);
	kvt_close(worker);
	CHECK(test_daemon_stop(&d) == 0);
	free(pfd);
}

/* ---- bounds: tenants A and B ---- */

static void put_blocks(kvt_client *c, const struct kvt_namespace *ns,
		       const struct kvt_key *keys, size_t n)
{
	static uint8_t page[PAGE];
	const void *pages[8];
	size_t stored;

	for (size_t i = 0; i < n; i++)
		pages[i] = page;
	CHECK_RC(c, kvt_put(c, ns, NULL, keys, pages, n, NULL, &stored), 0);
}

static void tenant_a(const char *addr)
{
	kvt_client *c[3];
	struct kvt_namespace ns;
	struct kvt_key keys[4];
	struct kvt_lease l1, l2, l3;
	struct stat_want want[] = {
		{ "tenants.uid:61001.sessions_active", -1 },
		{ "tenants.uid:61001.leases_active", -1 },
		{ "namespaces.a-ns.ready_blocks", -1 },
	};
	struct stats st = { want, 3, 0, { "uid:61002", "b-ns" } };
	int raw[3], rc = -1;
	long refused;

	test_become(UID_A, GID);
	test_fill(keys, sizeof(keys), 1);
	/* Connections: three silent ones are held, a fourth is refused. (The
	 * clients of one process share one connection: gRPC's subchannel
	 * pool.) */
	for (int i = 0; i < 3; i++)
		raw[i] = raw_connect(addr);
	for (int i = 0; i < 3; i++)
		CHECK(kvt_connect(addr, &c[i]) == 0);
	CHECK_RC(c[0], kvt_open_namespace(c[0], "a-ns", PAGE, 16, 0, &ns), -ENOSPC);
	fprintf(stderr, "A's fourth connection: %s\n", kvt_errmsg(c[0]));
	CHECK(strstr(kvt_errmsg(c[0]),
		     "tenants.max_connections (3) reached for tenant uid:61001"));
	test_step_set(1);
	test_step_wait(2); /* B was served meanwhile */

	/* One silent connection goes: the refused one is served from its next
	 * call on (or, had it waited, shut down and its successor served). */
	close(raw[0]);
	for (int i = 0; i < 50 && rc != 0; i++) {
		rc = kvt_open_namespace(c[0], "a-ns", PAGE, 16, 0, &ns);
		if (rc != 0)
			usleep(100000);
	}
	CHECK_RC(c[0], rc, 0);
	CHECK(stat_of(c[0], "rpc_status_errors_total.RESOURCE_EXHAUSTED") <= 2);

	/* Sessions: two, not three. */
	CHECK_RC(c[0], kvt_attach(c[0], "a0"), 0);
	CHECK_RC(c[1], kvt_attach(c[1], "a1"), 0);
	CHECK_RC(c[2], kvt_attach(c[2], "a2"), -ENOSPC);
	fprintf(stderr, "A's third session: %s\n", kvt_errmsg(c[2]));
	CHECK(strstr(kvt_errmsg(c[2]),
		     "tenants.max_sessions (2) reached for tenant uid:61001"));

	/* Leases: two, then one more once one is released. */
	put_blocks(c[0], &ns, keys, 4);
	CHECK_RC(c[0], kvt_acquire(c[0], &ns, keys, 4, 0, &l1), 0);
	CHECK(l1.count == 4);
	CHECK_RC(c[1], kvt_acquire(c[1], &ns, keys, 2, 0, &l2), 0);
	CHECK_RC(c[0], kvt_acquire(c[0], &ns, keys, 1, 0, &l3), -ENOSPC);
	fprintf(stderr, "A's third lease: %s\n", kvt_errmsg(c[0]));
	CHECK(strstr(kvt_errmsg(c[0]),
		     "tenants.max_leases (2) reached for tenant uid:61001"));

	/* A sees itself, not B (nor B's namespace). */
	CHECK_RC(c[0], kvt_stats(c[0], collect, &st), 0);
	CHECK(want[0].value == 2 && want[1].value == 2 && want[2].value == 4);
	CHECK(st.seen_other == 0);

	CHECK_RC(c[0], kvt_release(c[0], &l1), 0);
	CHECK_RC(c[0], kvt_acquire(c[0], &ns, keys, 1, 0, &l3), 0);
	CHECK_RC(c[0], kvt_release(c[0], &l3), 0);
	CHECK_RC(c[1], kvt_release(c[1], &l2), 0);

	/* At the bound again (two silent, one client): a connection closed
	 * makes room at once for the next. */
	refused = stat_of(c[0], "connections_refused_total");
	close(raw[1]);
	raw[1] = raw_connect(addr);
	usleep(200000);
	CHECK(stat_of(c[0], "connections_refused_total") == refused);
	test_step_set(3);
	test_step_wait(4); /* root looked */
	for (int i = 0; i < 3; i++)
		kvt_close(c[i]);
	close(raw[1]);
	close(raw[2]);
}

static void tenant_b(const char *addr)
{
	struct kvt_namespace ns;
	struct kvt_key keys[2];
	struct kvt_lease l;
	kvt_client *c;

	test_become(UID_B, GID);
	test_fill(keys, sizeof(keys), 2);
	test_step_wait(1); /* A is over its connection bound */
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "b"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "b-ns", PAGE, 16, 0, &ns), 0);
	put_blocks(c, &ns, keys, 2);
	CHECK_RC(c, kvt_acquire(c, &ns, keys, 2, 0, &l), 0);
	CHECK(l.count == 2);
	test_step_set(2);
	test_step_wait(3); /* A is at its session and lease bounds */
	CHECK_RC(c, kvt_release(c, &l), 0);
	CHECK_RC(c, kvt_acquire(c, &ns, keys, 2, 0, &l), 0);
	CHECK_RC(c, kvt_release(c, &l), 0);
	test_step_wait(4);
	kvt_close(c);
}

static void bounds(void)
{
	static const char *const sets[] = {
		"host.size=1M", "host.segment_size=64K", "daemon.group=nogroup",
		"daemon.socket_mode=0660", "tenants.max_connections=3",
		"tenants.max_sessions=2", "tenants.max_leases=2", NULL,
	};
	struct stat_want want[] = {
		{ "connections_refused_total", -1 },
		{ "sessions_refused_total", -1 },
		{ "leases_refused_total", -1 },
		{ "rpc_status_errors_total.RESOURCE_EXHAUSTED", -1 },
		{ "rpcs.Attach.errors_total", -1 },
		{ "rpcs.Acquire.errors_total", -1 },
		{ "tenants.uid:61002.host_used_bytes", -1 },
		{ "namespaces.b-ns.ready_blocks", -1 },
		{ "namespaces.a-ns.ready_blocks", -1 },
	};
	struct stats st = { want, sizeof(want) / sizeof(want[0]), 0, { NULL, NULL } };
	struct test_daemon d;
	pid_t a, b;
	int status;
	kvt_client *c;

	test_steps_init();
	test_daemon_start(&d, sets);
	test_daemon_open_to_workers(&d);
	a = test_spawn(tenant_a, d.addr);
	b = test_spawn(tenant_b, d.addr);
	/* A child that fails leaves the others waiting: stop them. */
	while (test_step() < 3) {
		pid_t gone = waitpid(-1, &status, WNOHANG);

		if (gone > 0) {
			kill(a, SIGKILL);
			kill(b, SIGKILL);
			fprintf(stderr, "tenant %s failed\n", gone == a ? "A" : "B");
			exit(1);
		}
		usleep(1000);
	}
	/* Root, an admin, sees both tenants and every count. */
	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK_RC(c, kvt_stats(c, collect, &st), 0);
	test_step_set(4);
	CHECK(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(waitpid(b, &status, 0) == b && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	for (size_t i = 0; i < st.n; i++)
		printf("  %s = %ld\n", want[i].name, want[i].value);
	CHECK(want[0].value >= 1 && want[1].value == 1 && want[2].value == 1);
	CHECK(want[3].value >= 3 && want[4].value >= 1 && want[5].value >= 1);
	CHECK(want[6].value == 2 * PAGE && want[7].value == 2 && want[8].value == 4);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "needs root to run clients under other uids and to limit the daemon's fds\n");
		return 77;
	}
	/* The test holds SILENT sockets itself. */
	{
		struct rlimit rl;

		CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
		if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
			rl.rlim_cur = 4096;
			CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
		}
	}
	/* bounds first: its tenants are forked, before this process starts
	 * gRPC (which does not survive a fork). */
	bounds();
	idle_connections();
	return 0;
}

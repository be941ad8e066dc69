/*
 * Tenants from peer credentials. Two worker processes run under two uids
 * (set with setresuid; the uids need no passwd entry, the kernel reports
 * them through SO_PEERCRED all the same), in the socket's group:
 *   - B misses on A's prefix while A hits it again;
 *   - a namespace listed as shared is shared;
 *   - A floods the tier (twice its size); B keeps every block of its quota;
 *   - B may not drop A's blocks; root (an admin) may;
 *   - a uid that only asks Health and GetConfig is no tenant (a probe
 *     takes no entry of the table, nor fails when it is full).
 * Needs root to switch uids: skipped otherwise.
 */
#include <errno.h>
#include <grp.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE 4096
#define CAPACITY 256          /* blocks: host.size / PAGE */
#define QUOTA 64              /* blocks: tenants.host_quota */
#define UID_A 61001
#define UID_B 61002
#define UID_PROBE 61003
#define GID 65534             /* nogroup: the socket's and segments' group */
#define PREFIX 8

static void make_keys(struct kvt_key *keys, int n, unsigned base)
{
	for (int i = 0; i < n; i++)
		test_fill(keys[i].bytes, sizeof(keys[i].bytes), base + (unsigned)i);
}

static kvt_client *become(uid_t uid, const char *addr, const char *ns_name,
			  struct kvt_namespace *ns)
{
	kvt_client *c;

	test_become(uid, GID);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "tenant-test"), 0);
	CHECK_RC(c, kvt_open_namespace(c, ns_name, PAGE, 16, 0, ns), 0);
	return c;
}

static void put_chain(kvt_client *c, const struct kvt_namespace *ns,
		      const struct kvt_key *keys, int n)
{
	static uint8_t page[PAGE];
	const void *pages[CAPACITY];
	size_t stored;

	for (int i = 0; i < n; i++)
		pages[i] = page;
	CHECK_RC(c, kvt_put(c, ns, NULL, keys, pages, (size_t)n, NULL, &stored), 0);
}

static size_t hits(kvt_client *c, const struct kvt_namespace *ns,
		   const struct kvt_key *keys, int n)
{
	size_t ready;

	CHECK_RC(c, kvt_lookup(c, ns, keys, (size_t)n, &ready, NULL), 0);
	return ready;
}

static void tenant_a(const char *addr)
{
	struct kvt_key prefix[PREFIX], flood[64], shared[4];
	struct kvt_namespace ns, sns;
	kvt_client *c = become(UID_A, addr, "model", &ns);

	CHECK(strcmp(kvt_tenant(c), "uid:61001") == 0);
	make_keys(prefix, PREFIX, 100);
	put_chain(c, &ns, prefix, PREFIX);
	CHECK(hits(c, &ns, prefix, PREFIX) == PREFIX);
	CHECK_RC(c, kvt_open_namespace(c, "common", PAGE, 16, 0, &sns), 0);
	CHECK(sns.shared);
	make_keys(shared, 4, 900);
	put_chain(c, &sns, shared, 4);
	test_step_set(1);

	test_step_wait(2); /* B looked and filled its quota */
	CHECK(hits(c, &ns, prefix, PREFIX) == PREFIX);
	/* Flood: twice the tier, in chains of 64. */
	for (unsigned i = 0; i < 2 * CAPACITY / 64; i++) {
		make_keys(flood, 64, 10000 + 64 * i);
		put_chain(c, &ns, flood, 64);
	}
	test_step_set(3);
	kvt_close(c);
}

static void tenant_b(const char *addr)
{
	struct kvt_key prefix[PREFIX], mine[QUOTA], shared[4];
	struct kvt_namespace ns, sns;
	size_t dropped;
	kvt_client *c = become(UID_B, addr, "model", &ns);

	make_keys(prefix, PREFIX, 100);
	make_keys(mine, QUOTA, 5000);
	make_keys(shared, 4, 900);
	test_step_wait(1);
	CHECK(hits(c, &ns, prefix, PREFIX) == 0);
	CHECK_RC(c, kvt_open_namespace(c, "common", PAGE, 16, 0, &sns), 0);
	CHECK(hits(c, &sns, shared, 4) == 4);
	put_chain(c, &ns, mine, QUOTA);
	test_step_set(2);

	test_step_wait(3); /* A flooded */
	CHECK(hits(c, &ns, mine, QUOTA) == QUOTA);
	CHECK(hits(c, &ns, prefix, PREFIX) == 0);
	CHECK_RC(c, kvt_drop_tenant(c, "61001", &dropped), -EACCES);
	CHECK(strstr(kvt_errmsg(c), "admin"));
	test_step_set(4);
	kvt_close(c);
}

static void no_knob(void *arg, const struct kvt_knob *k)
{
	(void)arg;
	(void)k;
}

/* A health probe or an operator's kvtierctl config under its own uid. */
static void prober(const char *addr)
{
	kvt_client *c;

	test_become(UID_PROBE, GID);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_health(c), 0);
	CHECK_RC(c, kvt_get_config(c, no_knob, NULL, NULL), 0);
	kvt_close(c);
}

struct usage {
	long a_used, b_used, b_evictions;
	bool probe_seen;
};

static void collect(void *arg, const char *name, const char *value)
{
	struct usage *u = arg;

	if (strcmp(name, "tenants.uid:61001.host_used_bytes") == 0)
		u->a_used = atol(value);
	else if (strcmp(name, "tenants.uid:61002.host_used_bytes") == 0)
		u->b_used = atol(value);
	else if (strcmp(name, "tenants.uid:61002.evictions_total") == 0)
		u->b_evictions = atol(value);
	else if (strncmp(name, "tenants.uid:61003.", 18) == 0)
		u->probe_seen = true;
}

int main(void)
{
	static const char *const sets[] = {
		"host.size=1M", "host.segment_size=64K", "daemon.group=nogroup",
		"daemon.socket_mode=0660", "tenants.host_quota=256K",
		"tenants.shared_namespaces=common", NULL,
	};
	struct test_daemon d;
	struct usage u = { 0 };
	pid_t a, b;
	int status;
	size_t dropped;
	kvt_client *c;

	if (geteuid() != 0) {
		fprintf(stderr, "needs root to run workers under other uids\n");
		return 77;
	}
	test_steps_init();
	test_daemon_start(&d, sets);
	test_daemon_open_to_workers(&d);

	a = test_spawn(tenant_a, d.addr);
	b = test_spawn(tenant_b, d.addr);
	CHECK(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(waitpid(b, &status, 0) == b && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	a = test_spawn(prober, d.addr);
	CHECK(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);

	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK_RC(c, kvt_stats(c, collect, &u), 0);
	printf("after A's flood: A uses %ld KiB, B %ld KiB (quota 256 KiB), B lost %ld blocks\n",
	       u.a_used >> 10, u.b_used >> 10, u.b_evictions);
	CHECK(u.b_used == QUOTA * PAGE && u.b_evictions == 0);
	CHECK(!u.probe_seen);
	/* A has the rest: the shared namespace, unused since before the flood
	 * and of no higher priority, gave up its segment. */
	CHECK(u.a_used == (CAPACITY - QUOTA) * PAGE);
	/* Root is an admin: it may drop A's blocks. */
	CHECK_RC(c, kvt_drop_tenant(c, "61001", &dropped), 0);
	CHECK(dropped == CAPACITY - QUOTA);
	CHECK_RC(c, kvt_stats(c, collect, &u), 0);
	CHECK(u.a_used == 0 && u.b_used == QUOTA * PAGE);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

/*
 * Namespaces are a tenant's own and can be deleted (issue 14):
 * tenants.max_namespaces=2, limits.max_namespaces=4, one shared name.
 *   A (uid 61001) creates two namespaces, is refused a third
 *     (RESOURCE_EXHAUSTED naming the knob), drops one that holds a lease
 *     and a reservation: its blocks are gone and its id is NOT_FOUND ("was
 *     dropped"), the leased pages still read right, the name reopens at
 *     once with another page size under another id.
 *   B (uid 61002) fills the table: the refusal names limits.max_namespaces
 *     and the dropped entry still held; B cannot drop A's namespace (its id
 *     is unknown to B). Once A releases its lease and its Commit is refused
 *     (and aborts), the entry is free: B's shared namespace takes it, under
 *     an id A's old one does not match. B may not drop a shared namespace.
 *   Root, an admin, deletes the shared one and A's other with kvtierctl;
 *     the counters and A's namespace count say so.
 * Needs root (other uids): skipped otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "client_util.h"
#include "harness.h"

#define PAGE 4096
#define UID_A 61001
#define UID_B 61002
#define GID 65534 /* nogroup: the socket's group */

static char id_file[64]; /* A's second namespace id, for B to try */

static void tenant_a(const char *addr)
{
	struct kvt_namespace a1, a2, again, other;
	struct kvt_key keys[5];
	struct kvt_slot slot;
	struct kvt_lease l;
	uint8_t pages[4][PAGE], want[PAGE];
	const void *ptrs[4] = { pages[0], pages[1], pages[2], pages[3] };
	size_t stored, ready, dropped, pending;
	kvt_client *c;
	FILE *f;

	test_become(UID_A, GID);
	for (unsigned i = 0; i < 5; i++)
		keys[i] = test_key("nstest-a", i);
	for (unsigned i = 0; i < 4; i++)
		test_fill(pages[i], PAGE, 100 + i);
	c = test_client(addr, "a", "a1", PAGE, &a1);
	CHECK_RC(c, kvt_open_namespace(c, "a2", PAGE, 16, 0, &a2), 0);
	CHECK_RC(c, kvt_open_namespace(c, "a3", PAGE, 16, 0, &other), -ENOSPC);
	fprintf(stderr, "A's third namespace: %s\n", kvt_errmsg(c));
	CHECK(strstr(kvt_errmsg(c),
		     "tenants.max_namespaces (2) reached for tenant uid:61001"));
	CHECK_RC(c, kvt_open_namespace(c, "a1", PAGE, 16, 0, &again), 0);
	CHECK(!again.created && again.id == a1.id);
	f = fopen(id_file, "w");
	CHECK(f && fprintf(f, "%u\n", a2.id) > 0 && fclose(f) == 0);

	/* a1 holds 4 blocks, 2 of them leased, and a reservation. */
	CHECK_RC(c, kvt_put(c, &a1, NULL, keys, ptrs, 4, NULL, &stored), 0);
	CHECK(stored == 4);
	CHECK_RC(c, kvt_acquire(c, &a1, keys, 2, 0, &l), 0);
	CHECK(l.count == 2);
	CHECK_RC(c, kvt_reserve(c, &a1, &keys[3], &keys[4], 1, NULL, &slot), 0);
	CHECK(slot.state == KVT_SLOT_RESERVED);

	CHECK_RC(c, kvt_drop_namespace(c, a1.id, &dropped, &pending), 0);
	CHECK(dropped == 4 && pending == 1);
	CHECK_RC(c, kvt_lookup(c, &a1, keys, 4, &ready, NULL), -ENOENT);
	fprintf(stderr, "A's dropped namespace: %s\n", kvt_errmsg(c));
	CHECK(strstr(kvt_errmsg(c), "namespace a1 (namespace_id ") &&
	      strstr(kvt_errmsg(c), ") was dropped"));
	CHECK_RC(c, kvt_put(c, &a1, NULL, keys, ptrs, 1, NULL, &stored), -ENOENT);
	CHECK_RC(c, kvt_drop_namespace(c, a1.id, NULL, NULL), -ENOENT);
	/* What was leased still reads right. */
	for (unsigned i = 0; i < 2; i++) {
		test_fill(want, PAGE, 100 + i);
		CHECK(memcmp(l.pages[i], want, PAGE) == 0);
	}
	/* The name reopens at once, with another layout and id, and counts. */
	CHECK_RC(c, kvt_open_namespace(c, "a1", 2 * PAGE, 16, 0, &again), 0);
	CHECK(again.created && again.id != a1.id && again.page_bytes == 2 * PAGE);
	CHECK_RC(c, kvt_lookup(c, &again, keys, 4, &ready, NULL), 0);
	CHECK(ready == 0);
	CHECK_RC(c, kvt_open_namespace(c, "a3", PAGE, 16, 0, &other), -ENOSPC);
	test_step_set(1);

	test_step_wait(2); /* B found the table full */
	CHECK_RC(c, kvt_release(c, &l), 0);
	CHECK_RC(c, kvt_commit(c, &a1, &keys[4], 1), -ENOENT);
	fprintf(stderr, "A's commit into the dropped namespace: %s\n", kvt_errmsg(c));
	CHECK(strstr(kvt_errmsg(c), "was dropped: its reservations are aborted"));
	CHECK_RC(c, kvt_abort(c, &a1, &keys[4], 1), -ENOENT); /* gone already */
	test_step_set(3);

	test_step_wait(4); /* B's shared namespace took a1's entry */
	CHECK_RC(c, kvt_lookup(c, &a1, keys, 4, &ready, NULL), -ENOENT);
	CHECK(strstr(kvt_errmsg(c), "unknown namespace_id"));
	CHECK(test_stat(c, "tenants.uid:61001.namespaces") == 2);
	kvt_close(c);
}

static void tenant_b(const char *addr)
{
	struct kvt_namespace b1, common;
	unsigned a2_id = 0;
	size_t dropped;
	kvt_client *c;
	FILE *f;

	test_become(UID_B, GID);
	test_step_wait(1);
	c = test_client(addr, "b", "b1", PAGE, &b1);
	/* a1's entry is dropped but still held: the table is full. */
	CHECK_RC(c, kvt_open_namespace(c, "common", PAGE, 16, 0, &common), -ENOSPC);
	fprintf(stderr, "B with the table full: %s\n", kvt_errmsg(c));
	CHECK(strstr(kvt_errmsg(c), "limits.max_namespaces (4) reached") &&
	      strstr(kvt_errmsg(c), "dropped and waiting"));
	f = fopen(id_file, "r");
	CHECK(f && fscanf(f, "%u", &a2_id) == 1);
	fclose(f);
	CHECK_RC(c, kvt_drop_namespace(c, a2_id, &dropped, NULL), -ENOENT);
	CHECK(strstr(kvt_errmsg(c), "unknown namespace_id"));
	test_step_set(2);

	test_step_wait(3); /* A's lease and reservation are gone */
	CHECK_RC(c, kvt_open_namespace(c, "common", PAGE, 16, 0, &common), 0);
	CHECK(common.created && common.shared);
	CHECK_RC(c, kvt_drop_namespace(c, common.id, &dropped, NULL), -EACCES);
	fprintf(stderr, "B dropping a shared namespace: %s\n", kvt_errmsg(c));
	CHECK(strstr(kvt_errmsg(c), "namespace common is shared: only an admin may drop it"));
	test_step_set(4);
	kvt_close(c);
}

/*
 * Run before main's scenario. A tenant may not fill the daemon's table with namespaces it dropped while
 * keeping a reservation in each (tenants.max_namespaces=2,
 * limits.max_namespaces=6): its third such drop-and-create is refused, and
 * another tenant still gets its namespaces. Once A aborts a reservation, the
 * entry is free and A may create again.
 */
static void hog_a(const char *addr)
{
	struct kvt_namespace ns[3], extra;
	struct kvt_slot slot;
	char name[16];
	kvt_client *c;

	test_become(UID_A, GID);
	c = test_client(addr, "hog", "h0", PAGE, &ns[0]);
	for (unsigned i = 0; i < 3; i++) {
		struct kvt_key k = test_key("hog-key", i);

		snprintf(name, sizeof(name), "h%u", i);
		if (i > 0 && i < 2)
			CHECK_RC(c, kvt_open_namespace(c, name, PAGE, 16, 0, &ns[i]), 0);
		if (i == 2) {
			CHECK_RC(c, kvt_open_namespace(c, name, PAGE, 16, 0, &ns[i]),
				 -ENOSPC);
			fprintf(stderr, "A with two dropped namespaces held: %s\n",
				kvt_errmsg(c));
			CHECK(strstr(kvt_errmsg(c), "tenants.max_namespaces (2) reached for tenant uid:61001") &&
			      strstr(kvt_errmsg(c), "namespaces it dropped still wait"));
			break;
		}
		CHECK_RC(c, kvt_reserve(c, &ns[i], NULL, &k, 1, NULL, &slot), 0);
		CHECK(slot.state == KVT_SLOT_RESERVED);
		CHECK_RC(c, kvt_drop_namespace(c, ns[i].id, NULL, NULL), 0);
	}
	test_step_set(1);
	test_step_wait(2); /* B got its namespaces */
	{
		struct kvt_key k = test_key("hog-key", 0);

		CHECK_RC(c, kvt_abort(c, &ns[0], &k, 1), 0);
	}
	CHECK_RC(c, kvt_open_namespace(c, "h2", PAGE, 16, 0, &extra), 0);
	CHECK(extra.created);
	kvt_close(c);
}

static void hog_b(const char *addr)
{
	struct kvt_namespace b1, b2;
	kvt_client *c;

	test_become(UID_B, GID);
	test_step_wait(1);
	c = test_client(addr, "hog-victim", "v1", PAGE, &b1);
	CHECK_RC(c, kvt_open_namespace(c, "v2", PAGE, 16, 0, &b2), 0);
	CHECK(b2.created);
	test_step_set(2);
	kvt_close(c);
}

static void hog(void)
{
	static const char *const sets[] = {
		"host.size=1M", "host.segment_size=64K", "daemon.group=nogroup",
		"daemon.socket_mode=0660", "limits.max_namespaces=6",
		"tenants.max_namespaces=2", NULL,
	};
	struct test_daemon d;
	pid_t a, b;
	int status;

	test_steps_init();
	test_daemon_start(&d, sets);
	test_daemon_open_to_workers(&d);
	a = test_spawn(hog_a, d.addr);
	b = test_spawn(hog_b, d.addr);
	for (int done = 0; done < 2; done++) {
		pid_t gone = waitpid(-1, &status, 0);

		CHECK(gone == a || gone == b);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			kill(a, SIGKILL);
			kill(b, SIGKILL);
			fprintf(stderr, "hog: tenant %s failed\n", gone == a ? "A" : "B");
			exit(1);
		}
	}
	CHECK(test_daemon_stop(&d) == 0);
	printf("namespaces: dropped namespaces held by their tenant count against it: ok\n");
	fflush(stdout); /* before the next workers fork */
}

/* Runs kvtierctl as root; 0 when it printed want. */
static int kvtierctl(const char *addr, const char *args, const char *want)
{
	char cmd[512], out[1024] = "";
	size_t n;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s -a %s %s 2>&1", getenv("KVTIERCTL"), addr, args);
	p = popen(cmd, "r");
	CHECK(p != NULL);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	pclose(p);
	fprintf(stderr, "kvtierctl %s: %s", args, out);
	return strstr(out, want) ? 0 : -1;
}

int main(void)
{
	static const char *const sets[] = {
		"host.size=1M", "host.segment_size=64K", "daemon.group=nogroup",
		"daemon.socket_mode=0660", "limits.max_namespaces=4",
		"tenants.max_namespaces=2", "tenants.shared_namespaces=common", NULL,
	};
	struct test_daemon d;
	struct kvt_namespace b2;
	pid_t a, b;
	int status;
	kvt_client *c;

	if (geteuid() != 0) {
		fprintf(stderr, "needs root to run clients under other uids\n");
		return 77;
	}
	hog(); /* first: its workers fork before this process runs gRPC */
	snprintf(id_file, sizeof(id_file), "/tmp/kvtier-ns-%d", (int)getpid());
	test_steps_init();
	test_daemon_start(&d, sets);
	test_daemon_open_to_workers(&d);
	a = test_spawn(tenant_a, d.addr);
	b = test_spawn(tenant_b, d.addr);
	for (int done = 0; done < 2;) {
		pid_t gone = waitpid(-1, &status, 0);

		CHECK(gone == a || gone == b);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			kill(a, SIGKILL);
			kill(b, SIGKILL);
			fprintf(stderr, "tenant %s failed\n", gone == a ? "A" : "B");
			return 1;
		}
		done++;
	}
	unlink(id_file);

	/* Root deletes the shared namespace and A's a2 (picked by tenant). */
	CHECK(kvtierctl(d.addr, "drop-namespace --namespace nosuch",
			"no namespace 'nosuch'") == 0);
	CHECK(kvtierctl(d.addr, "drop-namespace --namespace a2 --tenant uid:61002",
			"no namespace 'a2' of tenant uid:61002") == 0);
	CHECK(kvtierctl(d.addr, "drop-namespace --namespace common --tenant shared",
			"namespace common deleted: 0 blocks dropped") == 0);
	CHECK(kvtierctl(d.addr, "drop-namespace --namespace a2 --tenant uid:61001",
			"namespace a2 deleted") == 0);
	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK(test_stat(c, "namespaces_dropped_total") == 3);
	CHECK(test_stat(c, "namespaces_refused_total") == 2);
	CHECK(test_stat(c, "tenants.uid:61001.namespaces") == 1);
	CHECK(test_stat(c, "tenants.uid:61002.namespaces") == 1);
	/* Left: A's a1 (anew) and B's b1. Room again for two more. */
	CHECK_RC(c, kvt_open_namespace(c, "root-ns", PAGE, 16, 0, &b2), 0);
	CHECK_RC(c, kvt_open_namespace(c, "common", PAGE, 16, 0, &b2), 0);
	CHECK(b2.created);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	printf("namespaces: per-tenant bound, drop with lease and reservation, entry reuse, admin drop: ok\n");
	return 0;
}

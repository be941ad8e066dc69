/*
 * The fast lane (proto/kvtier/v1/lane.h) against hostile and dying workers.
 * A worker that rewrites its lane's header, sends lengths past the lane or
 * unknown methods, changes its request while the daemon reads it, or
 * keeps the daemon from being woken through its lane, harms no one else, and
 * the daemon keeps serving. The lane's memory cannot be resized under the
 * daemon; a session gets one lane. A worker killed while its Acquire waits
 * on the lane releases its lane within 1 s; a worker whose daemon goes
 * away gets an error at once, not a hang until its timeout. A tenant
 * holds at most tenants.max_lanes lanes.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "lane_util.h"

#define PAGE 4096
#define KEYS 8

/* Flips the request area and the worker's header words while the daemon
 * serves: what it reads must be its own copy. */
struct scribbler {
	struct raw *r;
	atomic_bool stop;
};

static void *scribble(void *arg)
{
	struct scribbler *s = arg;
	uint32_t x = 12345;

	while (!atomic_load(&s->stop)) {
		x = x * 1103515245u + 12345u;
		s->r->map[s->r->made.request_offset + x % 64] = (uint8_t)(x >> 8);
		s->r->h->request_len = x % (s->r->made.request_capacity + 4096);
		s->r->h->method = x % 9;
	}
	return NULL;
}

static void hostile(const struct test_daemon *d, kvt_client *good,
		    const struct kvt_namespace *ns, const struct kvt_key *keys)
{
	struct raw r;
	struct scribbler s = { &r, false };
	unsigned long long calls;
	pthread_t t;
	size_t ready;
	int answered = 0;

	raw_open(&r, d);
	CHECK(r.made.magic == KVT_LANE_MAGIC && r.made.max_keys == KEYS);
	/* Sealed: the worker cannot shrink it under the daemon (SIGBUS), nor
	 * grow it. */
	CHECK(ftruncate(r.fd, 0) < 0 && errno == EPERM);
	CHECK(ftruncate(r.fd, (off_t)r.bytes * 2) < 0 && errno == EPERM);
	/* One lane per session. */
	{
		struct kvt_segment_reply rep;
		char err[256];
		int again;

		CHECK(kvt_segsock_ask(r.path, r.token, KVT_LANE_SEGMENT, &rep, &again, NULL,
				      err, sizeof(err)) == -EBUSY);
		CHECK(strstr(err, "has its fast lane already"));
	}
	CHECK(test_stat(good, "fast_lanes") == 2 && test_stat(good, "fast_lanes_opened_total") == 2);
	calls = test_stat(good, "fast_lane_calls_total");

	/* A well-formed Lookup works. */
	CHECK(raw_call(&r, KVT_LANE_LOOKUP, write_lookup(&r, ns->id, keys, 4)) == 0);
	{
		Kvtier__V1__LookupResponse *p = kvtier__v1__lookup_response__unpack(
			NULL, r.h->reply_len, r.map + r.made.reply_offset);

		CHECK(p && p->ready_blocks == 4);
		kvtier__v1__lookup_response__free_unpacked(p, NULL);
	}
	/* The worker rewrites the layout: the daemon keeps the one it made. */
	r.h->request_offset = r.h->reply_offset = 0xfffff000u;
	r.h->request_capacity = r.h->reply_capacity = 0xffffffffu;
	CHECK(raw_call(&r, KVT_LANE_LOOKUP, write_lookup(&r, ns->id, keys, 4)) == 0);
	CHECK(raw_call(&r, KVT_LANE_LOOKUP, 0xffffffffu) == INVALID_ARGUMENT);
	CHECK(strstr(r.h->message, "exceeds the lane's request_capacity"));
	CHECK(raw_call(&r, 0, 0) == UNIMPLEMENTED);
	CHECK(raw_call(&r, KVT_LANE_ACQUIRE, 3) == INVALID_ARGUMENT);
	CHECK(strstr(r.h->message, "malformed kvtier.v1.AcquireRequest"));
	/* More keys than the lane holds: refused before anything runs. */
	{
		struct kvt_key many[KEYS + 1];

		memset(many, 7, sizeof(many));
		CHECK(raw_call(&r, KVT_LANE_LOOKUP, write_lookup(&r, ns->id, many, KEYS + 1)) ==
		      INVALID_ARGUMENT);
		CHECK(strstr(r.h->message, "exceed max_keys_per_request"));
	}

	/* Requests changing under the daemon, 2000 of them. */
	CHECK(pthread_create(&t, NULL, scribble, &s) == 0);
	for (int i = 0; i < 2000; i++) {
		uint32_t seq = __atomic_load_n(&r.h->request_seq, __ATOMIC_ACQUIRE) + 1;

		__atomic_store_n(&r.h->request_seq, seq, __ATOMIC_SEQ_CST);
		kvt_lane_wake(r.efd);
		if (i % 100 == 0) {
			double until = test_now() + 2;

			while (__atomic_load_n(&r.h->reply_seq, __ATOMIC_ACQUIRE) != seq &&
			       test_now() < until)
				;
			answered += __atomic_load_n(&r.h->reply_seq, __ATOMIC_ACQUIRE) == seq;
		}
	}
	atomic_store(&s.stop, true);
	pthread_join(t, NULL);
	CHECK(answered == 20);
	/* The others never noticed. */
	CHECK_RC(good, kvt_lookup(good, ns, keys, KEYS, &ready, NULL), 0);
	CHECK(ready == KEYS);
	CHECK(test_stat(good, "fast_lane_calls_total") > calls + 20);

	/* A worker that clears the daemon's waiting word and never wakes it
	 * stalls its own lane; its session still ends cleanly. */
	usleep(200 * 1000); /* the poller is asleep by now */
	r.h->daemon_waiting = 0;
	__atomic_store_n(&r.h->request_seq, r.h->request_seq + 1, __ATOMIC_SEQ_CST);
	kvt_close(r.c);
	CHECK(lanes_within(good, 1, 1) == 1);
	/* The daemon closed the worker's end of the lane. */
	{
		char x;

		CHECK(read(r.sock, &x, 1) == 0);
	}
	raw_close(&r);
}

/* Waits on the lane in an Acquire of a block another session holds
 * pending, until killed. Forked before the test starts gRPC (a child of
 * a process using gRPC cannot), it starts when go has a byte. */
static void waiter(const char *addr, int go)
{
	struct kvt_namespace ns;
	struct kvt_lease lease;
	struct kvt_key key;
	kvt_client *c;
	char x;

	CHECK(read(go, &x, 1) == 1);
	test_fill(key.bytes, 16, 777);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "waiter"), 0);
	CHECK(kvt_fast_lane(c, NULL));
	CHECK_RC(c, kvt_open_namespace(c, "lane", PAGE, 16, 0, &ns), 0);
	kvt_acquire(c, &ns, &key, 1, 30000, &lease);
	_exit(3); /* never answered before the kill */
}

static void killed_while_waiting(kvt_client *good, const struct kvt_namespace *ns,
				 pid_t pid, int go)
{
	struct kvt_key key;
	struct kvt_slot slot;
	double killed;
	int status;

	test_fill(key.bytes, 16, 777);
	CHECK_RC(good, kvt_reserve(good, ns, NULL, &key, 1, NULL, &slot), 0);
	CHECK(slot.state == KVT_SLOT_RESERVED);
	CHECK(write(go, "x", 1) == 1);
	while (test_stat(good, "fast_lanes") < 2)
		usleep(10000);
	usleep(100 * 1000); /* into its Acquire's wait */
	CHECK(kill(pid, SIGKILL) == 0);
	killed = test_now();
	CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
	while ((test_stat(good, "fast_lanes") != 1 || test_stat(good, "sessions_active") != 1) &&
	       test_now() - killed < 5)
		usleep(2000);
	printf("a worker killed in a waiting Acquire: its lane and session gone %.1f ms after SIGKILL\n",
	       (test_now() - killed) * 1e3);
	CHECK(test_stat(good, "fast_lanes") == 1 && test_stat(good, "sessions_active") == 1);
	CHECK(test_now() - killed < 1.0);
	CHECK_RC(good, kvt_abort(good, ns, &key, 1), 0);
}

/* The daemon stops while a worker uses its lane: the next call fails at
 * once instead of waiting out its timeout. */
static void daemon_gone(struct test_daemon *d)
{
	struct kvt_namespace ns;
	struct kvt_key key;
	size_t ready;
	double t;
	kvt_client *c;
	int rc;

	CHECK(kvt_connect(d->addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "left-behind"), 0);
	CHECK(kvt_fast_lane(c, NULL));
	CHECK_RC(c, kvt_open_namespace(c, "lane", PAGE, 16, 0, &ns), 0);
	CHECK(test_daemon_stop(d) == 0);
	test_fill(key.bytes, 16, 1);
	t = test_now();
	rc = kvt_lookup(c, &ns, &key, 1, &ready, NULL);
	t = test_now() - t;
	printf("a Lookup after the daemon stopped: %s (%.1f ms)\n", kvt_errmsg(c), t * 1e3);
	CHECK(rc == -ECONNRESET && strstr(kvt_errmsg(c), "ended the fast lane"));
	CHECK(t < 1.0);
	kvt_close(c);
}

/* tenants.max_lanes bounds a tenant's lanes; its other sessions work
 * over gRPC and say why, and a lane given back can be taken again. */
static void lanes_bounded(void)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=1M", "host.segment_size=256K",
			       "tenants.max_lanes=2", NULL };
	kvt_client *c[3], *again = NULL;
	struct kvt_namespace ns;
	struct kvt_key key;
	const void *pages[1];
	static uint8_t page[PAGE];
	const char *why;
	size_t n, ready;

	test_daemon_start(&d, sets);
	for (int i = 0; i < 3; i++) {
		CHECK(kvt_connect(d.addr, &c[i]) == 0);
		CHECK_RC(c[i], kvt_attach(c[i], "bounded"), 0);
	}
	CHECK(kvt_fast_lane(c[0], NULL) && kvt_fast_lane(c[1], NULL));
	CHECK(!kvt_fast_lane(c[2], &why));
	printf("a third session with tenants.max_lanes=2: %s\n", why);
	CHECK(strstr(why, "tenants.max_lanes (2) reached"));
	test_fill(key.bytes, 16, 77);
	pages[0] = page;
	CHECK_RC(c[2], kvt_open_namespace(c[2], "lane", PAGE, 16, 0, &ns), 0);
	CHECK_RC(c[2], kvt_put(c[2], &ns, NULL, &key, pages, 1, NULL, &n), 0);
	CHECK_RC(c[2], kvt_lookup(c[2], &ns, &key, 1, &ready, NULL), 0);
	CHECK(ready == 1);

	/* The first closes: its lane goes within 1 s, and a new session gets
	 * one. */
	kvt_close(c[0]);
	for (double until = test_now() + 1.0; test_now() < until;) {
		CHECK(kvt_connect(d.addr, &again) == 0);
		CHECK_RC(again, kvt_attach(again, "bounded"), 0);
		if (kvt_fast_lane(again, NULL))
			break;
		kvt_close(again);
		again = NULL;
		usleep(20000);
	}
	CHECK(again);
	kvt_close(again);
	kvt_close(c[1]);
	kvt_close(c[2]);
	CHECK(test_daemon_stop(&d) == 0);
}

int main(void)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=1M", "host.segment_size=256K",
			       "limits.max_keys_per_request=8", NULL };
	struct kvt_key keys[KEYS];
	static uint8_t page[PAGE];
	const void *pages[KEYS];
	struct kvt_namespace ns;
	kvt_client *good;
	int go[2];
	pid_t pid;
	size_t n;

	test_daemon_start(&d, sets);
	CHECK(pipe(go) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		waiter(d.addr, go[0]);
	for (int i = 0; i < KEYS; i++) {
		test_fill(keys[i].bytes, 16, 100u + (unsigned)i);
		pages[i] = page;
	}
	CHECK(kvt_connect(d.addr, &good) == 0);
	CHECK_RC(good, kvt_attach(good, "bystander"), 0);
	CHECK(kvt_fast_lane(good, NULL));
	CHECK_RC(good, kvt_open_namespace(good, "lane", PAGE, 16, 0, &ns), 0);
	CHECK_RC(good, kvt_put(good, &ns, NULL, keys, pages, KEYS, NULL, &n), 0);
	CHECK(n == KEYS);

	hostile(&d, good, &ns, keys);
	killed_while_waiting(good, &ns, pid, go[1]);
	kvt_close(good);
	daemon_gone(&d);
	lanes_bounded();
	return 0;
}

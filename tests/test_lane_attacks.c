/*
 * The fast lane (proto/kvtier/v1/lane.h) against a hostile worker, beyond
 * test_lane.
 *
 * Part one: another uid with a stolen session token gets no lane; method
 * ids and lengths at the edges; a request whose protobuf claims huge
 * repeated fields; Attach/close cycles racing lane requests; idle lanes
 * cost no CPU; SIGTERM with an Acquire waiting on a lane stops the daemon
 * cleanly.
 *
 * Part two: the daemon sleeps in its own epoll, not on the worker's
 * futex words: a FUTEX_CMP_REQUEUE off request_seq moves no one, and a
 * waiter of the worker's own on request_seq takes nothing from it. An
 * Acquire the daemon defers holds no other lane, and the lane whose
 * session closes while it waits is gone within 1 s (its answer still
 * comes). A worker that floods its eventfd (blocking mode set on the
 * file the daemon shares, the counter read dry) and its lane slows no
 * one much. Other lanes are served throughout, and the daemon stops on
 * SIGTERM.
 *
 * Last: SIGTERM with attached clients idle or waiting stops within 1 s.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "lane_util.h"

#define PAGE 4096
#define KEYS 8
#define OTHER_UID 47111

static int failures;

/* A CHECK that goes on, so that every finding shows in one run. */
#define EXPECT(cond)                                                          \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, \
				__LINE__, #cond);                             \
			failures++;                                           \
		}                                                             \
	} while (0)

/* A token stolen from another tenant's worker, and random ones: no lane. */
static int token_pipe[2];

static void other_uid(const char *addr)
{
	struct kvt_segment_reply rep;
	char path[200], err[256];
	uint8_t token[16];
	kvt_client *c;
	int fd, sock;

	test_become(OTHER_UID, 65534); /* nogroup: the socket's group */
	snprintf(path, sizeof(path), "%s%s", addr + strlen("unix:"), KVT_SEGMENT_SOCKET_SUFFIX);
	CHECK(kvt_connect(addr, &c) == 0);
	kvt_set_fast_lane(c, 0);
	CHECK_RC(c, kvt_attach(c, "thief"), 0);
	CHECK(read(token_pipe[0], token, 16) == 16);
	/* The victim's token, from this uid: refused. */
	CHECK(kvt_segsock_ask(path, token, KVT_LANE_SEGMENT, &rep, &fd, &sock, err,
			      sizeof(err)) == -ENOENT);
	/* Guessed tokens. */
	for (int i = 0; i < 64; i++) {
		token[i % 16] ^= (uint8_t)(i * 37 + 1);
		CHECK(kvt_segsock_ask(path, token, KVT_LANE_SEGMENT, &rep, &fd, &sock, err,
				      sizeof(err)) == -ENOENT);
	}
	/* Its own lane still works. */
	kvt_session_token(c, token);
	CHECK(kvt_segsock_ask(path, token, KVT_LANE_SEGMENT, &rep, &fd, &sock, err,
			      sizeof(err)) == 0);
	close(fd);
	close(sock);
	kvt_close(c);
}

static void edges(const struct test_daemon *d, const struct kvt_namespace *ns,
		  const struct kvt_key *keys)
{
	struct raw r;
	uint8_t *q;

	raw_open(&r, d);
	q = r.map + r.made.request_offset;
	EXPECT(raw_call(&r, 7, 0) == UNIMPLEMENTED);
	EXPECT(raw_call(&r, UINT32_MAX, 0) == UNIMPLEMENTED);
	EXPECT(strstr(r.h->message, "is not one of 1..6"));
	/* At and just past the capacity. */
	memset(q, 0, r.made.request_capacity);
	EXPECT(raw_call(&r, KVT_LANE_LOOKUP, r.made.request_capacity) == INVALID_ARGUMENT);
	EXPECT(raw_call(&r, KVT_LANE_LOOKUP, r.made.request_capacity + 1) == INVALID_ARGUMENT);
	EXPECT(strstr(r.h->message, "exceeds the lane's request_capacity"));
	EXPECT(raw_call(&r, KVT_LANE_LOOKUP, 0) == INVALID_ARGUMENT); /* keys is empty */
	/* A repeated field whose length runs past the request. */
	{
		uint8_t bad[] = { 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3 };

		memcpy(q, bad, sizeof(bad));
		EXPECT(raw_call(&r, KVT_LANE_LOOKUP, sizeof(bad)) == INVALID_ARGUMENT);
		EXPECT(strstr(r.h->message, "malformed"));
	}
	/* As many empty repeated keys as fit the lane: counted before use. */
	{
		uint32_t len = 0;

		while (len + 2 <= r.made.request_capacity) {
			q[len++] = 0x12;
			q[len++] = 0;
		}
		EXPECT(raw_call(&r, KVT_LANE_LOOKUP, len) == INVALID_ARGUMENT);
		EXPECT(strstr(r.h->message, "exceed"));
	}
	/* Exactly max_keys works. */
	EXPECT(raw_call(&r, KVT_LANE_LOOKUP, write_lookup(&r, ns->id, keys, KEYS)) == 0);
	kvt_close(r.c);
	raw_close(&r);
}

/* Many threads bump request_seq and wake the daemon in a tight loop,
 * others sit in FUTEX_WAIT on the lane's words with odd values: the
 * daemon serves what it sees, others are served, and the session still
 * ends cleanly. */
struct hammer {
	struct raw *r;
	atomic_bool stop;
	int kind;
};

static void *hammer_main(void *arg)
{
	struct hammer *hm = arg;
	struct kvt_lane_header *h = hm->r->h;
	uint32_t x = 1;

	while (!atomic_load(&hm->stop)) {
		if (hm->kind == 0) {
			__atomic_fetch_add(&h->request_seq, 1, __ATOMIC_SEQ_CST);
			/* Atomic only so that TSan sees the threads' scribbling
			 * as meant: the daemon reads its own copy. */
			__atomic_store_n(&h->method, x++ % 8, __ATOMIC_RELAXED);
			kvt_lane_wake(hm->r->efd);
		} else {
			struct timespec ts = { 0, 1000 * 1000 };

			x = x * 1103515245u + 12345u;
			syscall(SYS_futex, x & 1 ? &h->request_seq : &h->reply_seq,
				FUTEX_WAIT, x, &ts, NULL, 0);
		}
	}
	return NULL;
}

static void hammering(const struct test_daemon *d, kvt_client *good,
		      const struct kvt_namespace *ns, const struct kvt_key *keys)
{
	struct hammer hm[6];
	pthread_t t[6];
	struct raw r;
	unsigned long long base = test_stat(good, "fast_lanes");
	size_t ready;

	raw_open(&r, d);
	for (int i = 0; i < 6; i++) {
		hm[i] = (struct hammer){ .r = &r, .kind = i >= 4 };
		CHECK(pthread_create(&t[i], NULL, hammer_main, &hm[i]) == 0);
	}
	for (int i = 0; i < 50; i++) {
		EXPECT(kvt_lookup(good, ns, keys, KEYS, &ready, NULL) == 0 && ready == KEYS);
		usleep(10 * 1000);
	}
	kvt_close(r.c);
	EXPECT(lanes_within(good, base, 1.0) == base);
	for (int i = 0; i < 6; i++) {
		atomic_store(&hm[i].stop, true);
		pthread_join(t[i], NULL);
	}
	raw_close(&r);
}

/* Attach/close cycles on one thread, lane requests for those sessions on
 * another. */
struct churn {
	const struct test_daemon *d;
	pthread_mutex_t lock;       /* token, token_ready */
	int token_ready;
	uint8_t token[16];
	atomic_bool stop;
	atomic_long asked, got;
};

/* The current session's token, if one is open. */
static bool churn_token(struct churn *ch, uint8_t token[16])
{
	bool ready;

	pthread_mutex_lock(&ch->lock);
	ready = ch->token_ready;
	if (ready)
		memcpy(token, ch->token, 16);
	pthread_mutex_unlock(&ch->lock);
	return ready;
}

static void *churn_asker(void *arg)
{
	struct churn *ch = arg;
	struct kvt_segment_reply rep;
	char path[200], err[256];
	uint8_t token[16];
	int fd, sock;

	test_segsock_path(ch->d, path, sizeof(path));
	while (!atomic_load(&ch->stop)) {
		if (!churn_token(ch, token)) {
			sched_yield();
			continue;
		}
		ch->asked++;
		if (kvt_segsock_ask(path, token, KVT_LANE_SEGMENT, &rep, &fd, &sock, err,
				    sizeof(err)) == 0) {
			ch->got++;
			close(fd);
			close(sock);
		}
	}
	return NULL;
}

static void churn(const struct test_daemon *d, kvt_client *good)
{
	struct churn ch = { .d = d, .lock = PTHREAD_MUTEX_INITIALIZER };
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&t[i], NULL, churn_asker, &ch) == 0);
	for (int i = 0; i < 150; i++) {
		kvt_client *c;

		CHECK(kvt_connect(d->addr, &c) == 0);
		kvt_set_fast_lane(c, i % 2);
		CHECK_RC(c, kvt_attach(c, "churn"), 0);
		pthread_mutex_lock(&ch.lock);
		kvt_session_token(c, ch.token);
		ch.token_ready = 1;
		pthread_mutex_unlock(&ch.lock);
		usleep((unsigned)(i % 5) * 200);
		kvt_close(c);
	}
	atomic_store(&ch.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("churn: %ld lane requests, %ld lanes\n", atomic_load(&ch.asked),
	       atomic_load(&ch.got));
	EXPECT(lanes_within(good, 1, 1.0) == 1);
}

static long proc_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	CHECK(f);
	CHECK(fgets(buf, sizeof(buf), f));
	fclose(f);
	p = strrchr(buf, ')');
	CHECK(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			  &ut, &st) == 2);
	return (long)(ut + st);
}

static void idle_lanes(const struct test_daemon *d, kvt_client *good,
		       const struct kvt_namespace *ns0, const struct kvt_key *keys)
{
	enum { N = 12 };
	kvt_client *c[N];
	long t0, t1;

	(void)ns0;
	for (int i = 0; i < N; i++) {
		struct kvt_namespace ns;
		size_t ready;

		CHECK(kvt_connect(d->addr, &c[i]) == 0);
		CHECK_RC(c[i], kvt_attach(c[i], "idle"), 0);
		CHECK(kvt_fast_lane(c[i], NULL));
		CHECK_RC(c[i], kvt_open_namespace(c[i], "lane", PAGE, 16, 0, &ns), 0);
		CHECK_RC(c[i], kvt_lookup(c[i], &ns, keys, 1, &ready, NULL), 0);
	}
	EXPECT(lanes_within(good, N + 1, 1.0) == N + 1);
	usleep(300 * 1000);
	t0 = proc_ticks(d->pid);
	sleep(2);
	t1 = proc_ticks(d->pid);
	printf("%d idle lanes: the daemon used %ld ticks in 2 s\n", N + 1, t1 - t0);
	EXPECT(t1 - t0 <= 4);
	for (int i = 0; i < N; i++)
		kvt_close(c[i]);
	EXPECT(lanes_within(good, 1, 1.0) == 1);
}

/* SIGTERM while an Acquire waits on a lane: a clean stop, at once. */
struct waiting {
	kvt_client *c;
	struct kvt_namespace ns;
	struct kvt_key key;
	int rc;
	double took;
};

static void *acquire_waits(void *arg)
{
	struct waiting *w = arg;
	struct kvt_lease lease;
	double t = test_now();

	w->rc = kvt_acquire(w->c, &w->ns, &w->key, 1, 30000, &lease);
	w->took = test_now() - t;
	if (w->rc == 0)
		free(lease.pages); /* the daemon is gone: nothing to release */
	return NULL;
}

/* SIGTERM; waits up to secs. The exit status, or -1 after SIGKILL. */
static int stop_within(struct test_daemon *d, double secs)
{
	double until = test_now() + secs;
	int status;

	CHECK(kill(d->pid, SIGTERM) == 0);
	do {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(10000);
	} while (test_now() < until);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &status, 0);
	return -1;
}

static void part_one(void)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=1M", "host.segment_size=256K",
			       "limits.max_keys_per_request=8", "daemon.group=nogroup",
			       "daemon.socket_mode=0660", NULL };
	struct kvt_key keys[KEYS];
	static uint8_t page[PAGE];
	const void *pages[KEYS];
	struct kvt_namespace ns;
	struct waiting w = { 0 };
	struct kvt_slot slot;
	kvt_client *good;
	pthread_t t;
	pid_t thief;
	uint8_t token[16];
	size_t n;
	int status, rc;
	double t0;

	test_daemon_start(&d, sets);
	test_daemon_open_to_workers(&d);
	CHECK(pipe(token_pipe) == 0);
	thief = test_spawn(other_uid, d.addr);
	for (int i = 0; i < KEYS; i++) {
		test_fill(keys[i].bytes, 16, 100u + (unsigned)i);
		pages[i] = page;
	}
	CHECK(kvt_connect(d.addr, &good) == 0);
	CHECK_RC(good, kvt_attach(good, "bystander"), 0);
	CHECK(kvt_fast_lane(good, NULL));
	CHECK_RC(good, kvt_open_namespace(good, "lane", PAGE, 16, 0, &ns), 0);
	CHECK_RC(good, kvt_put(good, &ns, NULL, keys, pages, KEYS, NULL, &n), 0);

	kvt_session_token(good, token);
	CHECK(write(token_pipe[1], token, 16) == 16);
	CHECK(waitpid(thief, &status, 0) == thief);
	EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	edges(&d, &ns, keys);
	hammering(&d, good, &ns, keys);
	churn(&d, good);
	idle_lanes(&d, good, &ns, keys);

	/* SIGTERM with an Acquire waiting on a lane. */
	CHECK(kvt_connect(d.addr, &w.c) == 0);
	CHECK_RC(w.c, kvt_attach(w.c, "waiter"), 0);
	CHECK(kvt_fast_lane(w.c, NULL));
	CHECK_RC(w.c, kvt_open_namespace(w.c, "lane", PAGE, 16, 0, &w.ns), 0);
	test_fill(w.key.bytes, 16, 4242);
	CHECK_RC(good, kvt_reserve(good, &ns, NULL, &w.key, 1, NULL, &slot), 0);
	CHECK(slot.state == KVT_SLOT_RESERVED);
	CHECK(pthread_create(&t, NULL, acquire_waits, &w) == 0);
	usleep(300 * 1000);
	t0 = test_now();
	rc = stop_within(&d, 8);
	printf("SIGTERM with an Acquire waiting on a lane: exit %d after %.1f ms\n", rc,
	       (test_now() - t0) * 1e3);
	EXPECT(rc == 0);
	/* Attached clients idle in their gRPC library once held the stop
	 * for 4.5 s (see stop_with_idle_client). */
	EXPECT(test_now() - t0 < 1.0);
	pthread_join(t, NULL);
	printf("the waiting Acquire: %d (%s) after %.1f ms\n", w.rc, kvt_errmsg(w.c),
	       w.took * 1e3);
	EXPECT(w.took < 2);
	kvt_close(w.c);
	kvt_close(good);
}

/* Queues a waiter of the worker's own on request_seq at val. */
struct stealer {
	uint32_t *word, val;
	atomic_bool queued;
};

static void *steal_wake(void *arg)
{
	struct stealer *s = arg;
	struct timespec ts = { 3, 0 };

	atomic_store(&s->queued, true);
	syscall(SYS_futex, s->word, FUTEX_WAIT, s->val, &ts, NULL, 0);
	return NULL;
}

/* The slowest of n Lookups by c on its lane, in ms. */
static double slowest_lookups(kvt_client *c, const struct kvt_namespace *ns,
			      const struct kvt_key *keys, int n)
{
	double worst = 0;
	size_t ready;

	for (int i = 0; i < n; i++) {
		double t = test_now();

		EXPECT(kvt_lookup(c, ns, keys, KEYS, &ready, NULL) == 0 && ready == KEYS);
		t = test_now() - t;
		worst = t > worst ? t : worst;
	}
	return worst * 1e3;
}

/* An Acquire on the raw lane of a block no one will commit: the daemon
 * defers it for wait_ms. Its seq. */
static uint32_t send_waiting_acquire(struct raw *r, uint32_t ns, const struct kvt_key *key,
				     uint32_t wait_ms)
{
	Kvtier__V1__AcquireRequest q = KVTIER__V1__ACQUIRE_REQUEST__INIT;
	uint8_t token[16];

	kvt_session_token(r->c, token);
	q.session = (ProtobufCBinaryData){ 16, token };
	q.namespace_id = ns;
	q.packed_keys = (ProtobufCBinaryData){ 16, (uint8_t *)key->bytes };
	q.wait_ms = wait_ms;
	return raw_send(r, KVT_LANE_ACQUIRE,
			(uint32_t)protobuf_c_message_pack(&q.base, r->map + r->made.request_offset));
}

/* The lane of r's session is gone within secs of its close, and the
 * daemon closed the worker's end. */
static void closes_within(struct raw *r, kvt_client *good, const char *what, double secs)
{
	unsigned long long base = test_stat(good, "fast_lanes") - 1;
	struct timeval tv = { 0, 100 * 1000 };
	double t0;
	char x;
	int rc;

	kvt_close(r->c);
	t0 = test_now();
	rc = (int)(lanes_within(good, base, 2.0) - base);
	printf("%s: %d lane(s) left %.1f ms after its session closed\n", what, rc,
	       (test_now() - t0) * 1e3);
	EXPECT(rc == 0);
	EXPECT(test_now() - t0 < secs);
	setsockopt(r->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	EXPECT(read(r->sock, &x, 1) == 0);
}

/* Floods its lane's eventfd, blocking mode set on the file the daemon
 * shares and the counter read dry: a daemon that read it would hang. */
struct spammer {
	struct raw *r;
	atomic_bool stop;
	long writes;
};

static void *spam_eventfd(void *arg)
{
	struct spammer *sp = arg;
	uint64_t v;

	while (!atomic_load(&sp->stop)) {
		kvt_lane_wake(sp->r->efd);
		sp->writes++;
		if (sp->writes % 64 == 0) {
			fcntl(sp->r->efd, F_SETFL, 0);
			(void)!read(sp->r->efd, &v, sizeof(v));
			sched_yield();
		}
	}
	return NULL;
}

static void part_two(void)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=1M", "host.segment_size=256K",
			       "limits.max_keys_per_request=8", "daemon.poll_us=0", NULL };
	struct kvt_key keys[KEYS];
	static uint8_t page[PAGE];
	const void *pages[KEYS];
	struct kvt_namespace ns, bns;
	kvt_client *good, *by;
	size_t n;
	int rc;
	double t0, worst;

	test_daemon_start(&d, sets);
	for (int i = 0; i < KEYS; i++) {
		test_fill(keys[i].bytes, 16, 100u + (unsigned)i);
		pages[i] = page;
	}
	CHECK(kvt_connect(d.addr, &good) == 0);
	CHECK_RC(good, kvt_attach(good, "bystander"), 0);
	kvt_set_fast_lane(good, 0);
	CHECK_RC(good, kvt_open_namespace(good, "lane", PAGE, 16, 0, &ns), 0);
	CHECK_RC(good, kvt_put(good, &ns, NULL, keys, pages, KEYS, NULL, &n), 0);
	/* Another tenant's worker on its own lane, served throughout. */
	CHECK(kvt_connect(d.addr, &by) == 0);
	CHECK_RC(by, kvt_attach(by, "by"), 0);
	CHECK(kvt_fast_lane(by, NULL));
	CHECK_RC(by, kvt_open_namespace(by, "lane", PAGE, 16, 0, &bns), 0);
	CHECK_RC(by, kvt_put(by, &bns, NULL, keys, pages, KEYS, NULL, &n), 0);

	/* 1. FUTEX_CMP_REQUEUE off request_seq: the daemon sleeps in its own
	 * epoll, not on the worker's word, so there is no one to move. */
	{
		struct raw r;
		long moved;

		raw_open(&r, &d);
		EXPECT(raw_call(&r, KVT_LANE_LOOKUP, write_lookup(&r, ns.id, keys, 1)) == 0);
		usleep(200 * 1000); /* the poller sleeps */
		moved = syscall(SYS_futex, &r.h->request_seq, FUTEX_CMP_REQUEUE, 0,
				(void *)1L, (uint32_t *)r.h->pad0,
				__atomic_load_n(&r.h->request_seq, __ATOMIC_SEQ_CST));
		printf("requeued %ld daemon waiter(s) off request_seq\n", moved);
		EXPECT(moved == 0);
		worst = slowest_lookups(by, &bns, keys, 20);
		printf("requeue: the other lane's slowest Lookup %.2f ms\n", worst);
		EXPECT(worst < 500);
		closes_within(&r, by, "requeue", 1.0);
		raw_close(&r);
	}

	/* 2. A worker thread waits on request_seq while the daemon defers an
	 * Acquire of the lane's: the deferred call holds no one else (the
	 * other lane is served meanwhile), and a request sent before its
	 * answer is taken only after it. Then the lane, closed while another
	 * Acquire still waits, is gone within 1 s; that answer still comes. */
	{
		struct raw r;
		struct stealer s = { 0 };
		struct kvt_key key;
		struct kvt_slot slot;
		pthread_t t;
		uint32_t seq;

		test_fill(key.bytes, 16, 999);
		CHECK_RC(good, kvt_reserve(good, &ns, NULL, &key, 1, NULL, &slot), 0);
		raw_open(&r, &d);
		seq = send_waiting_acquire(&r, ns.id, &key, 600);
		s.word = &r.h->request_seq;
		s.val = seq;
		CHECK(pthread_create(&t, NULL, steal_wake, &s) == 0);
		usleep(50 * 1000);
		EXPECT(raw_answer(&r, seq, 0) == -1); /* still waiting */
		worst = slowest_lookups(by, &bns, keys, 50);
		printf("deferred Acquire: the other lane's slowest Lookup %.2f ms\n", worst);
		EXPECT(worst < 500);
		/* The worker does not wait for the answer: its next request is
		 * left until the Acquire is answered, then served. */
		raw_send(&r, KVT_LANE_LOOKUP, write_lookup(&r, ns.id, keys, 1));
		usleep(50 * 1000);
		EXPECT(raw_answer(&r, seq, 0) == -1);
		rc = raw_answer(&r, seq + 1, 3);
		printf("the Lookup sent during the Acquire: status %d after its answer\n", rc);
		EXPECT(rc == 0);
		kvt_lane_futex_wake(&r.h->request_seq); /* the worker's own waiter */
		pthread_join(t, NULL);

		seq = send_waiting_acquire(&r, ns.id, &key, 3000);
		usleep(100 * 1000);
		EXPECT(raw_answer(&r, seq, 0) == -1);
		t0 = test_now();
		closes_within(&r, by, "Acquire waiting, wake stolen", 1.0);
		rc = raw_answer(&r, seq, 2);
		printf("the waiting Acquire: status %d (%s) %.1f ms after the close\n", rc,
		       r.h->message, (test_now() - t0) * 1e3);
		EXPECT(rc > 0);
		raw_close(&r);
		CHECK_RC(good, kvt_abort(good, &ns, &key, 1), 0);
	}

	/* 3. A worker floods its eventfd, with blocking mode set on the file
	 * it shares with the daemon and its counter read dry, and its lane
	 * with requests: the daemon never reads the eventfd, and serves one
	 * request per lane per pass. */
	{
		struct raw r;
		struct spammer sp = { .r = &r };
		struct hammer hm = { .kind = 0 };
		pthread_t t[2];

		raw_open(&r, &d);
		hm.r = &r;
		CHECK(pthread_create(&t[0], NULL, spam_eventfd, &sp) == 0);
		CHECK(pthread_create(&t[1], NULL, hammer_main, &hm) == 0);
		usleep(100 * 1000);
		worst = slowest_lookups(by, &bns, keys, 200);
		printf("eventfd and request flood: the other lane's slowest Lookup %.2f ms\n",
		       worst);
		EXPECT(worst < 500);
		closes_within(&r, by, "eventfd flood", 1.0);
		atomic_store(&sp.stop, true);
		atomic_store(&hm.stop, true);
		pthread_join(t[0], NULL);
		pthread_join(t[1], NULL);
		printf("the flood: %ld eventfd writes\n", sp.writes);
		raw_close(&r);
	}

	kvt_close(by);
	kvt_close(good);
	t0 = test_now();
	rc = stop_within(&d, 10);
	printf("SIGTERM after the above: exit %d after %.1f ms\n", rc, (test_now() - t0) * 1e3);
	EXPECT(rc == 0);
}

/*
 * SIGTERM with an attached client that makes no call (lane on or off), and
 * one waiting in an Acquire: the daemon is gone within 1 s. gRPC's own
 * shutdown waited 4.5 s for the idle client to answer its GOAWAY, until
 * the daemon ended idle connections itself.
 */
static void stop_with_idle_client(int lane, int acquire)
{
	struct test_daemon d;
	const char *sets[] = { "host.size=1M", "host.segment_size=256K", NULL };
	struct waiting w = { 0 };
	kvt_client *good;
	struct kvt_namespace ns;
	struct kvt_slot slot;
	pthread_t t;
	double t0;
	int rc;

	test_daemon_start(&d, sets);
	CHECK(kvt_connect(d.addr, &good) == 0);
	CHECK_RC(good, kvt_attach(good, "b"), 0);
	CHECK_RC(good, kvt_open_namespace(good, "lane", PAGE, 16, 0, &ns), 0);
	CHECK(kvt_connect(d.addr, &w.c) == 0);
	kvt_set_fast_lane(w.c, lane);
	CHECK_RC(w.c, kvt_attach(w.c, "w"), 0);
	CHECK_RC(w.c, kvt_open_namespace(w.c, "lane", PAGE, 16, 0, &w.ns), 0);
	test_fill(w.key.bytes, 16, 4242);
	CHECK_RC(good, kvt_reserve(good, &ns, NULL, &w.key, 1, NULL, &slot), 0);
	if (acquire)
		CHECK(pthread_create(&t, NULL, acquire_waits, &w) == 0);
	usleep(300 * 1000);
	t0 = test_now();
	rc = stop_within(&d, 8);
	printf("SIGTERM, attached clients (lane %s, Acquire waiting: %s): exit %d after %.1f ms\n",
	       lane ? "on" : "off", acquire ? "yes" : "no", rc, (test_now() - t0) * 1e3);
	EXPECT(rc == 0);
	EXPECT(test_now() - t0 < 1.0);
	if (acquire)
		pthread_join(t, NULL);
	kvt_close(w.c);
	kvt_close(good);
}

int main(void)
{
	part_one();
	part_two();
	for (int lane = 0; lane < 2; lane++)
		for (int acquire = 0; acquire < 2; acquire++)
			stop_with_idle_client(lane, acquire);
	if (failures)
		fprintf(stderr, "%d expectation(s) failed\n", failures);
	return failures ? 1 : 0;
}

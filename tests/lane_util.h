/*
 * A fast lane (proto/kvtier/v1/lane.h) taken by hand, as a hostile worker
 * would: its session's client (lane off, so the lane is free), the mapping
 * as the daemon made it, and calls written straight into it. For
 * test_lane and test_lane_attacks; single-threaded per lane.
 */
#ifndef KVT_TEST_LANE_UTIL_H
#define KVT_TEST_LANE_UTIL_H

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "client_util.h"
#include "kvtier.pb-c.h"
#include "kvtier/v1/lane.h"
#include "lane.h"

/* gRPC status codes, as the lane carries them. */
#define INVALID_ARGUMENT 3
#define UNIMPLEMENTED 12

static inline double test_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void test_segsock_path(const struct test_daemon *d, char *buf,
				     size_t len)
{
	snprintf(buf, len, "%s%s", d->addr + strlen("unix:"), KVT_SEGMENT_SOCKET_SUFFIX);
}

/* Waits up to secs for the daemon to report lanes open lanes; what it
 * reports. */
static inline unsigned long long lanes_within(kvt_client *c, unsigned long long lanes,
					      double secs)
{
	double until = test_now() + secs;
	unsigned long long n;

	while ((n = test_stat(c, "fast_lanes")) != lanes && test_now() < until)
		usleep(2000);
	return n;
}

struct raw {
	kvt_client *c;
	char path[200];     /* the segment socket */
	uint8_t token[16];  /* the session's */
	int sock, fd, efd;  /* the lane's connection, memfd and eventfd */
	uint8_t *map;
	size_t bytes;
	struct kvt_lane_header *h, made;
};

static inline void raw_open(struct raw *r, const struct test_daemon *d)
{
	struct kvt_segment_reply rep;
	char err[256];
	int fds[KVT_SEGSOCK_FDS];

	CHECK(kvt_connect(d->addr, &r->c) == 0);
	kvt_set_fast_lane(r->c, 0);
	CHECK_RC(r->c, kvt_attach(r->c, "hostile"), 0);
	kvt_session_token(r->c, r->token);
	test_segsock_path(d, r->path, sizeof(r->path));
	CHECK(kvt_segsock_ask_fds(r->path, r->token, KVT_LANE_SEGMENT, &rep, fds,
				  KVT_SEGSOCK_FDS, &r->sock, err, sizeof(err)) == 0);
	r->fd = fds[0];
	r->efd = fds[1];
	CHECK(r->efd >= 0);
	r->bytes = rep.bytes;
	r->map = mmap(NULL, r->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	CHECK(r->map != MAP_FAILED);
	r->h = (struct kvt_lane_header *)r->map;
	r->made = *r->h;
}

/* Unmaps the lane and closes its descriptors (not the client). */
static inline void raw_close(struct raw *r)
{
	munmap(r->map, r->bytes);
	close(r->fd);
	close(r->efd);
	close(r->sock);
}

/* Starts a call (method, len) without waiting, and wakes the daemon
 * whatever its waiting word says. Its seq. */
static inline uint32_t raw_send(struct raw *r, uint32_t method, uint32_t len)
{
	uint32_t seq = __atomic_load_n(&r->h->request_seq, __ATOMIC_ACQUIRE) + 1;

	r->h->method = method;
	r->h->request_len = len;
	__atomic_store_n(&r->h->request_seq, seq, __ATOMIC_SEQ_CST);
	kvt_lane_wake(r->efd);
	return seq;
}

/* The status of call seq, or -1 when none came within secs (by polling:
 * this worker does not trust its own waiting word). */
static inline int raw_answer(struct raw *r, uint32_t seq, double secs)
{
	double until = test_now() + secs;

	while (__atomic_load_n(&r->h->reply_seq, __ATOMIC_ACQUIRE) != seq)
		if (test_now() > until)
			return -1;
		else
			usleep(100);
	return r->h->status;
}

static inline int raw_call(struct raw *r, uint32_t method, uint32_t len)
{
	return raw_answer(r, raw_send(r, method, len), 2);
}

/* A Lookup of keys written at the request area as the daemon laid it out:
 * its length. */
static inline uint32_t write_lookup(struct raw *r, uint32_t ns,
				    const struct kvt_key *keys, size_t n)
{
	Kvtier__V1__LookupRequest q = KVTIER__V1__LOOKUP_REQUEST__INIT;

	q.namespace_id = ns;
	q.packed_keys = (ProtobufCBinaryData){ n * 16, (uint8_t *)keys };
	return (uint32_t)protobuf_c_message_pack(&q.base, r->map + r->made.request_offset);
}

#endif

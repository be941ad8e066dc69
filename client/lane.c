#include "lane.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kvtier/v1/lane.h"

/* How often a sleeping caller looks whether the daemon is still there. */
#define LIVENESS_MS 50

/* The descriptors of an SCM_RIGHTS reply: up to n in fds (the rest -1),
 * any beyond closed. */
static void take_fds(struct msghdr *msg, int *fds, unsigned n)
{
	unsigned got = 0;

	for (unsigned i = 0; i < n; i++)
		fds[i] = -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		size_t count;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (got < n)
				fds[got++] = fd;
			else
				close(fd);
		}
	}
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

int kvt_segsock_ask_fds(const char *path, const uint8_t session[16],
			uint32_t segment, struct kvt_segment_reply *rep, int *fds,
			unsigned nfds, int *sock, char *err, size_t len)
{
	struct kvt_segment_request req = { .version = KVT_SEGMENT_WIRE_VERSION,
					   .segment = segment };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	union {
		char buf[CMSG_SPACE(KVT_SEGSOCK_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { rep, sizeof(*rep) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;
	int s, rc = 0;

	for (unsigned i = 0; i < nfds; i++)
		fds[i] = -1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, len, "segment socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(req.session, session, sizeof(req.session));
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0) {
		snprintf(err, len, "segment socket: %s", strerror(errno));
		return -errno;
	}
	if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(s, &req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req)) {
		rc = -errno;
		snprintf(err, len, "segment socket %s: %s", path, strerror(errno));
		goto out;
	}
	n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
	if (n >= 0)
		take_fds(&msg, fds, nfds);
	if (n != (ssize_t)sizeof(*rep)) {
		rc = n < 0 ? -errno : -EIO;
		snprintf(err, len, "segment socket %s: %s", path,
			 n < 0 ? strerror(errno) : "short reply");
		close_fds(fds, nfds);
		goto out;
	}
	rep->message[sizeof(rep->message) - 1] = '\0';
	if (rep->status < 0 || fds[0] < 0) {
		rc = rep->status < 0 ? rep->status : -EIO;
		snprintf(err, len, "%s", rep->status < 0 ? rep->message : "malformed reply");
		close_fds(fds, nfds);
	}
out:
	if (rc == 0 && sock)
		*sock = s;
	else
		close(s);
	return rc;
}

int kvt_segsock_ask(const char *path, const uint8_t session[16],
		    uint32_t segment, struct kvt_segment_reply *rep, int *fd,
		    int *sock, char *err, size_t len)
{
	return kvt_segsock_ask_fds(path, session, segment, rep, fd, 1, sock, err, len);
}

struct kvt_lane {
	int sock;                  /* closed by the daemon when the lane ends */
	int efd;                   /* written to wake the daemon */
	uint8_t *map;
	size_t bytes;
	struct kvt_lane_header *h;
	uint32_t seq;
	bool broken;
};

int kvt_lane_open(const char *path, const uint8_t session[16],
		  struct kvt_lane **out, char *err, size_t len)
{
	struct kvt_segment_reply rep;
	struct kvt_lane *l = calloc(1, sizeof(*l));
	const struct kvt_lane_header *h;
	int fds[KVT_SEGSOCK_FDS], fd, rc;

	if (!l) {
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	rc = kvt_segsock_ask_fds(path, session, KVT_LANE_SEGMENT, &rep, fds,
				 KVT_SEGSOCK_FDS, &l->sock, err, len);
	if (rc < 0) {
		free(l);
		return rc;
	}
	fd = fds[0];
	l->efd = fds[1];
	l->bytes = rep.bytes;
	l->map = rep.bytes >= 4096 ? mmap(NULL, rep.bytes, PROT_READ | PROT_WRITE,
					  MAP_SHARED, fd, 0) : MAP_FAILED;
	close(fd);
	h = (const void *)l->map;
	if (l->map == MAP_FAILED || l->efd < 0 || h->magic != KVT_LANE_MAGIC ||
	    h->version != KVT_LANE_VERSION ||
	    h->request_offset < sizeof(*h) ||
	    (uint64_t)h->request_offset + h->request_capacity > l->bytes ||
	    h->reply_offset < sizeof(*h) ||
	    (uint64_t)h->reply_offset + h->reply_capacity > l->bytes) {
		snprintf(err, len, "the daemon's fast lane is not version %u",
			 KVT_LANE_VERSION);
		if (l->map != MAP_FAILED)
			munmap(l->map, l->bytes);
		if (l->efd >= 0)
			close(l->efd);
		close(l->sock);
		free(l);
		return -EPROTO;
	}
	l->h = (struct kvt_lane_header *)l->map;
	l->seq = __atomic_load_n(&l->h->request_seq, __ATOMIC_ACQUIRE);
	*out = l;
	return 0;
}

void kvt_lane_close(struct kvt_lane *l)
{
	if (!l)
		return;
	munmap(l->map, l->bytes);
	close(l->efd);
	close(l->sock);
	free(l);
}

uint32_t kvt_lane_max_keys(const struct kvt_lane *l)
{
	return l->h->max_keys;
}

uint8_t *kvt_lane_request(struct kvt_lane *l, size_t *cap)
{
	*cap = l->h->request_capacity;
	return l->map + l->h->request_offset;
}

static int64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool answered(struct kvt_lane *l)
{
	return __atomic_load_n(&l->h->reply_seq, __ATOMIC_ACQUIRE) == l->seq;
}

/* Waits for the answer to l->seq: 0, -ETIMEDOUT or -ECONNRESET. */
static int lane_wait(struct kvt_lane *l, unsigned spin_us, int timeout_ms)
{
	struct timespec t0, t;
	int64_t deadline = ms_now() + timeout_ms;
	int rc = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		for (int i = 0; i < KVT_LANE_SPINS; i++) {
			if (answered(l))
				return 0;
			kvt_lane_cpu_relax();
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000 >=
		    (long)spin_us)
			break;
		sched_yield();
	}
	for (;;) {
		struct timespec slice = { 0, LIVENESS_MS * 1000000L };
		struct pollfd p = { .fd = l->sock, .events = POLLIN };
		uint32_t seen;

		__atomic_store_n(&l->h->worker_waiting, 1, __ATOMIC_SEQ_CST);
		seen = __atomic_load_n(&l->h->reply_seq, __ATOMIC_SEQ_CST);
		if (seen == l->seq)
			break;
		kvt_lane_futex_wait(&l->h->reply_seq, seen, &slice);
		if (answered(l))
			break;
		/* The daemon closes the connection when the lane ends. */
		if (poll(&p, 1, 0) > 0) {
			rc = -ECONNRESET;
			break;
		}
		if (ms_now() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	__atomic_store_n(&l->h->worker_waiting, 0, __ATOMIC_RELAXED);
	return rc;
}

int kvt_lane_call(struct kvt_lane *l, uint32_t method, size_t len,
		  unsigned spin_us, int timeout_ms, const uint8_t **reply,
		  size_t *reply_len, char *msg, size_t msglen)
{
	struct kvt_lane_header *h = l->h;
	int rc;

	if (l->broken) {
		snprintf(msg, msglen, "the fast lane was given up after a call that timed out");
		return -ETIMEDOUT;
	}
	h->method = method;
	h->request_len = (uint32_t)len;
	l->seq++;
	__atomic_store_n(&h->request_seq, l->seq, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&h->daemon_waiting, __ATOMIC_SEQ_CST))
		kvt_lane_wake(l->efd);
	rc = lane_wait(l, spin_us, timeout_ms);
	if (rc < 0) {
		l->broken = true;
		snprintf(msg, msglen, rc == -ETIMEDOUT ?
			 "no answer on the fast lane within %d ms" :
			 "the daemon ended the fast lane", timeout_ms);
		return rc;
	}
	if (h->status != 0) {
		snprintf(msg, msglen, "%.*s", (int)sizeof(h->message), h->message);
		return h->status;
	}
	*reply = l->map + h->reply_offset;
	*reply_len = h->reply_len <= h->reply_capacity ? h->reply_len : 0;
	return 0;
}

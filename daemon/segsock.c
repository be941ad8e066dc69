#include "segsock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "kvtier/v1/lane.h"
#include "kvtier/v1/segments.h"
#include "lane.h"
#include "log.h"

#define REQUEST_TIMEOUT_MS 1000

struct pending {
	int fd;
	int64_t deadline; /* ms, CLOCK_MONOTONIC */
};

struct kvt_segsock {
	char path[108];
	int listen_fd, wake[2];
	struct kvt_engine *engine;
	struct kvt_lanes *lanes;
	pthread_t thread;
	struct pending pend[KVT_SEGSOCK_PENDING];
	uint32_t npend;
	_Atomic uint64_t served, refused, dropped;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends the reply, with the n descriptors of fds attached (a segment's
 * memfd; a lane's memfd and eventfd). */
static void reply(int conn, const struct kvt_segment_reply *rep, const int *fds,
		  unsigned n)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)rep, sizeof(*rep) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (n) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(c), fds, n * sizeof(int));
	}
	/* The reply fits the socket's buffer: never blocks. */
	(void)sendmsg(conn, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Answers the one request a connection sends. */
static void serve(struct kvt_segsock *s, int conn)
{
	struct kvt_segment_request req;
	struct kvt_segment_reply rep = { 0 };
	struct ucred cr;
	socklen_t crlen = sizeof(cr);
	struct kvt_err err;
	uint32_t tenant;
	ssize_t n = recv(conn, &req, sizeof(req), MSG_DONTWAIT | MSG_TRUNC);
	int fd = -1, efd = -1;

	if (n == 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
		s->dropped++; /* it hung up without asking */
		return;
	}
	if (n != (ssize_t)sizeof(req) || req.version != KVT_SEGMENT_WIRE_VERSION) {
		rep.status = -EINVAL;
		snprintf(rep.message, sizeof(rep.message),
			 "a request is %zu bytes of version %u (got %zd bytes)",
			 sizeof(req), KVT_SEGMENT_WIRE_VERSION, n);
	} else if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0 ||
		   kvt_engine_tenant(s->engine, cr.uid, NULL, &tenant) < 0) {
		/* A uid the daemon has not seen has no session either. */
		rep.status = -ENOENT;
		snprintf(rep.message, sizeof(rep.message), "no such session");
	} else if (req.segment == KVT_LANE_SEGMENT) {
		rep.segment = req.segment;
		rep.status = kvt_lanes_open(s->lanes, req.session, cr.uid, cr.gid,
					    cr.pid, conn, &fd, &efd, &rep.bytes, &err);
		if (rep.status < 0) {
			fd = efd = -1;
			snprintf(rep.message, sizeof(rep.message), "%.199s", err.msg);
		}
	} else {
		rep.segment = req.segment;
		rep.bytes = kvt_engine_segment_bytes(s->engine);
		fd = kvt_engine_segment_fd(s->engine, tenant, req.session,
					   req.segment, &rep.generation, &err);
		if (fd < 0) {
			rep.status = fd;
			snprintf(rep.message, sizeof(rep.message), "%.199s", err.msg);
		}
	}
	reply(conn, &rep, (int[]){ fd, efd }, fd < 0 ? 0 : efd < 0 ? 1 : 2);
	if (efd >= 0)
		close(efd);
	if (fd >= 0) {
		close(fd);
		s->served++;
	} else {
		s->refused++;
		kvt_log(KVT_LOG_DEBUG, "segment socket: refused: %s", rep.message);
	}
}

static void pend_remove(struct kvt_segsock *s, uint32_t i)
{
	close(s->pend[i].fd);
	s->pend[i] = s->pend[--s->npend];
}

static void *segsock_main(void *arg)
{
	struct kvt_segsock *s = arg;
	struct pollfd pfd[2 + KVT_SEGSOCK_PENDING];

	for (;;) {
		int64_t now = now_ms(), wait = -1;
		uint32_t np = s->npend;

		pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
		for (uint32_t i = 0; i < np; i++) {
			pfd[2 + i] = (struct pollfd){ .fd = s->pend[i].fd, .events = POLLIN };
			if (wait < 0 || s->pend[i].deadline - now < wait)
				wait = s->pend[i].deadline > now ? s->pend[i].deadline - now : 0;
		}
		if (poll(pfd, 2 + np, (int)wait) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		now = now_ms();
		/* Backwards: removal moves the last entry into the hole. */
		for (uint32_t i = np; i-- > 0;) {
			if (pfd[2 + i].revents) {
				serve(s, s->pend[i].fd);
				pend_remove(s, i);
			} else if (s->pend[i].deadline <= now) {
				s->dropped++;
				pend_remove(s, i);
			}
		}
		if (pfd[1].revents & POLLIN) {
			int conn = accept4(s->listen_fd, NULL, NULL,
					   SOCK_NONBLOCK | SOCK_CLOEXEC);

			if (conn < 0)
				continue;
			if (s->npend == KVT_SEGSOCK_PENDING) {
				uint32_t oldest = 0;

				for (uint32_t i = 1; i < s->npend; i++)
					if (s->pend[i].deadline < s->pend[oldest].deadline)
						oldest = i;
				s->dropped++;
				pend_remove(s, oldest);
			}
			s->pend[s->npend++] = (struct pending){
				conn, now + REQUEST_TIMEOUT_MS };
		}
	}
	while (s->npend)
		pend_remove(s, s->npend - 1);
	return NULL;
}

int kvt_segsock_start(const char *path, mode_t mode, gid_t gid,
		      struct kvt_engine *engine, struct kvt_lanes *lanes,
		      struct kvt_segsock **out, char *err, size_t len)
{
	struct kvt_segsock *s = calloc(1, sizeof(*s));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (!s) {
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	s->engine = engine;
	s->lanes = lanes;
	s->wake[0] = s->wake[1] = -1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, len, "segment socket path %s is longer than %zu bytes",
			 path, sizeof(sa.sun_path) - 1);
		free(s);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	strcpy(s->path, path);
	s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0 || (unlink(path) < 0 && errno != ENOENT) ||
	    bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, mode) < 0 ||
	    (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) ||
	    listen(s->listen_fd, SOMAXCONN) < 0 ||
	    pipe2(s->wake, O_CLOEXEC) < 0 ||
	    (errno = pthread_create(&s->thread, NULL, segsock_main, s)) != 0) {
		int rc = -errno;

		snprintf(err, len, "cannot listen on %s: %s", path, strerror(-rc));
		if (s->listen_fd >= 0)
			close(s->listen_fd);
		if (s->wake[0] >= 0) {
			close(s->wake[0]);
			close(s->wake[1]);
		}
		unlink(path);
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void kvt_segsock_stop(struct kvt_segsock *s)
{
	if (!s)
		return;
	if (write(s->wake[1], "x", 1) < 0)
		kvt_log(KVT_LOG_WARN, "cannot wake the segment socket: %s", strerror(errno));
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	close(s->wake[0]);
	close(s->wake[1]);
	unlink(s->path);
	free(s);
}

void kvt_segsock_stats(const struct kvt_segsock *s, struct kvt_segsock_stats *st)
{
	*st = (struct kvt_segsock_stats){ 0 };
	if (!s)
		return;
	st->served_total = s->served;
	st->refused_total = s->refused;
	st->dropped_total = s->dropped;
}

const char *kvt_segsock_path(const struct kvt_segsock *s)
{
	return s->path;
}

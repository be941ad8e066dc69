/*
 * A real redis-server on loopback for side-by-side baselines and the Redis
 * client's tests: started on a free 127.0.0.1 port with persistence off,
 * stopped with SIGTERM (or killed, and started again on its port).
 * Only hiredis is used here, so a process may fork after these calls.
 */
#ifndef KVT_BENCH_REDIS_UTIL_H
#define KVT_BENCH_REDIS_UTIL_H

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

struct test_redis {
	pid_t pid;
	int port;
};

static inline int redis_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	      getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	close(fd);
	return ntohs(a.sin_port);
}

/*
 * Starts redis-server ($REDIS_SERVER or redis-server on PATH) on r->port
 * (a free one when 0: set it again to restart on the same port) with
 * persistence off and the options in extra (NULL-terminated, may be
 * NULL); returns once it answers.
 */
static inline void test_redis_spawn(struct test_redis *r, const char *const *extra)
{
	char port[16];

	if (!r->port)
		r->port = redis_free_port();
	snprintf(port, sizeof(port), "%d", r->port);
	fflush(NULL); /* the child's freopen must not write our buffer twice */
	r->pid = fork();
	CHECK(r->pid >= 0);
	if (r->pid == 0) {
		const char *bin = getenv("REDIS_SERVER") ? getenv("REDIS_SERVER") : "redis-server";
		const char *argv[64] = { bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
					 "--appendonly", "no", "--proto-max-bulk-len", "1gb",
					 "--loglevel", "warning" };
		int argc = 13;

		while (extra && *extra && argc < 63)
			argv[argc++] = *extra++;
		/* Dies with the test, also one that a failed CHECK ends: a
		 * server left holding the test's stderr would hang meson. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Its start-up banner is not the test's output. */
		CHECK(freopen("/dev/null", "w", stdout));
		execvp(bin, (char *const *)argv);
		fprintf(stderr, "cannot run %s (apt-get install redis-server)\n", bin);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *c = redisConnect("127.0.0.1", r->port);
		redisReply *rep = c && !c->err ? redisCommand(c, "PING") : NULL;
		bool up = rep != NULL; /* PONG, or NOAUTH where a password is set */

		if (rep)
			freeReplyObject(rep);
		if (c)
			redisFree(c);
		if (up)
			return;
		CHECK(waitpid(r->pid, NULL, WNOHANG) == 0);
		usleep(10000);
	}
	CHECK(!"redis-server did not answer PING");
}

/* maxmemory bytes with allkeys-lru, as a cache would be run. */
static inline void test_redis_start(struct test_redis *r, unsigned long long maxmemory)
{
	char mem[32];
	const char *extra[] = { "--maxmemory", mem, "--maxmemory-policy", "allkeys-lru", NULL };

	snprintf(mem, sizeof(mem), "%llu", maxmemory);
	r->port = 0;
	test_redis_spawn(r, extra);
}

static inline redisContext *test_redis_connect(const struct test_redis *r)
{
	redisContext *c = redisConnect("127.0.0.1", r->port);

	CHECK(c && !c->err);
	return c;
}

/* SIGTERM (or another signal: SIGKILL for a crash), then the wait. */
static inline void test_redis_signal(struct test_redis *r, int sig)
{
	kill(r->pid, sig);
	CHECK(waitpid(r->pid, NULL, 0) == r->pid);
}

static inline void test_redis_stop(struct test_redis *r)
{
	test_redis_signal(r, SIGTERM);
}

#endif

/*
 * A real redis-server on loopback for side-by-side baselines: started on a
 * free 127.0.0.1 port with persistence off, stopped with SIGTERM.
 * Only hiredis is used here, so a process may fork after these calls.
 */
#ifndef KVT_BENCH_REDIS_UTIL_H
#define KVT_BENCH_REDIS_UTIL_H

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
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

/* Starts redis-server ($REDIS_SERVER or redis-server on PATH); maxmemory
 * bytes with allkeys-lru, as a cache would be run. */
static inline void test_redis_start(struct test_redis *r, unsigned long long maxmemory)
{
	char port[16], mem[32];

	r->port = redis_free_port();
	snprintf(port, sizeof(port), "%d", r->port);
	snprintf(mem, sizeof(mem), "%llu", maxmemory);
	fflush(NULL); /* the child's freopen must not write our buffer twice */
	r->pid = fork();
	CHECK(r->pid >= 0);
	if (r->pid == 0) {
		const char *bin = getenv("REDIS_SERVER") ? getenv("REDIS_SERVER") : "redis-server";

		/* Its start-up banner is not the benchmark's output. */
		CHECK(freopen("/dev/null", "w", stdout));

		execlp(bin, bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		       "--appendonly", "no", "--maxmemory", mem, "--maxmemory-policy",
		       "allkeys-lru", "--proto-max-bulk-len", "1gb", "--loglevel", "warning",
		       (char *)NULL);
		fprintf(stderr, "cannot run %s (apt-get install redis-server)\n", bin);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *c = redisConnect("127.0.0.1", r->port);
		redisReply *rep = c && !c->err ? redisCommand(c, "PING") : NULL;
		bool up = rep && rep->type == REDIS_REPLY_STATUS;

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

static inline redisContext *test_redis_connect(const struct test_redis *r)
{
	redisContext *c = redisConnect("127.0.0.1", r->port);

	CHECK(c && !c->err);
	return c;
}

static inline void test_redis_stop(struct test_redis *r)
{
	kill(r->pid, SIGTERM);
	CHECK(waitpid(r->pid, NULL, 0) == r->pid);
}

#endif

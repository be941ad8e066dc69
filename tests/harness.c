#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t running_daemon, daemon_owner;

/* A test that fails (exit from CHECK) must not leave its daemon behind. */
static void kill_daemon_at_exit(void)
{
	if (running_daemon > 0 && getpid() == daemon_owner)
		kill(running_daemon, SIGKILL);
}

void test_daemon_start(struct test_daemon *d, const char *const *sets)
{
	snprintf(d->dir, sizeof(d->dir), "/tmp/kvtier-test-XXXXXX");
	CHECK(mkdtemp(d->dir) != NULL);
	d->config[0] = '\0';
	test_daemon_restart(d, sets);
}

static bool sets_host_size(const char *const *sets)
{
	for (int i = 0; sets && sets[i]; i++)
		if (strncmp(sets[i], "host.size=", 10) == 0)
			return true;
	return false;
}

void test_daemon_restart(struct test_daemon *d, const char *const *sets)
{
	const char *bin = getenv("KVTIERD");
	char *argv[64], run_dir[200], line[1024];
	int out[2], argc = 0;
	struct pollfd pfd;
	size_t got = 0;

	if (!bin) {
		fprintf(stderr, "harness: set KVTIERD to the kvtierd binary\n");
		exit(1);
	}
	snprintf(run_dir, sizeof(run_dir), "daemon.run_dir=%s/run", d->dir);
	/* The socket lives in the run dir, which the daemon creates. */
	snprintf(d->addr, sizeof(d->addr), "unix:%s/run/kvtierd.sock", d->dir);
	argv[argc++] = (char *)bin;
	if (d->config[0]) {
		argv[argc++] = "-c";
		argv[argc++] = d->config;
	}
	argv[argc++] = "--set";
	argv[argc++] = run_dir;
	/* Tests run side by side: each daemon's metrics on a port of its own. */
	argv[argc++] = "--set";
	argv[argc++] = "metrics.listen=127.0.0.1:0";
	/* The host tier is committed at start: tests keep it small. */
	if (!d->config[0] && !sets_host_size(sets)) {
		argv[argc++] = "--set";
		argv[argc++] = "host.size=64M";
	}
	for (int i = 0; sets && sets[i] && argc < 60; i++) {
		argv[argc++] = "--set";
		argv[argc++] = (char *)sets[i];
	}
	argv[argc] = NULL;
	CHECK(pipe(out) == 0);
	d->pid = fork();
	CHECK(d->pid >= 0);
	if (d->pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		close(out[1]);
		/* Dies with the test, whichever of its daemons it is: one left
		 * holding the test's stdout would hang meson until its timeout. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(bin, argv);
		_exit(127);
	}
	close(out[1]);
	if (!daemon_owner)
		atexit(kill_daemon_at_exit);
	running_daemon = d->pid;
	daemon_owner = getpid();
	/* Ready when it prints where it listens. */
	pfd.fd = out[0];
	pfd.events = POLLIN;
	while (got < sizeof(line) - 1 && poll(&pfd, 1, 120000) == 1) {
		ssize_t n = read(out[0], line + got, sizeof(line) - 1 - got);

		if (n <= 0)
			break;
		got += (size_t)n;
		line[got] = '\0';
		if (strchr(line, '\n'))
			break;
	}
	close(out[0]);
	line[got] = '\0';
	if (!strstr(line, "listening on")) {
		fprintf(stderr, "harness: kvtierd did not start (said: '%s')\n", line);
		kill(d->pid, SIGKILL);
		exit(1);
	}
	snprintf(d->said, sizeof(d->said), "%s", line);
	d->metrics_port = 0;
	if (strstr(line, " metrics http://127.0.0.1:"))
		d->metrics_port = atoi(strstr(line, " metrics http://127.0.0.1:") +
				       strlen(" metrics http://127.0.0.1:"));
}

void test_daemon_open_to_workers(struct test_daemon *d)
{
	CHECK(chmod(d->dir, 0755) == 0);
}

int test_daemon_signal(struct test_daemon *d, int sig)
{
	int status;

	kill(d->pid, sig);
	if (waitpid(d->pid, &status, 0) < 0)
		return -1;
	if (running_daemon == d->pid)
		running_daemon = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int test_daemon_stop(struct test_daemon *d)
{
	char cmd[200];
	int rc = test_daemon_signal(d, SIGTERM);

	snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "harness: cannot remove %s\n", d->dir);
	return rc;
}

static atomic_int *steps;

void test_steps_init(void)
{
	steps = mmap(NULL, sizeof(*steps), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(steps != MAP_FAILED);
	atomic_init(steps, 0);
}

void test_step_set(int step)
{
	atomic_store(steps, step);
}

int test_step(void)
{
	return atomic_load(steps);
}

void test_step_wait(int step)
{
	while (atomic_load(steps) < step)
		usleep(500);
}

pid_t test_spawn(void (*fn)(const char *arg), const char *arg)
{
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		fn(arg);
		fflush(NULL);
		_exit(0);
	}
	return pid;
}

void test_fill(void *page, size_t len, unsigned seed)
{
	uint8_t *p = page;
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

int test_memfds(pid_t pid, const char *prefix, long long *blocks)
{
	char dir[64], path[320], target[256], want[128];
	struct dirent *de;
	struct stat st;
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	snprintf(want, sizeof(want), "/memfd:%s", prefix);
	*blocks = 0;
	d = opendir(dir);
	CHECK(d != NULL);
	while ((de = readdir(d))) {
		ssize_t len;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		if (strncmp(target, want, strlen(want)) != 0 || stat(path, &st) < 0)
			continue;
		n++;
		*blocks += (long long)st.st_blocks;
	}
	closedir(d);
	return n;
}

int test_daemon_refuses(const char *const *sets, char *out, size_t len)
{
	char dir[] = "/tmp/kvtier-refuse-XXXXXX", cmd[2048];
	size_t n, at;
	int status;
	FILE *p;

	CHECK(mkdtemp(dir) != NULL);
	at = (size_t)snprintf(cmd, sizeof(cmd), "timeout 20 %s --set daemon.run_dir=%s/run "
			      "--set metrics.listen=", getenv("KVTIERD"), dir);
	for (int i = 0; sets[i] && at < sizeof(cmd); i++)
		at += (size_t)snprintf(cmd + at, sizeof(cmd) - at, " --set '%s'", sets[i]);
	CHECK(at + 8 < sizeof(cmd));
	strcat(cmd, " 2>&1");
	p = popen(cmd, "r");
	CHECK(p != NULL);
	n = fread(out, 1, len - 1, p);
	out[n] = '\0';
	status = pclose(p);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

long test_read_long(const char *path, const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen(path, "r");

	while (f && fgets(line, sizeof(line), f))
		if (!key ? sscanf(line, "%ld", &v) == 1 :
			   strncmp(line, key, strlen(key)) == 0 &&
			   sscanf(line + strlen(key), "%ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

static long hugepages_added; /* by this process, to give back */

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int rc;

	if (!f)
		return -1;
	rc = fprintf(f, "%ld\n", v) > 0 ? 0 : -1;
	return fclose(f) == 0 ? rc : -1;
}

long test_hugepages_free(void)
{
	long nfree = test_read_long("/proc/meminfo", "HugePages_Free:");
	long resv = test_read_long("/proc/meminfo", "HugePages_Rsvd:");

	return nfree < 0 || resv < 0 ? -1 : nfree - resv;
}

/* Relative to the pool as it is now: other tests may be resizing it too. */
void test_hugepages_give_back(void)
{
	long now = test_read_long(NR_HUGEPAGES, NULL);

	if (hugepages_added > 0 && now >= hugepages_added)
		write_long(NR_HUGEPAGES, now - hugepages_added);
	hugepages_added = 0;
}

int test_hugepages_reserve(long n)
{
	static bool registered;
	long before = test_read_long(NR_HUGEPAGES, NULL), free_before = test_hugepages_free();

	if (before < 0 || free_before < 0 || write_long(NR_HUGEPAGES, before + n) < 0)
		return -1;
	hugepages_added += test_read_long(NR_HUGEPAGES, NULL) - before;
	if (!registered) {
		atexit(test_hugepages_give_back);
		registered = true;
	}
	if (test_hugepages_free() < free_before + n) {
		test_hugepages_give_back();
		return -1;
	}
	return 0;
}

void test_become(uid_t uid, gid_t gid)
{
	CHECK(setgroups(1, &gid) == 0 && setresgid(gid, gid, gid) == 0 &&
	      setresuid(uid, uid, uid) == 0);
}

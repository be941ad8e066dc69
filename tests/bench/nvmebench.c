/*
 * kvtier-nvmebench: promotion read bandwidth of 2 MiB pages from the nvme
 * tier at queue depth 1, 8 and 32, next to fio (io_uring, O_DIRECT) reading
 * the same file with the same block size and depth, in the same run. Also
 * the time a restart takes to recover the full tier.
 *
 *   KVTIERD=build-release/daemon/kvtierd kvtier-nvmebench [DIR] [WORKING_SET_MIB]
 *
 * The daemon's host tier holds 1/4 of the working set. WORKERS processes
 * acquire random batches of it at once, so the daemon always has reads
 * queued and its queue_depth alone sets the depth on the device; bandwidth
 * is the bytes read from nvme over the wall time.
 *
 * fio reads only bytes that hold data: the file is written through before
 * the daemon formats it, and fio keeps to the span the records occupy. A
 * preallocated file left unwritten reads back as zeros without touching
 * the disk, which once made fio look twice as fast as the device. fio's
 * figure per depth is the mean of a run just before the daemon's phase and
 * one just after, since this kind of disk drifts by up to 2x in seconds.
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "client_util.h"
#include "kvtier/kvtier.h"

#define PAGE (2u << 20)
#define BATCH 16 /* keys per Acquire */
#define WORKERS 4
#define SECONDS 8
#define HDR 4096 /* the nvme tier's superblock and header size */
#define REGION (256ull << 20) /* nvme.region_size below */

static char set_paths[200], set_qd[64], set_host[64], set_size[64];
static const char *sets[] = {
	set_host, "host.segment_size=64M", set_paths, set_size,
	"nvme.region_size=256M", set_qd, NULL,
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct kvt_key key_of(unsigned i)
{
	return test_key("nvmebnch", i);
}

static kvt_client *open_client(const struct test_daemon *d,
			       struct kvt_namespace *ns)
{
	return test_client(d->addr, "nvmebench", "nvmebench", PAGE, ns);
}

/* Writes the working set, each block demoted before the next is put. */
static void fill(kvt_client *c, const struct kvt_namespace *ns, unsigned n)
{
	void *page = malloc(PAGE);

	for (unsigned i = 0; i < n; i++) {
		struct kvt_key k = key_of(i);
		const void *pages[1] = { page };
		size_t stored;

		test_fill(page, 4096, i);
		CHECK_RC(c, kvt_put(c, ns, NULL, &k, pages, 1, NULL, &stored), 0);
		while (test_stat(c, "nvme_queued") + test_stat(c, "nvme_inflight") > 16)
			usleep(1000);
	}
	while (test_stat(c, "nvme_queued") + test_stat(c, "nvme_inflight") > 0)
		usleep(1000);
	free(page);
}

/* Waits for a child (not the daemon, also ours); it must have passed. */
static void reap(pid_t pid)
{
	int status;

	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	      WEXITSTATUS(status) == 0);
}

static double promote_bw(const struct test_daemon *d, unsigned n,
			 kvt_client **out);

/* A worker: acquires random batches until the deadline. */
static void acquire_loop(const struct test_daemon *d, unsigned n,
			 unsigned seed, double until)
{
	struct kvt_key keys[BATCH];
	struct kvt_namespace ns;
	kvt_client *c = open_client(d, &ns);

	while (now_s() < until) {
		struct kvt_lease l;

		for (unsigned i = 0; i < BATCH; i++)
			keys[i] = key_of((unsigned)rand_r(&seed) % n);
		CHECK_RC(c, kvt_acquire(c, &ns, keys, BATCH, 0, &l), 0);
		CHECK(l.count == BATCH);
		CHECK_RC(c, kvt_release(c, &l), 0);
	}
	kvt_close(c);
}

/*
 * Bytes per second promoted by WORKERS processes for SECONDS, and what the
 * daemon recovered at start, measured in a child: the benchmark's own
 * process never makes a gRPC client, since gRPC does not survive fork.
 */
static void measure(const struct test_daemon *d, unsigned n, double out[3])
{
	int fds[2];
	pid_t pid;

	CHECK(pipe(fds) == 0);
	if ((pid = fork()) == 0) {
		kvt_client *c;
		double r[3];

		r[0] = promote_bw(d, n, &c);
		r[1] = (double)test_stat(c, "nvme_recovered_blocks");
		r[2] = (double)test_stat(c, "nvme_recovery_ms");
		CHECK(test_stat(c, "nvme_bad_checksum_total") == 0);
		CHECK(write(fds[1], r, sizeof(r)) == sizeof(r));
		kvt_close(c);
		_exit(0);
	}
	close(fds[1]);
	CHECK(read(fds[0], out, 3 * sizeof(double)) == 3 * sizeof(double));
	close(fds[0]);
	reap(pid);
}

/* Bytes per second promoted by WORKERS processes for SECONDS; forks them
 * before making its own client. */
static double promote_bw(const struct test_daemon *d, unsigned n,
			 kvt_client **out)
{
	double t0 = now_s() + 1, t;
	unsigned long long before, after;
	struct kvt_namespace ns;
	pid_t pids[WORKERS];
	kvt_client *c;

	for (unsigned w = 0; w < WORKERS; w++)
		if ((pids[w] = fork()) == 0) {
			acquire_loop(d, n, w + 1, t0 + SECONDS);
			_exit(0);
		}
	c = open_client(d, &ns);
	while (now_s() < t0)
		usleep(1000);
	before = test_stat(c, "tiers.nvme.out_bytes_total");
	for (unsigned w = 0; w < WORKERS; w++)
		reap(pids[w]);
	t = now_s();
	after = test_stat(c, "tiers.nvme.out_bytes_total");
	*out = c;
	return (double)(after - before) / (t - t0);
}

/*
 * Bytes from the start of the file that n records occupy: the superblock,
 * then regions filled front to back with [header][page] records (the fill
 * demotes blocks one after another into an empty tier).
 */
static unsigned long long records_span(unsigned n)
{
	unsigned long long record = HDR + PAGE;
	unsigned per_region = (unsigned)((REGION - HDR) / record);

	return HDR + (n / per_region) * REGION +
	       (n % per_region ? HDR + (n % per_region) * record : 0);
}

/* Writes the first bytes of path with data, so that no read of them is
 * answered from an unwritten extent. */
static void write_through(const char *path, unsigned long long bytes)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	void *buf;

	CHECK(fd >= 0);
	CHECK(posix_memalign(&buf, 4096, PAGE) == 0);
	test_fill(buf, PAGE, 0xf10);
	for (unsigned long long off = 0; off < bytes; off += PAGE)
		CHECK(pwrite(fd, buf, PAGE, (off_t)off) == PAGE);
	CHECK(fsync(fd) == 0);
	close(fd);
	free(buf);
}

/* fio's random read bandwidth on the first size bytes of path at depth
 * qd over seconds, bytes per second. */
static double fio_bw(const char *path, unsigned qd, unsigned long long size,
		     int seconds)
{
	char cmd[600], buf[4096], *p;
	double bw = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd),
		 "fio --name=promote --filename=%s --rw=randread --bs=2M --iodepth=%u "
		 "--direct=1 --ioengine=io_uring --size=%llu --runtime=%d --time_based "
		 "--output-format=json 2>/dev/null",
		 path, qd, size, seconds);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	/* The first "bw_bytes" is the read side's. */
	while (fgets(buf, sizeof(buf), f))
		if (bw == 0 && (p = strstr(buf, "\"bw_bytes\"")) && (p = strchr(p, ':')))
			bw = strtod(p + 1, NULL);
	pclose(f);
	return bw;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/var/tmp";
	unsigned mib = argc > 2 ? (unsigned)atoi(argv[2]) : 1536;
	unsigned n = mib / 2, depths[] = { 1, 8, 32 };
	unsigned long long file_bytes = (unsigned long long)mib * 2 << 20;
	unsigned long long span = records_span(n);
	char path[160];

	snprintf(path, sizeof(path), "%s/kvtier-nvmebench-%d.kvt", dir, getpid());
	snprintf(set_paths, sizeof(set_paths), "nvme.paths=%s", path);
	snprintf(set_size, sizeof(set_size), "nvme.size=%llu", file_bytes);
	snprintf(set_host, sizeof(set_host), "host.size=%uM",
		 (mib / 4 + 63) / 64 * 64);
	write_through(path, (span + PAGE - 1) / PAGE * PAGE);
	printf("nvme promotion, 2 MiB pages, working set %u MiB on %s, host tier %s, fio over its first %llu MiB\n",
	       mib, path, set_host + 10, span >> 20);
	printf("%-6s %14s %14s %8s %14s\n", "depth", "kvtier MB/s", "fio MB/s",
	       "ratio", "recovery");
	for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		struct test_daemon d;
		struct kvt_namespace ns;
		unsigned long long recovered, ms;
		double ours, fio, r[3];
		kvt_client *c;

		/* Half of fio's time just before the daemon, half after. */
		fio = fio_bw(path, depths[i], span, SECONDS / 2);
		snprintf(set_qd, sizeof(set_qd), "nvme.queue_depth=%u", depths[i]);
		test_daemon_start(&d, sets);
		pid_t filler = fork();

		if (filler == 0) { /* fills, or checks what the restart recovered */
			c = open_client(&d, &ns);
			if (i == 0)
				fill(c, &ns, n);
			else
				CHECK(test_stat(c, "nvme_recovered_blocks") == n);
			kvt_close(c);
			_exit(0);
		}
		reap(filler);
		measure(&d, n, r);
		ours = r[0];
		recovered = (unsigned long long)r[1];
		ms = (unsigned long long)r[2];
		CHECK(test_daemon_stop(&d) == 0);
		fio = (fio + fio_bw(path, depths[i], span, SECONDS / 2)) / 2;
		printf("%-6u %14.0f %14.0f %7.0f%% ", depths[i], ours / 1e6,
		       fio / 1e6, fio > 0 ? 100 * ours / fio : 0);
		if (i == 0)
			printf("%14s\n", "(filled)");
		else
			printf("%6llu blocks in %llu ms\n", recovered, ms);
		fflush(stdout);
	}
	unlink(path);
	return 0;
}

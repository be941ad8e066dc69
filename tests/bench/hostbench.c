/*
 * kvtier-hostbench: what committing the host tier at start costs and buys,
 * side by side in one run.
 *   1. Start time and RSS of kvtierd with a 1, 4 and 16 GiB host tier
 *      (--sizes to change), 4K pages.
 *   2. Writing pages into never-used memory, GB/s: memcpy into touched
 *      memory (the ceiling); a lazy memfd (what the named shm segments of
 *      0.1 were: first touch faults in the writer); a committed memfd
 *      (fallocate, mapped with MADV_POPULATE_WRITE, as the host tier is now); and the real
 *      offload path (kvt_reserve, memcpy into the slots, kvt_commit) into a
 *      fresh kvtierd, with 4K pages and, when 2M pages can be reserved
 *      (root; given back after), with host.huge_pages=2M.
 * Pages are 2 MiB (Llama-3-8B-shaped: 32 layers x 2 x 16 tokens x 8 heads
 * x 128 x bf16).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE (2u << 20)
#define BATCH 32

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long status_kb(pid_t pid, const char *key)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, key, strlen(key)) == 0)
			sscanf(line + strlen(key), "%ld", &v);
	if (f)
		fclose(f);
	return v;
}

/* Best of 3 copies of `bytes` from src into dst, GB/s. */
static double copy_rate(uint8_t *dst, const uint8_t *src, size_t bytes)
{
	double best = 0;

	for (int r = 0; r < 3; r++) {
		double t = now();

		for (size_t off = 0; off < bytes; off += PAGE)
			memcpy(dst + off, src, PAGE);
		t = now() - t;
		if (bytes / t / 1e9 > best)
			best = bytes / t / 1e9;
	}
	return best;
}

/* One pass of copies into fresh memory of a new memfd: committed or not. */
static double memfd_rate(const uint8_t *src, size_t bytes, bool commit)
{
	int fd = memfd_create("hostbench", MFD_CLOEXEC);
	uint8_t *p;
	double t;

	CHECK(fd >= 0 && ftruncate(fd, (off_t)bytes) == 0);
	if (commit)
		CHECK(fallocate(fd, 0, 0, (off_t)bytes) == 0);
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	if (commit) /* as a worker maps a host segment */
		CHECK(madvise(p, bytes, MADV_POPULATE_WRITE) == 0);
	t = now();
	for (size_t off = 0; off < bytes; off += PAGE)
		memcpy(p + off, src, PAGE);
	t = now() - t;
	munmap(p, bytes);
	close(fd);
	return bytes / t / 1e9;
}

/* Offload of `pages` new blocks into a fresh kvtierd: reserve, copy into
 * the slots, commit. GB/s over the whole loop, and of the copies alone. */
static void offload(const char *const *sets, const uint8_t *src, unsigned pages,
		    const char *label)
{
	struct test_daemon d;
	struct kvt_namespace ns;
	struct kvt_key keys[BATCH];
	struct kvt_slot slots[BATCH];
	double t, copy = 0;
	kvt_client *c;

	test_daemon_start(&d, sets);
	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "hostbench"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "llama-3-8b:bf16:tp0of1:bt16", PAGE, 16, 0, &ns), 0);
	t = now();
	for (unsigned i = 0; i < pages; i += BATCH) {
		double tc;

		for (unsigned k = 0; k < BATCH; k++)
			test_fill(keys[k].bytes, sizeof(keys[k].bytes), i + k);
		CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, BATCH, NULL, slots), 0);
		tc = now();
		for (unsigned k = 0; k < BATCH; k++) {
			CHECK(slots[k].state == KVT_SLOT_RESERVED);
			memcpy(slots[k].page, src, PAGE);
		}
		copy += now() - tc;
		CHECK_RC(c, kvt_commit(c, &ns, keys, BATCH), 0);
	}
	t = now() - t;
	printf("  %-44s %6.2f GB/s (copies alone %6.2f GB/s)\n", label,
	       (double)pages * PAGE / t / 1e9, (double)pages * PAGE / copy / 1e9);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
}

static long read_hugepages(void)
{
	long v = -1;
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r");

	if (f && fscanf(f, "%ld", &v) != 1)
		v = -1;
	if (f)
		fclose(f);
	return v;
}

static bool write_hugepages(long n)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "w");
	bool ok = f && fprintf(f, "%ld\n", n) > 0;

	return f && fclose(f) == 0 && ok;
}

static long hugepages_before = -1;

static void give_back(void)
{
	if (hugepages_before >= 0)
		write_hugepages(hugepages_before);
}

int main(int argc, char **argv)
{
	const char *sizes = argc > 1 ? argv[1] : "1,4,16";
	size_t bytes = 1ull << 30;
	uint8_t *src, *dst;
	char set[64];

	printf("kvtier-hostbench: host tier memory, committed at start\n\n");
	printf("Start of kvtierd (4K pages, segments of 64M), time to its start-up line and RSS:\n");
	for (const char *p = sizes; *p;) {
		unsigned gib = (unsigned)strtoul(p, (char **)&p, 10);
		const char *sets[] = { set, "host.huge_pages=off", NULL };
		struct test_daemon d;
		double t;

		if (*p == ',')
			p++;
		snprintf(set, sizeof(set), "host.size=%uG", gib);
		t = now();
		test_daemon_start(&d, sets);
		t = now() - t;
		printf("  host.size=%2uG  start %6.2f s  VmRSS %7.1f MiB (RssShmem %7.1f MiB, RssAnon %5.1f MiB)\n",
		       gib, t, status_kb(d.pid, "VmRSS:") / 1024.0,
		       status_kb(d.pid, "RssShmem:") / 1024.0,
		       status_kb(d.pid, "RssAnon:") / 1024.0);
		CHECK(test_daemon_stop(&d) == 0);
	}

	src = malloc(PAGE);
	dst = malloc(bytes);
	CHECK(src && dst);
	test_fill(src, PAGE, 7);
	memset(dst, 1, bytes);
	printf("\nWriting 1 GiB of 2 MiB pages into memory never written before:\n");
	printf("  %-44s %6.2f GB/s\n", "memcpy into touched memory (ceiling)",
	       copy_rate(dst, src, bytes));
	free(dst);
	printf("  %-44s %6.2f GB/s\n", "lazy memfd, first touch (the 0.1 shm segments)",
	       memfd_rate(src, bytes, false));
	printf("  %-44s %6.2f GB/s\n", "memfd committed at creation (the host tier)",
	       memfd_rate(src, bytes, true));

	printf("\nOffload of 512 MiB (256 new blocks) into a fresh kvtierd:\n");
	{
		const char *sets[] = { "host.size=1G", "host.huge_pages=off", NULL };

		offload(sets, src, 256, "4K pages, committed at start");
	}
	if (geteuid() == 0 && (hugepages_before = read_hugepages()) >= 0) {
		const char *sets[] = { "host.size=1G", "host.huge_pages=2M", NULL };

		atexit(give_back);
		if (write_hugepages(hugepages_before + 512) &&
		    read_hugepages() >= hugepages_before + 512)
			offload(sets, src, 256, "2M huge pages, committed at start");
		else
			printf("  (2M pages: could not reserve 512 of them)\n");
		give_back();
	} else {
		printf("  (2M pages: needs root to reserve them)\n");
	}
	free(src);
	return 0;
}

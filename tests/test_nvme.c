/*
 * The nvme tier against the real daemon, on real files (O_DIRECT, io_uring):
 *   1. demote/promote round trip: 96 blocks through a 32-block host tier,
 *      every byte compared after being read back;
 *   2. a clean stop keeps the tier: a restart recovers every block;
 *   3. flipped bytes in the data file: those blocks miss, the bad-checksum
 *      counter counts them, no corrupt page is served;
 *   4. kill -9 during heavy demotion, then restart: every block served
 *      matches what was written;
 *   5. disk full (a 1 MiB tmpfs; root only) and a missing path: the tier
 *      stops taking writes, the host tier keeps serving, nothing crashes;
 *   6. DropNamespace with blocks on nvme, its one table entry
 *      (limits.max_namespaces=1) reused at once with half the page size:
 *      the new namespace's blocks round-trip through nvme, and after a
 *      restart they come back and the dropped namespace does not.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "client_util.h"
#include "kvtier/kvtier.h"

#define PAGE (256 * 1024)
#define HOST_BLOCKS 32
#define N 96u

/* The on-disk layout (tiers/nvme.c), which the corruption step needs. */
#define HDR 4096
#define REGION (2 * 1024 * 1024)
#define RECORD (HDR + PAGE)
#define RECORD_KEY_OFFSET 44

static char nvme_dir[64], nvme_path[128], nvme_set[160];
static const char *sets[] = {
	"host.size=8M", "host.segment_size=1M", nvme_set, "nvme.size=64M",
	"nvme.region_size=2M", "nvme.queue_depth=8", NULL,
};

static struct kvt_key key_of(unsigned i)
{
	return test_key("nvmetest", i);
}

static kvt_client *open_client(const struct test_daemon *d,
			       struct kvt_namespace *ns)
{
	return test_client(d->addr, "test_nvme", "nvme-test", PAGE, ns);
}

/* Waits until every committed block has been written or given up on. */
static void settle(kvt_client *c)
{
	for (int i = 0; i < 500; i++) {
		if (test_stat(c, "nvme_queued") == 0 && test_stat(c, "nvme_inflight") == 0)
			return;
		usleep(10000);
	}
	CHECK(!"the nvme queue did not drain");
}

/* Puts blocks [from, to), pacing so that each is demoted before the host
 * tier needs its slot. */
static void put_paced(kvt_client *c, const struct kvt_namespace *ns,
		      unsigned from, unsigned to)
{
	void *page = malloc(PAGE);

	for (unsigned i = from; i < to; i++) {
		struct kvt_key k = key_of(i);
		const void *pages[1] = { page };
		size_t stored;

		test_fill(page, PAGE, i);
		CHECK_RC(c, kvt_put(c, ns, NULL, &k, pages, 1, NULL, &stored), 0);
		CHECK(stored == 1);
		settle(c);
	}
	free(page);
}

/* Acquires each block alone; counts hits, checks every byte of each.
 * Returns the hits; missing[i] says which missed. */
static unsigned check_blocks(kvt_client *c, const struct kvt_namespace *ns,
			     unsigned n, bool *missing)
{
	void *want = malloc(PAGE);
	unsigned hits = 0;

	for (unsigned i = 0; i < n; i++) {
		struct kvt_key k = key_of(i);
		struct kvt_lease l;

		CHECK_RC(c, kvt_acquire(c, ns, &k, 1, 0, &l), 0);
		if (missing)
			missing[i] = l.count == 0;
		if (l.count == 1) {
			test_fill(want, PAGE, i);
			if (memcmp(l.pages[0], want, PAGE) != 0) {
				fprintf(stderr, "block %u served with wrong bytes\n", i);
				exit(1);
			}
			hits++;
		}
		CHECK_RC(c, kvt_release(c, &l), 0);
	}
	free(want);
	return hits;
}

static void round_trip_and_restart(void)
{
	struct test_daemon d;
	struct kvt_namespace ns;
	struct kvt_key keys[N];
	size_t ready;
	kvt_client *c;

	test_daemon_start(&d, sets);
	c = open_client(&d, &ns);
	CHECK(test_stat(c, "tiers.nvme.up") == 1);
	put_paced(c, &ns, 0, N);
	for (unsigned i = 0; i < N; i++)
		keys[i] = key_of(i);
	CHECK_RC(c, kvt_lookup(c, &ns, keys, N, &ready, NULL), 0);
	CHECK(ready == N); /* nothing lost: each block is in host or on nvme */
	CHECK(test_stat(c, "evictions_to_nvme_total") >= N - HOST_BLOCKS);
	CHECK(test_stat(c, "lookup_nvme_hit_blocks_total") >= N - HOST_BLOCKS);
	CHECK(test_stat(c, "nvme_blocks") == N);
	CHECK(test_stat(c, "demotions_skipped_total") == 0);

	/* Promotion: every block read back and compared. */
	CHECK(check_blocks(c, &ns, N, NULL) == N);
	CHECK(test_stat(c, "promotions_total") >= N - HOST_BLOCKS);
	CHECK(test_stat(c, "nvme_bad_checksum_total") == 0);
	kvt_close(c);

	/* A clean stop, then a restart on the same files. */
	CHECK(test_daemon_signal(&d, SIGTERM) == 0);
	test_daemon_restart(&d, sets);
	c = open_client(&d, &ns);
	CHECK(test_stat(c, "nvme_recovered_blocks") == N);
	CHECK_RC(c, kvt_lookup(c, &ns, keys, N, &ready, NULL), 0);
	CHECK(ready == N);
	CHECK(check_blocks(c, &ns, N, NULL) == N);
	kvt_close(c);
	CHECK(test_daemon_signal(&d, SIGTERM) == 0);

	/*
	 * Flip a byte in the page of every record of the first region, then
	 * restart: those blocks miss and are counted; the rest still hit.
	 */
	int fd = open(nvme_path, O_RDWR);
	unsigned flipped = 0;
	bool corrupt[N] = { false }, missing[N];

	CHECK(fd >= 0);
	for (unsigned s = 0; s < (REGION - HDR) / RECORD; s++) {
		off_t rec = HDR + HDR + (off_t)s * RECORD;
		uint8_t key[16], byte;
		unsigned i;

		CHECK(pread(fd, key, 16, rec + RECORD_KEY_OFFSET) == 16);
		if (memcmp(key, "nvmetest", 8) != 0)
			continue;
		memcpy(&i, key + 8, sizeof(i));
		CHECK(i < N);
		CHECK(pread(fd, &byte, 1, rec + HDR + 1000) == 1);
		byte ^= 0x5a;
		CHECK(pwrite(fd, &byte, 1, rec + HDR + 1000) == 1);
		corrupt[i] = true;
		flipped++;
	}
	close(fd);
	CHECK(flipped > 0);
	test_daemon_restart(&d, sets);
	c = open_client(&d, &ns);
	CHECK(check_blocks(c, &ns, N, missing) == N - flipped);
	for (unsigned i = 0; i < N; i++)
		CHECK(missing[i] == corrupt[i]);
	CHECK(test_stat(c, "nvme_bad_checksum_total") == flipped);
	CHECK(test_stat(c, "promotion_failures_total") == flipped);
	/* A corrupt block left the cache: a second look misses at once. */
	CHECK_RC(c, kvt_lookup(c, &ns, keys, N, &ready, NULL), 0);
	CHECK(ready < N);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	printf("round trip, clean restart and %u corrupt records: ok\n", flipped);
}

/* Puts as fast as it can in a child, SIGKILLs the daemon midway, restarts. */
static void kill_during_demotion(void)
{
	struct test_daemon d;
	struct kvt_namespace ns;
	void *page = malloc(PAGE);
	unsigned hits, recovered;
	kvt_client *c;

	unlink(nvme_path);
	test_daemon_start(&d, sets);
	c = open_client(&d, &ns);
	for (unsigned i = 0; i < 3 * N; i++) {
		struct kvt_key k = key_of(i);
		const void *pages[1] = { page };
		size_t stored;

		test_fill(page, PAGE, i);
		CHECK_RC(c, kvt_put(c, &ns, NULL, &k, pages, 1, NULL, &stored), 0);
		if (i == 2 * N) {
			/* Some records whole, more in flight: on a loaded
			 * machine the first ones may still be queued. */
			for (int w = 0; w < 500 && test_stat(c, "demotions_total") == 0; w++)
				usleep(10000);
			CHECK(test_daemon_signal(&d, SIGKILL) == 128 + SIGKILL);
		}
		if (i >= 2 * N)
			break;
	}
	kvt_close(c);
	test_daemon_restart(&d, sets);
	c = open_client(&d, &ns);
	recovered = (unsigned)test_stat(c, "nvme_recovered_blocks");
	hits = check_blocks(c, &ns, 2 * N + 1, NULL);
	/* Every block served matched its bytes (check_blocks exits if not). */
	if (recovered == 0 || hits != recovered)
		fprintf(stderr, "recovered %u blocks, %u served\n", recovered, hits);
	CHECK(recovered > 0 && hits == recovered);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	free(page);
	printf("kill -9 during demotion: %u blocks recovered, all intact\n",
	       recovered);
}

/* With its disk full or missing, the tier takes no writes; the host tier
 * serves on. */
static void faults(void)
{
	char tiny[96], tiny_set[160];
	const char *full_sets[] = {
		"host.size=8M", "host.segment_size=1M", tiny_set, "nvme.size=64M",
		"nvme.region_size=2M", "nvme.retry_interval=1h", NULL,
	};
	const char *missing_sets[] = {
		"host.size=8M", "host.segment_size=1M",
		"nvme.paths=/nonexistent-kvtier-dir/nvme.kvt", "nvme.size=64M",
		"nvme.region_size=2M", NULL,
	};
	struct test_daemon d;
	struct kvt_namespace ns;
	kvt_client *c;
	unsigned long long errors;

	test_daemon_start(&d, missing_sets);
	c = open_client(&d, &ns);
	CHECK(test_stat(c, "tiers.nvme.up") == 0);
	CHECK(test_stat(c, "nvme_paths_failed") == 1);
	put_paced(c, &ns, 0, 8);
	CHECK(check_blocks(c, &ns, 8, NULL) == 8);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	printf("missing path: host tier serves\n");

	snprintf(tiny, sizeof(tiny), "%s/tiny", nvme_dir);
	CHECK(mkdir(tiny, 0700) == 0);
	if (geteuid() != 0 || mount("tmpfs", tiny, "tmpfs", 0, "size=1m") < 0) {
		printf("disk full: skipped (cannot mount a 1 MiB tmpfs: %s)\n",
		       geteuid() ? "not root" : strerror(errno));
		rmdir(tiny);
		return;
	}
	snprintf(tiny_set, sizeof(tiny_set), "nvme.paths=%s/nvme.kvt", tiny);
	test_daemon_start(&d, full_sets);
	c = open_client(&d, &ns);
	CHECK(test_stat(c, "tiers.nvme.up") == 1);
	put_paced(c, &ns, 0, 3 * HOST_BLOCKS);
	errors = test_stat(c, "nvme_write_errors_total");
	CHECK(errors >= 1);
	CHECK(test_stat(c, "nvme_paths_failed") == 1);
	/* One failure stops the path: no retry storm while it is failed. */
	CHECK(errors <= 8);
	CHECK(test_stat(c, "demotions_skipped_total") > 0);
	/* The host tier holds (and serves intact) the newest blocks. */
	{
		struct kvt_key k = key_of(3 * HOST_BLOCKS - 1);
		struct kvt_lease l;
		void *want = malloc(PAGE);

		CHECK_RC(c, kvt_acquire(c, &ns, &k, 1, 0, &l), 0);
		CHECK(l.count == 1);
		test_fill(want, PAGE, 3 * HOST_BLOCKS - 1);
		CHECK(memcmp(l.pages[0], want, PAGE) == 0);
		CHECK_RC(c, kvt_release(c, &l), 0);
		free(want);
	}
	CHECK(check_blocks(c, &ns, 3 * HOST_BLOCKS, NULL) >= HOST_BLOCKS / 2);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	umount(tiny);
	rmdir(tiny);
	printf("disk full: %llu write errors, host tier serves\n", errors);
}

/* Puts blocks [0, n) of ns (page bytes each, key tag), paced as above. */
static void put_tagged(kvt_client *c, const struct kvt_namespace *ns,
		       const char tag[8], unsigned n)
{
	void *page = malloc(ns->page_bytes);

	for (unsigned i = 0; i < n; i++) {
		struct kvt_key k = test_key(tag, i);
		const void *pages[1] = { page };
		size_t stored;

		test_fill(page, ns->page_bytes, 1000 + i);
		CHECK_RC(c, kvt_put(c, ns, NULL, &k, pages, 1, NULL, &stored), 0);
		settle(c);
	}
	free(page);
}

/* Every block [0, n) of ns hits with the bytes put_tagged wrote. */
static void check_tagged(kvt_client *c, const struct kvt_namespace *ns,
			 const char tag[8], unsigned n)
{
	void *want = malloc(ns->page_bytes);

	for (unsigned i = 0; i < n; i++) {
		struct kvt_key k = test_key(tag, i);
		struct kvt_lease l;

		CHECK_RC(c, kvt_acquire(c, ns, &k, 1, 0, &l), 0);
		CHECK(l.count == 1);
		test_fill(want, ns->page_bytes, 1000 + i);
		CHECK(memcmp(l.pages[0], want, ns->page_bytes) == 0);
		CHECK_RC(c, kvt_release(c, &l), 0);
	}
	free(want);
}

static void dropped_namespace(void)
{
	char path[160], set[200];
	const char *one[] = {
		"host.size=8M", "host.segment_size=1M", set, "nvme.size=64M",
		"nvme.region_size=2M", "limits.max_namespaces=1", NULL,
	};
	struct test_daemon d;
	struct kvt_namespace old, young;
	struct kvt_key k = test_key("old-tag", 0);
	size_t dropped, pending, ready;
	kvt_client *c;

	snprintf(path, sizeof(path), "%s/dropped.kvt", nvme_dir);
	snprintf(set, sizeof(set), "nvme.paths=%s", path);
	test_daemon_start(&d, one);
	c = test_client(d.addr, "test_nvme", "old", PAGE, &old);
	put_tagged(c, &old, "old-tag", 40); /* 8 of them on nvme only */
	CHECK(test_stat(c, "nvme_blocks") == 40);
	CHECK_RC(c, kvt_drop_namespace(c, old.id, &dropped, &pending), 0);
	CHECK(dropped == 40 && pending == 0);
	CHECK(test_stat(c, "nvme_blocks") == 0);
	CHECK_RC(c, kvt_open_namespace(c, "young", PAGE / 2, 16, 0, &young), 0);
	CHECK(young.created && young.id != old.id);
	put_tagged(c, &young, "yng-tag", 80); /* 16 on nvme only */
	check_tagged(c, &young, "yng-tag", 80);
	CHECK(test_stat(c, "promotions_total") >= 16);
	kvt_close(c);

	CHECK(test_daemon_signal(&d, SIGTERM) == 0);
	test_daemon_restart(&d, one);
	CHECK(kvt_connect(d.addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "test_nvme"), 0);
	CHECK(test_stat(c, "nvme_recovered_blocks") == 80);
	CHECK_RC(c, kvt_open_namespace(c, "young", PAGE / 2, 16, 0, &young), 0);
	CHECK(!young.created);
	check_tagged(c, &young, "yng-tag", 80);
	/* "old" did not come back: the one entry is young's. */
	CHECK_RC(c, kvt_open_namespace(c, "old", PAGE, 16, 0, &old), -ENOSPC);
	CHECK_RC(c, kvt_drop_namespace(c, young.id, &dropped, &pending), 0);
	CHECK_RC(c, kvt_open_namespace(c, "old", PAGE, 16, 0, &old), 0);
	CHECK_RC(c, kvt_lookup(c, &old, &k, 1, &ready, NULL), 0);
	CHECK(ready == 0);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	unlink(path);
	printf("dropped namespace: its entry reused with another page size, nothing of it after a restart: ok\n");
}

int main(void)
{
	snprintf(nvme_dir, sizeof(nvme_dir), "/tmp/kvtier-nvme-XXXXXX");
	CHECK(mkdtemp(nvme_dir) != NULL);
	snprintf(nvme_path, sizeof(nvme_path), "%s/nvme.kvt", nvme_dir);
	snprintf(nvme_set, sizeof(nvme_set), "nvme.paths=%s", nvme_path);
	round_trip_and_restart();
	kill_during_demotion();
	faults();
	dropped_namespace();
	unlink(nvme_path);
	rmdir(nvme_dir);
	return 0;
}

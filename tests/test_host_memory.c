/*
 * The host tier's memory is committed when the daemon starts, so that a
 * tier that does not fit is a start-up error naming what would fit, never
 * a fault later:
 *   - host.size beyond the machine's memory: refused, with the size that fits;
 *   - host.huge_pages=2M with too few free pages: refused, saying how many
 *     are needed and how to reserve them; 1G where the kernel has none;
 *     a segment that is no multiple of the huge page;
 *   - with 2M pages reserved (root: nr_hugepages, given back after), the
 *     tier runs on them (start-up line, the memfds' hugetlb backing) and a
 *     worker's pages round-trip; auto without enough falls back to 4K;
 *   - host.lock=true locks the tier (VmLck);
 *   - the memory is there at start (the daemon's segments hold it all).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "harness.h"

#define PAGE 4096

static void refused(const char *const *sets, const char *want1, const char *want2)
{
	char out[2048];
	int rc = test_daemon_refuses(sets, out, sizeof(out));

	if (rc != 1 || !strstr(out, want1) || (want2 && !strstr(out, want2))) {
		fprintf(stderr, "kvtierd %s...: exit %d, said '%s'; want exit 1 and '%s' ... '%s'\n",
			sets[0], rc, out, want1, want2 ? want2 : "");
		exit(1);
	}
	printf("refused as it should: %s", strstr(out, "host") ? strstr(out, "host") : out);
}

/* A worker's pages round-trip through the tier it maps. */
static void round_trip(const struct test_daemon *d, int blocks)
{
	static uint8_t page[PAGE], got[PAGE];
	struct kvt_namespace ns;
	struct kvt_key key;
	struct kvt_slot slot;
	void *pages[1] = { got };
	size_t n;
	kvt_client *c;

	CHECK(kvt_connect(d->addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "host-memory-test"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "m", PAGE, 16, 0, &ns), 0);
	for (int i = 0; i < blocks; i++) {
		test_fill(key.bytes, sizeof(key.bytes), 100u + (unsigned)i);
		test_fill(page, PAGE, (unsigned)i);
		CHECK_RC(c, kvt_reserve(c, &ns, NULL, &key, 1, NULL, &slot), 0);
		CHECK(slot.state == KVT_SLOT_RESERVED);
		memcpy(slot.page, page, PAGE);
		CHECK_RC(c, kvt_commit(c, &ns, &key, 1), 0);
		CHECK_RC(c, kvt_get(c, &ns, &key, 1, pages, &n), 0);
		CHECK(n == 1 && memcmp(got, page, PAGE) == 0);
	}
	kvt_close(c);
}

int main(void)
{
	struct test_daemon d;
	long long blocks;
	char path[64];
	long free_pages;

	{
		const char *sets[] = { "host.size=4000G", "host.segment_size=1G", NULL };

		refused(sets, "host.size=4000G does not fit in memory", "would fit");
	}
	{
		const char *sets[] = { "host.huge_pages=1G", "host.size=2G",
				       "host.segment_size=1G", NULL };

		refused(sets, "host.huge_pages", "1G");
	}
	{
		const char *sets[] = { "host.huge_pages=2M", "host.size=6M",
				       "host.segment_size=3M", NULL };

		refused(sets, "host.segment_size must be a multiple of the 2M huge page", NULL);
	}

	/* 4K pages, committed at start: the segments hold all of it already. */
	{
		const char *sets[] = { "host.size=8M", "host.segment_size=1M",
				       "host.huge_pages=off", NULL };

		test_daemon_start(&d, sets);
		CHECK(strstr(d.said, "host tier 8 MiB in 8 segments, 4K pages"));
		CHECK(test_memfds(d.pid, "kvtier-host-", &blocks) == 8);
		CHECK(blocks * 512 == 8 << 20);
		round_trip(&d, 4);
		CHECK(test_daemon_stop(&d) == 0);
	}

	if (geteuid() != 0) {
		fprintf(stderr, "huge pages and locking need root: skipped\n");
		return 0;
	}
	/* Locked in RAM. */
	{
		const char *sets[] = { "host.size=4M", "host.segment_size=1M",
				       "host.lock=true", NULL };

		test_daemon_start(&d, sets);
		CHECK(strstr(d.said, "locked"));
		snprintf(path, sizeof(path), "/proc/%d/status", (int)d.pid);
		CHECK(test_read_long(path, "VmLck:") >= 4096);
		CHECK(test_daemon_stop(&d) == 0);
	}

	free_pages = test_hugepages_free();
	if (free_pages < 0) {
		fprintf(stderr, "no hugetlb here: huge page cases skipped\n");
		return 0;
	}
	{
		char want[96];
		const char *sets[] = { "host.huge_pages=2M", "host.size=4000M",
				       "host.segment_size=2M", NULL };

		/* More than are free: says how many, and how to reserve them. */
		snprintf(want, sizeof(want), "needs 2000 more free 2M huge pages, and %ld are free",
			 free_pages);
		refused(sets, want, "nr_hugepages");
	}
	if (test_hugepages_reserve(8) < 0) {
		fprintf(stderr, "could not reserve 8 huge pages: huge page cases skipped\n");
		return 0;
	}
	{
		const char *sets[] = { "host.huge_pages=2M", "host.size=8M",
				       "host.segment_size=2M", NULL };

		test_daemon_start(&d, sets);
		CHECK(strstr(d.said, "2M pages (hugetlb)"));
		/* Taken from the pool at start, not on first touch. */
		CHECK(test_hugepages_free() == free_pages + 4);
		round_trip(&d, 8);
		CHECK(test_daemon_stop(&d) == 0);
	}
	{
		/* auto: 2M when the whole tier fits in free huge pages... */
		const char *fits[] = { "host.size=8M", "host.segment_size=2M", NULL };
		const char *too_big[] = { "host.size=64M", "host.segment_size=2M", NULL };

		test_daemon_start(&d, fits);
		CHECK(strstr(d.said, "2M pages (hugetlb)"));
		CHECK(test_daemon_stop(&d) == 0);
		/* ...else 4K pages. */
		test_daemon_start(&d, too_big);
		CHECK(strstr(d.said, "4K pages"));
		CHECK(test_daemon_stop(&d) == 0);
	}
	test_hugepages_give_back();
	printf("huge pages: 2M tier ran on the reserved pool; given back\n");
	return 0;
}

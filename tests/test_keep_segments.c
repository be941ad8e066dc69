/*
 * kvt_keep_segments: with it, the segment mappings libkvtier is done with
 * (every one at kvt_close) are handed to the caller instead of unmapped,
 * so a pointer into a page stays valid until the caller unmaps; without
 * it, kvt_close unmaps them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client_util.h"

#define PAGE 8192

static struct kept {
	void *base;
	size_t len;
} kept[64];
static int nkept;

static void keep(void *arg, void *base, size_t len)
{
	(void)arg;
	CHECK(nkept < 64);
	kept[nkept++] = (struct kept){ base, len };
}

/* Whether the page at p is a host segment's mapping in this process (its
 * memfd, "kvtier-host-N"): once unmapped, another thread's mapping (gRPC's)
 * may take the address, which is not the segment. */
static bool mapped(const void *p)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	bool found = false;

	CHECK(f);
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		found = sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo &&
			(uintptr_t)p < hi && strstr(line, "kvtier-host-");
	}
	fclose(f);
	return found;
}

/* Puts one page, acquires it, closes the client; returns where it was. */
static const uint8_t *close_with_page(const struct test_daemon *d, bool keep_them,
				      uint8_t *want)
{
	struct kvt_namespace ns;
	kvt_client *c = test_client(d->addr, "keep", "keep:test", PAGE, &ns);
	struct kvt_key k = test_key("keepseg", keep_them);
	const void *pages[1] = { want };
	struct kvt_lease lease = { 0 };
	const uint8_t *p;
	size_t stored;

	if (keep_them)
		kvt_keep_segments(c, keep, NULL);
	test_fill(want, PAGE, keep_them + 1);
	CHECK_RC(c, kvt_put(c, &ns, NULL, &k, pages, 1, NULL, &stored), 0);
	CHECK_RC(c, kvt_acquire(c, &ns, &k, 1, 0, &lease), 0);
	CHECK(lease.count == 1 && !lease.hbm[0]);
	p = lease.pages[0];
	CHECK(memcmp(p, want, PAGE) == 0);
	CHECK_RC(c, kvt_release(c, &lease), 0);
	kvt_close(c);
	return p;
}

int main(void)
{
	struct test_daemon d;
	uint8_t want[PAGE];
	const uint8_t *p;
	bool inside = false;

	test_daemon_start(&d, NULL);

	/* Kept: handed over at close, still mapped, still the page. */
	p = close_with_page(&d, true, want);
	CHECK(nkept >= 1);
	for (int i = 0; i < nkept; i++)
		inside |= p >= (uint8_t *)kept[i].base &&
			  p + PAGE <= (uint8_t *)kept[i].base + kept[i].len;
	CHECK(inside);
	CHECK(mapped(p) && memcmp(p, want, PAGE) == 0);
	for (int i = 0; i < nkept; i++)
		CHECK(munmap(kept[i].base, kept[i].len) == 0);
	CHECK(!mapped(p));

	/* Not kept: kvt_close unmaps them itself. */
	p = close_with_page(&d, false, want);
	CHECK(!mapped(p));

	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

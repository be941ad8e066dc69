/*
 * The SIGBUS guard. A worker may punch holes in its own segments (sealing
 * cannot forbid it without forbidding writes). On tmpfs the daemon's next
 * touch refaults a zero page; on hugetlb it needs a free huge page, which
 * the worker may have taken meanwhile, and the kernel answers SIGBUS. So
 * while a host tier lives, a SIGBUS handler looks up the faulting address
 * in a lock-free registry of the segments' ranges; inside one, it maps
 * anonymous memory over the (huge) page, so that the faulting access
 * retries and reads zeros, marks the segment damaged and returns. The
 * engine then empties and remakes the segment (kvt_host_damaged). Any
 * other SIGBUS goes to the handler that was there before, or kills.
 */
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#define MFD_HUGE_1GB (30u << 26)
#endif

/* The SIGBUS handler reads these; lock-free atomics are signal-safe. */
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_BOOL_LOCK_FREE == 2 &&
	       ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
	       "the SIGBUS guard needs lock-free atomics");

struct segment {
	uint8_t *map;  /* NULL: never made; else reserved or mapped */
	int fd;        /* -1: not made (released) */
	uint32_t generation;
	bool shared;   /* its fd went to a worker */
	/* For the SIGBUS guard: map, once set; whether the guard replaced a
	 * page of it since it was made. */
	_Atomic(uintptr_t) base;
	atomic_bool damaged;
};

struct kvt_host {
	struct kvt_host_config cfg;
	uint64_t page;        /* 4K, 2M or 1G */
	unsigned memfd_flags;
	uint32_t segments;
	atomic_uint guarded;  /* seg[0..guarded) may have a base */
	atomic_ullong faults; /* segments damaged (whole -> damaged) */
	char describe[160];
	struct segment seg[KVT_HOST_SEGMENTS_MAX];
};

static int say(char *why, size_t len, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return rc;
}

/* "512M", "4000G", "23.1G": sizes as the config file writes them, exact
 * in the largest unit that divides them, else (or when !exact) to a tenth
 * of the largest unit below them. */
static const char *size_fmt(uint64_t b, bool exact, char buf[32])
{
	static const char units[] = "KMGT";

	for (int u = 3; exact && u >= 0; u--) {
		uint64_t unit = 1ull << (10 * (u + 1));

		if (b >= unit && b % unit == 0) {
			snprintf(buf, 32, "%" PRIu64 "%c", b / unit, units[u]);
			return buf;
		}
	}
	for (int u = 3; u >= 0; u--) {
		uint64_t unit = 1ull << (10 * (u + 1));

		if (b >= unit) {
			snprintf(buf, 32, "%.1f%c", (double)b / (double)unit, units[u]);
			return buf;
		}
	}
	snprintf(buf, 32, "%" PRIu64, b);
	return buf;
}

static const char *size_str(uint64_t b, char buf[32])
{
	return size_fmt(b, true, buf);
}

static bool read_u64(const char *path, uint64_t *out)
{
	FILE *f = fopen(path, "re");
	bool ok;

	if (!f)
		return false;
	ok = fscanf(f, "%" SCNu64, out) == 1;
	fclose(f);
	return ok;
}

/* Memory this process may still commit: MemAvailable, or less under a
 * cgroup memory limit. *where says which bound it is. */
static uint64_t memory_available(const char **where)
{
	uint64_t avail = 0, max, cur;
	char line[512], path[600];
	FILE *f = fopen("/proc/meminfo", "re");

	*where = "MemAvailable";
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &avail) == 1)
			break;
	if (f)
		fclose(f);
	avail <<= 10;
	f = fopen("/proc/self/cgroup", "re");
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
		if (read_u64(path, &max)) { /* "max" reads as no number */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current",
				 line + 3);
			if (read_u64(path, &cur) && max - (cur < max ? cur : max) < avail) {
				avail = max - (cur < max ? cur : max);
				*where = "the cgroup's memory.max";
			}
		}
		break;
	}
	if (f)
		fclose(f);
	return avail;
}

static const char *huge_dir(uint64_t page)
{
	return page == 1ull << 30 ? "/sys/kernel/mm/hugepages/hugepages-1048576kB"
				  : "/sys/kernel/mm/hugepages/hugepages-2048kB";
}

/* Huge pages of this size free for new mappings, or -1 when the kernel
 * has none of this size. */
static int64_t huge_free(uint64_t page)
{
	char path[128];
	uint64_t nfree, resv;

	snprintf(path, sizeof(path), "%s/free_hugepages", huge_dir(page));
	if (!read_u64(path, &nfree))
		return -1;
	snprintf(path, sizeof(path), "%s/resv_hugepages", huge_dir(page));
	if (!read_u64(path, &resv))
		resv = 0;
	return nfree > resv ? (int64_t)(nfree - resv) : 0;
}

/*
 * Whether `add` more segments fit beside `have` made ones: in free huge
 * pages, else in available memory (a tenth of which is left to the rest of
 * the node), and under RLIMIT_MEMLOCK when the tier is locked.
 */
static int check_fit(const struct kvt_host *h, uint32_t have, uint32_t add,
		     char *why, size_t len)
{
	uint64_t seg = h->cfg.segment_bytes, need = (uint64_t)add * seg;
	uint64_t total = need + (uint64_t)have * seg, room;
	char a[32], b[32], c[32];
	struct rlimit rl;

	if (h->cfg.sparse)
		return 0;
	if (h->page > 4096) {
		int64_t nfree = huge_free(h->page);

		uint64_t fits;

		room = nfree > 0 ? (uint64_t)nfree * h->page : 0;
		fits = (room / seg + have) * seg;
		if (need > room)
			return say(why, len, -ENOMEM,
				   "host.huge_pages: host.size=%s needs %" PRIu64 " more free %s huge pages, and %" PRId64 " are free; reserve them (as root: echo %" PRIu64 " > %s/nr_hugepages, or vm.nr_hugepages in sysctl.conf)%s%s%s",
				   size_str(total, a), need / h->page,
				   size_str(h->page, b), nfree > 0 ? nfree : 0,
				   (total + h->page - 1) / h->page, huge_dir(h->page),
				   fits ? " or set host.size=" : "",
				   fits ? size_str(fits, c) : "", fits ? ", which fits" : "");
	} else {
		const char *where;
		uint64_t avail = memory_available(&where);

		room = avail - avail / 10;
		if (need > room)
			return say(why, len, -ENOMEM,
				   "host.size=%s does not fit in memory: %s is available (%s) and a tenth of it stays for the rest of the node; host.size=%s would fit",
				   size_str(total, a), size_fmt(avail, false, b), where,
				   size_str((room / seg + have) * seg, c));
	}
	if (h->cfg.lock && geteuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && total > rl.rlim_cur)
		return say(why, len, -EPERM,
			   "host.lock: host.size=%s is more than RLIMIT_MEMLOCK (%s): raise it (LimitMEMLOCK=infinity in the unit, ulimit -l) or set host.lock=false",
			   size_str(total, a), size_str(rl.rlim_cur, b));
	return 0;
}

/* ---- the SIGBUS guard (see the top of this file) ---- */

#define GUARD_HOSTS 64 /* host tiers alive at once in one process */

static _Atomic(struct kvt_host *) guard_hosts[GUARD_HOSTS];
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned guard_users;        /* hosts registered; under guard_lock */
static struct sigaction guard_prev; /* read before the handler goes in */

/*
 * If addr lies in one of h's segments, puts anonymous memory over its page
 * there and marks the segment damaged. Async-signal-safe: atomics and the
 * mmap system call (raw: no sanitizer interceptor, no lock) only.
 */
static bool guard_repair(struct kvt_host *h, uintptr_t addr)
{
	unsigned n = atomic_load(&h->guarded);

	for (unsigned i = 0; i < n; i++) {
		struct segment *s = &h->seg[i];
		uintptr_t base = atomic_load(&s->base), page;
		long p;

		if (!base || addr - base >= h->cfg.segment_bytes)
			continue;
		/* A hugetlb mapping splits only at its page boundaries, and
		 * segments begin at one. */
		page = base + ((addr - base) & ~(uintptr_t)(h->page - 1));
		p = syscall(SYS_mmap, page, (size_t)h->page, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
			    -1, 0);
		if (p == -1 || (uintptr_t)p != page)
			return false;
		if (!atomic_exchange(&s->damaged, true))
			atomic_fetch_add(&h->faults, 1);
		return true;
	}
	return false;
}

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	bool fault = si && si->si_code > 0; /* raised by the kernel, at an address */

	for (unsigned k = 0; fault && k < GUARD_HOSTS; k++) {
		struct kvt_host *h = atomic_load(&guard_hosts[k]);

		if (h && guard_repair(h, (uintptr_t)si->si_addr)) {
			errno = saved; /* the access retries and reads zeros */
			return;
		}
	}
	errno = saved;
	if (guard_prev.sa_flags & SA_SIGINFO) {
		guard_prev.sa_sigaction(sig, si, uc);
	} else if (guard_prev.sa_handler != SIG_DFL &&
		   guard_prev.sa_handler != SIG_IGN) {
		guard_prev.sa_handler(sig);
	} else if (fault || guard_prev.sa_handler == SIG_DFL) {
		/* Die of it as without the guard (a fault is never ignored):
		 * blocked in here, it is delivered on return. */
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		sigemptyset(&dfl.sa_mask);
		sigaction(sig, &dfl, NULL);
		raise(sig);
	}
}

/* Registers h with the guard, installing the handler for the first. */
static int guard_add(struct kvt_host *h, char *why, size_t len)
{
	struct sigaction sa = { .sa_sigaction = guard_handler,
				.sa_flags = SA_SIGINFO | SA_ONSTACK };
	unsigned k;
	int rc = 0;

	sigemptyset(&sa.sa_mask);
	pthread_mutex_lock(&guard_lock);
	for (k = 0; k < GUARD_HOSTS && atomic_load(&guard_hosts[k]); k++)
		;
	if (k == GUARD_HOSTS) {
		rc = say(why, len, -EMFILE, "more than %d host tiers in one process",
			 GUARD_HOSTS);
		goto out;
	}
	if (guard_users == 0 && (sigaction(SIGBUS, NULL, &guard_prev) < 0 ||
				 sigaction(SIGBUS, &sa, NULL) < 0)) {
		rc = say(why, len, -errno, "cannot install the SIGBUS guard: %s",
			 strerror(errno));
		goto out;
	}
	guard_users++;
	atomic_store(&guard_hosts[k], h);
out:
	pthread_mutex_unlock(&guard_lock);
	return rc;
}

/* Unregisters h; the last one out puts the previous handler back (unless
 * someone replaced ours meanwhile). */
static void guard_remove(struct kvt_host *h)
{
	struct sigaction cur;

	pthread_mutex_lock(&guard_lock);
	for (unsigned k = 0; k < GUARD_HOSTS; k++) {
		if (atomic_load(&guard_hosts[k]) != h)
			continue;
		atomic_store(&guard_hosts[k], NULL);
		if (--guard_users == 0 && sigaction(SIGBUS, NULL, &cur) == 0 &&
		    (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == guard_handler)
			sigaction(SIGBUS, &guard_prev, NULL);
		break;
	}
	pthread_mutex_unlock(&guard_lock);
}

/* Puts back what segment s's address showed before a failed remake: its
 * memfd, or nothing. */
static void restore_mapping(struct kvt_host *h, struct segment *s)
{
	if (s->fd >= 0)
		(void)mmap(s->map, h->cfg.segment_bytes, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_FIXED, s->fd, 0);
	else
		(void)mmap(s->map, h->cfg.segment_bytes, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
			   -1, 0);
}

/* A new memfd for segment i, sealed, committed, mapped at its address. */
static int make_segment(struct kvt_host *h, uint32_t i, char *why, size_t len)
{
	struct segment *s = &h->seg[i];
	uint64_t bytes = h->cfg.segment_bytes;
	char name[32], a[32];
	void *p;
	int fd, rc;

	snprintf(name, sizeof(name), "kvtier-host-%u", i);
	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | h->memfd_flags);
	if (fd < 0)
		return say(why, len, -errno, "cannot create host segment %u: memfd_create: %s",
			   i, strerror(errno));
	if (ftruncate(fd, (off_t)bytes) < 0) {
		rc = say(why, len, -errno, "cannot size host segment %u: %s", i,
			 strerror(errno));
		goto out_close;
	}
	/* Commit now: a tier that does not fit fails here, not on a write. */
	if (!h->cfg.sparse && fallocate(fd, 0, 0, (off_t)bytes) < 0) {
		rc = say(why, len, -errno,
			 "cannot commit %s for host segment %u: %s (host.size is more than the %s can hold)",
			 size_str(bytes, a), i, strerror(errno),
			 h->page > 4096 ? "free huge pages" : "memory");
		goto out_close;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		rc = say(why, len, -errno, "cannot seal host segment %u: %s", i,
			 strerror(errno));
		goto out_close;
	}
	p = mmap(s->map, bytes, PROT_READ | PROT_WRITE,
		 MAP_SHARED | (s->map ? MAP_FIXED : 0), fd, 0);
	if (p == MAP_FAILED) {
		rc = say(why, len, -errno, "cannot map host segment %u: %s", i,
			 strerror(errno));
		goto out_close;
	}
	/* Writable page tables now (MAP_POPULATE maps shared pages read-only,
	 * so each first write would still fault). */
	if (!h->cfg.sparse)
		(void)madvise(p, bytes, MADV_POPULATE_WRITE);
	/* mlock2, not mlock: sanitizers make mlock a no-op. */
	if (h->cfg.lock && mlock2(p, bytes, 0) < 0) {
		rc = say(why, len, -errno,
			 "host.lock: cannot lock host segment %u (%s): %s; raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity) or set host.lock=false",
			 i, size_str(bytes, a), strerror(errno));
		if (s->map)
			restore_mapping(h, s);
		else
			munmap(p, bytes);
		goto out_close;
	}
	s->map = p;
	s->fd = fd;
	s->generation++;
	s->shared = false;
	/* The new memfd covers any page the guard replaced. */
	atomic_store(&s->damaged, false);
	if (!atomic_load(&s->base)) {
		unsigned g = atomic_load(&h->guarded);

		atomic_store(&s->base, (uintptr_t)p);
		/* Segments are made by several threads: raise, never lower. */
		while (g <= i && !atomic_compare_exchange_weak(&h->guarded, &g, i + 1))
			;
	}
	return 0;

out_close:
	close(fd);
	return rc;
}

/* Frees fd's memory even while a worker still maps it, and closes it. */
static void drop_memfd(struct kvt_host *h, int fd)
{
	(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			(off_t)h->cfg.segment_bytes);
	close(fd);
}

static int choose_pages(struct kvt_host *h, uint32_t segments, char *why,
			size_t len)
{
	static const struct { enum kvt_huge_pages mode; uint64_t page; unsigned flag; }
		sizes[] = { { KVT_HUGE_2M, 2ull << 20, MFD_HUGE_2MB },
			    { KVT_HUGE_1G, 1ull << 30, MFD_HUGE_1GB } };
	uint64_t seg = h->cfg.segment_bytes;
	int64_t nfree;
	char a[32];

	h->page = 4096;
	if (h->cfg.huge_pages == KVT_HUGE_OFF)
		return 0;
	if (h->cfg.huge_pages == KVT_HUGE_AUTO) {
		/* Huge pages only where they were reserved for the whole tier. */
		nfree = huge_free(2ull << 20);
		if (seg % (2ull << 20) == 0 && nfree >= 0 &&
		    (uint64_t)nfree * (2ull << 20) >= (uint64_t)segments * seg) {
			h->page = 2ull << 20;
			h->memfd_flags = MFD_HUGETLB | MFD_HUGE_2MB;
		}
		return 0;
	}
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		if (sizes[k].mode != h->cfg.huge_pages)
			continue;
		if (huge_free(sizes[k].page) < 0)
			return say(why, len, -EOPNOTSUPP,
				   "host.huge_pages: this kernel offers no %s huge pages (%s is missing)",
				   size_str(sizes[k].page, a), huge_dir(sizes[k].page));
		if (seg % sizes[k].page)
			return say(why, len, -EINVAL,
				   "host.segment_size must be a multiple of the %s huge page",
				   size_str(sizes[k].page, a));
		h->page = sizes[k].page;
		h->memfd_flags = MFD_HUGETLB | sizes[k].flag;
	}
	return 0;
}

int kvt_host_create(const struct kvt_host_config *cfg, uint32_t segments,
		    struct kvt_host **out, char *why, size_t len)
{
	struct kvt_host *h = calloc(1, sizeof(*h));
	char a[32];
	int rc;

	if (!h)
		return say(why, len, -ENOMEM, "out of memory");
	h->cfg = *cfg;
	for (uint32_t i = 0; i < KVT_HOST_SEGMENTS_MAX; i++)
		h->seg[i].fd = -1;
	if ((rc = choose_pages(h, segments, why, len)) < 0 ||
	    (rc = guard_add(h, why, len)) < 0 ||
	    (rc = kvt_host_grow(h, segments, why, len)) < 0) {
		kvt_host_destroy(h);
		return rc;
	}
	snprintf(h->describe, sizeof(h->describe), "%s pages%s%s",
		 size_str(h->page, a), h->page > 4096 ? " (hugetlb)" : "",
		 cfg->lock ? ", locked" : "");
	*out = h;
	return 0;
}

/* Segments are committed by several threads: zeroing memory is what a
 * large tier's start waits for, and one core does it at a few GB/s. */
#define MAKERS_MAX 8

struct makers {
	struct kvt_host *h;
	uint32_t segments;
	_Atomic uint32_t next;
	_Atomic int rc;
	pthread_mutex_t lock; /* why */
	char why[256];
};

static void *maker_main(void *arg)
{
	struct makers *m = arg;
	char why[256];
	uint32_t i;

	while (m->rc == 0 && (i = m->next++) < m->segments) {
		int rc;

		if (m->h->seg[i].fd >= 0 || (rc = make_segment(m->h, i, why, sizeof(why))) == 0)
			continue;
		pthread_mutex_lock(&m->lock);
		if (m->rc == 0) {
			m->rc = rc;
			snprintf(m->why, sizeof(m->why), "%s", why);
		}
		pthread_mutex_unlock(&m->lock);
	}
	return NULL;
}

int kvt_host_grow(struct kvt_host *h, uint32_t segments, char *why, size_t len)
{
	struct makers m = { .h = h, .segments = segments };
	pthread_t threads[MAKERS_MAX];
	uint32_t missing = 0, nthreads = 0, want;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int rc;

	if (segments > KVT_HOST_SEGMENTS_MAX)
		return say(why, len, -E2BIG, "the host tier may have at most %u segments",
			   KVT_HOST_SEGMENTS_MAX);
	for (uint32_t i = 0; i < segments; i++)
		missing += h->seg[i].fd < 0;
	if ((rc = check_fit(h, segments - missing, missing, why, len)) < 0)
		return rc;
	pthread_mutex_init(&m.lock, NULL);
	want = cpus > MAKERS_MAX ? MAKERS_MAX : cpus > 1 ? (uint32_t)cpus : 1;
	want = want < missing ? want : missing;
	/* This thread makes segments too; the others help. */
	while (nthreads + 1 < want &&
	       pthread_create(&threads[nthreads], NULL, maker_main, &m) == 0)
		nthreads++;
	maker_main(&m);
	while (nthreads)
		pthread_join(threads[--nthreads], NULL);
	pthread_mutex_destroy(&m.lock);
	for (uint32_t i = 0; i < segments; i++)
		if (h->seg[i].fd >= 0 && i >= h->segments)
			h->segments = i + 1;
	if (m.rc < 0)
		return say(why, len, m.rc, "%s", m.why);
	return 0;
}

uint32_t kvt_host_segments(const struct kvt_host *h)
{
	return h->segments;
}

void kvt_host_release(struct kvt_host *h, uint32_t segment)
{
	struct segment *s = &h->seg[segment];

	if (s->fd < 0)
		return;
	drop_memfd(h, s->fd);
	s->fd = -1;
	restore_mapping(h, s); /* the address range stays, backed by nothing */
	s->shared = false;
	atomic_store(&s->damaged, false);
}

int kvt_host_renew(struct kvt_host *h, uint32_t segment, char *why, size_t len)
{
	struct segment *s = &h->seg[segment];
	int old = s->fd, rc;

	/* The new memfd replaces the old mapping in place (MAP_FIXED), so
	 * the old one goes only once the new one is there: for a moment the
	 * tier holds one segment more than its size. */
	if ((rc = check_fit(h, h->segments - 1, 1, why, len)) < 0 ||
	    (rc = make_segment(h, segment, why, len)) < 0)
		return rc;
	if (old >= 0)
		drop_memfd(h, old);
	return 0;
}

int kvt_host_share(struct kvt_host *h, uint32_t segment, uint32_t *generation)
{
	struct segment *s = &h->seg[segment];
	int fd;

	if (segment >= h->segments || s->fd < 0)
		return -ENOENT;
	fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	s->shared = true;
	*generation = s->generation;
	return fd;
}

bool kvt_host_backed(const struct kvt_host *h, uint32_t segment)
{
	return h->seg[segment].fd >= 0;
}

bool kvt_host_shared(const struct kvt_host *h, uint32_t segment)
{
	return h->seg[segment].shared;
}

uint32_t kvt_host_generation(const struct kvt_host *h, uint32_t segment)
{
	return h->seg[segment].generation;
}

bool kvt_host_damaged(const struct kvt_host *h, uint32_t segment)
{
	return atomic_load(&h->seg[segment].damaged);
}

uint64_t kvt_host_faults(const struct kvt_host *h)
{
	return atomic_load(&h->faults);
}

void kvt_host_destroy(struct kvt_host *h)
{
	if (!h)
		return;
	guard_remove(h);
	for (uint32_t i = 0; i < h->segments; i++) {
		if (h->seg[i].map)
			munmap(h->seg[i].map, h->cfg.segment_bytes);
		if (h->seg[i].fd >= 0)
			close(h->seg[i].fd);
	}
	free(h);
}

void *kvt_host_ptr(const struct kvt_host *h, uint32_t segment, uint64_t offset)
{
	return h->seg[segment].map + offset;
}

const char *kvt_host_describe(const struct kvt_host *h)
{
	return h->describe;
}

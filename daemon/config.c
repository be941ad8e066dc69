#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "host.h"
#include "log.h"
#include "nvme.h"

_Static_assert(KVT_CONFIG_NVME_PATHS_MAX == KVT_NVME_PATHS_MAX, "nvme paths");

enum knob_type { KNOB_STRING, KNOB_U32, KNOB_SIZE, KNOB_MODE, KNOB_DURATION };

struct knob {
	const char *section, *name;
	enum knob_type type;
	size_t offset, size; /* size: of the string buffer */
	uint64_t min, max;
	const char *def; /* NULL: computed by kvt_config_defaults */
	const char *help;
	bool live; /* a reload (SIGHUP) changes it in the running daemon */
};

#define FIELD(f) offsetof(struct kvt_config, f), sizeof(((struct kvt_config *)0)->f)

static const struct knob knobs[] = {
	{ "daemon", "run_dir", KNOB_STRING, FIELD(run_dir), 0, 0, NULL,
	  "directory for the socket and lock file; created with mode 0750", false },
	{ "daemon", "socket", KNOB_STRING, FIELD(socket), 0, 0, "",
	  "unix socket path (empty: <run_dir>/kvtierd.sock)", false },
	{ "daemon", "tcp", KNOB_STRING, FIELD(tcp), 0, 0, "",
	  "optional TCP listen address HOST:PORT, e.g. 127.0.0.1:7420 or [::1]:7420, port 0..65535 (port 0: any free one; empty: none)", false },
	{ "daemon", "threads", KNOB_U32, FIELD(threads), 1, 256, "2",
	  "completion-queue threads serving RPCs", false },
	{ "daemon", "poll_us", KNOB_U32, FIELD(poll_us), 0, 100000, "100",
	  "after a call, one RPC thread and the fast lanes' poller poll for the next this many microseconds before sleeping (0: never): saves a wake-up per call under load, costs that much CPU", false },
	{ "daemon", "socket_mode", KNOB_MODE, FIELD(socket_mode), 0, 0777, "0660",
	  "permission bits of the unix socket", false },
	{ "daemon", "group", KNOB_STRING, FIELD(group), 0, 0, "",
	  "group owning the socket and run directory, which must exist (empty: the daemon's)", false },
	{ "daemon", "log_level", KNOB_STRING, FIELD(log_level), 0, 0, "info",
	  "error, warn, info or debug", true },
	{ "daemon", "log_format", KNOB_STRING, FIELD(log_format), 0, 0, "text",
	  "text (kvtierd LEVEL: message) or json (one object per line: ts, level, msg); lines start with the date and time, or under systemd with the journal's <N> priority", true },
	{ "daemon", "idle_timeout", KNOB_DURATION, FIELD(idle_timeout_ms), 0,
	  UINT64_MAX / 1000000, "30s",
	  "a unix-socket connection with no call in flight (no Attach stream) and no call for this long is shut down; clients reconnect on their next call (0: never)", true },
	{ "limits", "max_message_size", KNOB_SIZE, FIELD(max_message_size),
	  4096, 1ull << 31, "16M", "largest request or reply message", false },
	{ "limits", "max_keys_per_request", KNOB_U32, FIELD(max_keys_per_request),
	  1, 1u << 20, "4096", "most keys in one request", true },
	{ "limits", "max_namespaces", KNOB_U32, FIELD(max_namespaces), 1, 65535,
	  "256", "most namespaces the daemon holds, all tenants together (a dropped one counts until its last pinned or reserved block goes)", false },
	{ "host", "size", KNOB_SIZE, FIELD(host_size), 4096, 1ull << 50, "1G",
	  "capacity of the host (shared memory) tier, used in whole segments (rounded down): at least one, at most 16384", true },
	{ "host", "segment_size", KNOB_SIZE, FIELD(host_segment_size), 4096,
	  1ull << 40, "64M",
	  "size of one host segment, a multiple of 4K (of the huge page with huge pages), at most size; also the largest page", false },
	{ "host", "huge_pages", KNOB_STRING, FIELD(huge_pages), 0, 0, "auto",
	  "host tier pages: 2M or 1G (hugetlb; reserve them with nr_hugepages, too few free fails the start), off (4K), or auto (2M when enough are free for the whole tier, else 4K)", false },
	{ "host", "lock", KNOB_STRING, FIELD(host_lock), 0, 0, "false",
	  "true: lock the host tier in RAM, never swapped out (mlock; needs LimitMEMLOCK=infinity in the unit)", false },
	{ "policy", "eviction", KNOB_STRING, FIELD(eviction), 0, 0, "leaf-first",
	  "leaf-first (children before parents, then priority, then LRU) or lru", false },
	{ "policy", "default_priority", KNOB_U32, FIELD(default_priority), 0, 100,
	  "35", "retention priority of blocks a request gives none (0..100)", true },
	{ "policy", "idle_ttl", KNOB_DURATION, FIELD(idle_ttl_ms), 0,
	  KVT_DURATION_MS_MAX, "0",
	  "unpinned blocks unused this long expire; a namespace may set its own (0: never; at most 3650d)", true },
	{ "policy", "lease_ttl", KNOB_DURATION, FIELD(lease_ttl_ms), 0,
	  KVT_DURATION_MS_MAX, "5m",
	  "a pin is released after this long even if its worker forgot (0: never; at most 3650d)", true },
	{ "policy", "max_wait", KNOB_DURATION, FIELD(max_wait_ms), 0,
	  3600000, "30s", "longest wait an Acquire may ask for", true },
	{ "tenants", "shared_namespaces", KNOB_STRING, FIELD(shared_namespaces),
	  0, 0, "", "comma-separated namespaces whose blocks all tenants share", false },
	{ "tenants", "host_quota", KNOB_STRING, FIELD(host_quota), 0, 0, "0",
	  "host bytes (or 0..100% of the tier) each tenant keeps against others, and above which it evicts its own blocks first (0: none)", true },
	{ "tenants", "host_quotas", KNOB_STRING, FIELD(host_quotas), 0, 0, "",
	  "per-tenant overrides: user:size,... (user: an existing name or a uid, each listed once; size: bytes or %)", true },
	{ "tenants", "max_connections", KNOB_U32, FIELD(max_connections), 0,
	  1u << 24, "64",
	  "unix-socket connections one tenant (uid) may hold; every call on one more fails with RESOURCE_EXHAUSTED, then it is shut down (0: no bound)", true },
	{ "tenants", "max_sessions", KNOB_U32, FIELD(max_sessions), 0, 1u << 24,
	  "64", "sessions (Attach streams) one tenant may hold open (0: no bound)", true },
	{ "tenants", "max_lanes", KNOB_U32, FIELD(max_lanes), 0, 1u << 24,
	  "16", "fast lanes (one per session: its hot calls through shared memory) one tenant may hold; its later sessions call over gRPC (0: no bound)", true },
	{ "tenants", "max_leases", KNOB_U32, FIELD(max_leases), 0, 1u << 24,
	  "4096", "leases (Acquires held or in progress) one tenant may hold (0: no bound)", true },
	{ "tenants", "max_namespaces", KNOB_U32, FIELD(max_tenant_namespaces), 0,
	  65535, "16",
	  "namespaces one tenant may have created and not dropped, shared ones included (0: no bound)", true },
	{ "nvme", "paths", KNOB_STRING, FIELD(nvme_paths), 0, 0, "",
	  "comma-separated absolute paths of files or block devices of the nvme tier, each listed once, written O_DIRECT (empty: no nvme tier)", false },
	{ "nvme", "size", KNOB_SIZE, FIELD(nvme_size), 1ull << 20, 1ull << 60,
	  "16G", "bytes used on each path (a block device: at most its size)", false },
	{ "nvme", "region_size", KNOB_SIZE, FIELD(nvme_region_size), 1ull << 16,
	  1ull << 40, "256M",
	  "unit of nvme space reuse, oldest first; holds records of one namespace; a multiple of 4K, at least segment_size + 12K", false },
	{ "nvme", "queue_depth", KNOB_U32, FIELD(nvme_queue_depth), 1, 1024, "32",
	  "nvme reads and writes in flight", false },
	{ "nvme", "retry_interval", KNOB_DURATION, FIELD(nvme_retry_ms), 1,
	  86400000, "30s",
	  "after a write error (disk full, EIO) a path takes no writes this long", false },
	{ "hbm", "size", KNOB_SIZE, FIELD(hbm_size), 0, 1ull << 50, "0",
	  "GPU memory of the hbm tier on each of its GPUs, allocated at start (0: no hbm tier); the host tier is then registered with CUDA, so committed and pinned at start", false },
	{ "hbm", "devices", KNOB_STRING, FIELD(hbm_devices), 0, 0, "all",
	  "comma-separated CUDA ordinals (0..1023, each listed once) of the hbm tier's GPUs, as the daemon sees them, or all", false },
	{ "remote", "endpoints", KNOB_STRING, FIELD(remote_endpoints), 0, 0, "",
	  "comma-separated HOST:PORT of one Redis server, or of seed nodes of a Redis Cluster (the rest are discovered), that nodes share prefixes through (empty: no remote tier)", false },
	{ "remote", "username", KNOB_STRING, FIELD(remote_username), 0, 0, "",
	  "Redis ACL user to AUTH as (empty: the password alone, or no AUTH); needs password_file", false },
	{ "remote", "password_file", KNOB_STRING, FIELD(remote_password_file), 0, 0, "",
	  "file whose first line is the Redis password, mode 0600 or stricter, read at start; never put the password itself in the config or on the command line (empty: no AUTH)", false },
	{ "remote", "timeout", KNOB_DURATION, FIELD(remote_timeout_ms), 1,
	  60000, "1s", "longest a request to the store may take before it counts as failed", false },
	{ "remote", "queue_depth", KNOB_U32, FIELD(remote_queue_depth), 1,
	  1u << 16, "1024",
	  "keys queued or in flight to the store; a write beyond it is skipped and counted", false },
	{ "remote", "write", KNOB_STRING, FIELD(remote_write), 0, 0, "all",
	  "committed blocks written to the store (write-behind): all, priority>=N (retention priority at least N, 0..100), or none (a read-only node)", false },
	{ "remote", "ttl", KNOB_DURATION, FIELD(remote_ttl_ms), 0,
	  KVT_DURATION_MS_MAX, "0",
	  "records expire from the store this long after they are written (0: never; the store's maxmemory-policy evicts them)", false },
	{ "remote", "lookup_budget", KNOB_DURATION, FIELD(remote_lookup_budget_ms),
	  0, 10000, "5ms",
	  "longest a Lookup waits for the store about keys found nowhere on this node (0: never asks; blocks this node wrote are still found)", false },
	{ "metrics", "listen", KNOB_STRING, FIELD(metrics_listen), 0, 0,
	  "127.0.0.1:9400",
	  "HOST:PORT serving Prometheus /metrics and /healthz over HTTP, an operator surface: every tenant's usage; port 0..65535 (0: any free one; empty: off)",
	  false },
	{ "metrics", "auth_file", KNOB_STRING, FIELD(metrics_auth_file), 0, 0, "",
	  "file holding user:password, mode 0600 or stricter: /metrics then asks for HTTP basic auth (empty: none; /healthz never does)", true },
};

#define NKNOBS (sizeof(knobs) / sizeof(knobs[0]))
_Static_assert(NKNOBS <= KVT_CONFIG_KNOBS_MAX, "KVT_CONFIG_KNOBS_MAX is too small");

int kvt_huge_pages_parse(const char *s)
{
	static const char *const names[] = { "auto", "off", "2M", "1G" };

	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i; /* the order of enum kvt_huge_pages */
	return -EINVAL;
}

/* A number in base 10 (or 8) that starts with a digit: no sign, no blank,
 * no "0x". *end: the first character after it. 0, or -EINVAL (also on overflow). */
static int parse_digits(const char *s, int base, unsigned long long *v,
			char **end)
{
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, end, base);
	return errno ? -1 : 0;
}

int kvt_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;
	int shift = 0;

	if (parse_digits(s, 10, &v, &end) < 0)
		return -EINVAL;
	switch (*end) {
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	case 'T': case 't': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && end[1] == '\0')
		end++;
	if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int kvt_parse_duration(const char *s, uint64_t *ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = { { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		      { "h", 3600000 }, { "d", 86400000 }, { "", 1000 } };
	unsigned long long v;
	char *end;

	if (parse_digits(s, 10, &v, &end) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) != 0)
			continue;
		if (v > UINT64_MAX / units[i].ms)
			return -EINVAL;
		*ms = v * units[i].ms;
		return 0;
	}
	return -EINVAL;
}

bool kvt_config_listed(const char *list, const char *name)
{
	size_t len = strlen(name);

	while (*list) {
		size_t n;

		list += strspn(list, " ,");
		n = strcspn(list, " ,");
		if (n == len && n && strncmp(list, name, n) == 0)
			return true;
		list += n;
	}
	return false;
}

static const struct knob *knob_find(const char *section, const char *name)
{
	for (size_t i = 0; i < NKNOBS; i++)
		if (strcmp(knobs[i].section, section) == 0 &&
		    strcmp(knobs[i].name, name) == 0)
			return &knobs[i];
	return NULL;
}

/* The index of the knob whose field is at offset in struct kvt_config. */
static size_t knob_index(size_t offset)
{
	size_t i = 0;

	while (knobs[i].offset != offset)
		i++;
	return i;
}

#define KNOB_OF(f) knob_index(offsetof(struct kvt_config, f))

/* "HOST:PORT": a name or IPv4 address, or an IPv6 one in brackets, and a
 * port in 0..65535 (0: any free one). The metrics endpoint also takes an
 * empty host (every address); gRPC (daemon.tcp) does not. 0, or -1 with the
 * reason in err. */
static int check_listen(const char *s, bool grpc, char *err, size_t len)
{
	const char *colon = strrchr(s, ':');
	unsigned long long port;
	char *end;

	if (!colon || (grpc && colon == s) || s[strcspn(s, " \t")] ||
	    (s[0] == '[' ? colon[-1] != ']' || colon - s < 3 :
			   memchr(s, ':', (size_t)(colon - s)) != NULL)) {
		snprintf(err, len, "'%s' is not HOST:PORT (write e.g. 127.0.0.1:7420 or [::1]:7420)",
			 s);
		return -EINVAL;
	}
	if (parse_digits(colon + 1, 10, &port, &end) < 0 || *end || port > 65535) {
		snprintf(err, len, "port '%s' is not a number in 0..65535", colon + 1);
		return -EINVAL;
	}
	return 0;
}

/* [remote] write: all, none or priority>=N. 0, or -EINVAL with err. */
static int parse_write(const char *s, uint32_t *min_priority, char *err,
		       size_t len)
{
	static const char prefix[] = "priority>=";
	unsigned long long v;
	char *end;

	if (strcmp(s, "all") == 0) {
		*min_priority = 0;
		return 0;
	}
	if (strcmp(s, "none") == 0) {
		*min_priority = KVT_CONFIG_WRITE_NONE;
		return 0;
	}
	if (strncmp(s, prefix, sizeof(prefix) - 1) == 0 &&
	    parse_digits(s + sizeof(prefix) - 1, 10, &v, &end) == 0 && !*end &&
	    v <= 100) {
		*min_priority = (uint32_t)v;
		return 0;
	}
	snprintf(err, len, "'%s' is not all, none or priority>=N (N in 0..100)", s);
	return -EINVAL;
}

/* Stores value into the knob's field. 0, or -1 with the reason in err. */
static int knob_apply(struct kvt_config *c, const struct knob *k,
		      const char *value, char *err, size_t len)
{
	char *field = (char *)c + k->offset;
	unsigned long long v;
	uint64_t size;
	char *end;

	switch (k->type) {
	case KNOB_STRING:
		if (strlen(value) >= k->size) {
			snprintf(err, len, "value longer than %zu bytes",
				 k->size - 1);
			return -EINVAL;
		}
		strcpy(field, value);
		if (field == c->log_format && strcmp(value, "text") != 0 &&
		    strcmp(value, "json") != 0) {
			snprintf(err, len, "'%s' is not text or json", value);
			return -EINVAL;
		}
		if (field == c->log_level && kvt_log_level_parse(value) < 0) {
			snprintf(err, len, "'%s' is not one of error, warn, info, debug",
				 value);
			return -EINVAL;
		}
		if (field == c->eviction && strcmp(value, "leaf-first") != 0 &&
		    strcmp(value, "lru") != 0) {
			snprintf(err, len, "'%s' is not leaf-first or lru", value);
			return -EINVAL;
		}
		if (field == c->huge_pages && kvt_huge_pages_parse(value) < 0) {
			snprintf(err, len, "'%s' is not auto, 2M, 1G or off", value);
			return -EINVAL;
		}
		if (field == c->host_lock && strcmp(value, "true") != 0 &&
		    strcmp(value, "false") != 0) {
			snprintf(err, len, "'%s' is not true or false", value);
			return -EINVAL;
		}
		if (field == c->remote_write)
			return parse_write(value, &c->remote_min_priority, err, len);
		if ((field == c->tcp || field == c->metrics_listen) && value[0])
			return check_listen(value, field == c->tcp, err, len);
		return 0;
	case KNOB_SIZE:
	case KNOB_DURATION: {
		bool is_size = k->type == KNOB_SIZE;

		if ((is_size ? kvt_parse_size(value, &size) :
			       kvt_parse_duration(value, &size)) < 0) {
			snprintf(err, len, is_size ?
				 "'%s' is not a size (write e.g. 4096, 512M, 64G)" :
				 "'%s' is not a duration (write e.g. 250ms, 30s, 5m, 2h)",
				 value);
			return -EINVAL;
		}
		if (size < k->min || size > k->max) {
			snprintf(err, len, "%s is outside %llu..%llu %s", value,
				 (unsigned long long)k->min,
				 (unsigned long long)k->max, is_size ? "bytes" : "ms");
			return -EINVAL;
		}
		/* Both are cut into 4K pages and headers. */
		if ((field == (char *)&c->host_segment_size ||
		     field == (char *)&c->nvme_region_size) && size % 4096) {
			snprintf(err, len, "%s is not a multiple of 4096 (4K)", value);
			return -EINVAL;
		}
		*(uint64_t *)field = size;
		return 0;
	}
	case KNOB_U32:
	case KNOB_MODE:
		if (parse_digits(value, k->type == KNOB_MODE ? 8 : 10, &v, &end) < 0 ||
		    *end != '\0') {
			snprintf(err, len, "'%s' is not %s", value,
				 k->type == KNOB_MODE ? "an octal mode like 0660" :
							"a whole number");
			return -EINVAL;
		}
		if (v < k->min || v > k->max) {
			snprintf(err, len, k->type == KNOB_MODE ?
					 "%s is outside 0..0%llo" :
					 "%s is outside %llu..%llu",
				 value,
				 k->type == KNOB_MODE ? (unsigned long long)k->max :
							(unsigned long long)k->min,
				 (unsigned long long)k->max);
			return -EINVAL;
		}
		*(uint32_t *)field = (uint32_t)v;
		return 0;
	}
	return -EINVAL;
}

void kvt_config_defaults(struct kvt_config *c)
{
	char err[128];
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NKNOBS; i++)
		if (knobs[i].def)
			(void)knob_apply(c, &knobs[i], knobs[i].def, err,
					 sizeof(err));
	if (geteuid() == 0)
		snprintf(c->run_dir, sizeof(c->run_dir), "/run/kvtier");
	else if (xdg && *xdg)
		snprintf(c->run_dir, sizeof(c->run_dir), "%s/kvtier", xdg);
	else
		snprintf(c->run_dir, sizeof(c->run_dir), "/tmp/kvtier-%u",
			 (unsigned)geteuid());
}

struct load_ctx {
	struct kvt_config *c;
	FILE *f;
	int line, err_line;
	uint32_t seen[NKNOBS]; /* the line of each knob in this file; 0: none */
	char err[384];
	bool failed;
};

/* Keeps the first error, at the line being read. */
__attribute__((format(printf, 2, 3)))
static void load_fail(struct load_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	if (ctx->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
	ctx->err_line = ctx->line;
	ctx->failed = true;
}

static int on_ini_entry(void *user, const char *section, const char *name,
		       const char *value)
{
	struct load_ctx *ctx = user;
	const struct knob *k = knob_find(section, name);
	char why[256];

	if (!k) {
		if (section[0])
			load_fail(ctx, "[%s] %s: unknown key", section, name);
		else
			load_fail(ctx, "%s: key before the first [section]", name);
		return 0;
	}
	if (ctx->seen[k - knobs]) {
		load_fail(ctx, "[%s] %s: duplicate key (first set at line %u)",
			  section, name, ctx->seen[k - knobs]);
		return 0;
	}
	if (knob_apply(ctx->c, k, value, why, sizeof(why)) < 0) {
		load_fail(ctx, "[%s] %s: %s", section, name, why);
		return 0;
	}
	ctx->seen[k - knobs] = (uint32_t)ctx->line;
	ctx->c->source[k - knobs] = KVT_CONFIG_FROM_FILE;
	ctx->c->line[k - knobs] = (uint32_t)ctx->line;
	return 1;
}

static bool section_known(const char *name, size_t n)
{
	for (size_t i = 0; i < NKNOBS; i++)
		if (strlen(knobs[i].section) == n &&
		    strncmp(knobs[i].section, name, n) == 0)
			return true;
	return false;
}

/*
 * inih's reader: counts lines (inih passes no line number to the handler)
 * and refuses, at the line's number, what inih would let pass: a NUL byte
 * (it would cut the value short), a line longer than inih's buffer (its
 * rest would be read as a line of its own), a section header without its
 * ']' or with text after it, an unknown section. Leading blanks are
 * dropped, so that an indented line is never read as the continuation of
 * the value before it. After an error it ends the file: the first one wins.
 */
static char *read_line(char *str, int num, void *stream)
{
	struct load_ctx *ctx = stream;
	bool nul = false;
	int n = 0, ch = EOF;
	size_t blanks;
	char *end, *rest;

	if (ctx->failed)
		return NULL;
	while (n < num - 1 && (ch = getc(ctx->f)) != EOF && ch != '\n') {
		nul |= ch == '\0';
		str[n++] = (char)ch;
	}
	if (n == 0 && ch == EOF)
		return NULL;
	str[n] = '\0';
	ctx->line++;
	if (nul) {
		load_fail(ctx, "NUL byte in the line");
		return NULL;
	}
	if (n == num - 1 && ch != '\n' && (ch = getc(ctx->f)) != '\n' && ch != EOF) {
		load_fail(ctx, "line longer than %d bytes", num - 1);
		return NULL;
	}
	if (ctx->line == 1 && strncmp(str, "\xEF\xBB\xBF", 3) == 0)
		memmove(str, str + 3, (size_t)n - 2); /* a UTF-8 byte order mark */
	blanks = strspn(str, " \t");
	memmove(str, str + blanks, strlen(str + blanks) + 1);
	if (str[0] != '[')
		return str;
	end = strchr(str, ']');
	rest = end ? end + 1 + strspn(end + 1, " \t\r") : NULL;
	if (!end) {
		str[strcspn(str, "\r")] = '\0';
		load_fail(ctx, "unterminated section header '%s'", str);
	} else if (*rest && *rest != ';' && *rest != '#') {
		load_fail(ctx, "text after section header '%.*s'",
			  (int)(end + 1 - str), str);
	} else if (!section_known(str + 1, (size_t)(end - str - 1))) {
		load_fail(ctx, "unknown section '%.*s'", (int)(end + 1 - str), str);
	}
	return ctx->failed ? NULL : str;
}

int kvt_config_load(struct kvt_config *c, const char *path, char *err,
		    size_t len)
{
	struct load_ctx ctx = { .c = c, .f = fopen(path, "re") };
	bool read_error;
	int line;

	if (!ctx.f) {
		int rc = -errno;

		snprintf(err, len, "%s: cannot open: %s", path, strerror(-rc));
		return rc;
	}
	line = ini_parse_stream(read_line, &ctx, on_ini_entry, &ctx);
	read_error = ferror(ctx.f);
	fclose(ctx.f);
	if (snprintf(c->file, sizeof(c->file), "%s", path) >= (int)sizeof(c->file)) {
		snprintf(err, len, "%s: path too long", path);
		return -EINVAL;
	}
	if (line == -2) {
		snprintf(err, len, "%s: out of memory", path);
		return -ENOMEM;
	}
	/* The first error: inih's (syntax) or ours, whichever line is first. */
	if (ctx.failed && (line <= 0 || ctx.err_line <= line)) {
		snprintf(err, len, "%s:%d: %s", path, ctx.err_line, ctx.err);
		return -EINVAL;
	}
	if (line > 0) {
		snprintf(err, len, "%s:%d: syntax error (expected [section] or key = value)",
			 path, line);
		return -EINVAL;
	}
	if (read_error) {
		snprintf(err, len, "%s: read error", path);
		return -EIO;
	}
	return 0;
}

int kvt_config_set(struct kvt_config *c, const char *assignment, char *err,
		   size_t len)
{
	char section[64], why[256];
	const char *dot = strchr(assignment, '.');
	const char *eq = strchr(assignment, '=');
	const struct knob *k;
	char name[64];

	if (!dot || !eq || dot > eq || (size_t)(dot - assignment) >= sizeof(section) ||
	    (size_t)(eq - dot - 1) >= sizeof(name)) {
		snprintf(err, len, "--set %s: expected section.key=value", assignment);
		return -EINVAL;
	}
	memcpy(section, assignment, (size_t)(dot - assignment));
	section[dot - assignment] = '\0';
	memcpy(name, dot + 1, (size_t)(eq - dot - 1));
	name[eq - dot - 1] = '\0';
	k = knob_find(section, name);
	if (!k) {
		snprintf(err, len, "--set %s: unknown key [%s] %s", assignment,
			 section, name);
		return -EINVAL;
	}
	if (knob_apply(c, k, eq + 1, why, sizeof(why)) < 0) {
		snprintf(err, len, "--set [%s] %s: %s", section, name, why);
		return -EINVAL;
	}
	c->source[k - knobs] = KVT_CONFIG_FROM_COMMAND_LINE;
	return 0;
}

int kvt_config_build(struct kvt_config *c, const char *file,
		     const char *const *sets, size_t nsets, char *err,
		     size_t len)
{
	int rc;

	kvt_config_defaults(c);
	if (file && (rc = kvt_config_load(c, file, err, len)) < 0)
		return rc;
	for (size_t i = 0; i < nsets; i++)
		if ((rc = kvt_config_set(c, sets[i], err, len)) < 0)
			return rc;
	return kvt_config_finish(c, err, len);
}

/* An error found once every knob is read, about knob i: where its value
 * came from ("FILE:LINE" or "command line"; nothing for a default), its
 * section and key, and why. Returns -1. */
__attribute__((format(printf, 5, 6)))
static int knob_error(const struct kvt_config *c, size_t i, char *err,
		      size_t len, const char *fmt, ...)
{
	char from[PATH_MAX + 16] = "", why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (c->source[i] != KVT_CONFIG_FROM_DEFAULT) {
		kvt_config_source(c, i, from, sizeof(from));
		strcat(from, ": ");
	}
	snprintf(err, len, "%s[%s] %s: %s", from, knobs[i].section,
		 knobs[i].name, why);
	return -EINVAL;
}

/* Knob i as another knob's error names it: "[host] size 1G (FILE:LINE)". */
static void knob_describe(const struct kvt_config *c, size_t i, char *buf,
			  size_t len)
{
	char value[64], from[PATH_MAX + 16];

	kvt_config_value(c, i, value, sizeof(value));
	kvt_config_source(c, i, from, sizeof(from));
	snprintf(buf, len, "[%s] %s %s (%s)", knobs[i].section, knobs[i].name,
		 value, from);
}

/* Of two knobs that do not fit together, the one an error names: a,
 * unless a has its default and b does not (the operator changed b). */
static size_t blame(const struct kvt_config *c, size_t a, size_t b)
{
	return c->source[a] == KVT_CONFIG_FROM_DEFAULT &&
			       c->source[b] != KVT_CONFIG_FROM_DEFAULT ? b : a;
}

/* A cross-check's error: knob a (or b, see blame) does not fit the other
 * one; a_says/b_says: how, when the error names a or b. Returns -1. */
static int cross_error(const struct kvt_config *c, size_t a, size_t b,
		       const char *a_says, const char *b_says, char *err,
		       size_t len)
{
	size_t i = blame(c, a, b), other = i == a ? b : a;
	char value[64], desc[PATH_MAX + 192];

	kvt_config_value(c, i, value, sizeof(value));
	knob_describe(c, other, desc, sizeof(desc));
	return knob_error(c, i, err, len, "%s %s %s", value,
			  i == a ? a_says : b_says, desc);
}

/* "25%" of the host tier, or a size. 0, or -1. */
static int parse_quota(const struct kvt_config *c, const char *s,
		       uint64_t *bytes)
{
	size_t n = strlen(s);
	unsigned long long pct;
	char *end;

	if (n > 1 && s[n - 1] == '%') {
		if (parse_digits(s, 10, &pct, &end) < 0 || end != s + n - 1 ||
		    pct > 100)
			return -EINVAL;
		*bytes = c->host_size / 100 * pct;
		return 0;
	}
	return kvt_parse_size(s, bytes);
}

int kvt_config_read_secret(const char *what, const char *path, char *out,
			   size_t len, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot open %s: %s", what, path,
			 strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		snprintf(err, errlen, "%s: %s must be a regular file that only its owner may read (mode %04o; chmod 0600 it)",
			 what, path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	n = read(fd, out, len - 1);
	if (n < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot read %s: %s", what, path,
			 strerror(-rc));
		n = 0;
	}
	close(fd);
	out[n] = '\0';
	if (rc == 0 && (size_t)n == len - 1 && !strchr(out, '\n')) {
		snprintf(err, errlen, "%s: %s: first line longer than %zu bytes",
			 what, path, len - 2);
		rc = -EINVAL;
	}
	out[strcspn(out, "\r\n")] = '\0';
	if (rc == 0 && !out[0]) {
		snprintf(err, errlen, "%s: %s holds nothing on its first line",
			 what, path);
		rc = -EINVAL;
	}
	if (rc < 0)
		explicit_bzero(out, len);
	return rc;
}

int kvt_parse_user(const char *s, uint32_t *uid)
{
	struct passwd pw, *res = NULL;
	char buf[1024], *end;
	unsigned long long v;

	if (parse_digits(s, 10, &v, &end) == 0 && *end == '\0' && v < UINT32_MAX) {
		*uid = (uint32_t)v;
		return 0;
	}
	if (getpwnam_r(s, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return -EINVAL;
	*uid = res->pw_uid;
	return 0;
}

#define QUOTA_SYNTAX "(write bytes like 1G, or 0..100%% of [host] size)"

static int finish_quotas(struct kvt_config *c, char *err, size_t len)
{
	size_t knob = KNOB_OF(host_quotas);
	const char *p = c->host_quotas;

	if (parse_quota(c, c->host_quota, &c->default_host_quota) < 0)
		return knob_error(c, KNOB_OF(host_quota), err, len,
				  "'%s' is not a size or a percentage " QUOTA_SYNTAX,
				  c->host_quota);
	c->nquotas = 0;
	while (*(p += strspn(p, " ,"))) {
		struct kvt_config_quota *q = &c->quotas[c->nquotas];
		char item[128], *colon;
		size_t n = strcspn(p, " ,");

		if (n >= sizeof(item) || c->nquotas == KVT_CONFIG_QUOTAS_MAX)
			return knob_error(c, knob, err, len,
					  "entry too long, or more than %d entries",
					  KVT_CONFIG_QUOTAS_MAX);
		memcpy(item, p, n);
		item[n] = '\0';
		p += n;
		colon = strchr(item, ':');
		if (!colon)
			return knob_error(c, knob, err, len, "'%s' is not user:size", item);
		*colon = '\0';
		if (kvt_parse_user(item, &q->uid) < 0)
			return knob_error(c, knob, err, len, "no user '%s'", item);
		if (parse_quota(c, colon + 1, &q->bytes) < 0)
			return knob_error(c, knob, err, len,
					  "%s: '%s' is not a size or a percentage " QUOTA_SYNTAX,
					  item, colon + 1);
		for (uint32_t i = 0; i < c->nquotas; i++)
			if (c->quotas[i].uid == q->uid)
				return knob_error(c, knob, err, len,
						  "user '%s' (uid %u) is listed twice",
						  item, q->uid);
		c->nquotas++;
	}
	return 0;
}

/* Reads [hbm] devices: "all" or ordinals. */
static int finish_hbm(struct kvt_config *c, char *err, size_t len)
{
	const char *s = c->hbm_devices;

	c->hbm_ndevices = 0;
	if (strcmp(s, "all") == 0)
		return 0;
	while (*(s += strspn(s, " ,"))) {
		unsigned long long v;
		char *end;

		if (parse_digits(s, 10, &v, &end) < 0 || v > 1023 ||
		    (*end && !strchr(" ,", *end)) ||
		    c->hbm_ndevices == KVT_CONFIG_HBM_DEVICES_MAX)
			return knob_error(c, KNOB_OF(hbm_devices), err, len,
					  "'%s' is not all or a list of at most %d CUDA ordinals (0..1023)",
					  c->hbm_devices, KVT_CONFIG_HBM_DEVICES_MAX);
		for (uint32_t i = 0; i < c->hbm_ndevices; i++)
			if (c->hbm_device[i] == (int)v)
				return knob_error(c, KNOB_OF(hbm_devices), err, len,
						  "device %llu is listed twice", v);
		c->hbm_device[c->hbm_ndevices++] = (int)v;
		s = end;
	}
	if (c->hbm_ndevices == 0)
		return knob_error(c, KNOB_OF(hbm_devices), err, len,
				  "empty (write all, or ordinals like 0,1)");
	return 0;
}

/* Splits [nvme] paths and checks the sizes against the host segment. */
static int finish_nvme(struct kvt_config *c, char *err, size_t len)
{
	size_t paths = KNOB_OF(nvme_paths), size = KNOB_OF(nvme_size);
	size_t region = KNOB_OF(nvme_region_size);
	const char *s = c->nvme_paths;

	c->nvme_npaths = 0;
	while (*(s += strspn(s, " ,"))) {
		size_t n = strcspn(s, " ,");

		if (c->nvme_npaths == KVT_CONFIG_NVME_PATHS_MAX || s[0] != '/' ||
		    n >= sizeof(c->nvme_path[0]))
			return knob_error(c, paths, err, len,
					  "at most %d absolute paths under %zu bytes",
					  KVT_CONFIG_NVME_PATHS_MAX, sizeof(c->nvme_path[0]));
		memcpy(c->nvme_path[c->nvme_npaths], s, n);
		c->nvme_path[c->nvme_npaths][n] = '\0';
		for (uint32_t i = 0; i < c->nvme_npaths; i++)
			if (strcmp(c->nvme_path[i], c->nvme_path[c->nvme_npaths]) == 0)
				return knob_error(c, paths, err, len,
						  "%s is listed twice", c->nvme_path[i]);
		c->nvme_npaths++;
		s += n;
	}
	if (!c->nvme_npaths)
		return 0; /* no nvme tier: its sizes do not matter */
	/* A region holds its header and a record (header and page) of the
	 * largest page: see tiers/nvme.c. */
	if (c->nvme_region_size < c->host_segment_size + 3 * KVT_NVME_HEADER_BYTES)
		return cross_error(c, region, KNOB_OF(host_segment_size),
				   "is less than segment_size + 12K:",
				   "leaves no room for a record of one segment (+ 12K) in",
				   err, len);
	if (c->nvme_size < c->nvme_region_size + KVT_NVME_HEADER_BYTES)
		return cross_error(c, size, region, "holds no region (+ 4K) of",
				   "is larger than what a path holds (- 4K):",
				   err, len);
	/* Region counts are 32 bits, summed over the paths. */
	if ((c->nvme_size - KVT_NVME_HEADER_BYTES) / c->nvme_region_size >
	    UINT32_MAX / KVT_NVME_PATHS_MAX) {
		char a_says[64], b_says[64];

		snprintf(a_says, sizeof(a_says), "holds more than %u regions of",
			 UINT32_MAX / KVT_NVME_PATHS_MAX);
		snprintf(b_says, sizeof(b_says), "makes more than %u regions of",
			 UINT32_MAX / KVT_NVME_PATHS_MAX);
		return cross_error(c, size, region, a_says, b_says, err, len);
	}
	return 0;
}

/* Splits [remote] endpoints; a user needs a password. */
static int finish_remote(struct kvt_config *c, char *err, size_t len)
{
	size_t knob = KNOB_OF(remote_endpoints);
	const char *s = c->remote_endpoints;
	char why[256];

	c->remote_nendpoints = 0;
	while (*(s += strspn(s, " ,"))) {
		size_t n = strcspn(s, " ,");
		char *ep = c->remote_endpoint[c->remote_nendpoints];

		if (c->remote_nendpoints == KVT_CONFIG_REMOTE_ENDPOINTS_MAX ||
		    n >= sizeof(c->remote_endpoint[0]))
			return knob_error(c, knob, err, len,
					  "at most %d endpoints, each under %zu bytes",
					  KVT_CONFIG_REMOTE_ENDPOINTS_MAX,
					  sizeof(c->remote_endpoint[0]));
		memcpy(ep, s, n);
		ep[n] = '\0';
		if (check_listen(ep, true, why, sizeof(why)) < 0)
			return knob_error(c, knob, err, len, "%s", why);
		if (strcmp(strrchr(ep, ':'), ":0") == 0)
			return knob_error(c, knob, err, len,
					  "%s: port 0 names no server", ep);
		for (uint32_t i = 0; i < c->remote_nendpoints; i++)
			if (strcmp(c->remote_endpoint[i], ep) == 0)
				return knob_error(c, knob, err, len,
						  "%s is listed twice", ep);
		c->remote_nendpoints++;
		s += n;
	}
	if (c->remote_username[0] && !c->remote_password_file[0])
		return knob_error(c, KNOB_OF(remote_username), err, len,
				  "a user needs [remote] password_file");
	if (c->remote_password_file[0] && c->remote_password_file[0] != '/')
		return knob_error(c, KNOB_OF(remote_password_file), err, len,
				  "'%s' is not an absolute path",
				  c->remote_password_file);
	return 0;
}

/* [host] size against segment_size. */
static int finish_host(struct kvt_config *c, char *err, size_t len)
{
	size_t size = KNOB_OF(host_size), segment = KNOB_OF(host_segment_size);

	if (c->host_size < c->host_segment_size)
		return cross_error(c, segment, size, "is larger than the tier:",
				   "is smaller than one segment:", err, len);
	if (c->host_size / c->host_segment_size > KVT_HOST_SEGMENTS_MAX) {
		char says[64];

		snprintf(says, sizeof(says), "makes more than %u segments of",
			 KVT_HOST_SEGMENTS_MAX);
		return cross_error(c, size, segment, says, says, err, len);
	}
	return 0;
}

/* [daemon] group: the group must exist. */
static int finish_group(struct kvt_config *c, char *err, size_t len)
{
	struct group *g;

	c->gid = (gid_t)-1;
	if (!c->group[0])
		return 0;
	g = getgrnam(c->group);
	if (!g)
		return knob_error(c, KNOB_OF(group), err, len, "no group named '%s'",
				  c->group);
	c->gid = g->gr_gid;
	return 0;
}

int kvt_config_finish(struct kvt_config *c, char *err, size_t len)
{
	if (c->run_dir[0] != '/')
		return knob_error(c, KNOB_OF(run_dir), err, len,
				  "'%s' is not an absolute path", c->run_dir);
	if (c->socket[0] == '\0' &&
	    snprintf(c->socket, sizeof(c->socket), "%s/kvtierd.sock",
		     c->run_dir) >= 108)
		return knob_error(c, KNOB_OF(run_dir), err, len,
				  "'%s' is too long for a unix socket path", c->run_dir);
	if (strlen(c->socket) >= 108 || c->socket[0] != '/')
		return knob_error(c, KNOB_OF(socket), err, len,
				  "'%s' must be an absolute path under 108 bytes",
				  c->socket);
	if (finish_group(c, err, len) < 0 || finish_host(c, err, len) < 0 ||
	    finish_hbm(c, err, len) < 0 || finish_nvme(c, err, len) < 0 ||
	    finish_remote(c, err, len) < 0)
		return -EINVAL;
	return finish_quotas(c, err, len);
}

/* The largest unit that writes v exactly: 1073741824 -> "1G". */
static void format_units(uint64_t v, const char *const *units,
			 const uint64_t *scale, size_t n, char *buf, size_t len)
{
	size_t i = n - 1;

	while (i > 0 && (v == 0 || v % scale[i]))
		i--;
	snprintf(buf, len, "%llu%s", (unsigned long long)(v / scale[i]), units[i]);
}

void kvt_config_value(const struct kvt_config *c, size_t i, char *buf,
		      size_t len)
{
	static const char *const size_units[] = { "", "K", "M", "G", "T" };
	static const uint64_t size_scale[] = { 1, 1ull << 10, 1ull << 20,
					       1ull << 30, 1ull << 40 };
	static const char *const time_units[] = { "ms", "s", "m", "h", "d" };
	static const uint64_t time_scale[] = { 1, 1000, 60000, 3600000, 86400000 };
	const struct knob *k = &knobs[i];
	const char *field = (const char *)c + k->offset;

	switch (k->type) {
	case KNOB_STRING: snprintf(buf, len, "%s", field); break;
	case KNOB_U32: snprintf(buf, len, "%u", *(const uint32_t *)field); break;
	case KNOB_MODE: snprintf(buf, len, "0%o", *(const uint32_t *)field); break;
	case KNOB_SIZE:
		format_units(*(const uint64_t *)field, size_units, size_scale, 5,
			     buf, len);
		break;
	case KNOB_DURATION:
		format_units(*(const uint64_t *)field, time_units, time_scale, 5,
			     buf, len);
		break;
	}
}

size_t kvt_config_knobs(void)
{
	return NKNOBS;
}

void kvt_config_knob(size_t i, struct kvt_config_knob *out)
{
	*out = (struct kvt_config_knob){ knobs[i].section, knobs[i].name,
					 knobs[i].help, knobs[i].live };
}

void kvt_config_source(const struct kvt_config *c, size_t i, char *buf,
		       size_t len)
{
	switch (c->source[i]) {
	case KVT_CONFIG_FROM_FILE:
		snprintf(buf, len, "%s:%u", c->file, c->line[i]);
		break;
	case KVT_CONFIG_FROM_COMMAND_LINE: snprintf(buf, len, "command line"); break;
	default: snprintf(buf, len, "default"); break;
	}
}

int kvt_config_merge(const struct kvt_config *running, struct kvt_config *next,
		     kvt_config_changed_fn changed, void *arg, char *err,
		     size_t len)
{
	for (size_t i = 0; i < NKNOBS; i++) {
		const struct knob *k = &knobs[i];
		char was[KVT_CONFIG_VALUE_MAX], now[KVT_CONFIG_VALUE_MAX];

		kvt_config_value(running, i, was, sizeof(was));
		kvt_config_value(next, i, now, sizeof(now));
		if (strcmp(was, now) == 0)
			continue;
		changed(arg, i, was, now, k->live);
		if (k->live)
			continue;
		memcpy((char *)next + k->offset, (const char *)running + k->offset,
		       k->size);
		next->source[i] = running->source[i];
		next->line[i] = running->line[i];
	}
	return kvt_config_finish(next, err, len);
}

void kvt_config_print(const struct kvt_config *c, FILE *out)
{
	const char *section = "";

	for (size_t i = 0; i < NKNOBS; i++) {
		const struct knob *k = &knobs[i];
		char value[KVT_CONFIG_VALUE_MAX], from[PATH_MAX + 16];

		if (strcmp(section, k->section) != 0) {
			section = k->section;
			fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
		}
		kvt_config_value(c, i, value, sizeof(value));
		kvt_config_source(c, i, from, sizeof(from));
		fprintf(out, "# %s\n# (from %s%s)\n%s = %s\n", k->help, from,
			k->live ? "; changes on reload" : "; needs a restart",
			k->name, value);
	}
}

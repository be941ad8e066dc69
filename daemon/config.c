#include "config.h"

#include <errno.h>
#include <ini.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

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
	  "optional TCP listen address, e.g. 127.0.0.1:7420 (empty: none)", false },
	{ "daemon", "threads", KNOB_U32, FIELD(threads), 1, 256, "2",
	  "completion-queue threads serving RPCs", false },
	{ "daemon", "poll_us", KNOB_U32, FIELD(poll_us), 0, 100000, "100",
	  "after a request, one thread polls for the next this many microseconds before sleeping (0: never): saves a thread wake-up per request under load, costs that much CPU after each", false },
	{ "daemon", "socket_mode", KNOB_MODE, FIELD(socket_mode), 0, 0777, "0660",
	  "permission bits of the unix socket", false },
	{ "daemon", "group", KNOB_STRING, FIELD(group), 0, 0, "",
	  "group owning the socket and shm segments (empty: the daemon's)", false },
	{ "daemon", "log_level", KNOB_STRING, FIELD(log_level), 0, 0, "info",
	  "error, warn, info or debug", true },
	{ "daemon", "idle_timeout", KNOB_DURATION, FIELD(idle_timeout_ms), 0,
	  UINT64_MAX / 1000000, "30s",
	  "a unix-socket connection with no call in flight (no Attach stream) and no call for this long is shut down; clients reconnect on their next call (0: never)", true },
	{ "limits", "max_message_size", KNOB_SIZE, FIELD(max_message_size),
	  4096, 1ull << 31, "16M", "largest request or reply message", false },
	{ "limits", "max_keys_per_request", KNOB_U32, FIELD(max_keys_per_request),
	  1, 1u << 20, "4096", "most keys in one request", true },
	{ "limits", "max_namespaces", KNOB_U32, FIELD(max_namespaces), 1, 65536,
	  "64", "most namespaces the daemon holds", false },
	{ "host", "size", KNOB_SIZE, FIELD(host_size), 4096, 1ull << 50, "1G",
	  "capacity of the host (shared memory) tier", true },
	{ "host", "segment_size", KNOB_SIZE, FIELD(host_segment_size), 4096,
	  1ull << 40, "64M",
	  "size of one shm segment, a multiple of 4K; also the largest page", false },
	{ "host", "shm_mode", KNOB_MODE, FIELD(shm_mode), 0, 0777, "0660",
	  "permission bits of the shm segments", false },
	{ "policy", "eviction", KNOB_STRING, FIELD(eviction), 0, 0, "leaf-first",
	  "leaf-first (children before parents, then priority, then LRU) or lru", false },
	{ "policy", "default_priority", KNOB_U32, FIELD(default_priority), 0, 100,
	  "35", "retention priority of blocks a request gives none (0..100)", true },
	{ "policy", "idle_ttl", KNOB_DURATION, FIELD(idle_ttl_ms), 0,
	  UINT64_MAX / 1000000, "0",
	  "unpinned blocks unused this long expire; a namespace may set its own (0: never)", true },
	{ "policy", "lease_ttl", KNOB_DURATION, FIELD(lease_ttl_ms), 0,
	  UINT64_MAX / 1000000, "5m",
	  "a pin is released after this long even if its worker forgot (0: never)", true },
	{ "policy", "max_wait", KNOB_DURATION, FIELD(max_wait_ms), 0,
	  3600000, "30s", "longest wait an Acquire may ask for", true },
	{ "tenants", "shared_namespaces", KNOB_STRING, FIELD(shared_namespaces),
	  0, 0, "", "comma-separated namespaces whose blocks all tenants share", false },
	{ "tenants", "host_quota", KNOB_STRING, FIELD(host_quota), 0, 0, "0",
	  "host bytes (or % of the tier) each tenant keeps against others, and above which it evicts its own blocks first (0: none)", true },
	{ "tenants", "host_quotas", KNOB_STRING, FIELD(host_quotas), 0, 0, "",
	  "per-tenant overrides: user:size,... (user: a name or uid; size: bytes or %)", true },
	{ "tenants", "max_connections", KNOB_U32, FIELD(max_connections), 0,
	  1u << 24, "64",
	  "unix-socket connections one tenant (uid) may hold; every call on one more fails with RESOURCE_EXHAUSTED, then it is shut down (0: no bound)", true },
	{ "tenants", "max_sessions", KNOB_U32, FIELD(max_sessions), 0, 1u << 24,
	  "64", "sessions (Attach streams) one tenant may hold open (0: no bound)", true },
	{ "tenants", "max_leases", KNOB_U32, FIELD(max_leases), 0, 1u << 24,
	  "4096", "leases (Acquires held or in progress) one tenant may hold (0: no bound)", true },
	{ "nvme", "paths", KNOB_STRING, FIELD(nvme_paths), 0, 0, "",
	  "comma-separated files or block devices of the nvme tier, written O_DIRECT (empty: no nvme tier)", false },
	{ "nvme", "size", KNOB_SIZE, FIELD(nvme_size), 1ull << 20, 1ull << 60,
	  "16G", "bytes used on each path (a block device: at most its size)", false },
	{ "nvme", "region_size", KNOB_SIZE, FIELD(nvme_region_size), 1ull << 16,
	  1ull << 40, "256M",
	  "unit of nvme space reuse, oldest first; holds records of one namespace; at least segment_size + 8K", false },
	{ "nvme", "queue_depth", KNOB_U32, FIELD(nvme_queue_depth), 1, 1024, "32",
	  "nvme reads and writes in flight", false },
	{ "nvme", "retry_interval", KNOB_DURATION, FIELD(nvme_retry_ms), 1,
	  86400000, "30s",
	  "after a write error (disk full, EIO) a path takes no writes this long", false },
	{ "hbm", "size", KNOB_SIZE, FIELD(hbm_size), 0, 1ull << 50, "0",
	  "GPU memory of the hbm tier on each of its GPUs, allocated at start (0: no hbm tier); the host tier is then registered with CUDA, so committed and pinned at start", false },
	{ "hbm", "devices", KNOB_STRING, FIELD(hbm_devices), 0, 0, "all",
	  "comma-separated CUDA ordinals of the hbm tier's GPUs, as the daemon sees them, or all", false },
	{ "metrics", "listen", KNOB_STRING, FIELD(metrics_listen), 0, 0,
	  "127.0.0.1:9400",
	  "HOST:PORT serving Prometheus /metrics and /healthz over HTTP, an operator surface: every tenant's usage (port 0: any free one; empty: off)",
	  false },
	{ "metrics", "auth_file", KNOB_STRING, FIELD(metrics_auth_file), 0, 0, "",
	  "file holding user:password, mode 0600 or stricter: /metrics then asks for HTTP basic auth (empty: none; /healthz never does)", true },
};

#define NKNOBS (sizeof(knobs) / sizeof(knobs[0]))
_Static_assert(NKNOBS <= KVT_CONFIG_KNOBS_MAX, "KVT_CONFIG_KNOBS_MAX is too small");

int kvt_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;
	int shift = 0;

	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
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
		return -1;
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

	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) != 0)
			continue;
		if (v > UINT64_MAX / units[i].ms)
			return -1;
		*ms = v * units[i].ms;
		return 0;
	}
	return -1;
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
			return -1;
		}
		strcpy(field, value);
		if (field == c->log_level && kvt_log_level_parse(value) < 0) {
			snprintf(err, len, "'%s' is not one of error, warn, info, debug",
				 value);
			return -1;
		}
		if (field == c->eviction && strcmp(value, "leaf-first") != 0 &&
		    strcmp(value, "lru") != 0) {
			snprintf(err, len, "'%s' is not leaf-first or lru", value);
			return -1;
		}
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
			return -1;
		}
		if (size < k->min || size > k->max) {
			snprintf(err, len, "%s is outside %llu..%llu %s", value,
				 (unsigned long long)k->min,
				 (unsigned long long)k->max, is_size ? "bytes" : "ms");
			return -1;
		}
		*(uint64_t *)field = size;
		return 0;
	}
	case KNOB_U32:
	case KNOB_MODE:
		errno = 0;
		v = strtoull(value, &end, k->type == KNOB_MODE ? 8 : 10);
		if (errno || end == value || *end != '\0' || *value == '-') {
			snprintf(err, len, "'%s' is not %s", value,
				 k->type == KNOB_MODE ? "an octal mode like 0660" :
							"a whole number");
			return -1;
		}
		if (v < k->min || v > k->max) {
			snprintf(err, len, k->type == KNOB_MODE ?
					 "%s is outside 0..0%llo" :
					 "%s is outside %llu..%llu",
				 value,
				 k->type == KNOB_MODE ? (unsigned long long)k->max :
							(unsigned long long)k->min,
				 (unsigned long long)k->max);
			return -1;
		}
		*(uint32_t *)field = (uint32_t)v;
		return 0;
	}
	return -1;
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
	int line;
	char err[384];
	bool failed;
};

static int on_ini_entry(void *user, const char *section, const char *name,
		       const char *value)
{
	struct load_ctx *ctx = user;
	const struct knob *k = knob_find(section, name);
	char why[256];

	if (ctx->failed)
		return 0; /* keep the first error */
	if (!k) {
		snprintf(ctx->err, sizeof(ctx->err), "[%s] %s: unknown key",
			 section, name);
		ctx->failed = true;
		return 0;
	}
	if (knob_apply(ctx->c, k, value, why, sizeof(why)) < 0) {
		snprintf(ctx->err, sizeof(ctx->err), "[%s] %s: %s", section,
			 name, why);
		ctx->failed = true;
		return 0;
	}
	ctx->c->source[k - knobs] = KVT_CONFIG_FROM_FILE;
	ctx->c->line[k - knobs] = (uint32_t)ctx->line;
	return 1;
}

/* inih passes no line number to the handler: count lines as we read. */
static char *read_line(char *str, int num, void *stream)
{
	struct load_ctx *ctx = stream;
	char *line = fgets(str, num, ctx->f);

	if (line)
		ctx->line++;
	return line;
}

int kvt_config_load(struct kvt_config *c, const char *path, char *err,
		    size_t len)
{
	struct load_ctx ctx = { .c = c, .f = fopen(path, "re") };
	int line;

	if (!ctx.f) {
		snprintf(err, len, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	line = ini_parse_stream(read_line, &ctx, on_ini_entry, &ctx);
	fclose(ctx.f);
	if (snprintf(c->file, sizeof(c->file), "%s", path) >= (int)sizeof(c->file)) {
		snprintf(err, len, "%s: path too long", path);
		return -1;
	}
	if (line == -2) {
		snprintf(err, len, "%s: out of memory", path);
		return -1;
	}
	if (line > 0) {
		snprintf(err, len, "%s:%d: %s", path, line,
			 ctx.failed ? ctx.err : "syntax error (expected [section] or key = value)");
		return -1;
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
		return -1;
	}
	memcpy(section, assignment, (size_t)(dot - assignment));
	section[dot - assignment] = '\0';
	memcpy(name, dot + 1, (size_t)(eq - dot - 1));
	name[eq - dot - 1] = '\0';
	k = knob_find(section, name);
	if (!k) {
		snprintf(err, len, "--set %s: unknown key [%s] %s", assignment,
			 section, name);
		return -1;
	}
	if (knob_apply(c, k, eq + 1, why, sizeof(why)) < 0) {
		snprintf(err, len, "--set [%s] %s: %s", section, name, why);
		return -1;
	}
	c->source[k - knobs] = KVT_CONFIG_FROM_COMMAND_LINE;
	return 0;
}

int kvt_config_build(struct kvt_config *c, const char *file,
		     const char *const *sets, size_t nsets, char *err,
		     size_t len)
{
	kvt_config_defaults(c);
	if (file && kvt_config_load(c, file, err, len) < 0)
		return -1;
	for (size_t i = 0; i < nsets; i++)
		if (kvt_config_set(c, sets[i], err, len) < 0)
			return -1;
	return kvt_config_finish(c, err, len);
}

/* "25%" of the host tier, or a size. 0, or -1. */
static int parse_quota(const struct kvt_config *c, const char *s,
		       uint64_t *bytes)
{
	size_t n = strlen(s);
	unsigned long pct;
	char *end;

	if (n > 1 && s[n - 1] == '%') {
		errno = 0;
		pct = strtoul(s, &end, 10);
		if (errno || end != s + n - 1 || pct > 100 || *s == '-')
			return -1;
		*bytes = c->host_size / 100 * pct;
		return 0;
	}
	return kvt_parse_size(s, bytes);
}

int kvt_parse_user(const char *s, uint32_t *uid)
{
	struct passwd pw, *res = NULL;
	char buf[1024], *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s && *end == '\0' && !errno && v < UINT32_MAX) {
		*uid = (uint32_t)v;
		return 0;
	}
	if (getpwnam_r(s, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return -1;
	*uid = res->pw_uid;
	return 0;
}

static int finish_quotas(struct kvt_config *c, char *err, size_t len)
{
	const char *p = c->host_quotas;

	if (parse_quota(c, c->host_quota, &c->default_host_quota) < 0) {
		snprintf(err, len, "[tenants] host_quota: '%s' is not a size or a percentage",
			 c->host_quota);
		return -1;
	}
	c->nquotas = 0;
	while (*(p += strspn(p, " ,"))) {
		char item[128], *colon;
		size_t n = strcspn(p, " ,");

		if (n >= sizeof(item) || c->nquotas == KVT_CONFIG_QUOTAS_MAX) {
			snprintf(err, len, "[tenants] host_quotas: entry too long, or more than %d entries",
				 KVT_CONFIG_QUOTAS_MAX);
			return -1;
		}
		memcpy(item, p, n);
		item[n] = '\0';
		p += n;
		colon = strchr(item, ':');
		if (!colon) {
			snprintf(err, len, "[tenants] host_quotas: '%s' is not user:size",
				 item);
			return -1;
		}
		*colon = '\0';
		if (kvt_parse_user(item, &c->quotas[c->nquotas].uid) < 0) {
			snprintf(err, len, "[tenants] host_quotas: no user '%s'", item);
			return -1;
		}
		if (parse_quota(c, colon + 1, &c->quotas[c->nquotas].bytes) < 0) {
			snprintf(err, len, "[tenants] host_quotas: '%s' is not a size or a percentage",
				 colon + 1);
			return -1;
		}
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
	while (*s) {
		char *end;
		long v;

		s += strspn(s, " ,");
		if (!*s)
			break;
		errno = 0;
		v = strtol(s, &end, 10);
		if (end == s || errno || v < 0 || v > 1023 || (*end && !strchr(" ,", *end)) ||
		    c->hbm_ndevices == KVT_CONFIG_HBM_DEVICES_MAX) {
			snprintf(err, len, "[hbm] devices: '%s' is not all or a list of at most %d CUDA ordinals",
				 c->hbm_devices, KVT_CONFIG_HBM_DEVICES_MAX);
			return -1;
		}
		c->hbm_device[c->hbm_ndevices++] = (int)v;
		s = end;
	}
	if (c->hbm_ndevices == 0) {
		snprintf(err, len, "[hbm] devices: empty (write all, or ordinals like 0,1)");
		return -1;
	}
	return 0;
}

/* Splits [nvme] paths and checks the sizes against the host segment. */
static int finish_nvme(struct kvt_config *c, char *err, size_t len)
{
	const char *s = c->nvme_paths;

	c->nvme_npaths = 0;
	while (*s) {
		size_t n;

		s += strspn(s, " ,");
		n = strcspn(s, " ,");
		if (n == 0)
			break;
		if (c->nvme_npaths == KVT_CONFIG_NVME_PATHS_MAX || s[0] != '/' ||
		    n >= sizeof(c->nvme_path[0])) {
			snprintf(err, len, "[nvme] paths: at most %d absolute paths under %zu bytes",
				 KVT_CONFIG_NVME_PATHS_MAX, sizeof(c->nvme_path[0]));
			return -1;
		}
		memcpy(c->nvme_path[c->nvme_npaths], s, n);
		c->nvme_path[c->nvme_npaths++][n] = '\0';
		s += n;
	}
	if (c->nvme_region_size % 4096 ||
	    c->nvme_region_size < c->host_segment_size + 3 * 4096) {
		snprintf(err, len, "[nvme] region_size: %llu must be a multiple of 4096 and at least segment_size + 12K (%llu)",
			 (unsigned long long)c->nvme_region_size,
			 (unsigned long long)(c->host_segment_size + 3 * 4096));
		return -1;
	}
	if (c->nvme_npaths && c->nvme_size < c->nvme_region_size + 4096) {
		snprintf(err, len, "[nvme] size: %llu holds no region of %llu bytes",
			 (unsigned long long)c->nvme_size,
			 (unsigned long long)c->nvme_region_size);
		return -1;
	}
	return 0;
}

int kvt_config_finish(struct kvt_config *c, char *err, size_t len)
{
	if (c->run_dir[0] != '/') {
		snprintf(err, len, "[daemon] run_dir: '%s' is not an absolute path",
			 c->run_dir);
		return -1;
	}
	if (c->socket[0] == '\0' &&
	    snprintf(c->socket, sizeof(c->socket), "%s/kvtierd.sock",
		     c->run_dir) >= 108) {
		snprintf(err, len, "[daemon] run_dir: '%s' is too long for a unix socket path",
			 c->run_dir);
		return -1;
	}
	if (strlen(c->socket) >= 108 || c->socket[0] != '/') {
		snprintf(err, len, "[daemon] socket: '%s' must be an absolute path under 108 bytes",
			 c->socket);
		return -1;
	}
	if (c->host_segment_size % 4096) {
		snprintf(err, len, "[host] segment_size: %llu is not a multiple of 4096",
			 (unsigned long long)c->host_segment_size);
		return -1;
	}
	if (c->host_size < c->host_segment_size) {
		snprintf(err, len, "[host] size: %llu is smaller than segment_size %llu",
			 (unsigned long long)c->host_size,
			 (unsigned long long)c->host_segment_size);
		return -1;
	}
	if (finish_hbm(c, err, len) < 0 || finish_nvme(c, err, len) < 0)
		return -1;
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

/*
 * kvtierd configuration: one table of knobs (section, name, type, bounds,
 * default, help) drives the INI file parser, the --set command-line
 * overrides and --print-config. Values are validated where they are read;
 * an error names the file, line, section and key.
 * Called from main() before any thread starts.
 */
#ifndef KVT_CONFIG_H
#define KVT_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define KVT_CONFIG_QUOTAS_MAX 64
#define KVT_CONFIG_KNOBS_MAX 64
#define KVT_CONFIG_VALUE_MAX 4096 /* a formatted value, with its NUL */

enum kvt_config_from {
	KVT_CONFIG_FROM_DEFAULT,
	KVT_CONFIG_FROM_FILE,
	KVT_CONFIG_FROM_COMMAND_LINE,
};
#define KVT_CONFIG_NVME_PATHS_MAX 16 /* KVT_NVME_PATHS_MAX */
#define KVT_CONFIG_HBM_DEVICES_MAX 16 /* KVT_HBM_DEVICES_MAX */
#define KVT_CONFIG_REMOTE_ENDPOINTS_MAX 16 /* KVT_REDIS_ENDPOINTS_MAX */
/* [remote] write = none: no priority reaches it */
#define KVT_CONFIG_WRITE_NONE 101

struct kvt_config {
	/* [daemon] */
	char run_dir[PATH_MAX];
	char socket[PATH_MAX]; /* default: <run_dir>/kvtierd.sock */
	char tcp[128];         /* empty: no TCP listener */
	uint32_t threads, poll_us;
	uint32_t socket_mode;
	char group[64]; /* group of the socket and the run directory */
	char log_level[16];
	char log_format[8];
	uint64_t idle_timeout_ms;
	/* [limits] */
	uint64_t max_message_size;
	uint32_t max_keys_per_request;
	uint32_t max_namespaces;
	/* [host] */
	uint64_t host_size;
	uint64_t host_segment_size;
	char huge_pages[8]; /* auto, 2M, 1G or off */
	char host_lock[8];  /* true or false */
	/* [policy] */
	char eviction[16];
	uint32_t default_priority;
	uint64_t idle_ttl_ms, lease_ttl_ms, max_wait_ms;
	/* [tenants] */
	char shared_namespaces[1024];
	char host_quota[32];
	char host_quotas[1024];
	uint32_t max_connections, max_sessions, max_lanes, max_leases,
		 max_tenant_namespaces;
	/* [nvme] */
	char nvme_paths[4096];
	uint64_t nvme_size, nvme_region_size, nvme_retry_ms;
	uint32_t nvme_queue_depth;
	/* [hbm] */
	uint64_t hbm_size;
	char hbm_devices[256];
	/* [remote] */
	char remote_endpoints[2048];
	char remote_username[128];
	char remote_password_file[PATH_MAX];
	uint64_t remote_timeout_ms, remote_ttl_ms, remote_lookup_budget_ms;
	uint32_t remote_queue_depth;
	char remote_write[32]; /* all, none or priority>=N */
	/* [metrics] */
	char metrics_listen[128];
	char metrics_auth_file[PATH_MAX];

	/* Where each knob's value came from; line: in file. */
	uint8_t source[KVT_CONFIG_KNOBS_MAX];
	uint32_t line[KVT_CONFIG_KNOBS_MAX];
	char file[PATH_MAX]; /* the file loaded, or "" */

	/* Derived by kvt_config_finish. */
	uint64_t default_host_quota; /* bytes; 0: none */
	struct kvt_config_quota {
		uint32_t uid;
		uint64_t bytes;
	} quotas[KVT_CONFIG_QUOTAS_MAX];
	uint32_t nquotas;
	char nvme_path[KVT_CONFIG_NVME_PATHS_MAX][256];
	uint32_t nvme_npaths;
	int hbm_device[KVT_CONFIG_HBM_DEVICES_MAX]; /* hbm_ndevices 0: all */
	uint32_t hbm_ndevices;
	gid_t gid; /* of group; (gid_t)-1: none given */
	char remote_endpoint[KVT_CONFIG_REMOTE_ENDPOINTS_MAX][128];
	uint32_t remote_nendpoints;
	/* Committed blocks of at least this priority are written to the
	 * store; KVT_CONFIG_WRITE_NONE: none. */
	uint32_t remote_min_priority;
};

/* Fills in every default. The run directory depends on who runs the daemon. */
void kvt_config_defaults(struct kvt_config *c);

/* Reads an INI file over c. 0, or -errno with "FILE:LINE: [sec] key: why" in
 * err. Refused: a key twice, an unknown key or section, a section header
 * without ']' or with text after it, a NUL byte, a line longer than inih
 * reads; leading blanks are dropped (no multi-line values). */
int kvt_config_load(struct kvt_config *c, const char *path, char *err,
		    size_t len);

/* Applies "section.key=value". 0, or -errno with the reason in err. */
int kvt_config_set(struct kvt_config *c, const char *assignment, char *err,
		   size_t len);

/* Derives what depends on other knobs (quotas, paths, devices, gid) and
 * checks them together. 0, or -errno with "WHERE: [sec] key: why" in err,
 * WHERE being the knob's "FILE:LINE" or "command line" (nothing for a
 * default); of two knobs that do not fit together, the one set is named. */
int kvt_config_finish(struct kvt_config *c, char *err, size_t len);

/* Defaults, then the file (NULL: none), then the --set assignments (the
 * command line wins), then finish: what the daemon starts and reloads with.
 * 0, or -errno with the reason in err. */
int kvt_config_build(struct kvt_config *c, const char *file,
		     const char *const *sets, size_t nsets, char *err,
		     size_t len);

/* Writes the effective configuration as an INI file, with each knob's help
 * and source. */
void kvt_config_print(const struct kvt_config *c, FILE *out);

/* The knob table, for kvtierctl config and the docs. */
struct kvt_config_knob {
	const char *section, *name, *help;
	bool live; /* a reload changes it in the running daemon */
};
size_t kvt_config_knobs(void);
void kvt_config_knob(size_t i, struct kvt_config_knob *k);
/* Knob i's value as a file would write it: "1G", "30s", "0660". */
void kvt_config_value(const struct kvt_config *c, size_t i, char *buf,
		      size_t len);
/* "default", "command line" or "FILE:LINE". */
void kvt_config_source(const struct kvt_config *c, size_t i, char *buf,
		       size_t len);

/*
 * For a reload: calls changed() for every knob whose value differs between
 * the running config and next; knobs that cannot change live get their
 * running value back in next. Then finishes next. 0, or -errno with err.
 */
typedef void (*kvt_config_changed_fn)(void *arg, size_t knob, const char *was,
				      const char *now, bool live);
int kvt_config_merge(const struct kvt_config *running, struct kvt_config *next,
		     kvt_config_changed_fn changed, void *arg, char *err,
		     size_t len);

/* Parses "512M", "64G", "4096": bytes. 0, or -EINVAL. */
int kvt_parse_size(const char *s, uint64_t *out);
/* host.huge_pages as an enum kvt_huge_pages (tiers/host.h), or -EINVAL. */
int kvt_huge_pages_parse(const char *s);

/* Parses "250ms", "30s", "5m", "2h", "1d", "0" (a bare number: seconds)
 * into milliseconds. 0, or -EINVAL. */
int kvt_parse_duration(const char *s, uint64_t *ms);

/* Reads a secret from a file that only its owner may read (what names
 * the knob in errors, e.g. "[remote] password_file"): its first line, at
 * most len - 1 bytes, into out. 0, or -errno with the reason in err; the
 * caller wipes out after use (explicit_bzero). */
int kvt_config_read_secret(const char *what, const char *path, char *out,
			   size_t len, char *err, size_t errlen);

/* A user name or decimal uid. 0, or -EINVAL. */
int kvt_parse_user(const char *s, uint32_t *uid);

/* Whether name is listed in the comma-separated list. */
bool kvt_config_listed(const char *list, const char *name);

#endif

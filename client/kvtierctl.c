/*
 * kvtierctl: look at and act on a running kvtierd.
 *   status            identity, health, sessions, tier use
 *   stats [--json]    every counter and gauge
 *   top               a refreshing view of hit rates, tier use and RPC latency
 *   config            the effective configuration, each knob's source
 *   reload            SIGHUP, and wait until the reload is applied
 *   drop              drop a namespace's or a tenant's blocks
 *   drop-namespace    delete a namespace
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvtier/kvtier.h>

struct stat_list {
	char (*names)[256];
	char (*values)[256];
	size_t n, cap;
};

static void collect(void *arg, const char *name, const char *value)
{
	struct stat_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		void *nn = realloc(l->names, cap * sizeof(*l->names));
		void *nv = nn ? realloc(l->values, cap * sizeof(*l->values)) : NULL;

		if (!nn || !nv) {
			fprintf(stderr, "kvtierctl: out of memory\n");
			exit(1);
		}
		l->names = nn;
		l->values = nv;
		l->cap = cap;
	}
	snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
	snprintf(l->values[l->n], sizeof(l->values[0]), "%s", value);
	l->n++;
}

static const char *find(const struct stat_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->names[i], name) == 0)
			return l->values[i];
	return "?";
}

static double num(const struct stat_list *l, const char *name)
{
	return strtod(find(l, name), NULL);
}

/*
 * A stat as `stats` shows it: request durations ("...duration_seconds.p50_seconds")
 * in milliseconds, as top shows them ("...duration_ms.p50"); --json keeps
 * every name and value as the daemon gives them.
 */
static void shown(const char *name, const char *value, char *n_out, size_t n_len,
		  char *v_out, size_t v_len)
{
	static const char from[] = "duration_seconds.";
	const char *d = strstr(name, from), *rest = d ? d + sizeof(from) - 1 : NULL;
	size_t rlen = rest ? strlen(rest) : 0;
	bool secs = rlen > 8 && strcmp(rest + rlen - 8, "_seconds") == 0;

	if (!d) {
		snprintf(n_out, n_len, "%s", name);
		snprintf(v_out, v_len, "%s", value);
		return;
	}
	snprintf(n_out, n_len, "%.*sduration_ms.%.*s", (int)(d - name), name,
		 (int)(secs ? rlen - 8 : rlen), rest);
	if (secs)
		snprintf(v_out, v_len, "%.3f", strtod(value, NULL) * 1e3);
	else
		snprintf(v_out, v_len, "%s", value);
}

static void print_stats(const struct stat_list *l)
{
	char name[300], value[300];
	size_t width = 0;

	for (size_t i = 0; i < l->n; i++) {
		shown(l->names[i], l->values[i], name, sizeof(name), value, sizeof(value));
		if (strlen(name) > width)
			width = strlen(name);
	}
	for (size_t i = 0; i < l->n; i++) {
		shown(l->names[i], l->values[i], name, sizeof(name), value, sizeof(value));
		printf("%-*s  %s\n", (int)width, name, value);
	}
}

/* stats --json: libkvtier's JSON, typed and nested. */
static int print_json(kvt_client *c)
{
	char *json;
	int rc = kvt_stats_json(c, &json);

	if (rc == 0) {
		printf("%s\n", json);
		free(json);
	}
	return rc;
}

static void print_status(const struct stat_list *l)
{
	unsigned long long cap = strtoull(find(l, "tiers.host.capacity_bytes"), NULL, 10);
	unsigned long long used = strtoull(find(l, "tiers.host.used_bytes"), NULL, 10);

	printf("kvtierd %s (pid %s), up %s s: SERVING\n", find(l, "version"),
	       find(l, "pid"), find(l, "uptime_seconds"));
	printf("listening    %s\n", find(l, "listen"));
	printf("metrics      %s\n", find(l, "metrics_address")[0] ?
	       find(l, "metrics_address") : "off");
	printf("allocator    %s\n", find(l, "allocator"));
	printf("cuda         %s\n", find(l, "cuda"));
	printf("sessions     %s active (%s with a fast lane), %s leases, %s pinned blocks\n",
	       find(l, "sessions_active"), find(l, "fast_lanes"),
	       find(l, "leases_active"), find(l, "pinned_blocks"));
	printf("blocks       %s ready, %s pending\n", find(l, "ready_blocks"),
	       find(l, "pending_blocks"));
	printf("host tier    %.1f / %.1f MiB used (%.1f%%), %s of %s segments carved",
	       used / 1048576.0, cap / 1048576.0, cap ? 100.0 * used / cap : 0.0,
	       find(l, "host_segments_used"), find(l, "host_segments"));
	if (strcmp(find(l, "host_segments_retiring"), "0") != 0)
		printf(", %s retiring (shrinking)", find(l, "host_segments_retiring"));
	printf("\n");
	if (strcmp(find(l, "tiers.hbm.up"), "true") == 0) {
		cap = strtoull(find(l, "tiers.hbm.capacity_bytes"), NULL, 10);
		used = strtoull(find(l, "tiers.hbm.used_bytes"), NULL, 10);
		printf("hbm tier     %.1f / %.1f MiB used on %s GPUs, %s blocks, %s hits, %s copies (%s failed)\n",
		       used / 1048576.0, cap / 1048576.0, find(l, "hbm_devices"),
		       find(l, "hbm_blocks"), find(l, "hbm_hits_total"),
		       find(l, "hbm_loads_total"), find(l, "hbm_load_failures_total"));
	}
	if (strcmp(find(l, "tiers.nvme.up"), "true") == 0) {
		cap = strtoull(find(l, "tiers.nvme.capacity_bytes"), NULL, 10);
		used = strtoull(find(l, "tiers.nvme.used_bytes"), NULL, 10);
		printf("nvme tier    %.1f / %.1f MiB used, %s blocks, %s of %s paths failing, %s bad checksums\n",
		       used / 1048576.0, cap / 1048576.0, find(l, "nvme_blocks"),
		       find(l, "nvme_paths_failed"), find(l, "nvme_paths"),
		       find(l, "nvme_bad_checksum_total"));
	} else if (strcmp(find(l, "nvme_paths"), "0") != 0) {
		printf("nvme tier    UNAVAILABLE (%s paths configured; see the log)\n",
		       find(l, "nvme_paths"));
	}
	if (strcmp(find(l, "tiers.remote.up"), "true") == 0)
		printf("remote tier  %s, %s %s known; %s writes (%s skipped), %s blocks read in, %s lookup hits, %s bad records, %s timeouts, %s connection errors\n",
		       strcmp(find(l, "remote_degraded"), "true") == 0 ? "DEGRADED" : "ok",
		       find(l, "remote_nodes"),
		       strcmp(find(l, "remote_cluster"), "true") == 0 ? "cluster masters" : "server",
		       find(l, "remote_writes_total"), find(l, "remote_writes_skipped_total"),
		       find(l, "remote_promotions_total"),
		       find(l, "lookup_remote_hit_blocks_total"),
		       find(l, "remote_bad_records_total"),
		       find(l, "remote_errors_total.timeout"),
		       find(l, "remote_errors_total.conn"));
}

static void print_knob(void *arg, const struct kvt_knob *k)
{
	const char **section = arg;

	if (!*section || strcmp(*section, k->section) != 0) {
		printf("%s[%s]\n", *section ? "\n" : "", k->section);
		*section = k->section;
	}
	printf("%-22s = %-16s # %s%s%s%s\n", k->name, k->value, k->source,
	       k->live ? "" : ", restart to change",
	       k->pending[0] ? "; file says " : "", k->pending);
}

static int cmd_config(kvt_client *c)
{
	static struct kvt_config_info info;
	const char *section = NULL;
	int rc = kvt_get_config(c, print_knob, &section, &info);

	if (rc < 0)
		return rc;
	printf("\n# file: %s; %llu reloads, %llu failed", info.file[0] ? info.file : "(none)",
	       (unsigned long long)info.reloads_total,
	       (unsigned long long)info.reload_failures_total);
	if (!info.last_reload_ok)
		printf("; last reload FAILED: %s", info.last_reload_error);
	printf("\n");
	return 0;
}

static int read_stats(kvt_client *c, struct stat_list *l)
{
	l->n = 0;
	return kvt_stats(c, collect, l);
}

/* Names of the namespaces in l (from "namespaces.NAME.id"), copied into
 * names. */
static size_t namespaces(const struct stat_list *l, char (*names)[256], size_t max)
{
	static const char id[] = ".id";
	size_t n = 0;

	for (size_t i = 0; i < l->n && n < max; i++) {
		size_t len = strlen(l->names[i]);

		if (strncmp(l->names[i], "namespaces.", 11) == 0 &&
		    len > 11 + strlen(id) &&
		    strcmp(l->names[i] + len - strlen(id), id) == 0)
			snprintf(names[n++], sizeof(names[0]), "%.*s",
				 (int)(len - 11 - strlen(id)), l->names[i] + 11);
	}
	return n;
}

static double ns_num(const struct stat_list *l, const char *ns, const char *key)
{
	char name[300];

	snprintf(name, sizeof(name), "namespaces.%.200s.%.64s", ns, key);
	return num(l, name);
}

/* "tiers.TIER.KEY" */
static const char *tier_find(const struct stat_list *l, const char *tier,
			     const char *key)
{
	char name[128];

	snprintf(name, sizeof(name), "tiers.%.16s.%.64s", tier, key);
	return find(l, name);
}

static double tier_num(const struct stat_list *l, const char *tier,
		       const char *key)
{
	return strtod(tier_find(l, tier, key), NULL);
}

/* top fits 80 columns: every line of it is at most 79 characters. */
#define BAR 16

static void bar(double used, double cap)
{
	int fill = cap > 0 ? (int)(BAR * used / cap + 0.5) : 0;

	printf("[");
	for (int i = 0; i < BAR; i++)
		putchar(i < fill ? '#' : '.');
	printf("] %5.1f%% of %9.1f MiB", cap > 0 ? 100 * used / cap : 0.0, cap / 1048576);
}

/* One screen of top: now against the sample taken dt seconds before. */
static void top_screen(const struct stat_list *now, const struct stat_list *was,
		       double dt)
{
	static char ns[64][256];
	size_t nns = namespaces(now, ns, 64);
	static const char *methods[] = { "Lookup", "Reserve", "Commit", "Acquire",
					 "Release", "Put", "Get" };
	static const char *tiers[] = { "host", "hbm", "nvme" };
#define RATE(name) ((num(now, name) - num(was, name)) / dt)
#define TIER_RATE(tier, key) \
	((tier_num(now, tier, key) - tier_num(was, tier, key)) / dt)

	printf("kvtierd %s, pid %s, up %s s\n", find(now, "version"), find(now, "pid"),
	       find(now, "uptime_seconds"));
	printf("sessions %s, leases %s, pinned blocks %s\n\n", find(now, "sessions_active"),
	       find(now, "leases_active"), find(now, "pinned_blocks"));
	printf("TIER  USE                                        IN MB/s  OUT MB/s  EVICT/s\n");
	for (size_t i = 0; i < sizeof(tiers) / sizeof(tiers[0]); i++) {
		if (strcmp(tier_find(now, tiers[i], "up"), "true") != 0)
			continue;
		printf("%-4s  ", tiers[i]);
		bar(tier_num(now, tiers[i], "used_bytes"),
		    tier_num(now, tiers[i], "capacity_bytes"));
		printf("  %7.1f  %8.1f  %7.1f\n",
		       TIER_RATE(tiers[i], "in_bytes_total") / 1e6,
		       TIER_RATE(tiers[i], "out_bytes_total") / 1e6,
		       TIER_RATE(tiers[i], "evictions_total"));
	}
	/* KEYS/s: keys looked up (a Lookup of 64 keys counts 64). A rate
	 * with nothing under it shows "-", not 0.0. */
	printf("\n%-28s %8s %8s %9s %9s %9s\n", "NAMESPACE", "HIT% now", "HIT% all",
	       "NVME% all", "KEYS/s", "READY");
	for (size_t i = 0; i < nns; i++) {
		double keys = ns_num(now, ns[i], "lookup_blocks_total");
		double hits = ns_num(now, ns[i], "lookup_hit_blocks_total");
		double dkeys = keys - ns_num(was, ns[i], "lookup_blocks_total");
		double dhits = hits - ns_num(was, ns[i], "lookup_hit_blocks_total");
		char now_pct[16] = "-", all_pct[16] = "-", nvme_pct[16] = "-";

		if (dkeys > 0)
			snprintf(now_pct, sizeof(now_pct), "%.1f", 100 * dhits / dkeys);
		if (keys > 0) {
			snprintf(all_pct, sizeof(all_pct), "%.1f", 100 * hits / keys);
			snprintf(nvme_pct, sizeof(nvme_pct), "%.1f", 100 *
				 ns_num(now, ns[i], "lookup_nvme_hit_blocks_total") / keys);
		}
		printf("%-28.28s %8s %8s %9s %9.0f %9.0f\n", ns[i], now_pct, all_pct,
		       nvme_pct, dkeys / dt, ns_num(now, ns[i], "ready_blocks"));
	}
	printf("\n%-10s %9s %11s %11s %8s\n", "RPC", "CALLS/s", "p50 ms", "p99 ms", "ERRORS");
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		char calls[64], p50[64], p99[64], errors[64];

		snprintf(calls, sizeof(calls), "rpcs.%s.calls_total", methods[i]);
		snprintf(p50, sizeof(p50), "rpcs.%s.duration_seconds.p50_seconds", methods[i]);
		snprintf(p99, sizeof(p99), "rpcs.%s.duration_seconds.p99_seconds", methods[i]);
		snprintf(errors, sizeof(errors), "rpcs.%s.errors_total", methods[i]);
		printf("%-10s %9.0f %11.3f %11.3f %8s\n", methods[i], RATE(calls),
		       num(now, p50) * 1e3, num(now, p99) * 1e3, find(now, errors));
	}
#undef RATE
#undef TIER_RATE
}

static int cmd_top(kvt_client *c, double interval, long count)
{
	struct stat_list a = { 0 }, b = { 0 }, *now = &a, *was = &b;
	bool tty = isatty(STDOUT_FILENO);
	int rc = read_stats(c, was);

	for (long i = 0; rc == 0 && (count <= 0 || i < count); i++) {
		struct timespec ts = { (time_t)interval,
				       (long)((interval - (time_t)interval) * 1e9) };
		struct stat_list *t;

		nanosleep(&ts, NULL);
		if ((rc = read_stats(c, now)) < 0)
			break;
		if (tty)
			printf("\033[H\033[2J");
		else if (i)
			printf("\n");
		top_screen(now, was, interval);
		fflush(stdout);
		t = was;
		was = now;
		now = t;
	}
	free(a.names);
	free(a.values);
	free(b.names);
	free(b.values);
	return rc;
}

/*
 * The id of namespace name in l, of tenant (its owner's name, or "shared")
 * when given: 0, or 1 after saying why there is none, or several and not
 * first_ok (an admin sees every tenant's).
 */
static int namespace_id(const struct stat_list *l, const char *name,
			const char *tenant, bool first_ok, uint32_t *id)
{
	char id_key[300], tenant_key[300];
	size_t found = 0;

	snprintf(id_key, sizeof(id_key), "namespaces.%s.id", name);
	snprintf(tenant_key, sizeof(tenant_key), "namespaces.%s.tenant", name);
	for (size_t i = 0; i < l->n; i++) {
		const char *owner = "";

		if (strcmp(l->names[i], id_key) != 0)
			continue;
		/* The element's tenant follows its id. */
		for (size_t j = i + 1; j < l->n && strcmp(l->names[j], id_key); j++)
			if (strcmp(l->names[j], tenant_key) == 0) {
				owner = l->values[j];
				break;
			}
		if (tenant && strcmp(owner, tenant) != 0)
			continue;
		if (found++ == 0)
			*id = (uint32_t)strtoul(l->values[i], NULL, 10);
	}
	if (found == 1 || (found && first_ok))
		return 0;
	if (found)
		fprintf(stderr, "kvtierctl: %zu namespaces are named '%s': pick one with --tenant USER (\"shared\" for a shared one)\n",
			found, name);
	else
		fprintf(stderr, "kvtierctl: no namespace '%s'%s%s (kvtierctl stats lists them)\n",
			name, tenant ? " of tenant " : "", tenant ? tenant : "");
	return 1;
}

static int cmd_drop(kvt_client *c, const char *ns_name, const char *tenant)
{
	struct stat_list l = { 0 };
	struct kvt_namespace ns = { 0 };
	size_t dropped = 0;
	int rc;

	if (tenant) {
		rc = kvt_drop_tenant(c, tenant[0] ? tenant : NULL, &dropped);
	} else {
		if ((rc = read_stats(c, &l)) == 0 &&
		    (rc = namespace_id(&l, ns_name, NULL, true, &ns.id)) == 0)
			rc = kvt_drop(c, &ns, NULL, 0, &dropped);
		free(l.names);
		free(l.values);
	}
	if (rc == 0)
		printf("dropped %zu blocks\n", dropped);
	return rc;
}

/* Deletes the namespace itself (DropNamespace); tenant picks among
 * same-named ones an admin sees. */
static int cmd_drop_namespace(kvt_client *c, const char *ns_name,
			      const char *tenant)
{
	struct stat_list l = { 0 };
	size_t dropped = 0, pending = 0;
	uint32_t id = 0;
	int rc;

	if ((rc = read_stats(c, &l)) == 0 &&
	    (rc = namespace_id(&l, ns_name, tenant, false, &id)) == 0 &&
	    (rc = kvt_drop_namespace(c, id, &dropped, &pending)) == 0)
		printf("namespace %s deleted: %zu blocks dropped, %zu reservations left to their producers\n",
		       ns_name, dropped, pending);
	free(l.names);
	free(l.values);
	return rc;
}

/*
 * reload: SIGHUP to kvtierd, then waits (up to timeout seconds) until it
 * has read its configuration again, and says whether the new one is in
 * force. systemd's ExecReload runs it so that `systemctl reload` returns
 * once the reload is applied, and fails when it failed. pid 0: the one
 * the daemon reports (its own, in its pid namespace).
 */
static int cmd_reload(kvt_client *c, long pid, double timeout)
{
	struct stat_list l = { 0 };
	double before, deadline;
	struct timespec ts;
	int rc;

	if ((rc = read_stats(c, &l)) < 0)
		goto out;
	before = num(&l, "config_reloads_total");
	if (pid <= 0)
		pid = (long)num(&l, "pid");
	if (pid <= 0 || kill((pid_t)pid, SIGHUP) < 0) {
		fprintf(stderr, "kvtierctl: reload: cannot signal kvtierd (pid %ld): %s "
			"(run as root or the daemon's user; --pid where its pid differs)\n",
			pid, strerror(errno));
		rc = 1;
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline = (double)ts.tv_sec + ts.tv_nsec / 1e9 + timeout;
	for (;;) {
		if ((rc = read_stats(c, &l)) < 0)
			goto out;
		if (num(&l, "config_reloads_total") > before)
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if ((double)ts.tv_sec + ts.tv_nsec / 1e9 > deadline) {
			fprintf(stderr, "kvtierctl: reload: kvtierd (pid %ld) has not reloaded "
				"after %.0f s\n", pid, timeout);
			rc = 1;
			goto out;
		}
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
	}
	if (strcmp(find(&l, "config_last_reload_ok"), "true") == 0 ||
	    num(&l, "config_last_reload_ok") == 1) {
		printf("reload applied (kvtierctl config shows the knobs waiting for a restart)\n");
	} else {
		fprintf(stderr, "kvtierctl: reload failed: the running configuration is unchanged "
			"(kvtierd's log says why)\n");
		rc = 1;
	}
out:
	free(l.names);
	free(l.values);
	return rc;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: kvtierctl [-a ADDR] COMMAND | --version | --help\n"
		     "  status                          identity, health, sessions, tier use\n"
		     "  stats [--json]                  every counter and gauge\n"
		     "  top [-i SECONDS] [-n COUNT]     refreshing view (default every 2 s, until ^C)\n"
		     "  config                          effective configuration and where each value came from\n"
		     "  reload [--pid PID] [--timeout S] SIGHUP kvtierd, wait until the reload is applied\n"
		     "                                  (exit 1 if it failed or took longer than S, 30)\n"
		     "  drop --namespace NAME           drop a namespace's blocks (yours; every tenant's as root)\n"
		     "  drop --tenant USER              drop a tenant's blocks in every namespace\n"
		     "  drop-namespace --namespace NAME [--tenant USER]\n"
		     "                                  delete a namespace (yours; any as root: --tenant\n"
		     "                                  picks among same-named ones, \"shared\" a shared one)\n"
		     "ADDR defaults to $KVTIER_ADDR, else " KVT_DEFAULT_ADDR "\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },
		{ "interval", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "namespace", required_argument, NULL, 'N' },
		{ "tenant", required_argument, NULL, 'T' },
		{ "pid", required_argument, NULL, 'P' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	static const char *const commands[] = { "status", "stats", "top", "config",
						"reload", "drop", "drop-namespace" };
	const char *addr = NULL, *cmd, *ns_name = NULL, *tenant = NULL;
	struct stat_list l = { 0 };
	double interval = 2, timeout = 30;
	long count = 0, pid = 0;
	kvt_client *c;
	int json = 0, opt, rc, known = 0;

	while ((opt = getopt_long(argc, argv, "a:ji:n:N:T:P:t:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'a': addr = optarg; break;
		case 'j': json = 1; break;
		case 'i': interval = strtod(optarg, NULL); break;
		case 'n': count = strtol(optarg, NULL, 10); break;
		case 'N': ns_name = optarg; break;
		case 'T': tenant = optarg; break;
		case 'P': pid = strtol(optarg, NULL, 10); break;
		case 't': timeout = strtod(optarg, NULL); break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("kvtierctl %s (libkvtier %s)\n", KVT_VERSION_STRING, kvt_version());
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		known |= strcmp(cmd, commands[i]) == 0;
	if (!known) {
		fprintf(stderr, "kvtierctl: unknown command '%s'\n", cmd);
		usage(stderr);
		return 2;
	}
	if (strcmp(cmd, "drop") == 0 && !ns_name == !tenant) {
		fprintf(stderr, "kvtierctl: drop needs one of --namespace NAME or --tenant USER\n");
		return 2;
	}
	if (strcmp(cmd, "drop-namespace") == 0 && !ns_name) {
		fprintf(stderr, "kvtierctl: drop-namespace needs --namespace NAME\n");
		return 2;
	}
	if (strcmp(cmd, "reload") == 0 && !(timeout > 0 && timeout <= 3600)) {
		fprintf(stderr, "kvtierctl: --timeout must be above 0 and at most 3600 seconds\n");
		return 2;
	}
	if (strcmp(cmd, "top") == 0 && !(interval >= 0.05 && interval <= 3600)) {
		fprintf(stderr, "kvtierctl: --interval must be 0.05 to 3600 seconds\n");
		return 2;
	}
	if (!addr)
		addr = getenv("KVTIER_ADDR");
	if (!addr || !*addr)
		addr = KVT_DEFAULT_ADDR;
	if (kvt_connect(addr, &c) < 0) {
		fprintf(stderr, "kvtierctl: out of memory\n");
		return 1;
	}
	kvt_set_timeout_ms(c, 3000);
	rc = kvt_health(c);
	if (rc < 0) {
		fprintf(stderr, "kvtierctl: cannot reach kvtierd at %s: %s%s\n", addr,
			kvt_errmsg(c),
			rc == -ECONNREFUSED ? " (is kvtierd running? see -a or $KVTIER_ADDR)" : "");
		kvt_close(c);
		return 1;
	}
	if (strcmp(cmd, "status") == 0 && (rc = read_stats(c, &l)) == 0)
		print_status(&l);
	else if (strcmp(cmd, "stats") == 0 && json)
		rc = print_json(c);
	else if (strcmp(cmd, "stats") == 0 && (rc = read_stats(c, &l)) == 0)
		print_stats(&l);
	else if (strcmp(cmd, "top") == 0)
		rc = cmd_top(c, interval, count);
	else if (strcmp(cmd, "config") == 0)
		rc = cmd_config(c);
	else if (strcmp(cmd, "reload") == 0)
		rc = cmd_reload(c, pid, timeout);
	else if (strcmp(cmd, "drop") == 0)
		rc = cmd_drop(c, ns_name, tenant);
	else if (strcmp(cmd, "drop-namespace") == 0)
		rc = cmd_drop_namespace(c, ns_name, tenant);
	if (rc < 0)
		fprintf(stderr, "kvtierctl: %s: %s\n", cmd, kvt_errmsg(c));
	free(l.names);
	free(l.values);
	kvt_close(c);
	return rc < 0 ? 1 : rc;
}

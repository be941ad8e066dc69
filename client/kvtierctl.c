/*
 * kvtierctl: look at a running kvtierd.
 *   kvtierctl [-a ADDR] status          identity, health, sessions, host tier use
 *   kvtierctl [-a ADDR] stats [--json]  every counter and gauge
 */
#include <errno.h>
#include <getopt.h>
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

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static int is_number(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static void print_stats(const struct stat_list *l, int json)
{
	size_t width = 0;

	if (json) {
		printf("{");
		for (size_t i = 0; i < l->n; i++) {
			printf("%s\n  ", i ? "," : "");
			json_string(l->names[i]);
			printf(": ");
			if (is_number(l->values[i]))
				printf("%s", l->values[i]);
			else
				json_string(l->values[i]);
		}
		printf("\n}\n");
		return;
	}
	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->names[i]) > width)
			width = strlen(l->names[i]);
	for (size_t i = 0; i < l->n; i++)
		printf("%-*s  %s\n", (int)width, l->names[i], l->values[i]);
}

static void print_status(const struct stat_list *l)
{
	unsigned long long cap = strtoull(find(l, "host_capacity_bytes"), NULL, 10);
	unsigned long long used = strtoull(find(l, "host_used_bytes"), NULL, 10);

	printf("kvtierd %s (pid %s), up %s s: SERVING\n", find(l, "version"),
	       find(l, "pid"), find(l, "uptime_seconds"));
	printf("listening   ");
	for (size_t i = 0; i < l->n; i++)
		if (strncmp(l->names[i], "listen.", 7) == 0)
			printf(" %s", l->values[i]);
	printf("\nallocator    %s\n", find(l, "allocator"));
	printf("cuda         %s\n", find(l, "cuda"));
	printf("sessions     %s active, %s leases, %s pinned blocks\n",
	       find(l, "sessions_active"), find(l, "leases_active"),
	       find(l, "pinned_blocks"));
	printf("blocks       %s ready, %s pending\n", find(l, "ready_blocks"),
	       find(l, "pending_blocks"));
	printf("host tier    %.1f / %.1f MiB used (%.1f%%), %s of %s segments carved\n",
	       used / 1048576.0, cap / 1048576.0, cap ? 100.0 * used / cap : 0.0,
	       find(l, "host_segments_used"), find(l, "host_segments"));
	if (strcmp(find(l, "nvme_enabled"), "true") == 0) {
		cap = strtoull(find(l, "nvme_capacity_bytes"), NULL, 10);
		used = strtoull(find(l, "nvme_used_bytes"), NULL, 10);
		printf("nvme tier    %.1f / %.1f MiB used, %s blocks, %s of %s paths failing, %s bad checksums\n",
		       used / 1048576.0, cap / 1048576.0, find(l, "nvme_blocks"),
		       find(l, "nvme_paths_failed"), find(l, "nvme_paths"),
		       find(l, "nvme_bad_checksum_total"));
	} else if (strcmp(find(l, "nvme_paths"), "0") != 0) {
		printf("nvme tier    UNAVAILABLE (%s paths configured; see the log)\n",
		       find(l, "nvme_paths"));
	}
}

static void usage(FILE *out)
{
	fprintf(out, "usage: kvtierctl [-a ADDR] status\n"
		     "       kvtierctl [-a ADDR] stats [--json]\n"
		     "ADDR defaults to $KVTIER_ADDR, else " KVT_DEFAULT_ADDR "\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *addr = NULL, *cmd;
	struct stat_list l = { 0 };
	kvt_client *c;
	int json = 0, opt, rc;

	while ((opt = getopt_long(argc, argv, "a:jh", opts, NULL)) != -1) {
		switch (opt) {
		case 'a': addr = optarg; break;
		case 'j': json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (strcmp(cmd, "status") != 0 && strcmp(cmd, "stats") != 0) {
		fprintf(stderr, "kvtierctl: unknown command '%s'\n", cmd);
		usage(stderr);
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
	if (rc == 0)
		rc = kvt_stats(c, collect, &l);
	if (rc < 0) {
		fprintf(stderr, "kvtierctl: cannot reach kvtierd at %s: %s%s\n", addr,
			kvt_errmsg(c),
			rc == -ECONNREFUSED ? " (is kvtierd running? see -a or $KVTIER_ADDR)" : "");
		kvt_close(c);
		return 1;
	}
	if (strcmp(cmd, "status") == 0)
		print_status(&l);
	else
		print_stats(&l, json);
	free(l.names);
	free(l.values);
	kvt_close(c);
	return 0;
}

/*
 * Config table: defaults, units, overrides, errors naming file, line,
 * section and key; every value the daemon cannot run with is refused when
 * the file is read (so also on reload), not when the engine starts.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"

static char path[] = "/tmp/kvtier-config-XXXXXX";

static void write_bytes(const char *text, size_t n)
{
	FILE *f = fopen(path, "w");

	CHECK(f && fwrite(text, 1, n, f) == n && fclose(f) == 0);
}

static void write_file(const char *text)
{
	write_bytes(text, strlen(text));
}

/*
 * Builds a config from a file of n bytes and one --set (NULL: none), as
 * the daemon does at start and on reload. It must fail with an error that
 * starts with where: "FILE:LINE: " (line > 0) or "command line: " (line 0),
 * and holds each of the NULL-terminated strings after it.
 */
static void expect_error_n(const char *text, size_t n, int line,
			   const char *set, ...)
{
	struct kvt_config c;
	char err[1024], where[256];
	const char *want;
	va_list ap;

	write_bytes(text, n);
	CHECK(kvt_config_build(&c, path, &set, set ? 1 : 0, err, sizeof(err)) < 0);
	if (line > 0)
		snprintf(where, sizeof(where), "%s:%d: ", path, line);
	else
		snprintf(where, sizeof(where), "command line: ");
	if (strncmp(err, where, strlen(where)) != 0) {
		fprintf(stderr, "error '%s' does not start with '%s'\n", err, where);
		exit(1);
	}
	va_start(ap, set);
	while ((want = va_arg(ap, const char *)))
		if (!strstr(err, want)) {
			fprintf(stderr, "error '%s' lacks '%s'\n", err, want);
			exit(1);
		}
	va_end(ap);
}

#define expect_error(text, line, set, ...) \
	expect_error_n(text, strlen(text), line, set, __VA_ARGS__, NULL)

/* The file (and one --set) builds. */
static void expect_ok(const char *text, const char *set)
{
	struct kvt_config c;
	char err[1024];

	write_file(text);
	if (kvt_config_build(&c, path, &set, set ? 1 : 0, err, sizeof(err)) < 0) {
		fprintf(stderr, "'%s' does not build: %s\n", text, err);
		exit(1);
	}
}

/* Files that must each fail at one line, with one message. */
struct bad_file {
	const char *text;
	int line;
	const char *want;
};

static void expect_errors(const struct bad_file *bad, size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_error(bad[i].text, bad[i].line, NULL, bad[i].want);
}

#define NBAD(bad) (sizeof(bad) / sizeof((bad)[0]))

static void basics(void)
{
	struct kvt_config c;
	char err[512];
	uint64_t v;

	CHECK(kvt_parse_size("512M", &v) == 0 && v == 512ull << 20);
	CHECK(kvt_parse_size("64G", &v) == 0 && v == 64ull << 30);
	CHECK(kvt_parse_size("4096", &v) == 0 && v == 4096);
	CHECK(kvt_parse_size("2GiB", &v) == 0 && v == 2ull << 30);
	CHECK(kvt_parse_size("12Q", &v) < 0 && kvt_parse_size("", &v) < 0);
	CHECK(kvt_parse_size("-1", &v) < 0 && kvt_parse_size("99999999999T", &v) < 0);
	CHECK(kvt_parse_duration("250ms", &v) == 0 && v == 250);
	CHECK(kvt_parse_duration("5m", &v) == 0 && v == 300000);
	CHECK(kvt_parse_duration("30", &v) == 0 && v == 30000);
	CHECK(kvt_parse_duration("2w", &v) < 0 && kvt_parse_duration("s", &v) < 0);
	CHECK(kvt_config_listed("a, b:c,d", "b:c") && !kvt_config_listed("ab", "a"));

	kvt_config_defaults(&c);
	CHECK(c.host_size == 1ull << 30 && c.threads == 2 && c.socket_mode == 0660);
	write_file("[host]\nsize = 8G\nsegment_size = 128M\n[daemon]\nthreads = 4\n"
			 "run_dir = /tmp/x\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) == 0);
	CHECK(c.host_size == 8ull << 30 && c.host_segment_size == 128ull << 20 && c.threads == 4);
	CHECK(kvt_config_set(&c, "limits.max_keys_per_request=100", err, sizeof(err)) == 0);
	CHECK(c.max_keys_per_request == 100);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) == 0);
	CHECK(strcmp(c.socket, "/tmp/x/kvtierd.sock") == 0);

	/* Errors name file, line, section and key. */
	write_file("[host]\nsize = 1G\n\nsegment_size = lots\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0);
	CHECK(strstr(err, path) && strstr(err, ":4:") && strstr(err, "[host] segment_size"));
	write_file("[host]\nsise = 1G\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0);
	CHECK(strstr(err, ":2:") && strstr(err, "unknown key"));
	write_file("[daemon]\nthreads = 0\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0 && strstr(err, "outside 1..256"));
	write_file("[daemon]\nsocket_mode = 999\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0 && strstr(err, "octal"));
	write_file("this is not ini\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0 && strstr(err, ":1:"));
	CHECK(kvt_config_load(&c, "/nonexistent/kvtierd.conf", err, sizeof(err)) < 0);
	CHECK(strstr(err, "cannot open"));
	CHECK(kvt_config_set(&c, "host.size", err, sizeof(err)) < 0);
	CHECK(kvt_config_set(&c, "nope.size=1", err, sizeof(err)) < 0 && strstr(err, "unknown key"));

	/* Cross-checks. */
	kvt_config_defaults(&c);
	CHECK(kvt_config_set(&c, "host.size=1M", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 &&
	      strstr(err, "command line: [host] size: 1M is smaller than one segment"));
	kvt_config_defaults(&c);
	CHECK(kvt_config_set(&c, "host.segment_size=5000", err, sizeof(err)) < 0 &&
	      strstr(err, "--set [host] segment_size: 5000 is not a multiple of 4096"));

	/* nvme: paths split, sizes checked against the host segment. */
	kvt_config_defaults(&c);
	CHECK(kvt_config_set(&c, "daemon.run_dir=/tmp/x", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) == 0 && c.nvme_npaths == 0);
	CHECK(kvt_config_set(&c, "nvme.paths=/a/x.kvt, /b/y.kvt", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) == 0 && c.nvme_npaths == 2);
	CHECK(strcmp(c.nvme_path[1], "/b/y.kvt") == 0 && c.nvme_queue_depth == 32);
	CHECK(kvt_config_set(&c, "nvme.region_size=64M", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 &&
	      strstr(err, "[nvme] region_size") && strstr(err, "segment_size + 12K"));
	CHECK(kvt_config_set(&c, "nvme.region_size=256M", err, sizeof(err)) == 0);
	CHECK(kvt_config_set(&c, "nvme.size=100M", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 && strstr(err, "holds no region"));
	CHECK(kvt_config_set(&c, "nvme.paths=relative.kvt", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 && strstr(err, "absolute"));
	CHECK(kvt_config_set(&c, "nvme.queue_depth=0", err, sizeof(err)) < 0);

	/* Durations and quotas. */
	kvt_config_defaults(&c);
	CHECK(c.lease_ttl_ms == 300000 && c.max_wait_ms == 30000);
	CHECK(kvt_config_set(&c, "policy.max_wait=2h", err, sizeof(err)) < 0 &&
	      strstr(err, "outside 0..3600000 ms"));
	CHECK(kvt_config_set(&c, "policy.idle_ttl=soon", err, sizeof(err)) < 0 &&
	      strstr(err, "not a duration"));
	CHECK(kvt_config_set(&c, "policy.eviction=fifo", err, sizeof(err)) < 0);
	CHECK(kvt_config_set(&c, "tenants.host_quota=25%", err, sizeof(err)) == 0);
	CHECK(kvt_config_set(&c, "tenants.host_quotas=root:1G, 1234:10%", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) == 0);
	CHECK(c.default_host_quota == (1ull << 30) / 100 * 25 && c.nquotas == 2);
	CHECK(c.quotas[0].uid == 0 && c.quotas[0].bytes == 1ull << 30);
	CHECK(c.quotas[1].uid == 1234 && c.quotas[1].bytes == (1ull << 30) / 100 * 10);
	CHECK(kvt_config_set(&c, "tenants.host_quotas=no-such-user-kvtier:1G", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 && strstr(err, "no user"));
}

/* 1. A TCP port outside 0..65535 (gRPC took 99999 as 34463; 0 is any free
 * port) or a malformed HOST:PORT is refused; metrics.listen is checked the
 * same way. */
static void tcp_port(void)
{
	static const struct bad_file bad[] = {
		{ "[daemon]\ntcp = 127.0.0.1:99999\n", 2, "[daemon] tcp: port '99999' is not a number in 0..65535" },
		{ "[daemon]\n\ntcp = 127.0.0.1\n", 3, "[daemon] tcp: '127.0.0.1' is not HOST:PORT" },
		{ "[daemon]\ntcp = 127.0.0.1:65536\n", 2, "[daemon] tcp: port '65536'" },
		{ "[daemon]\ntcp = 127.0.0.1:\n", 2, "[daemon] tcp: port ''" },
		{ "[daemon]\ntcp = ::1:7420\n", 2, "is not HOST:PORT" },
		{ "[daemon]\ntcp = :7420\n", 2, "is not HOST:PORT" },
		{ "[daemon]\ntcp = host:74x\n", 2, "port '74x'" },
		{ "[daemon]\ntcp = host:-1\n", 2, "port '-1'" },
		{ "[metrics]\nlisten = 127.0.0.1:65536\n", 2, "[metrics] listen: port '65536' is not a number in 0..65535" },
	};

	expect_errors(bad, NBAD(bad));
	expect_ok("[daemon]\ntcp = [::1]:7420\n[metrics]\nlisten = :0\n", NULL);
	expect_ok("[daemon]\ntcp = localhost:65535\n", "metrics.listen=");
	expect_ok("[daemon]\ntcp = 127.0.0.1:0\n", NULL);
}

/* 2. A key given twice is an error naming both lines. */
static void duplicate_key(void)
{
	char want[512];

	snprintf(want, sizeof(want),
		 "%s:9: [host] size: duplicate key (first set at line 4)", path);
	expect_error("# kvtierd\n\n[host]\nsize = 1G\nsegment_size = 64M\n\n[policy]\n"
		     "[host]\nsize = 2G\n", 9, NULL, want);
	/* The same name in two sections is two knobs. */
	expect_ok("[host]\nsize = 1G\n[nvme]\nsize = 1G\n", NULL);
	/* An indented line is a line of its own, not a continuation that
	 * would replace the value before it. */
	expect_error("[host]\nsize = 1G\n  2G\n", 3, NULL, "syntax error");
	expect_ok("[host]\n  size = 1G\n  segment_size = 64M\n", NULL);
}

/* 3. A NUL byte would cut the value short: refused at its line. */
static void nul_byte(void)
{
	static const char text[] = "[host]\nsegment_size = 64M\nsize = 1\0G\n";

	expect_error_n(text, sizeof(text) - 1, 3, NULL, "NUL byte", NULL);
}

/* 4. Values the engine refused at start (or not at all) are refused when
 * the file is read, naming file:line, section and key; from --set, they
 * name the command line. */
static void values_named(void)
{
	char big[96];

	expect_error("[host]\nsegment_size = 4097\n", 2, NULL,
		     "[host] segment_size: 4097 is not a multiple of 4096");
	expect_error("[tenants]\nhost_quota = 250%\n", 2, NULL,
		     "[tenants] host_quota: '250%' is not a size or a percentage");
	expect_error("[tenants]\n\nhost_quotas = root:10%, no-such-user-kvtier:1G\n", 3, NULL,
		     "[tenants] host_quotas: no user 'no-such-user-kvtier'");
	expect_error("[daemon]\ngroup = no-such-group-kvtier\n", 2, NULL,
		     "[daemon] group: no group named 'no-such-group-kvtier'");
	expect_error("[host]\nsize = 100T\n", 2, NULL,
		     "[host] size: 100T makes more than 16384 segments of [host] segment_size 64M (default)");
	expect_ok("[host]\nsize = 1T\n", NULL); /* 16384 segments of 64M */
	/* A segment larger than the tier: the segment_size line is named. */
	snprintf(big, sizeof(big), "[host] size 64M (%s:2)", path);
	expect_error("[host]\nsize = 64M\nsegment_size = 128M\n", 3, NULL,
		     "[host] segment_size: 128M is larger than the tier:", big);
	/* ...unless segment_size has its default: then size is. */
	expect_error("[host]\nsize = 1M\n", 2, NULL,
		     "[host] size: 1M is smaller than one segment: [host] segment_size 64M (default)");
	/* From --set: "command line". */
	expect_error("[host]\nsize = 1G\n", 0, "host.segment_size=2G",
		     "[host] segment_size: 2G is larger than the tier: [host] size 1G (");
	expect_error("", 0, "daemon.group=no-such-group-kvtier", "[daemon] group: no group");
	expect_error("", 0, "tenants.host_quota=101%", "[tenants] host_quota: '101%'");
	expect_error("", 0, "host.segment_size=4K",
		     "[host] segment_size: 4K makes more than 16384 segments of [host] size 1G (default)");
	/* Both given: size is named (the tier too large for its segments). */
	expect_error("[host]\nsize = 1G\n", 2, "host.segment_size=4K",
		     "[host] size: 1G makes more than 16384 segments of [host] segment_size 4K (command line)");
}

/* 5. An unclosed section header is named as such, at its line. */
static void unterminated_section(void)
{
	char want[512];

	snprintf(want, sizeof(want), "%s:3: unterminated section header '[host'", path);
	expect_error("# c\n\n[host\nsize = 1G\n", 3, NULL, want);
	expect_error("[host] size = 1G\n", 1, NULL, "text after section header '[host]'");
	expect_error("[host]\nsize = 1G\n[hots]\n", 3, NULL, "unknown section '[hots]'");
	expect_error("size = 1G\n", 1, NULL, "size: key before the first [section]");
	expect_ok("\xEF\xBB\xBF[host] ; comment\r\nsize = 1G\r\n", NULL);
}

/* 6. region_size's help says what the check wants: a region holds its
 * header and one record (header + page) of the largest page. */
static void region_size_help(void)
{
	struct kvt_config_knob k;
	bool found = false;

	for (size_t i = 0; i < kvt_config_knobs(); i++) {
		kvt_config_knob(i, &k);
		if (strcmp(k.section, "nvme") == 0 && strcmp(k.name, "region_size") == 0) {
			CHECK(strstr(k.help, "segment_size + 12K") && !strstr(k.help, "8K"));
			found = true;
		}
	}
	CHECK(found);
	expect_error("[nvme]\npaths = /a.kvt\nregion_size = 64M\n", 3, NULL,
		     "[nvme] region_size: 64M is less than segment_size + 12K");
	expect_ok("[host]\nsegment_size = 64M\n[nvme]\npaths = /a.kvt\nregion_size = 65548K\n",
		  NULL); /* 64M + 12K */
	expect_error("[host]\nsegment_size = 64M\n[nvme]\npaths = /a.kvt\nregion_size = 65544K\n",
		     5, NULL, "[nvme] region_size: 65544K is less than");
	/* Without an nvme tier, its sizes do not matter. */
	expect_ok("[host]\nsegment_size = 512M\n", NULL);
	expect_error("[host]\nsegment_size = 512M\n[nvme]\npaths = /a.kvt\n", 2, NULL,
		     "[host] segment_size: 512M leaves no room");
}

/* 7. Duration knobs stop where a deadline (now + ttl, in ns) would wrap. */
static void durations(void)
{
	expect_error("[policy]\nlease_ttl = 213503d\n", 2, NULL,
		     "[policy] lease_ttl: 213503d is outside 0..315360000000 ms");
	expect_error("[policy]\nidle_ttl = 3651d\n", 2, NULL, "[policy] idle_ttl: 3651d is outside");
	expect_ok("[policy]\nidle_ttl = 3650d\nlease_ttl = 3650d\n", NULL);
	expect_error("[policy]\nmax_wait = 99999999999999999999ms\n", 2, NULL, "not a duration");
}

/* The rest of the audit: signs, blanks, trailing text, empty values,
 * lists with a name twice, bounds the engine has. */
static void audit(void)
{
	static const struct bad_file bad[] = {
		{ "[daemon]\nthreads = +4\n", 2, "[daemon] threads: '+4' is not a whole number" },
		{ "[daemon]\nthreads = 4x\n", 2, "'4x' is not a whole number" },
		{ "[daemon]\nthreads =\n", 2, "'' is not a whole number" },
		{ "[daemon]\nthreads = 99999999999999999999\n", 2, "not a whole number" },
		{ "[daemon]\nsocket_mode = +0660\n", 2, "octal mode" },
		{ "[host]\nsize =\n", 2, "'' is not a size" },
		{ "[host]\nsize = 1G 2\n", 2, "'1G 2' is not a size" },
		{ "[host]\nsize = 16777216T\n", 2, "is not a size" },
		{ "[limits]\nmax_namespaces = 65536\n", 2, "[limits] max_namespaces: 65536 is outside 1..65535" },
		{ "[tenants]\nhost_quota = +5%\n", 2, "[tenants] host_quota: '+5%'" },
		{ "[tenants]\nhost_quota =\n", 2, "[tenants] host_quota: ''" },
		{ "[tenants]\nhost_quotas = root:1G, 0:2G\n", 2, "[tenants] host_quotas: user '0' (uid 0) is listed twice" },
		{ "[tenants]\nhost_quotas = root:\n", 2, "[tenants] host_quotas: root: ''" },
		{ "[hbm]\ndevices = 0,0\n", 2, "[hbm] devices: device 0 is listed twice" },
		{ "[hbm]\ndevices = 1,+2\n", 2, "[hbm] devices: '1,+2'" },
		{ "[hbm]\ndevices = ,\n", 2, "[hbm] devices: empty" },
		{ "[nvme]\npaths = /a.kvt,/b.kvt, /a.kvt\n", 2, "[nvme] paths: /a.kvt is listed twice" },
		{ "[host]\nsegment_size = 4K\nsize = 64M\n[nvme]\npaths = /a.kvt\n"
		  "size = 1024T\nregion_size = 64K\n", 6,
		  "[nvme] size: 1024T holds more than 268435455 regions" },
		{ "[daemon]\nrun_dir = run\n", 2, "[daemon] run_dir: 'run' is not an absolute path" },
		{ "[policy]\neviction =\n", 2, "[policy] eviction: '' is not leaf-first or lru" },
		/* The first error is the one named, whoever finds it. */
		{ "[host]\nsize = 1G\ngarbage\nsize = 2G\n", 3, "syntax error" },
		{ "[host]\nsize = 1G\nsize = 2G\ngarbage\n", 3, "duplicate key" },
	};
	char text[256] = "[host]\n";

	expect_errors(bad, NBAD(bad));
	/* inih reads 199 bytes a line: the rest is not read as a line of its
	 * own, the line is refused. */
	memset(text + 7, '#', 199);
	strcpy(text + 7 + 199, "\nsize = 1G\n");
	expect_ok(text, NULL);
	memset(text + 7, '#', 200);
	strcpy(text + 7 + 200, "\nsize = 1G\n");
	expect_error(text, 2, NULL, "line longer than 199 bytes");
}

/* [remote]: endpoints, write, AUTH from a file only its owner reads. */
static void remote(void)
{
	static const struct bad_file bad[] = {
		{ "[remote]\nendpoints = 127.0.0.1:6379, redis-a\n", 2,
		  "[remote] endpoints: 'redis-a' is not HOST:PORT" },
		{ "[remote]\nendpoints = a:1,a:1\n", 2, "a:1 is listed twice" },
		{ "[remote]\nendpoints = a:0\n", 2, "port 0 names no server" },
		{ "[remote]\nwrite = some\n", 2,
		  "[remote] write: 'some' is not all, none or priority>=N" },
		{ "[remote]\nwrite = priority>=101\n", 2, "priority>=N" },
		{ "[remote]\nusername = kv\n", 2,
		  "[remote] username: a user needs [remote] password_file" },
		{ "[remote]\npassword_file = secret\n", 2, "not an absolute path" },
		{ "[remote]\nlookup_budget = 11s\n", 2, "outside 0..10000 ms" },
	};
	char secret[] = "/tmp/kvtier-secret-XXXXXX", out[64], err[256];
	struct kvt_config c;
	int fd;

	expect_errors(bad, NBAD(bad));
	write_file("[remote]\nendpoints = 10.0.0.1:7000 [::1]:7001,redis:7002\n"
		   "write = priority>=50\nlookup_budget = 2ms\n");
	CHECK(kvt_config_build(&c, path, NULL, 0, err, sizeof(err)) == 0);
	CHECK(c.remote_nendpoints == 3 && strcmp(c.remote_endpoint[1], "[::1]:7001") == 0);
	CHECK(c.remote_min_priority == 50 && c.remote_lookup_budget_ms == 2);
	CHECK(kvt_config_build(&c, NULL, (const char *[]){ "remote.write=none" }, 1,
			       err, sizeof(err)) == 0);
	CHECK(c.remote_min_priority == KVT_CONFIG_WRITE_NONE && c.remote_nendpoints == 0);

	/* The password: the first line of a file only its owner may read. */
	fd = mkstemp(secret);
	CHECK(fd >= 0 && write(fd, "s3cret\nrest\n", 12) == 12 && close(fd) == 0);
	CHECK(kvt_config_read_secret("[remote] password_file", secret, out,
				     sizeof(out), err, sizeof(err)) == 0);
	CHECK(strcmp(out, "s3cret") == 0);
	CHECK(chmod(secret, 0640) == 0);
	CHECK(kvt_config_read_secret("[remote] password_file", secret, out,
				     sizeof(out), err, sizeof(err)) == -EPERM);
	CHECK(strstr(err, "[remote] password_file: ") && strstr(err, "chmod 0600"));
	CHECK(chmod(secret, 0600) == 0 && truncate(secret, 0) == 0);
	CHECK(kvt_config_read_secret("[remote] password_file", secret, out,
				     sizeof(out), err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "holds nothing"));
	fd = open(secret, O_WRONLY);
	CHECK(fd >= 0 && write(fd, "0123456789", 10) == 10 && close(fd) == 0);
	CHECK(kvt_config_read_secret("[remote] password_file", secret, out, 8,
				     err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "longer than 6 bytes"));
	unlink(secret);
	CHECK(kvt_config_read_secret("[remote] password_file", secret, out,
				     sizeof(out), err, sizeof(err)) == -ENOENT);
}

int main(void)
{
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
	basics();
	tcp_port();
	duplicate_key();
	nul_byte();
	values_named();
	unterminated_section();
	region_size_help();
	durations();
	audit();
	remote();
	unlink(path);
	return 0;
}

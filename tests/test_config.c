/* Config table: defaults, units, overrides, errors naming file, line and key. */
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	CHECK(f);
	fputs(text, f);
	fclose(f);
}

int main(void)
{
	struct kvt_config c;
	char err[512], path[] = "/tmp/kvtier-config-XXXXXX";
	uint64_t v;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
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
	write_file(path, "[host]\nsize = 8G\nsegment_size = 128M\n[daemon]\nthreads = 4\n"
			 "run_dir = /tmp/x\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) == 0);
	CHECK(c.host_size == 8ull << 30 && c.host_segment_size == 128ull << 20 && c.threads == 4);
	CHECK(kvt_config_set(&c, "limits.max_keys_per_request=100", err, sizeof(err)) == 0);
	CHECK(c.max_keys_per_request == 100);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) == 0);
	CHECK(strcmp(c.socket, "/tmp/x/kvtierd.sock") == 0);

	/* Errors name file, line, section and key. */
	write_file(path, "[host]\nsize = 1G\n\nsegment_size = lots\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0);
	CHECK(strstr(err, path) && strstr(err, ":4:") && strstr(err, "[host] segment_size"));
	write_file(path, "[host]\nsise = 1G\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0);
	CHECK(strstr(err, ":2:") && strstr(err, "unknown key"));
	write_file(path, "[daemon]\nthreads = 0\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0 && strstr(err, "outside 1..256"));
	write_file(path, "[daemon]\nsocket_mode = 999\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0 && strstr(err, "octal"));
	write_file(path, "this is not ini\n");
	CHECK(kvt_config_load(&c, path, err, sizeof(err)) < 0 && strstr(err, ":1:"));
	CHECK(kvt_config_load(&c, "/nonexistent/kvtierd.conf", err, sizeof(err)) < 0);
	CHECK(strstr(err, "cannot open"));
	CHECK(kvt_config_set(&c, "host.size", err, sizeof(err)) < 0);
	CHECK(kvt_config_set(&c, "nope.size=1", err, sizeof(err)) < 0 && strstr(err, "unknown key"));

	/* Cross-checks. */
	kvt_config_defaults(&c);
	CHECK(kvt_config_set(&c, "host.size=1M", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 && strstr(err, "smaller than segment_size"));
	kvt_config_defaults(&c);
	CHECK(kvt_config_set(&c, "host.segment_size=5000", err, sizeof(err)) == 0);
	CHECK(kvt_config_finish(&c, err, sizeof(err)) < 0 && strstr(err, "multiple of 4096"));

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
	unlink(path);
	return 0;
}

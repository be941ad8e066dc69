/*
 * What operators touch: the host tier grows and shrinks on SIGHUP while a
 * worker writes and reads pages (bytes checked, memory of retired segments
 * given back), a broken file leaves the running config alone, a knob that
 * needs a restart is reported as pending, and kvtierctl's commands say what
 * they should (also when the daemon is gone).
 */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_util.h"

#define PAGE (256 * 1024) /* four to a 1M segment */
#define MIB (1024ull * 1024)

static void write_conf(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Polls a statistic until it equals want (5 s at most). */
static void wait_stat(kvt_client *c, const char *name, unsigned long long want)
{
	for (int i = 0; i < 500 && test_stat(c, name) != want; i++)
		sleep_ms(10);
	if (test_stat(c, name) != want)
		fprintf(stderr, "%s is %llu, not %llu\n", name, test_stat(c, name), want);
	CHECK(test_stat(c, name) == want);
}

/* Writes page after page, reading each back through a lease, until dir/stop
 * appears. Exits 1 on a wrong byte or when nothing could be checked. */
static void worker(const struct test_daemon *d)
{
	struct kvt_namespace ns;
	kvt_client *c = test_client(d->addr, "ops-worker", "ops:test", PAGE, &ns);
	char stop[256];
	uint8_t *want = malloc(PAGE);
	unsigned long checked = 0;

	snprintf(stop, sizeof(stop), "%s/stop", d->dir);
	for (unsigned i = 0; access(stop, F_OK) != 0; i++) {
		struct kvt_key k = test_key("opsload", i);
		struct kvt_slot slot;
		struct kvt_lease lease = { 0 };

		CHECK_RC(c, kvt_reserve(c, &ns, NULL, &k, 1, NULL, &slot), 0);
		if (slot.state != KVT_SLOT_RESERVED)
			continue;
		test_fill(slot.page, PAGE, i);
		CHECK_RC(c, kvt_commit(c, &ns, &k, 1), 0);
		/* Read back a recent page (it may have been evicted). */
		k = test_key("opsload", i - i % 3);
		CHECK_RC(c, kvt_acquire(c, &ns, &k, 1, 0, &lease), 0);
		if (lease.count == 1) {
			test_fill(want, PAGE, i - i % 3);
			if (memcmp(lease.pages[0], want, PAGE) != 0) {
				fprintf(stderr, "worker: page %u differs\n", i - i % 3);
				exit(1);
			}
			checked++;
		}
		CHECK_RC(c, kvt_release(c, &lease), 0);
	}
	free(want);
	kvt_close(c);
	fprintf(stderr, "worker: %lu pages read back intact\n", checked);
	exit(checked > 0 ? 0 : 1);
}

/* The memory segment i holds in the daemon (512-byte blocks); 0 once
 * released. */
static long long segment_blocks(const struct test_daemon *d, unsigned i)
{
	char name[32];
	long long blocks;

	snprintf(name, sizeof(name), "kvtier-host-%u ", i);
	test_memfds(d->pid, name, &blocks);
	return blocks;
}

/* Runs kvtierctl with args; its output (stdout and stderr) in out. */
static int ctl(const struct test_daemon *d, const char *args, char *out, size_t len)
{
	char cmd[1024];
	size_t n;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s -a %s %s 2>&1", getenv("KVTIERCTL"), d->addr, args);
	p = popen(cmd, "r");
	CHECK(p != NULL);
	n = fread(out, 1, len - 1, p);
	out[n] = '\0';
	return WEXITSTATUS(pclose(p));
}

int main(void)
{
	static char out[65536];
	struct test_daemon d = { 0 };
	char conf[256], stop[256];
	kvt_client *c;
	pid_t pid;
	int status, rc;

	CHECK(getenv("KVTIERCTL") != NULL);
	snprintf(d.dir, sizeof(d.dir), "/tmp/kvtier-test-XXXXXX");
	CHECK(mkdtemp(d.dir) != NULL);
	snprintf(d.config, sizeof(d.config), "%s/kvtierd.conf", d.dir);
	snprintf(conf, sizeof(conf), "%s", d.config);
	write_conf(conf, "[host]\nsize = 4M\nsegment_size = 1M\n");
	test_daemon_restart(&d, NULL);

	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		worker(&d);
	CHECK(kvt_connect(d.addr, &c) == 0);
	while (test_stat(c, "committed_blocks_total") < 32)
		sleep_ms(10);

	/* Grow under load: new segments fill, the worker maps and checks them. */
	write_conf(conf, "[host]\nsize = 8M\nsegment_size = 1M\n");
	CHECK(kill(d.pid, SIGHUP) == 0);
	wait_stat(c, "tiers.host.capacity_bytes", 8 * MIB);
	CHECK(test_stat(c, "host_segments") == 8);
	/* Segments are carved lowest first and nothing is evicted until the
	 * tier is full: past 7M, segments 4..6 hold committed (written) pages. */
	for (int i = 0; i < 500 && test_stat(c, "tiers.host.used_bytes") <= 7 * MIB; i++)
		sleep_ms(10);
	CHECK(test_stat(c, "tiers.host.used_bytes") > 7 * MIB);
	CHECK(segment_blocks(&d, 6) > 0);

	/* Shrink under load: segments 2..7 empty out and give their memory back. */
	write_conf(conf, "[host]\nsize = 2M\nsegment_size = 1M\n");
	CHECK(kill(d.pid, SIGHUP) == 0);
	wait_stat(c, "tiers.host.capacity_bytes", 2 * MIB);
	wait_stat(c, "host_segments_retiring", 0);
	CHECK(test_stat(c, "tiers.host.used_bytes") <= 2 * MIB);
	for (unsigned i = 2; i < 8; i++)
		CHECK(segment_blocks(&d, i) == 0);
	sleep_ms(200); /* the worker goes on in the smaller tier */

	snprintf(stop, sizeof(stop), "%s/stop", d.dir);
	write_conf(stop, "");
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(test_stat(c, "config_reloads_total") == 2);

	/* A broken file changes nothing, and says why; kvtierctl reload (the
	 * unit's ExecReload) returns once the reload is done, and fails. */
	write_conf(conf, "[host]\nsize = lots\nsegment_size = 1M\n");
	CHECK(ctl(&d, "reload", out, sizeof(out)) == 1);
	CHECK(strstr(out, "reload failed: the running configuration is unchanged"));
	CHECK(test_stat(c, "config_reload_failures_total") == 1);
	CHECK(test_stat(c, "config_last_reload_ok") == 0);
	CHECK(test_stat(c, "tiers.host.capacity_bytes") == 2 * MIB);
	CHECK(ctl(&d, "config", out, sizeof(out)) == 0);
	CHECK(strstr(out, "last reload FAILED") && strstr(out, ":2: [host] size: 'lots' is not a size"));
	/* So do a key given twice and a tier of too many segments: refused
	 * when the file is read, not by the engine. */
	write_conf(conf, "[host]\nsize = 2M\nsegment_size = 1M\nsize = 8M\n");
	CHECK(kill(d.pid, SIGHUP) == 0);
	wait_stat(c, "config_reload_failures_total", 2);
	CHECK(ctl(&d, "config", out, sizeof(out)) == 0);
	CHECK(strstr(out, "kvtierd.conf:4: [host] size: duplicate key (first set at line 2)"));
	write_conf(conf, "[host]\nsize = 32G\nsegment_size = 1M\n");
	CHECK(kill(d.pid, SIGHUP) == 0);
	wait_stat(c, "config_reload_failures_total", 3);
	CHECK(ctl(&d, "config", out, sizeof(out)) == 0);
	CHECK(strstr(out, "kvtierd.conf:2: [host] size: 32G makes more than 16384 segments"));
	CHECK(test_stat(c, "tiers.host.capacity_bytes") == 2 * MIB);

	/* segment_size cannot change live: it stays, reported as pending. */
	write_conf(conf, "[host]\nsize = 4M\nsegment_size = 2M\n[policy]\nmax_wait = 5s\n");
	snprintf(stop, sizeof(stop), "reload --pid %d", (int)d.pid);
	rc = ctl(&d, stop, out, sizeof(out));
	CHECK(rc == 0 && strstr(out, "reload applied"));
	/* Applied when it returned: no waiting here. */
	CHECK(test_stat(c, "config_reloads_total") == 6);
	CHECK(test_stat(c, "tiers.host.capacity_bytes") == 4 * MIB);
	CHECK(test_stat(c, "config_last_reload_ok") == 1);
	CHECK(ctl(&d, "config", out, sizeof(out)) == 0);
	CHECK(strstr(out, "segment_size           = 1M"));
	CHECK(strstr(out, "restart to change; file says 2M"));
	CHECK(strstr(out, "max_wait               = 5s"));
	CHECK(strstr(out, "kvtierd.conf:5"));
	CHECK(strstr(out, "run_dir") && strstr(out, "command line"));
	CHECK(strstr(out, "threads                = 2                # default"));

	/* kvtierctl's other commands. */
	CHECK(ctl(&d, "status", out, sizeof(out)) == 0);
	CHECK(strstr(out, ": SERVING") && strstr(out, "of 4 segments carved") &&
	      strstr(out, "metrics      http://127.0.0.1:"));
	CHECK(ctl(&d, "stats --json", out, sizeof(out)) == 0);
	CHECK(out[0] == '{' &&
	      strstr(out, "{\"tier\":\"host\",\"up\":true,\"capacity_bytes\":4194304,") &&
	      strstr(out, "{\"method\":\"Reserve\",\"calls_total\":"));
	CHECK(ctl(&d, "top -n 2 -i 0.1", out, sizeof(out)) == 0);
	CHECK(strstr(out, "ops:test") && strstr(out, "Acquire") && strstr(out, "host  ["));
	/* top fits 80 columns; it counts keys, not Lookups; a namespace with
	 * no lookups between two samples has no hit rate: "-". */
	for (char *line = out, *end; *line; line = end + 1) {
		end = strchrnul(line, '\n');
		CHECK(end - line <= 79);
		if (!*end)
			break;
	}
	CHECK(strstr(out, "KEYS/s") && !strstr(out, "LOOKUPS/s"));
	CHECK(strstr(out, "ops:test                            -"));
	/* stats shows request durations in milliseconds, as top does. */
	CHECK(ctl(&d, "stats", out, sizeof(out)) == 0);
	CHECK(strstr(out, "rpcs.Lookup.duration_ms.p99 ") && !strstr(out, "duration_seconds"));
	CHECK(ctl(&d, "--version", out, sizeof(out)) == 0);
	CHECK(strcmp(out, "kvtierctl " KVT_VERSION_STRING " (libkvtier " KVT_VERSION_STRING ")\n") == 0);
	CHECK(ctl(&d, "drop --namespace nope", out, sizeof(out)) == 1);
	CHECK(strstr(out, "no namespace 'nope'"));
	CHECK(test_stat(c, "ready_blocks") > 0);
	CHECK(ctl(&d, "drop --namespace ops:test", out, sizeof(out)) == 0);
	CHECK(strstr(out, "dropped ") && !strstr(out, "dropped 0 "));
	CHECK(test_stat(c, "ready_blocks") == 0);
	CHECK(ctl(&d, "drop", out, sizeof(out)) == 2);
	CHECK(ctl(&d, "frobnicate", out, sizeof(out)) == 2 && strstr(out, "unknown command"));

	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	CHECK(ctl(&d, "status", out, sizeof(out)) == 1);
	CHECK(strstr(out, "cannot reach kvtierd at unix:"));
	printf("ops: reloads grew and shrank the host tier under load; bad reload kept; kvtierctl checked\n");
	return 0;
}

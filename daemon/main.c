/*
 * kvtierd: reads its configuration, takes the socket's lock file, creates
 * the engine (host tier segments), serves gRPC and metrics until
 * SIGTERM/SIGINT, reloading its configuration on SIGHUP, then drains calls
 * and removes its socket, lock file and segments.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "allocator.h"
#include "config.h"
#include "engine.h"
#include "gpu.h"
#include "lane.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "reload.h"
#include "rpc.h"
#include "segsock.h"
#include "kvtier/v1/segments.h"
#include "server.h"
#include "stats.h"

#define SHUTDOWN_GRACE_MS 5000

static void usage(FILE *out)
{
	fprintf(out,
		"usage: kvtierd [-c FILE] [--set SECTION.KEY=VALUE]... [--print-config]\n"
		"               [--print-stats]\n"
		"  -c, --config FILE   read this INI file (default: built-in defaults only)\n"
		"  -s, --set S.K=V     override one knob, e.g. --set host.size=8G\n"
		"  -p, --print-config  print the effective configuration and exit\n"
		"  -S, --print-stats   list every stat and metric (Markdown) and exit\n"
		"  -V, --version       print the version and exit\n");
}

#define SETS_MAX 256

static const char *sets[SETS_MAX];

/* Reads the command line; builds the configuration into r. */
static int load_config(int argc, char **argv, struct kvt_reload *r)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "set", required_argument, NULL, 's' },
		{ "print-config", no_argument, NULL, 'p' },
		{ "print-stats", no_argument, NULL, 'S' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *file = NULL;
	size_t nsets = 0;
	char err[512];
	int print = 0, opt, rc;

	/* The file first, then the overrides, whatever their order on the line. */
	while ((opt = getopt_long(argc, argv, "c:s:pSVh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': file = optarg; break;
		case 's':
			if (nsets == SETS_MAX) {
				fprintf(stderr, "kvtierd: more than %d --set options\n",
					SETS_MAX);
				return -EINVAL;
			}
			sets[nsets++] = optarg;
			break;
		case 'p': print = 1; break;
		case 'S': kvt_stats_print(stdout); exit(0);
		case 'V': printf("kvtierd %s\n", KVT_VERSION); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvtierd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if ((rc = kvt_reload_init(r, file, sets, nsets, err, sizeof(err))) < 0) {
		fprintf(stderr, "kvtierd: configuration error: %s\n", err);
		return rc;
	}
	if (print) {
		kvt_config_print(&r->running, stdout);
		exit(0);
	}
	return 0;
}

/* Creates the run directory (mode 0750) if it is missing. */
static int make_run_dir(const char *dir, gid_t gid)
{
	if (mkdir(dir, 0750) < 0) {
		if (errno == EEXIST)
			return 0;
		int rc = -errno;

		kvt_log(KVT_LOG_ERROR, "cannot create run directory %s: %s", dir,
			strerror(-rc));
		return rc;
	}
	if (chmod(dir, 0750) < 0 ||
	    (gid != (gid_t)-1 && chown(dir, (uid_t)-1, gid) < 0)) {
		int rc = -errno;

		kvt_log(KVT_LOG_ERROR, "cannot set mode/group of %s: %s", dir,
			strerror(-rc));
		return rc;
	}
	return 0;
}

/*
 * Takes "<socket>.lock" so that a second daemon refuses to start instead of
 * gRPC silently unlinking a live socket. Returns the held fd, or -errno.
 */
static int take_lock(const char *socket_path, char *lock_path, size_t len)
{
	char pid[32] = "";
	ssize_t n;
	int fd;

	snprintf(lock_path, len, "%s.lock", socket_path);
	fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		int rc = -errno;

		kvt_log(KVT_LOG_ERROR, "cannot open lock file %s: %s", lock_path,
			strerror(-rc));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		kvt_log(KVT_LOG_ERROR,
			"another kvtierd (pid %s) is serving %s; stop it first",
			pid[0] ? pid : "?", socket_path);
		close(fd);
		return -EBUSY;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		kvt_log(KVT_LOG_WARN, "cannot write pid to %s", lock_path);
	return fd;
}

/* The engine's view of c; quotas and paths are arrays of the config's
 * sizes that ec points into. */
static void engine_config(const struct kvt_config *c,
			  struct kvt_engine_config *ec, struct kvt_quota *quotas,
			  const char **nvme_paths)
{
	for (uint32_t i = 0; i < c->nquotas; i++)
		quotas[i] = (struct kvt_quota){ c->quotas[i].uid, c->quotas[i].bytes };
	for (uint32_t i = 0; i < c->nvme_npaths; i++)
		nvme_paths[i] = c->nvme_path[i];
	*ec = (struct kvt_engine_config){
		.host_bytes = c->host_size,
		.segment_bytes = c->host_segment_size,
		.huge_pages = (enum kvt_huge_pages)kvt_huge_pages_parse(c->huge_pages),
		.lock_host = strcmp(c->host_lock, "true") == 0,
		.max_namespaces = c->max_namespaces,
		.eviction = strcmp(c->eviction, "lru") == 0 ? KVT_EVICT_LRU :
							     KVT_EVICT_LEAF_FIRST,
		.default_priority = (uint8_t)c->default_priority,
		.idle_ttl = c->idle_ttl_ms * KVT_MS,
		.lease_ttl = c->lease_ttl_ms * KVT_MS,
		.max_wait = c->max_wait_ms * KVT_MS,
		.default_host_quota = c->default_host_quota,
		.quotas = quotas,
		.nquotas = c->nquotas,
		.max_sessions = c->max_sessions,
		.max_leases = c->max_leases,
		.max_tenant_namespaces = c->max_tenant_namespaces,
		.nvme = { .paths = nvme_paths, .npaths = c->nvme_npaths,
			  .path_bytes = c->nvme_size,
			  .region_bytes = c->nvme_region_size,
			  .queue_depth = c->nvme_queue_depth,
			  .retry = c->nvme_retry_ms * KVT_MS },
	};
}

/* The remote tier of c: endpoints (an array of the config's size that ec
 * points into) and the password read from password_file into password
 * (wiped by the caller once the engine has its copy). 0, or -1 logged. */
static int remote_config(const struct kvt_config *c,
			 struct kvt_engine_config *ec, const char **endpoints,
			 char *password, size_t len)
{
	char msg[PATH_MAX + 128];

	if (!c->remote_nendpoints)
		return 0;
	for (uint32_t i = 0; i < c->remote_nendpoints; i++)
		endpoints[i] = c->remote_endpoint[i];
	if (c->remote_password_file[0] &&
	    kvt_config_read_secret("[remote] password_file",
				   c->remote_password_file, password, len, msg,
				   sizeof(msg)) < 0) {
		kvt_log(KVT_LOG_ERROR, "%s", msg);
		return -1;
	}
	ec->remote = (struct kvt_engine_remote){
		.endpoints = endpoints,
		.nendpoints = c->remote_nendpoints,
		.username = c->remote_username[0] ? c->remote_username : NULL,
		.password = c->remote_password_file[0] ? password : NULL,
		.timeout = c->remote_timeout_ms * KVT_MS,
		.queue_depth = c->remote_queue_depth,
		.min_priority = c->remote_min_priority,
		.ttl_ms = c->remote_ttl_ms,
	};
	return 0;
}

/* The hbm tier of c, when there is a GPU to put it on; says why not. */
static void hbm_config(const struct kvt_config *c, int gpus,
		       struct kvt_engine_config *ec)
{
	if (c->hbm_size == 0)
		return;
	if (!kvt_gpu_hbm_ops() || gpus == 0) {
		kvt_log(KVT_LOG_ERROR, "[hbm] size is set, but %s: hbm tier unavailable",
			kvt_gpu_hbm_ops() ? "no GPU is visible" : "kvtierd was built without CUDA");
		return;
	}
	ec->hbm = (struct kvt_engine_hbm){
		.ops = kvt_gpu_hbm_ops(),
		.devices = c->hbm_ndevices ? c->hbm_device : NULL,
		.ndevices = c->hbm_ndevices ? c->hbm_ndevices : (uint32_t)gpus,
		.bytes = c->hbm_size,
	};
}

static struct kvt_metrics *metrics;

/* A reload's live knobs, applied to the running daemon. */
static int apply_live(void *arg, const struct kvt_config *c, char *err,
		      size_t len)
{
	struct kvt_daemon *d = arg;
	struct kvt_quota quotas[KVT_CONFIG_QUOTAS_MAX];
	const char *nvme_paths[KVT_CONFIG_NVME_PATHS_MAX];
	struct kvt_engine_config ec;
	struct kvt_metrics_auth auth;
	struct kvt_err e;
	int rc;

	/* The one step that can fail on a file's content goes first. */
	if ((rc = kvt_metrics_auth_read(c->metrics_auth_file, &auth, err, len)) < 0)
		return rc;
	engine_config(c, &ec, quotas, nvme_paths);
	if ((rc = kvt_engine_reconfigure(d->engine, &ec, &e)) < 0) {
		snprintf(err, len, "[host] size: %s", e.msg);
		return rc;
	}
	kvt_metrics_set_auth(metrics, &auth);
	explicit_bzero(&auth, sizeof(auth));
	kvt_server_set_limits(d->server, c->idle_timeout_ms, c->max_connections);
	d->max_sessions = c->max_sessions;
	d->max_lanes = c->max_lanes;
	d->max_keys = c->max_keys_per_request;
	kvt_log_set_level((enum kvt_log_level)kvt_log_level_parse(c->log_level));
	kvt_log_set_format(c->log_format);
	return 0;
}

/* One line for `systemctl status`. */
static void notify_status(struct kvt_daemon *d, const char *state)
{
	struct kvt_engine_stats st;

	kvt_engine_stats(d->engine, &st);
	kvt_notify("%s\nSTATUS=host tier %llu MiB, %llu blocks, %llu sessions",
		   state, (unsigned long long)(st.host_capacity_bytes >> 20),
		   (unsigned long long)st.ready_blocks,
		   (unsigned long long)st.sessions_active);
}

/* Serves signals until SIGTERM or SIGINT (blocked in every thread):
 * SIGHUP reloads the configuration. */
static void wait_for_stop(struct kvt_daemon *d)
{
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			kvt_notify("RELOADING=1");
			(void)kvt_reload_run(d->reload, apply_live, d);
			notify_status(d, "READY=1");
			continue;
		}
		kvt_log(KVT_LOG_INFO, "%s: shutting down", strsignal(sig));
		kvt_notify("STOPPING=1\nSTATUS=draining calls");
		return;
	}
}

/* Many clients, each with a connection: take every fd the hard limit
 * allows (systemd leaves the soft limit at 1024 for select()'s sake; the
 * daemon polls with epoll). */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			kvt_log(KVT_LOG_WARN, "cannot raise RLIMIT_NOFILE from %llu to %llu: %s",
				(unsigned long long)was, (unsigned long long)rl.rlim_max,
				strerror(errno));
			return;
		}
	}
	kvt_log(KVT_LOG_INFO, "RLIMIT_NOFILE: %llu open files (the hard limit)",
		(unsigned long long)rl.rlim_cur);
}

static void engine_log(bool error, const char *msg)
{
	kvt_log(error ? KVT_LOG_ERROR : KVT_LOG_INFO, "%s", msg);
}

int main(int argc, char **argv)
{
	static struct kvt_reload reload; /* large */
	struct kvt_config cfg;
	struct kvt_daemon d = { 0 };
	struct kvt_metrics_auth auth;
	struct kvt_engine_config ecfg;
	struct kvt_server_config scfg;
	struct kvt_quota quotas[KVT_CONFIG_QUOTAS_MAX];
	const char *nvme_paths[KVT_CONFIG_NVME_PATHS_MAX];
	const char *remote_endpoints[KVT_CONFIG_REMOTE_ENDPOINTS_MAX];
	char remote_password[512];
	struct kvt_engine_stats st;
	struct kvt_err err;
	char lock_path[PATH_MAX + 8], msg[512];
	sigset_t set;
	int lock_fd, rc = 1;

	kvt_log_init();
	/* A stat without its field in the Stats messages, or a field without
	 * its stat, is a mistake no compiler sees: refuse to run with it (every
	 * integration test starts the daemon, so none passes with it). */
	if (kvt_stats_check(msg, sizeof(msg)) < 0) {
		fprintf(stderr, "kvtierd: %s\n", msg);
		return 1;
	}
	if (load_config(argc, argv, &reload) < 0)
		return 2;
	/* The settings that need a restart never change: a copy of them. */
	cfg = reload.running;
	d.reload = &reload;
	kvt_log_set_level((enum kvt_log_level)kvt_log_level_parse(cfg.log_level));
	kvt_log_set_format(cfg.log_format);

	/* Before grpc_init starts threads: they inherit the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (make_run_dir(cfg.run_dir, cfg.gid) < 0)
		return 1;
	if (kvt_metrics_auth_read(cfg.metrics_auth_file, &auth, msg, sizeof(msg)) < 0) {
		kvt_log(KVT_LOG_ERROR, "%s", msg);
		return 1;
	}
	raise_fd_limit();
	lock_fd = take_lock(cfg.socket, lock_path, sizeof(lock_path));
	if (lock_fd < 0)
		return 1;

	engine_config(&cfg, &ecfg, quotas, nvme_paths);
	hbm_config(&cfg, kvt_gpu_probe(d.cuda, sizeof(d.cuda)), &ecfg);
	ecfg.log = engine_log;
	ecfg.timer_thread = true;
	if (remote_config(&cfg, &ecfg, remote_endpoints, remote_password,
			  sizeof(remote_password)) < 0)
		goto out_lock;
	rc = kvt_engine_create(&ecfg, &d.engine, &err);
	explicit_bzero(remote_password, sizeof(remote_password));
	if (rc < 0) {
		rc = 1;
		kvt_log(KVT_LOG_ERROR, "host tier: %s", err.msg);
		goto out_lock;
	}
	rc = 1;
	{
		char path[PATH_MAX + 16];

		snprintf(path, sizeof(path), "%s%s", cfg.socket,
			 KVT_SEGMENT_SOCKET_SUFFIX);
		if (kvt_lanes_new(&d, cfg.poll_us, &d.lanes) < 0) {
			kvt_log(KVT_LOG_ERROR, "out of memory");
			kvt_engine_destroy(d.engine);
			goto out_lock;
		}
		if (kvt_segsock_start(path, cfg.socket_mode, cfg.gid, d.engine,
				      d.lanes, &d.segsock, msg, sizeof(msg)) < 0) {
			kvt_log(KVT_LOG_ERROR, "%s", msg);
			kvt_lanes_free(d.lanes);
			kvt_engine_destroy(d.engine);
			goto out_lock;
		}
	}
	d.max_keys = cfg.max_keys_per_request;
	d.max_sessions = cfg.max_sessions;
	d.max_lanes = cfg.max_lanes;
	d.shared_namespaces = cfg.shared_namespaces;
	d.max_message_size = cfg.max_message_size;
	d.lookup_budget = cfg.remote_nendpoints ? cfg.remote_lookup_budget_ms * KVT_MS : 0;
	d.started = time(NULL);
	kvt_allocator_describe(d.allocator, sizeof(d.allocator));

	grpc_init();
	kvt_log_capture_grpc();
	scfg = (struct kvt_server_config){
		.unix_path = cfg.socket,
		.tcp = cfg.tcp,
		.threads = cfg.threads,
		.poll_us = cfg.poll_us,
		.max_message_size = cfg.max_message_size,
		.socket_mode = cfg.socket_mode,
		.gid = cfg.gid,
		.methods = kvt_rpc_methods,
		.nmethods = kvt_rpc_nmethods,
		.streams = kvt_rpc_streams,
		.nstreams = kvt_rpc_nstreams,
		.idle_timeout_ms = cfg.idle_timeout_ms,
		.max_connections = cfg.max_connections,
		.peer_name = kvt_rpc_peer_name,
		.ctx = &d,
		.draining = kvt_rpc_draining,
	};
	if (kvt_server_start(&scfg, &d.server, msg, sizeof(msg)) < 0) {
		kvt_log(KVT_LOG_ERROR, "%s", msg);
		goto out_grpc;
	}
	if (cfg.metrics_listen[0] &&
	    kvt_metrics_start(cfg.metrics_listen, &auth, &d, &metrics, msg, sizeof(msg)) < 0) {
		kvt_log(KVT_LOG_ERROR, "%s", msg);
		kvt_server_shutdown(d.server, 0);
		kvt_server_destroy(d.server);
		goto out_grpc;
	}
	explicit_bzero(&auth, sizeof(auth));
	printf("kvtierd %s listening on", KVT_VERSION);
	for (size_t i = 0; i < kvt_server_listen_count(d.server); i++)
		printf(" %s", kvt_server_listen_address(d.server, i));
	kvt_engine_stats(d.engine, &st);
	printf(" (host tier %llu MiB in %u segments, %s; ",
	       (unsigned long long)(cfg.host_size >> 20),
	       kvt_engine_host_segments(d.engine),
	       kvt_engine_host_describe(d.engine));
	if (st.nvme_enabled)
		printf("nvme tier %llu MiB on %u paths, %llu blocks recovered in %llu ms; ",
		       (unsigned long long)(st.nvme_capacity_bytes >> 20),
		       st.nvme_paths - st.nvme_paths_failed,
		       (unsigned long long)st.nvme_recovered_blocks,
		       (unsigned long long)st.nvme_recovery_ms);
	if (st.hbm_enabled)
		printf("hbm tier %llu MiB on %u GPUs; ",
		       (unsigned long long)(st.hbm.capacity_bytes >> 20), st.hbm.devices);
	if (st.remote_enabled)
		printf("remote tier at %s%s, write %s; ", cfg.remote_endpoint[0],
		       cfg.remote_nendpoints > 1 ? ",..." : "", cfg.remote_write);
	printf("%s; %s)", d.allocator, d.cuda);
	if (d.metrics_address[0])
		printf(" metrics %s", d.metrics_address);
	printf("\n");
	fflush(stdout);

	notify_status(&d, "READY=1");
	wait_for_stop(&d);
	kvt_metrics_draining(metrics);
	kvt_server_shutdown(d.server, SHUTDOWN_GRACE_MS);
	kvt_metrics_stop(metrics);
	/* Every session has closed: no lane can be asked for, and their
	 * threads, which count calls in the server, end before it goes. */
	kvt_segsock_stop(d.segsock);
	d.segsock = NULL;
	kvt_lanes_free(d.lanes);
	d.lanes = NULL;
	kvt_server_destroy(d.server);
	rc = 0;
	kvt_log(KVT_LOG_INFO, "stopped cleanly");
out_grpc:
	unlink(cfg.socket);
	kvt_segsock_stop(d.segsock);
	kvt_lanes_free(d.lanes);
	kvt_engine_destroy(d.engine);
out_lock:
	unlink(lock_path);
	close(lock_fd);
	/*
	 * Calls are drained, the server and its queue destroyed, the socket,
	 * lock file and segments unlinked. grpc_shutdown() and libgrpc's static
	 * destructors would now only wait (up to 10 s, seen under load) for
	 * connections gRPC has not reaped yet, delaying a restart for nothing.
	 */
	fflush(NULL);
	_exit(rc);
}

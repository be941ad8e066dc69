/*
 * Shared memory no worker can break, tried as a careless worker and a
 * hostile tenant would. Two workers under two uids (A, B) of the socket's
 * group, against a real kvtierd:
 *   - nothing of the host tier is reachable by name (/dev/shm is empty of
 *     it; the daemon's and A's /proc entries are closed to B);
 *   - B gets no descriptor of A's segments, not with its own session, not
 *     with A's token, not with malformed requests; each refusal is counted;
 *   - A cannot truncate, grow, reseal or write past its segments; punching
 *     holes in them hurts only A's own pages; the daemon serves on;
 *   - once B's writes take A's segments (A filled the tier), A's old
 *     mappings see none of B's bytes and A's writes to them reach nothing
 *     of B's: the segments were renewed.
 * Needs root to switch uids: skipped otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvtier/kvtier.h>

#include "client_util.h"
#include "harness.h"
#include "kvtier/v1/lane.h"
#include "kvtier/v1/segments.h"

#define PAGE 4096
#define SEGMENT 65536
#define SEGMENTS 16
#define BLOCKS (SEGMENTS * SEGMENT / PAGE)
#define UID_A 61011
#define UID_B 61012
#define GID 65534 /* nogroup: the socket's group */
#define PATTERN 0xB5

struct shared {
	atomic_int step;
	pid_t daemon, a;
	time_t started; /* before the daemon started */
	uint8_t a_token[16];
	char seg_socket[200];
	uint32_t a_segments[SEGMENTS]; /* 1: A holds blocks in it */
};

static struct shared *sh;

static void wait_step(int step)
{
	for (int i = 0; atomic_load(&sh->step) < step; i++) {
		CHECK(i < 60000); /* 30 s: the other side failed */
		usleep(500);
	}
}

static kvt_client *become(uid_t uid, const char *addr, struct kvt_namespace *ns)
{
	kvt_client *c;

	test_become(uid, GID);
	CHECK(kvt_connect(addr, &c) == 0);
	CHECK_RC(c, kvt_attach(c, "isolation-test"), 0);
	CHECK_RC(c, kvt_open_namespace(c, "m", PAGE, 16, 0, ns), 0);
	return c;
}

static void keys_for(struct kvt_key *k, int n, unsigned base)
{
	for (int i = 0; i < n; i++)
		test_fill(k[i].bytes, sizeof(k[i].bytes), base + (unsigned)i);
}

/* A raw segment-socket exchange: the reply's status (the fd, if any, is
 * closed). len: bytes of req to send. */
static int raw_request(const void *req, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct kvt_segment_reply rep = { 0 };
	char ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &rep, sizeof(rep) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *cm;
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	CHECK(strlen(sh->seg_socket) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, sh->seg_socket);
	CHECK(s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(send(s, req, len, 0) == (ssize_t)len);
	CHECK(recvmsg(s, &msg, 0) == (ssize_t)sizeof(rep));
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		int fd;

		memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
		close(fd);
		CHECK(rep.status == 0);
	}
	close(s);
	return rep.status;
}

/* A: fills the whole tier with its blocks, maps its segments itself, then
 * tries to break them; later scribbles over its old mappings. */
static void tenant_a(const char *addr)
{
	static struct kvt_key keys[BLOCKS];
	struct kvt_slot slots[BLOCKS];
	struct kvt_namespace ns;
	uint8_t *maps[SEGMENTS] = { 0 };
	kvt_client *c = become(UID_A, addr, &ns);
	int fd;

	keys_for(keys, BLOCKS, 1000);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, BLOCKS, NULL, slots), 0);
	for (int i = 0; i < BLOCKS; i++) {
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
		memset(slots[i].page, 0xA1, PAGE);
	}
	/* Half committed, half left RESERVED (pending). */
	CHECK_RC(c, kvt_commit(c, &ns, keys, BLOCKS / 2), 0);
	kvt_session_token(c, sh->a_token);
	for (uint32_t g = 0; g < SEGMENTS; g++) {
		uint32_t gen;

		fd = kvt_segment_fd(c, g, &gen);
		CHECK(fd >= 0);
		sh->a_segments[g] = 1;
		maps[g] = mmap(NULL, SEGMENT, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		CHECK(maps[g] != MAP_FAILED);
		if (g == 0) {
			/* Sealed: no shrinking, growing, resealing or writing past it. */
			CHECK(ftruncate(fd, 0) < 0 && errno == EPERM);
			CHECK(ftruncate(fd, SEGMENT * 2) < 0 && errno == EPERM);
			CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EPERM);
			CHECK(pwrite(fd, "x", 1, SEGMENT) < 0 && errno == EPERM);
			CHECK(fallocate(fd, 0, 0, SEGMENT * 2) < 0 && errno == EPERM);
			/* Punching a hole destroys A's own pages, nothing more. */
			CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					0, SEGMENT) == 0);
			CHECK(madvise(maps[g], SEGMENT, MADV_REMOVE) == 0);
		}
		close(fd);
	}
	{
		/* The daemon reads the punched pages (Get copies them out): zeros,
		 * and it lives on. */
		static uint8_t page[PAGE], zero[PAGE];
		void *pages[1] = { page };
		size_t got;

		CHECK_RC(c, kvt_get(c, &ns, keys, 1, pages, &got), 0);
		CHECK(got == 1 && memcmp(page, zero, PAGE) == 0);
	}
	sh->a = getpid();
	atomic_store(&sh->step, 1);

	/* Once B has taken the tier: A's old mappings hold none of B's bytes,
	 * and whatever A writes there stays there. */
	wait_step(2);
	for (uint32_t g = 0; g < SEGMENTS; g++) {
		for (size_t i = 0; i < SEGMENT; i++)
			CHECK(maps[g][i] != PATTERN);
		memset(maps[g], 0xEE, SEGMENT);
	}
	atomic_store(&sh->step, 3);
	wait_step(4);
	kvt_close(c);
}

/* B: tries every way it has at A's pages, then takes the tier over. */
static void tenant_b(const char *addr, pid_t daemon)
{
	static struct kvt_key keys[BLOCKS];
	static uint8_t page[PAGE];
	struct kvt_slot slots[BLOCKS];
	struct kvt_namespace ns;
	struct kvt_segment_request req = { .version = KVT_SEGMENT_WIRE_VERSION };
	char path[300];
	kvt_client *c;
	DIR *dir;
	struct dirent *de;

	wait_step(1);
	c = become(UID_B, addr, &ns);
	/* Nothing by name (an older kvtierd's leftovers may be there). */
	dir = opendir("/dev/shm");
	while (dir && (de = readdir(dir))) {
		struct stat st;

		snprintf(path, sizeof(path), "/dev/shm/%s", de->d_name);
		CHECK(stat(path, &st) < 0 || st.st_ctime < sh->started ||
		      strstr(de->d_name, "kvtier") == NULL);
	}
	if (dir)
		closedir(dir);
	/* Neither the daemon's descriptors nor A's. */
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)daemon);
	CHECK(opendir(path) == NULL && errno == EACCES);
	snprintf(path, sizeof(path), "/proc/%d/fd/3", (int)daemon);
	CHECK(open(path, O_RDWR) < 0);
	snprintf(path, sizeof(path), "/proc/%d/map_files", (int)daemon);
	CHECK(opendir(path) == NULL);
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)daemon);
	CHECK(open(path, O_RDONLY) < 0);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)sh->a);
	CHECK(opendir(path) == NULL && errno == EACCES);
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)sh->a);
	CHECK(open(path, O_RDONLY) < 0);

	/* Not A's segments with its own session... */
	for (uint32_t g = 0; g < SEGMENTS; g++) {
		uint32_t gen;

		CHECK(sh->a_segments[g]);
		CHECK(kvt_segment_fd(c, g, &gen) == -EACCES);
		CHECK(strstr(kvt_errmsg(c), "holds none of tenant"));
	}
	{
		uint32_t gen;

		CHECK(kvt_segment_fd(c, SEGMENTS, &gen) == -ENOENT);
	}
	/* ...nor with A's token, nor with malformed requests. */
	memcpy(req.session, sh->a_token, sizeof(req.session));
	req.segment = 0;
	CHECK(raw_request(&req, sizeof(req)) == -ENOENT);
	/* Nor A's fast lane (lane.h): to B, A's session does not exist. */
	req.segment = KVT_LANE_SEGMENT;
	CHECK(raw_request(&req, sizeof(req)) == -ENOENT);
	kvt_session_token(c, req.session);
	req.version = 99;
	CHECK(raw_request(&req, sizeof(req)) == -EINVAL);
	req.version = KVT_SEGMENT_WIRE_VERSION;
	CHECK(raw_request(&req, 5) == -EINVAL);
	req.segment = UINT32_MAX - 1;
	CHECK(raw_request(&req, sizeof(req)) == -ENOENT);
	/* B's own session has its lane already (libkvtier opened it). */
	CHECK(kvt_fast_lane(c, NULL));
	req.segment = KVT_LANE_SEGMENT;
	CHECK(raw_request(&req, sizeof(req)) == -EBUSY);

	/* B's writes evict A's committed blocks and take their segments. */
	keys_for(keys, BLOCKS / 2, 5000);
	memset(page, PATTERN, PAGE);
	CHECK_RC(c, kvt_reserve(c, &ns, NULL, keys, BLOCKS / 2, NULL, slots), 0);
	for (int i = 0; i < BLOCKS / 2; i++) {
		CHECK(slots[i].state == KVT_SLOT_RESERVED);
		memcpy(slots[i].page, page, PAGE);
	}
	CHECK_RC(c, kvt_commit(c, &ns, keys, BLOCKS / 2), 0);
	atomic_store(&sh->step, 2);
	wait_step(3);
	/* A scribbled over its old mappings: B's pages are whole. */
	{
		static uint8_t got_page[PAGE];
		void *pages[1] = { got_page };
		size_t got;

		for (int i = 0; i < BLOCKS / 2; i++) {
			CHECK_RC(c, kvt_get(c, &ns, &keys[i], 1, pages, &got), 0);
			CHECK(got == 1 && memcmp(got_page, page, PAGE) == 0);
		}
	}
	kvt_close(c);
}

int main(void)
{
	static const char *const sets[] = {
		"host.size=1M", "host.segment_size=64K", "daemon.group=nogroup",
		"daemon.socket_mode=0660", NULL,
	};
	struct test_daemon d;
	unsigned long long renewed, refused;
	pid_t a, b;
	int status;
	kvt_client *c;

	if (geteuid() != 0) {
		fprintf(stderr, "needs root to run workers under other uids\n");
		return 77;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	sh->started = time(NULL) - 1;
	test_daemon_start(&d, sets);
	CHECK(chmod(d.dir, 0755) == 0);
	sh->daemon = d.pid;
	snprintf(sh->seg_socket, sizeof(sh->seg_socket), "%s/run/kvtierd.sock%s",
		 d.dir, KVT_SEGMENT_SOCKET_SUFFIX);

	a = fork();
	CHECK(a >= 0);
	if (a == 0) {
		tenant_a(d.addr);
		_exit(0);
	}
	b = fork();
	CHECK(b >= 0);
	if (b == 0) {
		tenant_b(d.addr, d.pid);
		_exit(0);
	}
	CHECK(waitpid(b, &status, 0) == b && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	atomic_store(&sh->step, 4);
	CHECK(waitpid(a, &status, 0) == a && WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* The daemon lived through it all, and counted. */
	CHECK(kill(d.pid, 0) == 0);
	CHECK(kvt_connect(d.addr, &c) == 0);
	renewed = test_stat(c, "host_segments_renewed_total");
	refused = test_stat(c, "segment_fd_refusals_total");
	printf("segments renewed %llu, descriptors served %llu, refused %llu\n",
	       renewed, test_stat(c, "segment_fds_total"), refused);
	CHECK(renewed >= SEGMENTS / 2);
	CHECK(refused >= SEGMENTS + 5);
	kvt_close(c);
	CHECK(test_daemon_stop(&d) == 0);
	return 0;
}

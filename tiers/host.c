#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct kvt_host {
	char prefix[64];
	uint32_t segments;
	uint64_t segment_bytes;
	mode_t mode;
	gid_t gid;
	uint8_t *maps[KVT_HOST_SEGMENTS_MAX];
};

static void segment_name(const struct kvt_host *h, uint32_t i, char *buf,
			 size_t len)
{
	snprintf(buf, len, "%s%u", h->prefix, i);
}

static int create_segment(struct kvt_host *h, uint32_t i)
{
	mode_t mode = h->mode;
	gid_t gid = h->gid;
	char name[96];
	void *p;
	int fd, rc = 0;

	segment_name(h, i, name, sizeof(name));
	shm_unlink(name);
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	/* shm_open applies the umask; the mode must be exactly what was asked. */
	if (fchmod(fd, mode) < 0 ||
	    (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0) ||
	    ftruncate(fd, (off_t)h->segment_bytes) < 0) {
		rc = -errno;
		goto out_unlink;
	}
	p = mmap(NULL, h->segment_bytes, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		goto out_unlink;
	}
	h->maps[i] = p;
	close(fd);
	return 0;

out_unlink:
	close(fd);
	shm_unlink(name);
	return rc;
}

int kvt_host_create(const char *prefix, uint32_t segments,
		    uint64_t segment_bytes, mode_t mode, gid_t gid,
		    struct kvt_host **out)
{
	struct kvt_host *h = calloc(1, sizeof(*h));
	int rc;

	if (!h)
		return -ENOMEM;
	if (strlen(prefix) >= sizeof(h->prefix)) {
		free(h);
		return -ENAMETOOLONG;
	}
	strcpy(h->prefix, prefix);
	h->segment_bytes = segment_bytes;
	h->mode = mode;
	h->gid = gid;
	rc = kvt_host_grow(h, segments);
	if (rc < 0) {
		kvt_host_destroy(h);
		return rc;
	}
	*out = h;
	return 0;
}

int kvt_host_grow(struct kvt_host *h, uint32_t segments)
{
	if (segments > KVT_HOST_SEGMENTS_MAX)
		return -E2BIG;
	for (uint32_t i = h->segments; i < segments; i++) {
		int rc = create_segment(h, i);

		if (rc < 0)
			return rc;
		h->segments = i + 1;
	}
	return 0;
}

uint32_t kvt_host_segments(const struct kvt_host *h)
{
	return h->segments;
}

void kvt_host_release(struct kvt_host *h, uint32_t segment)
{
	/* Frees the shm pages themselves, not just this mapping of them. */
	(void)madvise(h->maps[segment], h->segment_bytes, MADV_REMOVE);
}

void kvt_host_destroy(struct kvt_host *h)
{
	char name[96];

	if (!h)
		return;
	for (uint32_t i = 0; i < h->segments; i++) {
		munmap(h->maps[i], h->segment_bytes);
		segment_name(h, i, name, sizeof(name));
		shm_unlink(name);
	}
	free(h);
}

void *kvt_host_ptr(const struct kvt_host *h, uint32_t segment, uint64_t offset)
{
	return h->maps[segment] + offset;
}

const char *kvt_host_prefix(const struct kvt_host *h)
{
	return h->prefix;
}

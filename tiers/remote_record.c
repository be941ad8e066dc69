#include "remote_record.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#define MAGIC 0x3143455254564b52ull /* "RKVTREC1" */
#define VERSION 1

/* The header as stored: little-endian as written by the hosts kvtier runs
 * on; a host of the other byte order reads a bad magic, a miss. */
struct remote_header {
	uint64_t magic;
	uint32_t version, page_len;
	uint64_t fingerprint, page_sum;
	uint8_t key[16], parent[16];
	char tenant[KVT_REMOTE_TENANT_MAX];
	uint8_t has_parent, pad[23];
	uint64_t sum; /* xxh3 of everything above */
};
_Static_assert(sizeof(struct remote_header) == KVT_REMOTE_HEADER_BYTES,
	       "the remote header is KVT_REMOTE_HEADER_BYTES");

uint64_t kvt_remote_fingerprint(const char *ns_name, uint64_t page_bytes,
				uint32_t block_tokens)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "%s\n%llu\n%u", ns_name,
			 (unsigned long long)page_bytes, block_tokens);

	return XXH3_64bits(buf, n < (int)sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

size_t kvt_remote_name(const struct kvt_remote_id *id,
		       char name[KVT_REMOTE_NAME_MAX])
{
	int n = snprintf(name, KVT_REMOTE_NAME_MAX, "kvt1:%016llx:%.*s:",
			 (unsigned long long)id->fingerprint,
			 KVT_REMOTE_TENANT_MAX - 1, id->tenant);

	for (int i = 0; i < 16; i++)
		n += snprintf(name + n, (size_t)(KVT_REMOTE_NAME_MAX - n), "%02x",
			      id->key[i]);
	return (size_t)n;
}

void kvt_remote_header(const struct kvt_remote_id *id, const uint8_t *parent,
		       const void *page, uint32_t page_len,
		       uint8_t hdr[KVT_REMOTE_HEADER_BYTES])
{
	struct remote_header h;

	memset(&h, 0, sizeof(h));
	h.magic = MAGIC;
	h.version = VERSION;
	h.page_len = page_len;
	h.fingerprint = id->fingerprint;
	h.page_sum = XXH3_64bits(page, page_len);
	memcpy(h.key, id->key, sizeof(h.key));
	if (parent) {
		memcpy(h.parent, parent, sizeof(h.parent));
		h.has_parent = 1;
	}
	snprintf(h.tenant, sizeof(h.tenant), "%s", id->tenant);
	h.sum = XXH3_64bits(&h, offsetof(struct remote_header, sum));
	memcpy(hdr, &h, sizeof(h));
}

int kvt_remote_record_check(const struct kvt_remote_id *id,
			    const uint8_t hdr[KVT_REMOTE_HEADER_BYTES],
			    const void *page, uint64_t value_len,
			    uint32_t page_len, const char **why)
{
	struct remote_header h;

	*why = NULL;
	memcpy(&h, hdr, sizeof(h));
	if (value_len != (uint64_t)KVT_REMOTE_HEADER_BYTES + page_len)
		*why = "the value's length is not a header and a page";
	else if (h.magic != MAGIC || h.version != VERSION)
		*why = "not a kvtier record of this version";
	else if (h.sum != XXH3_64bits(&h, offsetof(struct remote_header, sum)))
		*why = "the header's checksum does not match";
	else if (h.fingerprint != id->fingerprint || h.page_len != page_len)
		*why = "the record is another namespace's";
	else if (memcmp(h.key, id->key, sizeof(h.key)) != 0 ||
		 strncmp(h.tenant, id->tenant, sizeof(h.tenant)) != 0)
		*why = "the record is another block's or tenant's";
	else if (h.page_sum != XXH3_64bits(page, page_len))
		*why = "the page's checksum does not match";
	return *why ? -EBADMSG : 0;
}

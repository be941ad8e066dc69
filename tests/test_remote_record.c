/* The remote tier's records: names every node agrees on, and a value that
 * is anything but the block asked for is refused. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "remote_record.h"

#define PAGE 8192

static uint8_t value[KVT_REMOTE_HEADER_BYTES + PAGE];
static uint8_t *const page = value + KVT_REMOTE_HEADER_BYTES;

static int check(const struct kvt_remote_id *id, uint64_t len, uint32_t page_len,
		 const char *want_why)
{
	const char *why;
	int rc = kvt_remote_record_check(id, value, page, len, page_len, &why);

	if (want_why)
		CHECK(why && strstr(why, want_why));
	else
		CHECK(why == NULL);
	return rc;
}

int main(void)
{
	uint8_t key[16], other_key[16], parent[16];
	char name[KVT_REMOTE_NAME_MAX];
	uint64_t fp = kvt_remote_fingerprint("llama:bf16:bt16", PAGE, 16);
	struct kvt_remote_id id = { fp, "alice", key };
	struct kvt_remote_id bob = { fp, "bob", key };
	struct kvt_remote_id shared = { fp, "", key };

	for (int i = 0; i < 16; i++) {
		key[i] = (uint8_t)i;
		other_key[i] = (uint8_t)(i + 1);
		parent[i] = (uint8_t)(0xf0 + i);
	}
	test_fill(page, PAGE, 7);

	/* Fingerprints: the same namespace agrees, any field changes it. */
	CHECK(kvt_remote_fingerprint("llama:bf16:bt16", PAGE, 16) == fp);
	CHECK(kvt_remote_fingerprint("llama:bf16:bt8", PAGE, 16) != fp);
	CHECK(kvt_remote_fingerprint("llama:bf16:bt16", PAGE * 2, 16) != fp);
	CHECK(kvt_remote_fingerprint("llama:bf16:bt16", PAGE, 8) != fp);

	/* Names: fixed fields at both ends, the tenant's name between. */
	CHECK(kvt_remote_name(&id, name) == strlen(name));
	CHECK(strncmp(name, "kvt1:", 5) == 0 && strlen(name) == 5 + 16 + 1 + 5 + 1 + 32);
	CHECK(strcmp(name + 5 + 16, ":alice:000102030405060708090a0b0c0d0e0f") == 0);
	kvt_remote_name(&shared, name);
	CHECK(strstr(name, "::000102") != NULL);

	/* A record reads back whole. */
	kvt_remote_header(&id, parent, page, PAGE, value);
	CHECK(check(&id, sizeof(value), PAGE, NULL) == 0);

	/* Asked as another tenant, key, namespace or page size: a miss. */
	CHECK(check(&bob, sizeof(value), PAGE, "another block's or tenant's") == -EBADMSG);
	id.key = other_key;
	CHECK(check(&id, sizeof(value), PAGE, "another block's or tenant's") == -EBADMSG);
	id.key = key;
	id.fingerprint = fp + 1;
	CHECK(check(&id, sizeof(value), PAGE, "another namespace's") == -EBADMSG);
	id.fingerprint = fp;
	CHECK(check(&id, sizeof(value) - 1, PAGE - 1, "another namespace's") == -EBADMSG);

	/* Truncated or padded: a miss. */
	CHECK(check(&id, sizeof(value) - 1, PAGE, "length") == -EBADMSG);
	CHECK(check(&id, sizeof(value) + 1, PAGE, "length") == -EBADMSG);

	/* Any byte flipped, header or page: a miss. */
	for (size_t i = 0; i < sizeof(value); i += 61) {
		value[i] ^= 0x20;
		CHECK(check(&id, sizeof(value), PAGE,
			    i < KVT_REMOTE_HEADER_BYTES ? "" : "page's checksum") == -EBADMSG);
		value[i] ^= 0x20;
	}
	CHECK(check(&id, sizeof(value), PAGE, NULL) == 0);

	/* Not a record at all. */
	memset(value, 'x', KVT_REMOTE_HEADER_BYTES);
	CHECK(check(&id, sizeof(value), PAGE, "not a kvtier record") == -EBADMSG);
	return 0;
}

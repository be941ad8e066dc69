/*
 * The remote tier's records: how a block is named and stored in the shared
 * store (Redis), so that every node agrees on both.
 *
 * Name: "kvt1:<fingerprint>:<tenant>:<key>", the fingerprint (16 hex
 * digits) an xxh3 of the namespace's name, page_bytes and block_tokens, the
 * tenant its name (uids differ across nodes; "" for a shared namespace),
 * the key its 32 hex digits. Keys are spread over the cluster's slots (no
 * hash tag): a chain's blocks land on every master.
 *
 * Value: a header of KVT_REMOTE_HEADER_BYTES (magic, version, the same
 * fingerprint, tenant and key, the parent key, the page length and an xxh3
 * of the page, and an xxh3 of the header itself) followed by the page.
 * Whatever a reader gets is checked against what it asked for before a
 * byte of the page is used: a value that is short, foreign, stale or
 * corrupt is a miss (kvt_remote_record_check says why).
 *
 * Pure functions: any thread.
 */
#ifndef KVT_REMOTE_RECORD_H
#define KVT_REMOTE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVT_REMOTE_HEADER_BYTES 128
#define KVT_REMOTE_TENANT_MAX 32 /* with its NUL, as KVT_TENANT_NAME_MAX */
/* "kvt1:" 16 ":" tenant ":" 32 and a NUL */
#define KVT_REMOTE_NAME_MAX (5 + 16 + 1 + KVT_REMOTE_TENANT_MAX + 1 + 32 + 1)

/* What identifies a record: all of it is in its name and its header. */
struct kvt_remote_id {
	uint64_t fingerprint; /* kvt_remote_fingerprint of its namespace */
	const char *tenant;   /* "" for a shared namespace */
	const uint8_t *key;   /* 16 bytes */
};

uint64_t kvt_remote_fingerprint(const char *ns_name, uint64_t page_bytes,
				uint32_t block_tokens);

/* The record's name in the store, NUL-terminated in name; its length. */
size_t kvt_remote_name(const struct kvt_remote_id *id,
		       char name[KVT_REMOTE_NAME_MAX]);

/* Writes the header of the record of page (page_len bytes) into hdr;
 * parent NULL: none. */
void kvt_remote_header(const struct kvt_remote_id *id, const uint8_t *parent,
		       const void *page, uint32_t page_len,
		       uint8_t hdr[KVT_REMOTE_HEADER_BYTES]);

/*
 * Checks a record read back (hdr, then the page of page_len bytes; the
 * value was value_len bytes in all) against what was asked for. 0, or
 * -EBADMSG with why (a static string) set: too short or long, not a kvtier
 * record, another namespace, tenant or key, a header or page checksum that
 * does not match.
 */
int kvt_remote_record_check(const struct kvt_remote_id *id,
			    const uint8_t hdr[KVT_REMOTE_HEADER_BYTES],
			    const void *page, uint64_t value_len,
			    uint32_t page_len, const char **why);

#endif

/*
 * Block keys: the chained hash that names a block of KV cache.
 *
 *   key_0 = H(secret; 0^16  || n || tokens of block 0 || len(extra) || extra)
 *   key_i = H(secret; key_{i-1} || n || tokens of block i || len(extra) || extra)
 *
 * H is keyed BLAKE2b with a 16-byte output (libsodium crypto_generichash);
 * n and the tokens are little-endian uint32, len(extra) a little-endian
 * uint32. Because each key covers its parent, equal keys mean equal prefixes.
 * The secret (16..64 bytes) is per namespace or per deployment: without it,
 * nobody can forge a key that collides with another tenant's prefix. `extra`
 * carries what else shapes the KV (a LoRA adapter id, image hashes); it may
 * be NULL. The daemon never sees tokens, only keys. Thread-safe.
 */
#ifndef KVTIER_KEY_H
#define KVTIER_KEY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_KEY_SIZE 16
#define KVT_KEY_SECRET_MIN 16
#define KVT_KEY_SECRET_MAX 64

struct kvt_key {
	uint8_t bytes[KVT_KEY_SIZE];
};

/* One link of the chain (parent NULL for the first block). 0, -EINVAL. */
int kvt_key_chain(const uint8_t *secret, size_t secret_len,
		  const struct kvt_key *parent, const uint32_t *tokens,
		  size_t ntokens, const void *extra, size_t extra_len,
		  struct kvt_key *out);

/*
 * The keys of every full block of a prompt (a trailing partial block gets
 * none), at most max_keys of them. Returns how many were written, or -EINVAL.
 */
long kvt_key_prompt(const uint8_t *secret, size_t secret_len,
		    const uint32_t *tokens, size_t ntokens, size_t block_tokens,
		    const void *extra, size_t extra_len, struct kvt_key *out,
		    size_t max_keys);

#ifdef __cplusplus
}
#endif

#endif

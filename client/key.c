#include "kvtier/key.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

static void put_u32(crypto_generichash_state *st, uint32_t v)
{
	uint8_t le[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			  (uint8_t)(v >> 24) };

	crypto_generichash_update(st, le, sizeof(le));
}

int kvt_key_chain(const uint8_t *secret, size_t secret_len,
		  const struct kvt_key *parent, const uint32_t *tokens,
		  size_t ntokens, const void *extra, size_t extra_len,
		  struct kvt_key *out)
{
	static const struct kvt_key root;
	crypto_generichash_state st;

	if (!secret || secret_len < KVT_KEY_SECRET_MIN ||
	    secret_len > KVT_KEY_SECRET_MAX || ntokens > UINT32_MAX ||
	    extra_len > UINT32_MAX || (!tokens && ntokens) ||
	    (!extra && extra_len) || sodium_init() < 0)
		return -EINVAL;
	crypto_generichash_init(&st, secret, secret_len, KVT_KEY_SIZE);
	crypto_generichash_update(&st, (parent ? parent : &root)->bytes,
				  KVT_KEY_SIZE);
	put_u32(&st, (uint32_t)ntokens);
	for (size_t i = 0; i < ntokens; i++)
		put_u32(&st, tokens[i]);
	put_u32(&st, (uint32_t)extra_len);
	if (extra_len)
		crypto_generichash_update(&st, extra, extra_len);
	crypto_generichash_final(&st, out->bytes, KVT_KEY_SIZE);
	return 0;
}

long kvt_key_prompt(const uint8_t *secret, size_t secret_len,
		    const uint32_t *tokens, size_t ntokens, size_t block_tokens,
		    const void *extra, size_t extra_len, struct kvt_key *out,
		    size_t max_keys)
{
	size_t n;

	if (block_tokens == 0)
		return -EINVAL;
	n = ntokens / block_tokens;
	if (n > max_keys)
		n = max_keys;
	for (size_t i = 0; i < n; i++) {
		int rc = kvt_key_chain(secret, secret_len, i ? &out[i - 1] : NULL,
				       tokens + i * block_tokens, block_tokens,
				       extra, extra_len, &out[i]);
		if (rc < 0)
			return rc;
	}
	return (long)n;
}

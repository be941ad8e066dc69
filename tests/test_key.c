/* Chained keys: deterministic, chained, keyed, validated. */
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include <kvtier/key.h>

#include "harness.h"

int main(void)
{
	uint8_t secret[32], other[32];
	uint32_t tokens[64];
	struct kvt_key a[4], b[4], k;
	crypto_generichash_state st;
	uint8_t want[16], le[4];

	for (int i = 0; i < 32; i++) {
		secret[i] = (uint8_t)i;
		other[i] = (uint8_t)(i + 1);
	}
	for (int i = 0; i < 64; i++)
		tokens[i] = (uint32_t)(1000 + i);

	/* 64 tokens, 16 per block: 4 keys; a partial block gets none. */
	CHECK(kvt_key_prompt(secret, 32, tokens, 64, 16, NULL, 0, a, 4) == 4);
	CHECK(kvt_key_prompt(secret, 32, tokens, 63, 16, NULL, 0, b, 4) == 3);
	CHECK(memcmp(a, b, 3 * sizeof(a[0])) == 0);

	/* The scheme, recomputed by hand for block 0. */
	CHECK(sodium_init() >= 0);
	crypto_generichash_init(&st, secret, 32, 16);
	memset(want, 0, 16);
	crypto_generichash_update(&st, want, 16);
	le[0] = 16; le[1] = le[2] = le[3] = 0;
	crypto_generichash_update(&st, le, 4);
	for (int i = 0; i < 16; i++) {
		uint32_t t = tokens[i];
		uint8_t x[4] = { (uint8_t)t, (uint8_t)(t >> 8), 0, 0 };

		crypto_generichash_update(&st, x, 4);
	}
	memset(le, 0, 4);
	crypto_generichash_update(&st, le, 4);
	crypto_generichash_final(&st, want, 16);
	CHECK(memcmp(a[0].bytes, want, 16) == 0);

	/* A change in block 0 changes every later key (the chain). */
	tokens[3]++;
	CHECK(kvt_key_prompt(secret, 32, tokens, 64, 16, NULL, 0, b, 4) == 4);
	for (int i = 0; i < 4; i++)
		CHECK(memcmp(a[i].bytes, b[i].bytes, 16) != 0);
	tokens[3]--;
	/* A change in block 2 leaves blocks 0 and 1 alone. */
	tokens[40]++;
	CHECK(kvt_key_prompt(secret, 32, tokens, 64, 16, NULL, 0, b, 4) == 4);
	CHECK(memcmp(b, a, 2 * sizeof(a[0])) == 0 && memcmp(&b[2], &a[2], 16) != 0);
	tokens[40]--;

	/* Another secret or another extra: other keys. */
	CHECK(kvt_key_prompt(other, 32, tokens, 64, 16, NULL, 0, b, 4) == 4);
	CHECK(memcmp(a[0].bytes, b[0].bytes, 16) != 0);
	CHECK(kvt_key_chain(secret, 32, NULL, tokens, 16, "lora-7", 6, &k) == 0);
	CHECK(memcmp(k.bytes, a[0].bytes, 16) != 0);
	CHECK(kvt_key_chain(secret, 32, NULL, tokens, 16, NULL, 0, &k) == 0);
	CHECK(memcmp(k.bytes, a[0].bytes, 16) == 0);

	/* Bad input. */
	CHECK(kvt_key_chain(secret, 8, NULL, tokens, 16, NULL, 0, &k) == -EINVAL);
	CHECK(kvt_key_chain(NULL, 32, NULL, tokens, 16, NULL, 0, &k) == -EINVAL);
	CHECK(kvt_key_prompt(secret, 32, tokens, 64, 0, NULL, 0, b, 4) == -EINVAL);
	return 0;
}

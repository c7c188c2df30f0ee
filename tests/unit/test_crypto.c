/* Unit tests for src/util/crypto.c: SHA-256 and HMAC known vectors, base64 both ways, constant-time compare. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/crypto.h"
#include "unit.h"

static void hex_of(const unsigned char *p, size_t n, char *out)
{
	tg_hex(p, n, out);
}

START_TEST(test_sha256_vectors)
{
	char out[65];
	/* FIPS 180-2 examples */
	tg_sha256_hex("", 0, out);
	ck_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	tg_sha256_hex("abc", 3, out);
	ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	tg_sha256_hex(two, strlen(two), out);
	ck_assert_str_eq(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	unsigned char raw[32];
	tg_sha256("abc", 3, raw);
	hex_of(raw, 32, out);
	ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* a million 'a' */
	char *m = malloc(1000000);
	memset(m, 'a', 1000000);
	tg_sha256_hex(m, 1000000, out);
	ck_assert_str_eq(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(m);
	char sha1[41];
	tg_sha1_hex("abc", 3, sha1);
	ck_assert_str_eq(sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
}
END_TEST

START_TEST(test_hmac_rfc4231)
{
	unsigned char mac[32];
	char out[65];
	/* test case 2: key "Jefe" */
	const char *data = "what do ya want for nothing?";
	tg_hmac_sha256("Jefe", 4, data, strlen(data), mac);
	hex_of(mac, 32, out);
	ck_assert_str_eq(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* test case 1: 20 bytes of 0x0b, "Hi There" */
	unsigned char key[131];
	memset(key, 0x0b, 20);
	tg_hmac_sha256(key, 20, "Hi There", 8, mac);
	hex_of(mac, 32, out);
	ck_assert_str_eq(out, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	/* test case 6: a key longer than the block size is hashed first */
	memset(key, 0xaa, 131);
	const char *d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
	tg_hmac_sha256(key, 131, d6, strlen(d6), mac);
	hex_of(mac, 32, out);
	ck_assert_str_eq(out, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}
END_TEST

START_TEST(test_base64_vectors)
{
	/* RFC 4648 section 10 */
	const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	char enc[64];
	unsigned char dec[64];
	for (size_t i = 0; i < 7; i++) {
		size_t n = tg_base64_encode(in[i], strlen(in[i]), enc);
		ck_assert_uint_eq(n, strlen(want[i]));
		ck_assert_str_eq(enc, want[i]);
		long m = tg_base64_decode(enc, n, dec);
		ck_assert_int_eq(m, (long)strlen(in[i]));
		ck_assert_int_eq(memcmp(dec, in[i], (size_t)m), 0);
	}
	/* padding is optional on input */
	ck_assert_int_eq(tg_base64_decode("Zg", 2, dec), 1);
	ck_assert_int_eq(dec[0], 'f');
	ck_assert_int_eq(tg_base64_decode("Zm9vYmE", 7, dec), 5);
	ck_assert_int_eq(memcmp(dec, "fooba", 5), 0);
	/* + and / */
	unsigned char bin[3] = {0xfb, 0xff, 0xbf};
	tg_base64_encode(bin, 3, enc);
	ck_assert_str_eq(enc, "+/+/");
	ck_assert_int_eq(tg_base64_decode("+/+/", 4, dec), 3);
	ck_assert_int_eq(memcmp(dec, bin, 3), 0);
}
END_TEST

START_TEST(test_base64_round_trip)
{
	unsigned char data[300], dec[420];
	char enc[420];
	for (size_t n = 0; n <= sizeof(data); n++) {
		for (size_t i = 0; i < n; i++)
			data[i] = (unsigned char)(i * 151 + n * 7);
		size_t e = tg_base64_encode(data, n, enc);
		ck_assert_uint_eq(e, 4 * ((n + 2) / 3));
		ck_assert_uint_eq(strlen(enc), e);
		ck_assert_int_eq(tg_base64_decode(enc, e, dec), (long)n);
		ck_assert_int_eq(memcmp(dec, data, n), 0);
	}
	/* random bytes, the way webhook secrets are made */
	for (int k = 0; k < 200; k++) {
		unsigned char key[32];
		tg_random_bytes(key, sizeof(key));
		size_t e = tg_base64_encode(key, sizeof(key), enc);
		ck_assert_int_eq(tg_base64_decode(enc, e, dec), 32);
		ck_assert_int_eq(memcmp(dec, key, 32), 0);
	}
}
END_TEST

START_TEST(test_base64_rejects)
{
	unsigned char dec[64];
	const char *bad[] = {
		"Z",          /* one dangling character cannot make a byte */
		"Zm9vY",      /* likewise after whole groups */
		"Zm9v!",      /* outside the alphabet */
		"Zm 9v",      /* whitespace */
		"Zm9v\n",
		"Zm-_",       /* the URL-safe alphabet is not standard base64 */
		"Zg==Zg==",   /* padding in the middle */
		"=Zg",
		"Zm9v\x80",
		"Zm\0v",
	};
	size_t lens[] = {1, 5, 5, 5, 5, 4, 8, 3, 5, 4};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(tg_base64_decode(bad[i], lens[i], dec) == -1, "'%s' was accepted", bad[i]);
	ck_assert_int_eq(tg_base64_decode("", 0, dec), 0);
}
END_TEST

START_TEST(test_ct_equal)
{
	ck_assert(tg_ct_equal("abc", 3, "abc", 3));
	ck_assert(!tg_ct_equal("abc", 3, "abd", 3));
	ck_assert(!tg_ct_equal("abc", 3, "abcd", 4));
	ck_assert(!tg_ct_equal("abcd", 4, "abc", 3));
	ck_assert(tg_ct_equal("", 0, "", 0));
	ck_assert(!tg_ct_equal("", 0, "a", 1));
	ck_assert(tg_ct_equal("a\0b", 3, "a\0b", 3));
	ck_assert(!tg_ct_equal("a\0b", 3, "a\0c", 3));
}
END_TEST

START_TEST(test_random)
{
	unsigned char a[32], b[32];
	char h[65];
	tg_random_bytes(a, sizeof(a));
	tg_random_bytes(b, sizeof(b));
	ck_assert_int_ne(memcmp(a, b, sizeof(a)), 0);
	ck_assert_uint_ne(tg_random_u64(), tg_random_u64());
	unsigned char z[3] = {0x00, 0xab, 0xff};
	tg_hex(z, 3, h);
	ck_assert_str_eq(h, "00abff");
	tg_hex(z, 0, h);
	ck_assert_str_eq(h, "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("crypto");
	TCase *tc = tcase_create("crypto");

	tcase_add_test(tc, test_sha256_vectors);
	tcase_add_test(tc, test_hmac_rfc4231);
	tcase_add_test(tc, test_base64_vectors);
	tcase_add_test(tc, test_base64_round_trip);
	tcase_add_test(tc, test_base64_rejects);
	tcase_add_test(tc, test_ct_equal);
	tcase_add_test(tc, test_random);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

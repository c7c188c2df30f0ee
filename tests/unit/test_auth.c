/* Unit tests for src/auth/auth.c: the admin token, cached API keys, and issuing and verifying our JWTs. */
#include <check.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tollgate/auth.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"
#include "unit.h"

#define SECRET "unit-test-jwt-secret"
#define ADMIN "adm_unit_token"
#define TENANT "ten_unit"
#define KEY_ID "key_unit"

static char key_secret[AUTH_SECRET_BUFSZ], key_hash[65];

static json_t *key_row(const char *id, const char *tenant, const char *hash, const char *scopes, bool revoked)
{
	json_error_t je;
	return tg_json_obj("id", json_string(id), "tenant_id", json_string(tenant), "secret_hash", json_string(hash),
			   "scopes", json_loads(scopes, 0, &je), "revoked", json_boolean(revoked), NULL);
}

static void setup(void)
{
	char prefix[16];
	auth_init(ADMIN, SECRET);
	auth_new_secret(key_secret, key_hash, prefix);
	json_t *rows = json_array();
	json_array_append_new(rows, key_row(KEY_ID, TENANT, key_hash, "[\"all\"]", false));
	auth_keys_set_all(rows);
	json_decref(rows);
}

static void teardown(void)
{
	auth_release();
}

static int authn(const char *header, struct tg_principal *p, struct tg_error *e)
{
	memset(e, 0, sizeof(*e));
	return auth_authenticate(header, p, e);
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static char *issue(const char *scope, const char *customer, int64_t iat, int64_t exp)
{
	char *tok = NULL;
	struct tg_error e;
	ck_assert_int_eq(auth_token_issue(TENANT, KEY_ID, scope, customer, iat, exp, &tok, &e), 0);
	ck_assert_ptr_nonnull(tok);
	return tok;
}

static int verify(const char *tok, int64_t now, struct tg_principal *p, struct tg_error *e)
{
	memset(e, 0, sizeof(*e));
	return auth_token_verify(tok, now, p, e);
}

/* base64url without padding */
static void b64url(const void *in, size_t n, char *out)
{
	char std[1024];
	size_t len = tg_base64_encode(in, n, std), o = 0;
	for (size_t i = 0; i < len; i++) {
		if (std[i] == '=')
			break;
		out[o++] = std[i] == '+' ? '-' : std[i] == '/' ? '_' : std[i];
	}
	out[o] = '\0';
}

/* An HS256 token over any header and claims, signed with the server's key (the secret itself). */
static char *forge(const char *header, const char *claims)
{
	unsigned char mac[32];
	char h[512], c[1024], sig[64], *out = malloc(2048);

	b64url(header, strlen(header), h);
	b64url(claims, strlen(claims), c);
	snprintf(out, 2048, "%s.%s", h, c);
	tg_hmac_sha256(SECRET, strlen(SECRET), out, strlen(out), mac);
	b64url(mac, sizeof(mac), sig);
	strcat(out, ".");
	strcat(out, sig);
	return out;
}

/* ---- the authenticator ---- */

START_TEST(test_admin_token)
{
	struct tg_principal p;
	struct tg_error e;
	ck_assert_int_eq(authn("Bearer " ADMIN, &p, &e), 0);
	ck_assert_int_eq(p.kind, TG_PRINCIPAL_ADMIN);
	ck_assert_str_eq(p.tenant_id, "");
	ck_assert_int_eq(authn("bearer " ADMIN, &p, &e), 0); /* the scheme is case-insensitive */
	ck_assert_int_eq(authn("Bearer   " ADMIN, &p, &e), 0);
	const char *wrong[] = {"Bearer " ADMIN "x", "Bearer adm_unit_toke", "Bearer ADM_UNIT_TOKEN", "Bearer " ADMIN " ",
			       "Basic " ADMIN, ADMIN, "Bearer", "Bearer ", "Bearer x"};
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
		ck_assert_msg(authn(wrong[i], &p, &e) == TG_EAUTH, "'%s' was accepted", wrong[i]);
		ck_assert_int_eq(p.kind, TG_PRINCIPAL_NONE);
	}
	ck_assert_int_eq(authn(NULL, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "missing_credentials");
	ck_assert_int_eq(authn("", &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "missing_credentials");
	ck_assert_int_eq(authn("Basic abc", &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "invalid_credentials");
	char huge[5000] = "Bearer ";
	memset(huge + 7, 'a', sizeof(huge) - 8);
	huge[sizeof(huge) - 1] = '\0';
	ck_assert_int_eq(authn(huge, &p, &e), TG_EAUTH);
}
END_TEST

START_TEST(test_admin_disabled_when_empty)
{
	struct tg_principal p;
	struct tg_error e;
	auth_init("", SECRET);
	ck_assert_int_eq(authn("Bearer ", &p, &e), TG_EAUTH);
	ck_assert_int_eq(authn("Bearer " ADMIN, &p, &e), TG_EAUTH);
	auth_init(NULL, SECRET);
	ck_assert_int_eq(authn("Bearer x", &p, &e), TG_EAUTH);
}
END_TEST

START_TEST(test_api_keys)
{
	struct tg_principal p;
	struct tg_error e;
	char header[128];
	snprintf(header, sizeof(header), "Bearer %s", key_secret);
	ck_assert_int_eq(authn(header, &p, &e), 0);
	ck_assert_int_eq(p.kind, TG_PRINCIPAL_KEY);
	ck_assert_str_eq(p.tenant_id, TENANT);
	ck_assert_str_eq(p.key_id, KEY_ID);
	ck_assert_uint_eq(p.can, TG_CAN_ALL | TG_CAN_CHECK | TG_CAN_READ);
	ck_assert_str_eq(p.customer_id, "");

	/* one character off: not cached, so the database is asked (once in a second for one key) */
	header[strlen(header) - 1] ^= 1;
	ck_assert_int_eq(authn(header, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, TG_AUTH_ASK_DATABASE);
	ck_assert_int_eq(authn(header, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "invalid_api_key");
	/* a flood of made-up keys asks the database at most 50 times a second */
	int asked = 0;
	for (int i = 0; i < 200; i++) {
		char fake[AUTH_SECRET_BUFSZ], fh[65], fp[16], hdr[128];
		auth_new_secret(fake, fh, fp);
		snprintf(hdr, sizeof(hdr), "Bearer %s", fake);
		ck_assert_int_eq(authn(hdr, &p, &e), TG_EAUTH);
		asked += !strcmp(e.code, TG_AUTH_ASK_DATABASE);
	}
	ck_assert_int_le(asked, 50);
	ck_assert_int_ge(asked, 1);
	ck_assert_int_eq(authn("Bearer sk_", &p, &e), TG_EAUTH);

	/* scopes, per key; revoked rows are not loaded; a tenant's keys are replaced as a whole */
	char s2[AUTH_SECRET_BUFSZ], h2[65], s3[AUTH_SECRET_BUFSZ], h3[65], s4[AUTH_SECRET_BUFSZ], h4[65], pre[16];
	auth_new_secret(s2, h2, pre);
	auth_new_secret(s3, h3, pre);
	auth_new_secret(s4, h4, pre);
	json_t *rows = json_array();
	json_array_append_new(rows, key_row("key_r", "ten_b", h2, "[\"read\"]", false));
	json_array_append_new(rows, key_row("key_c", "ten_b", h3, "[\"check\",\"read\"]", false));
	json_array_append_new(rows, key_row("key_x", "ten_b", h4, "[\"all\"]", true));
	auth_keys_set_tenant("ten_b", rows);
	json_decref(rows);
	ck_assert_uint_eq(auth_keys_count(), 3);
	snprintf(header, sizeof(header), "Bearer %s", s2);
	ck_assert_int_eq(authn(header, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_READ);
	ck_assert_str_eq(p.tenant_id, "ten_b");
	snprintf(header, sizeof(header), "Bearer %s", s3);
	ck_assert_int_eq(authn(header, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_CHECK | TG_CAN_READ);
	snprintf(header, sizeof(header), "Bearer %s", s4);
	ck_assert_int_eq(authn(header, &p, &e), TG_EAUTH);

	/* revoke by replacing ten_b's keys: the others' stay */
	rows = json_array();
	json_array_append_new(rows, key_row("key_c", "ten_b", h3, "[\"check\"]", false));
	auth_keys_set_tenant("ten_b", rows);
	json_decref(rows);
	snprintf(header, sizeof(header), "Bearer %s", s2);
	ck_assert_int_eq(authn(header, &p, &e), TG_EAUTH);
	snprintf(header, sizeof(header), "Bearer %s", s3);
	ck_assert_int_eq(authn(header, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_CHECK);
	snprintf(header, sizeof(header), "Bearer %s", key_secret);
	ck_assert_int_eq(authn(header, &p, &e), 0);
	ck_assert_uint_eq(auth_keys_count(), 2);

	/* the full reload replaces everything */
	rows = json_array();
	auth_keys_set_all(rows);
	json_decref(rows);
	ck_assert_uint_eq(auth_keys_count(), 0);
	ck_assert_int_eq(authn(header, &p, &e), TG_EAUTH);
}
END_TEST

START_TEST(test_scopes_mask)
{
	json_error_t je;
	struct {
		const char *json;
		unsigned want;
	} cases[] = {
		{"[\"all\"]", TG_CAN_ALL | TG_CAN_CHECK | TG_CAN_READ},
		{"[\"read\"]", TG_CAN_READ},
		{"[\"check\"]", TG_CAN_CHECK},
		{"[\"read\",\"check\"]", TG_CAN_READ | TG_CAN_CHECK},
		{"[]", 0},
		{"[\"admin\"]", 0},
		{"[\"read\",\"bogus\"]", 0},
		{"[1]", 0},
		{"[null]", 0},
		{"\"all\"", 0},
		{"{\"all\":true}", 0},
		{"[\"ALL\"]", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, &je);
		ck_assert_msg(auth_scopes_mask(v) == cases[i].want, "%s", cases[i].json);
		json_decref(v);
	}
	ck_assert_uint_eq(auth_scopes_mask(NULL), 0);
	/* a number value from our parser is not the string "all" */
	struct tg_error e;
	json_t *v = tg_json_parse("[1]", 3, false, &e);
	ck_assert_uint_eq(auth_scopes_mask(v), 0);
	json_decref(v);
}
END_TEST

START_TEST(test_new_secret)
{
	char s1[AUTH_SECRET_BUFSZ], h1[65], p1[16], s2[AUTH_SECRET_BUFSZ], h2[65], p2[16], check[65];
	auth_new_secret(s1, h1, p1);
	auth_new_secret(s2, h2, p2);
	ck_assert_int_eq(strncmp(s1, "sk_", 3), 0);
	ck_assert_uint_eq(strlen(s1), 43);
	for (const char *c = s1 + 3; *c; c++)
		ck_assert((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'));
	ck_assert_str_ne(s1, s2);
	tg_sha256_hex(s1, strlen(s1), check);
	ck_assert_str_eq(h1, check);
	ck_assert_uint_eq(strlen(p1), 11);
	ck_assert_int_eq(strncmp(s1, p1, 11), 0);
}
END_TEST

/* ---- JWTs ---- */

START_TEST(test_token_round_trip)
{
	struct tg_principal p;
	struct tg_error e;
	int64_t now = now_s();

	char *t = issue("all", NULL, now, now + 3600);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	ck_assert_int_eq(p.kind, TG_PRINCIPAL_TOKEN);
	ck_assert_str_eq(p.tenant_id, TENANT);
	ck_assert_str_eq(p.key_id, KEY_ID);
	ck_assert_uint_eq(p.can, TG_CAN_ALL | TG_CAN_READ | TG_CAN_CHECK);
	ck_assert_str_eq(p.customer_id, "");
	/* through the authenticator, too */
	char header[1024];
	snprintf(header, sizeof(header), "Bearer %s", t);
	ck_assert_int_eq(authn(header, &p, &e), 0);
	ck_assert_int_eq(p.kind, TG_PRINCIPAL_TOKEN);
	free(t);

	t = issue("read", NULL, now, now + 60);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_READ);
	free(t);

	/* a customer token reads only, even when issued as "all" */
	t = issue("all", "u_28f3a", now, now + 60);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_READ);
	ck_assert_str_eq(p.customer_id, "u_28f3a");
	free(t);

	/* the header says HS256 */
	t = issue("read", NULL, now, now + 60);
	char head[64];
	snprintf(head, sizeof(head), "%.*s", (int)(strchr(t, '.') - t), t);
	unsigned char raw[64];
	long n = tg_base64_decode(head, strlen(head), raw);
	ck_assert_int_gt(n, 0);
	raw[n] = '\0';
	ck_assert_ptr_nonnull(strstr((char *)raw, "HS256"));
	free(t);
}
END_TEST

START_TEST(test_token_expired)
{
	struct tg_principal p;
	struct tg_error e;
	int64_t now = now_s();
	char *t = issue("read", NULL, now, now + 10);
	ck_assert_int_eq(verify(t, now + 9, &p, &e), 0);
	ck_assert_int_eq(verify(t, now + 10, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "token_expired");
	ck_assert_int_eq(verify(t, now + 100000, &p, &e), TG_EAUTH);
	free(t);
	/* born expired */
	t = issue("read", NULL, now - 100, now - 1);
	ck_assert_int_eq(verify(t, now, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "token_expired");
	free(t);
}
END_TEST

START_TEST(test_token_tampered)
{
	struct tg_principal p;
	struct tg_error e;
	int64_t now = now_s();
	char *t = issue("read", "u1", now, now + 600);
	size_t len = strlen(t);
	/* flip each character in turn: every change is refused */
	for (size_t i = 0; i < len; i++) {
		if (t[i] == '.')
			continue;
		char *bad = strdup(t);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		int rc = verify(bad, now, &p, &e);
		/* the last base64url character may carry unused bits: a change there can decode the same */
		if (rc == 0) {
			ck_assert_msg(i == len - 1 || bad[i + 1] == '.', "changing char %zu of %s was accepted", i, t);
			ck_assert_str_eq(p.customer_id, "u1");
		}
		free(bad);
	}
	/* dropping or adding parts */
	char *bad = strdup(t);
	*strrchr(bad, '.') = '\0';
	ck_assert_int_eq(verify(bad, now, &p, &e), TG_EAUTH);
	free(bad);
	bad = malloc(len + 8);
	snprintf(bad, len + 8, "%s.x", t);
	ck_assert_int_eq(verify(bad, now, &p, &e), TG_EAUTH);
	snprintf(bad, len + 8, "%s", t);
	*(strrchr(bad, '.') + 1) = '\0';
	ck_assert_int_eq(verify(bad, now, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "invalid_token");
	free(bad);
	const char *junk[] = {"", ".", "..", "a.b.c", "e30.e30.", "e30.e30.e30", "not a token"};
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
		ck_assert_int_eq(verify(junk[i], now, &p, &e), TG_EAUTH);
	free(t);
}
END_TEST

START_TEST(test_token_alg_none_and_others)
{
	struct tg_principal p;
	struct tg_error e;
	int64_t now = now_s();
	char claims[512], h[256], c[512], tok[1024];
	snprintf(claims, sizeof(claims),
		 "{\"exp\":%lld,\"iat\":%lld,\"iss\":\"tollgate\",\"kid\":\"" KEY_ID "\",\"scope\":\"all\",\"ten\":\"" TENANT
		 "\"}",
		 (long long)now + 600, (long long)now);
	/* the same claims under HS256 with our key are fine: the forger works */
	char *ok = forge("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims);
	ck_assert_int_eq(verify(ok, now, &p, &e), 0);
	free(ok);

	const char *heads[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"none\"}", "{\"alg\":\"None\"}",
			       "{\"alg\":\"NONE\"}", "{\"typ\":\"JWT\"}", "{\"alg\":\"\"}"};
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		b64url(heads[i], strlen(heads[i]), h);
		b64url(claims, strlen(claims), c);
		snprintf(tok, sizeof(tok), "%s.%s.", h, c);
		ck_assert_msg(verify(tok, now, &p, &e) == TG_EAUTH, "%s unsigned was accepted", heads[i]);
		ck_assert_str_eq(e.code, "invalid_token");
		snprintf(tok, sizeof(tok), "%s.%s", h, c);
		ck_assert_int_eq(verify(tok, now, &p, &e), TG_EAUTH);
		/* nor with an HS256 MAC over them */
		char *signed_none = forge(heads[i], claims);
		ck_assert_msg(verify(signed_none, now, &p, &e) == TG_EAUTH, "%s signed was accepted", heads[i]);
		free(signed_none);
	}

	/* HS384/HS512 with the right key: still not our algorithm */
	unsigned char key[32];
	tg_sha256(SECRET, strlen(SECRET), key);
	jwt_alg_t algs[] = {JWT_ALG_HS384, JWT_ALG_HS512};
	for (size_t i = 0; i < 2; i++) {
		jwt_t *jwt = NULL;
		ck_assert_int_eq(jwt_new(&jwt), 0);
		ck_assert_int_eq(jwt_set_alg(jwt, algs[i], key, sizeof(key)), 0);
		jwt_add_grant(jwt, "ten", TENANT);
		jwt_add_grant(jwt, "kid", KEY_ID);
		jwt_add_grant(jwt, "scope", "all");
		jwt_add_grant_int(jwt, "exp", (long)now + 600);
		char *t = jwt_encode_str(jwt);
		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(verify(t, now, &p, &e), TG_EAUTH);
		ck_assert_str_eq(e.code, "invalid_token");
		free(t);
		jwt_free(jwt);
	}
}
END_TEST

START_TEST(test_token_wrong_secret)
{
	struct tg_principal p;
	struct tg_error e;
	int64_t now = now_s();
	char *t = issue("all", NULL, now, now + 600);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	auth_init(ADMIN, "another-secret");
	ck_assert_int_eq(verify(t, now, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "invalid_token");
	/* no secret at all: a random key per process, so no outside token verifies */
	auth_init(ADMIN, NULL);
	ck_assert_int_eq(verify(t, now, &p, &e), TG_EAUTH);
	auth_init(ADMIN, SECRET);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	free(t);
}
END_TEST

/* tmpl with every "EXP" replaced by exp */
static void with_exp(const char *tmpl, long long exp, char *out, size_t size)
{
	size_t o = 0;
	for (const char *p = tmpl; *p && o + 24 < size;) {
		if (strncmp(p, "EXP", 3) == 0) {
			o += (size_t)snprintf(out + o, size - o, "%lld", exp);
			p += 3;
		} else {
			out[o++] = *p++;
		}
	}
	out[o] = '\0';
}

START_TEST(test_token_claims)
{
	struct tg_principal p;
	struct tg_error e;
	long long now = (long long)now_s();
	const char *hs = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char claims[1024], long_id[200];
	memset(long_id, 'a', 60);
	long_id[60] = '\0';
#define K "\"kid\":\"" KEY_ID "\""
#define T "\"ten\":\"" TENANT "\""
	struct {
		const char *tmpl;
		const char *why;
	} bad[] = {
		{"{" K ",\"scope\":\"all\",\"exp\":EXP}", "no ten"},
		{"{" T ",\"scope\":\"all\",\"exp\":EXP}", "no kid"},
		{"{" T "," K ",\"exp\":EXP}", "no scope"},
		{"{" T "," K ",\"scope\":\"all\",\"x\":EXP}", "no exp"},
		{"{" T "," K ",\"scope\":\"all\",\"exp\":\"EXP\"}", "exp as a string"},
		{"{" T "," K ",\"scope\":\"all\",\"exp\":EXP,\"cus\":\"a b\"}", "bad customer id"},
		{"{" T "," K ",\"scope\":\"all\",\"exp\":EXP,\"cus\":\"\"}", "empty customer id"},
		{"{\"ten\":\"ten_other\"," K ",\"scope\":\"all\",\"exp\":EXP}", "key of another tenant"},
		{"{" T ",\"kid\":\"key_revoked\",\"scope\":\"all\",\"exp\":EXP}", "unknown key"},
		{"{" T "," K ",\"scope\":\"all\",\"exp\":EXP,\"ten\":\"x\"}", "duplicate claim"},
		{"{\"ten\":1," K ",\"scope\":\"all\",\"exp\":EXP}", "ten as a number"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		with_exp(bad[i].tmpl, now + 600, claims, sizeof(claims));
		char *t = forge(hs, claims);
		ck_assert_msg(verify(t, now, &p, &e) == TG_EAUTH, "%s was accepted", bad[i].why);
		free(t);
	}
	snprintf(claims, sizeof(claims), "{\"ten\":\"%s\"," K ",\"scope\":\"all\",\"exp\":%lld}", long_id, now + 600);
	char *t = forge(hs, claims);
	ck_assert_int_eq(verify(t, now, &p, &e), TG_EAUTH);
	free(t);
	/* an unknown scope is read-only, never more */
	snprintf(claims, sizeof(claims), "{" T "," K ",\"scope\":\"admin\",\"exp\":%lld}", now + 600);
	t = forge(hs, claims);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_READ);
	free(t);
	/* the minimal valid token */
	snprintf(claims, sizeof(claims), "{" T "," K ",\"scope\":\"all\",\"exp\":%lld}", now + 600);
	t = forge(hs, claims);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	ck_assert_uint_eq(p.can, TG_CAN_ALL | TG_CAN_READ | TG_CAN_CHECK);
	free(t);
#undef K
#undef T
}
END_TEST

START_TEST(test_token_of_revoked_key)
{
	struct tg_principal p;
	struct tg_error e;
	int64_t now = now_s();
	char *t = issue("all", NULL, now, now + 600);
	ck_assert_int_eq(verify(t, now, &p, &e), 0);
	json_t *rows = json_array();
	json_array_append_new(rows, key_row(KEY_ID, TENANT, key_hash, "[\"all\"]", true));
	auth_keys_set_tenant(TENANT, rows);
	json_decref(rows);
	ck_assert_int_eq(verify(t, now, &p, &e), TG_EAUTH);
	ck_assert_str_eq(e.code, "invalid_token");
	free(t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("auth");
	TCase *tc = tcase_create("auth");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_admin_token);
	tcase_add_test(tc, test_admin_disabled_when_empty);
	tcase_add_test(tc, test_api_keys);
	tcase_add_test(tc, test_scopes_mask);
	tcase_add_test(tc, test_new_secret);
	tcase_add_test(tc, test_token_round_trip);
	tcase_add_test(tc, test_token_expired);
	tcase_add_test(tc, test_token_tampered);
	tcase_add_test(tc, test_token_alg_none_and_others);
	tcase_add_test(tc, test_token_wrong_secret);
	tcase_add_test(tc, test_token_claims);
	tcase_add_test(tc, test_token_of_revoked_key);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

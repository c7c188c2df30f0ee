/*
 * fuzz_auth.c — the Authorization header through auth_authenticate (src/auth/auth.c): "Bearer" parsing,
 * API keys (sk_...), the admin token, and our JWTs through libjwt; the whole input also goes straight to
 * auth_token_verify. A success names exactly the one tenant and key we loaded (the admin token only for
 * itself; customer tokens read-only, with a valid customer id); a failure is a 401 with a code.
 */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "tollgate/auth.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"

#define ADMIN "adm_fuzz_token"
#define JWT_SECRET "fuzz-jwt-secret"
#define TENANT "ten_fuzz"
#define KEY_ID "key_fuzz"
/* an API key of the right length (AUTH_SECRET_LEN); the corpus holds it */
#define KEY_SECRET "sk_FuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzz"
#define NOW_S INT64_C(1800000000) /* 2027-01-15: the corpus tokens expire in 2100 or expired in 2023 */

static void setup(void)
{
	static bool done;
	char hash[65];

	if (done)
		return;
	done = true;
	_Static_assert(sizeof(KEY_SECRET) - 1 == AUTH_SECRET_LEN, "KEY_SECRET must look like a real key");
	auth_init(ADMIN, JWT_SECRET);
	tg_sha256_hex(KEY_SECRET, strlen(KEY_SECRET), hash);
	json_t *rows = json_pack("[{s:s, s:s, s:s, s:[s], s:b}, {s:s, s:s, s:s, s:[s], s:b}]",
				 "id", KEY_ID, "tenant_id", TENANT, "secret_hash", hash, "scopes", "all", "revoked", 0,
				 "id", "key_gone", "tenant_id", TENANT, "secret_hash", "00", "scopes", "read", "revoked", 1);
	FUZZ_CHECK(rows != NULL);
	auth_keys_set_all(rows);
	json_decref(rows);
	FUZZ_CHECK(auth_keys_count() == 1);
	atexit(auth_release);
}

static void check_principal(const struct tg_principal *p)
{
	switch (p->kind) {
	case TG_PRINCIPAL_ADMIN:
		break;
	case TG_PRINCIPAL_KEY:
		FUZZ_CHECK(strcmp(p->tenant_id, TENANT) == 0 && strcmp(p->key_id, KEY_ID) == 0);
		FUZZ_CHECK(p->can == (TG_CAN_ALL | TG_CAN_CHECK | TG_CAN_READ));
		FUZZ_CHECK(p->customer_id[0] == '\0');
		break;
	case TG_PRINCIPAL_TOKEN:
		/* only a token signed with our secret by the key we hold gets here */
		FUZZ_CHECK(strcmp(p->tenant_id, TENANT) == 0 && strcmp(p->key_id, KEY_ID) == 0);
		FUZZ_CHECK(p->can == TG_CAN_READ || p->can == (TG_CAN_ALL | TG_CAN_CHECK | TG_CAN_READ));
		if (p->customer_id[0]) {
			FUZZ_CHECK(tg_id_valid(p->customer_id, strlen(p->customer_id)));
			FUZZ_CHECK(p->can == TG_CAN_READ);
		}
		break;
	default:
		FUZZ_CHECK(!"a success without a principal");
	}
}

static void check_failure(int rc, const struct tg_error *err)
{
	FUZZ_CHECK(rc == TG_EAUTH && err->err == TG_EAUTH);
	FUZZ_CHECK(err->code != NULL && err->message[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *header = fuzz_cstr(data, size);
	struct tg_principal p;
	struct tg_error err = {0};
	int rc;

	setup();
	rc = auth_authenticate(header, &p, &err);
	if (rc == 0) {
		check_principal(&p);
		const char *secret = header + 7;
		while (*secret == ' ')
			secret++;
		FUZZ_CHECK(strncasecmp(header, "Bearer ", 7) == 0);
		if (p.kind == TG_PRINCIPAL_ADMIN)
			FUZZ_CHECK(strcmp(secret, ADMIN) == 0);
		if (p.kind == TG_PRINCIPAL_KEY)
			FUZZ_CHECK(strcmp(secret, KEY_SECRET) == 0);
	} else {
		check_failure(rc, &err);
		if (strcmp(err.code, TG_AUTH_ASK_DATABASE) == 0)
			FUZZ_CHECK(strlen(header) - (size_t)(strstr(header, "sk_") - header) == AUTH_SECRET_LEN);
	}

	/* the token verifier alone, at a fixed time */
	memset(&err, 0, sizeof(err));
	rc = auth_token_verify(strncasecmp(header, "Bearer ", 7) == 0 ? header + 7 : header, NOW_S, &p, &err);
	if (rc == 0) {
		FUZZ_CHECK(p.kind == TG_PRINCIPAL_TOKEN);
		check_principal(&p);
	} else {
		check_failure(rc, &err);
	}
	free(header);
	return 0;
}

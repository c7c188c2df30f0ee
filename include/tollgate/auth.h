/* auth.h — who is calling: the admin token, API keys (cached by SHA-256), and JWTs we issue. */
#ifndef TOLLGATE_AUTH_H
#define TOLLGATE_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/http.h"

/*
 * DESIGN: every active API key of every tenant is held in one in-process map
 * (SHA-256 of the secret → key id, tenant, scopes) behind a read-write lock:
 * authentication never touches PostgreSQL. The map is filled at start-up,
 * refreshed per tenant when PostgreSQL NOTIFYs a change (worker/reload.c;
 * revocation reaches every instance well within a second), and rebuilt in
 * full every 30 s and after the LISTEN connection is re-established, so a
 * missed notification cannot keep a revoked key alive.
 */

int auth_init(const char *admin_token, const char *jwt_secret);
void auth_release(void);
/* Free this thread's cache of recently authenticated keys (at thread exit). */
void auth_thread_end(void);

/* The tg_authenticate_fn given to http/: "Bearer <admin|sk_...|JWT>". */
int auth_authenticate(const char *authorization, struct tg_principal *ret, struct tg_error *err);

/* Replace the cached keys of one tenant (rows: id, tenant_id, secret_hash, scopes, revoked). */
void auth_keys_set_tenant(const char *tenant_id, const json_t *rows);
/* Replace the whole cache. */
void auth_keys_set_all(const json_t *rows);
size_t auth_keys_count(void);

/* Scopes array (["all"|"check"|"read"]) → TG_CAN_* mask; 0 when invalid. */
unsigned auth_scopes_mask(const json_t *scopes);

/* Add one active key row (id, tenant_id, secret_hash, scopes) to the cache. */
void auth_keys_add(const json_t *row);

/* A new secret "sk_" + 40 random base62-ish characters and its SHA-256 hex; prefix = first 11 chars. */
#define AUTH_SECRET_BUFSZ 64
#define AUTH_SECRET_LEN 43
void auth_new_secret(char *secret, char *sha256_hex, char *prefix);

/* Issue an HS256 JWT for tenant/key with scope ("all"|"read"), optional customer, expiring at exp (unix s). */
int auth_token_issue(const char *tenant_id, const char *key_id, const char *scope, const char *customer_id,
		     int64_t iat, int64_t exp, char **ret_token, struct tg_error *err);
/* Verify a token ourselves: signature, alg must be HS256, exp in the future. Fills the principal. */
int auth_token_verify(const char *token, int64_t now_s, struct tg_principal *ret, struct tg_error *err);

#endif

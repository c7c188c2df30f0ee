/* auth.c — authenticating requests: admin token, cached API keys, our own JWTs (see auth.h). */
#include <jwt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/auth.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/map.h"
#include "tollgate/util.h"

#define NBUCKETS 4096

struct key_entry {
	char hash[65];
	char key_id[TG_PRINCIPAL_ID];
	char tenant_id[TG_PRINCIPAL_ID];
	unsigned can;
	struct key_entry *next_by_hash, *next_by_id, *next_of_tenant;
};

static struct {
	pthread_rwlock_t lock;
	struct key_entry *by_hash[NBUCKETS];
	struct key_entry *by_id[NBUCKETS];
	struct tg_map by_tenant; /* tenant → its entries (next_of_tenant): replacing one tenant's keys is O(its keys) */
	size_t count;
	_Atomic uint64_t gen; /* bumped by every change of the keys: per-thread caches check it */
	char *admin_token;
	unsigned char *jwt_key; /* TOLLGATE_JWT_SECRET's bytes, as HS256's key (or 32 random bytes) */
	size_t jwt_key_len;
} A = {.lock = PTHREAD_RWLOCK_INITIALIZER, .by_tenant = TG_MAP_INIT};

static unsigned str_hash(const char *s)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % NBUCKETS;
}

int auth_init(const char *admin_token, const char *jwt_secret)
{
	free(A.admin_token);
	A.admin_token = tg_strdup(admin_token ? admin_token : "");
	free(A.jwt_key);
	if (jwt_secret && jwt_secret[0]) {
		/* the secret itself is the key, so any HS256 library given TOLLGATE_JWT_SECRET verifies our tokens
		 * (HMAC takes keys of any length; a short secret is a weak one, hence the warning) */
		A.jwt_key_len = strlen(jwt_secret);
		A.jwt_key = (unsigned char *)tg_strdup(jwt_secret);
		if (A.jwt_key_len < 32)
			log_warn("short TOLLGATE_JWT_SECRET", "a secret of %zu bytes is easy to guess: use 32 or more",
				 A.jwt_key_len);
	} else {
		A.jwt_key = tg_malloc(32);
		tg_random_bytes(A.jwt_key, 32);
		A.jwt_key_len = 32;
		log_warn("no TOLLGATE_JWT_SECRET", "tokens from POST /v1/auth/tokens will not survive a restart "
						   "and are valid only on this instance");
	}
	return 0;
}

static void unlink_entry(struct key_entry *e)
{
	struct key_entry **p;

	for (p = &A.by_hash[str_hash(e->hash)]; *p && *p != e; p = &(*p)->next_by_hash)
		;
	if (*p)
		*p = e->next_by_hash;
	for (p = &A.by_id[str_hash(e->key_id)]; *p && *p != e; p = &(*p)->next_by_id)
		;
	if (*p)
		*p = e->next_by_id;
	A.count--;
}

static void clear_tenant(void *list)
{
	for (struct key_entry *e = list, *next; e; e = next) {
		next = e->next_of_tenant;
		unlink_entry(e);
		free(e);
	}
}

/* Forget one tenant's keys (NULL: every tenant's). */
static void clear_locked(const char *tenant_id)
{
	if (!tenant_id) {
		tg_map_release(&A.by_tenant, clear_tenant);
		return;
	}
	clear_tenant(tg_map_get(&A.by_tenant, tenant_id));
	tg_map_del(&A.by_tenant, tenant_id);
}

void auth_release(void)
{
	pthread_rwlock_wrlock(&A.lock);
	atomic_fetch_add(&A.gen, 1);
	clear_locked(NULL);
	pthread_rwlock_unlock(&A.lock);
	free(A.admin_token);
	A.admin_token = NULL;
}

unsigned auth_scopes_mask(const json_t *scopes)
{
	unsigned can = 0;
	size_t i;
	json_t *s;

	if (!json_is_array(scopes) || json_array_size(scopes) == 0)
		return 0;
	json_array_foreach(scopes, i, s) {
		const char *v = json_string_value(s);
		if (!v || tg_json_is_number(s))
			return 0;
		if (strcmp(v, "all") == 0)
			can |= TG_CAN_ALL | TG_CAN_CHECK | TG_CAN_READ;
		else if (strcmp(v, "check") == 0)
			can |= TG_CAN_CHECK;
		else if (strcmp(v, "read") == 0)
			can |= TG_CAN_READ;
		else
			return 0;
	}
	return can;
}

static void add_locked(const json_t *row)
{
	const char *hash = json_string_value(json_object_get(row, "secret_hash"));
	const char *id = json_string_value(json_object_get(row, "id"));
	const char *tenant = json_string_value(json_object_get(row, "tenant_id"));
	struct key_entry *e;

	if (!hash || !id || !tenant || json_is_true(json_object_get(row, "revoked")))
		return;
	e = tg_calloc(1, sizeof(*e));
	snprintf(e->hash, sizeof(e->hash), "%s", hash);
	snprintf(e->key_id, sizeof(e->key_id), "%s", id);
	snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", tenant);
	e->can = auth_scopes_mask(json_object_get(row, "scopes"));
	unsigned hb = str_hash(e->hash), ib = str_hash(e->key_id);
	e->next_by_hash = A.by_hash[hb];
	A.by_hash[hb] = e;
	e->next_by_id = A.by_id[ib];
	A.by_id[ib] = e;
	e->next_of_tenant = tg_map_get(&A.by_tenant, e->tenant_id);
	tg_map_put(&A.by_tenant, e->tenant_id, e);
	A.count++;
}

void auth_keys_set_tenant(const char *tenant_id, const json_t *rows)
{
	size_t i;
	json_t *row;

	pthread_rwlock_wrlock(&A.lock);
	atomic_fetch_add(&A.gen, 1);
	clear_locked(tenant_id);
	json_array_foreach(rows, i, row)
		add_locked(row);
	pthread_rwlock_unlock(&A.lock);
}

void auth_keys_set_all(const json_t *rows)
{
	size_t i;
	json_t *row;

	pthread_rwlock_wrlock(&A.lock);
	atomic_fetch_add(&A.gen, 1);
	clear_locked(NULL);
	json_array_foreach(rows, i, row)
		add_locked(row);
	pthread_rwlock_unlock(&A.lock);
}

size_t auth_keys_count(void)
{
	size_t n;

	pthread_rwlock_rdlock(&A.lock);
	n = A.count;
	pthread_rwlock_unlock(&A.lock);
	return n;
}

static bool lookup_hash(const char *hash, struct tg_principal *p)
{
	bool found = false;

	pthread_rwlock_rdlock(&A.lock);
	for (struct key_entry *e = A.by_hash[str_hash(hash)]; e; e = e->next_by_hash) {
		if (strcmp(e->hash, hash) == 0) {
			snprintf(p->tenant_id, sizeof(p->tenant_id), "%s", e->tenant_id);
			snprintf(p->key_id, sizeof(p->key_id), "%s", e->key_id);
			p->can = e->can;
			found = true;
			break;
		}
	}
	pthread_rwlock_unlock(&A.lock);
	return found;
}

/*
 * Unknown keys may be looked up in PostgreSQL (a key created on another instance a moment ago), but at
 * most ASK_PER_SECOND times a second per instance, and never twice in a second for the same key: a flood
 * of made-up keys costs the database almost nothing.
 */
#define ASK_PER_SECOND 50
#define ASK_RECENT 64

static struct {
	pthread_mutex_t lock;
	int64_t second;
	int asked;
	char recent[ASK_RECENT][17];
	int64_t recent_at[ASK_RECENT];
	int next;
} ask = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool may_ask_database(const char *hash)
{
	int64_t now = tg_mono_us() / 1000;
	bool ok = true;

	pthread_mutex_lock(&ask.lock);
	if (now / 1000 != ask.second) {
		ask.second = now / 1000;
		ask.asked = 0;
	}
	for (int i = 0; i < ASK_RECENT && ok; i++)
		if (now - ask.recent_at[i] < 1000 && !strncmp(ask.recent[i], hash, 16))
			ok = false;
	if (ok && ask.asked >= ASK_PER_SECOND)
		ok = false;
	if (ok) {
		ask.asked++;
		snprintf(ask.recent[ask.next], sizeof(ask.recent[0]), "%.16s", hash);
		ask.recent_at[ask.next] = now;
		ask.next = (ask.next + 1) % ASK_RECENT;
	}
	pthread_mutex_unlock(&ask.lock);
	return ok;
}

void auth_keys_add(const json_t *row)
{
	pthread_rwlock_wrlock(&A.lock);
	atomic_fetch_add(&A.gen, 1);
	add_locked(row);
	pthread_rwlock_unlock(&A.lock);
}

static bool key_active(const char *key_id, const char *tenant_id)
{
	bool found = false;

	pthread_rwlock_rdlock(&A.lock);
	for (struct key_entry *e = A.by_id[str_hash(key_id)]; e; e = e->next_by_id)
		if (strcmp(e->key_id, key_id) == 0 && strcmp(e->tenant_id, tenant_id) == 0) {
			found = true;
			break;
		}
	pthread_rwlock_unlock(&A.lock);
	return found;
}

void auth_new_secret(char *secret, char *sha256_hex, char *prefix)
{
	static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	unsigned char rnd[40];
	size_t n = 0;

	memcpy(secret, "sk_", 3);
	n = 3;
	tg_random_bytes(rnd, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++) {
		unsigned char r = rnd[i];
		while (r >= 248) /* 248 = 4 × 62: no modulo bias */
			tg_random_bytes(&r, 1);
		secret[n++] = alphabet[r % 62];
	}
	secret[n] = '\0';
	tg_sha256_hex(secret, n, sha256_hex);
	memcpy(prefix, secret, 11);
	prefix[11] = '\0';
}

/* ---- JWT ---- */

int auth_token_issue(const char *tenant_id, const char *key_id, const char *scope, const char *customer_id,
		     int64_t iat, int64_t exp, char **ret_token, struct tg_error *err)
{
	jwt_t *jwt = NULL;
	char *token;
	int rc = 0;

	if (jwt_new(&jwt) != 0)
		return tg_fail(err, TG_EINTERNAL, NULL, NULL, "cannot create a token");
	rc |= jwt_set_alg(jwt, JWT_ALG_HS256, A.jwt_key, (int)A.jwt_key_len);
	rc |= jwt_add_grant(jwt, "iss", "tollgate");
	rc |= jwt_add_grant(jwt, "ten", tenant_id);
	rc |= jwt_add_grant(jwt, "kid", key_id);
	rc |= jwt_add_grant(jwt, "scope", scope);
	if (customer_id)
		rc |= jwt_add_grant(jwt, "cus", customer_id);
	rc |= jwt_add_grant_int(jwt, "iat", (long)iat);
	rc |= jwt_add_grant_int(jwt, "exp", (long)exp);
	token = rc == 0 ? jwt_encode_str(jwt) : NULL;
	jwt_free(jwt);
	if (!token)
		return tg_fail(err, TG_EINTERNAL, NULL, NULL, "cannot sign the token");
	*ret_token = token;
	return 0;
}

int auth_token_verify(const char *token, int64_t now_s, struct tg_principal *ret, struct tg_error *err)
{
	jwt_t *jwt = NULL;
	const char *ten, *kid, *scope, *cus;
	long exp;
	int rc;

	/* libjwt 1.10 trusts the header's alg and ignores exp: both are checked here */
	if (jwt_decode(&jwt, token, A.jwt_key, (int)A.jwt_key_len) != 0 || !jwt)
		return tg_fail(err, TG_EAUTH, "invalid_token", NULL, "the token is invalid");
	if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
		rc = tg_fail(err, TG_EAUTH, "invalid_token", NULL, "the token is invalid");
		goto out;
	}
	ten = jwt_get_grant(jwt, "ten");
	kid = jwt_get_grant(jwt, "kid");
	scope = jwt_get_grant(jwt, "scope");
	cus = jwt_get_grant(jwt, "cus");
	exp = jwt_get_grant_int(jwt, "exp");
	if (!ten || !kid || !scope || exp <= 0 || strlen(ten) >= TG_PRINCIPAL_ID || strlen(kid) >= TG_PRINCIPAL_ID ||
	    (cus && !tg_id_valid(cus, strlen(cus)))) {
		rc = tg_fail(err, TG_EAUTH, "invalid_token", NULL, "the token is invalid");
		goto out;
	}
	if (exp <= now_s) {
		rc = tg_fail(err, TG_EAUTH, "token_expired", NULL, "the token has expired");
		goto out;
	}
	if (!key_active(kid, ten)) {
		rc = tg_fail(err, TG_EAUTH, "invalid_token", NULL, "the key that issued this token was revoked");
		goto out;
	}
	memset(ret, 0, sizeof(*ret));
	ret->kind = TG_PRINCIPAL_TOKEN;
	snprintf(ret->tenant_id, sizeof(ret->tenant_id), "%s", ten);
	snprintf(ret->key_id, sizeof(ret->key_id), "%s", kid);
	if (strcmp(scope, "all") == 0 && !cus)
		ret->can = TG_CAN_ALL | TG_CAN_READ | TG_CAN_CHECK;
	else
		ret->can = TG_CAN_READ; /* customer tokens are read-only whatever they claim */
	if (cus)
		snprintf(ret->customer_id, sizeof(ret->customer_id), "%s", cus);
	rc = 0;
out:
	jwt_free(jwt);
	return rc;
}

/* ---- the authenticator ---- */

/*
 * Keys this thread authenticated lately, by their secret: a SHA-256 per request is a good part of a check's
 * CPU. An entry counts only while no key changed anywhere since it was made (A.gen), so a revocation
 * applies at once. Only keys that were valid are kept.
 */
#define SEEN_MAX 4096
struct seen {
	uint64_t gen;
	struct tg_principal p;
};
static _Thread_local struct tg_map seen;

static void seen_free(void *v)
{
	free(v);
}

static bool seen_lookup(const char *secret, struct tg_principal *ret)
{
	struct seen *e = tg_map_get(&seen, secret);

	if (!e || e->gen != atomic_load(&A.gen))
		return false;
	*ret = e->p;
	return true;
}

/* gen: A.gen read before the lookup that found p (a change after it makes the entry stale at once) */
static void seen_put(const char *secret, const struct tg_principal *p, uint64_t gen)
{
	struct seen *e = tg_map_get(&seen, secret);

	if (!e) {
		if (seen.len >= SEEN_MAX)
			tg_map_release(&seen, seen_free);
		e = tg_malloc(sizeof(*e));
		tg_map_put(&seen, secret, e);
	}
	e->gen = gen;
	e->p = *p;
}

void auth_thread_end(void)
{
	tg_map_release(&seen, seen_free);
}

int auth_authenticate(const char *authorization, struct tg_principal *ret, struct tg_error *err)
{
	const char *secret;
	size_t len;

	memset(ret, 0, sizeof(*ret));
	if (!authorization || !authorization[0])
		return tg_fail(err, TG_EAUTH, "missing_credentials", NULL,
			       "send an API key or token as Authorization: Bearer <secret>");
	if (strncasecmp(authorization, "Bearer ", 7) != 0)
		return tg_fail(err, TG_EAUTH, "invalid_credentials", NULL,
			       "the Authorization header must be 'Bearer <secret>'");
	secret = authorization + 7;
	while (*secret == ' ')
		secret++;
	len = strlen(secret);
	if (len == 0 || len > 4096)
		return tg_fail(err, TG_EAUTH, "invalid_credentials", NULL, "the credentials are invalid");
	if (strncmp(secret, "sk_", 3) == 0) {
		char hash[65];
		uint64_t gen = atomic_load(&A.gen);
		if (seen_lookup(secret, ret))
			return 0;
		tg_sha256_hex(secret, len, hash);
		if (!lookup_hash(hash, ret)) {
			/* made moments ago on another instance? let PostgreSQL say, within a budget */
			if (len == AUTH_SECRET_LEN && may_ask_database(hash))
				return tg_fail(err, TG_EAUTH, TG_AUTH_ASK_DATABASE, NULL, "the API key is not known here yet");
			return tg_fail(err, TG_EAUTH, "invalid_api_key", NULL, "the API key is invalid or revoked");
		}
		ret->kind = TG_PRINCIPAL_KEY;
		seen_put(secret, ret, gen);
		return 0;
	}
	if (A.admin_token && A.admin_token[0] && tg_ct_equal(secret, len, A.admin_token, strlen(A.admin_token))) {
		ret->kind = TG_PRINCIPAL_ADMIN;
		return 0;
	}
	if (strchr(secret, '.'))
		return auth_token_verify(secret, tg_now_ms() / 1000, ret, err);
	return tg_fail(err, TG_EAUTH, "invalid_credentials", NULL, "the credentials are invalid");
}

/* reservations.c — SQL for durable reservations: their holds, settling, releasing, expiring (see 0006). */
#include <string.h>

#include "tollgate/json.h"
#include "tollgate/store.h"
#include "tollgate/util.h"

static struct store_stmt q_insert = STORE_STMT(
	"INSERT INTO reservations (tenant_id, id, customer_id, expires_ms) VALUES ($1, $2, $3, $4)", 4);
static struct store_stmt q_insert_holds = STORE_STMT(
	"INSERT INTO reservation_holds (tenant_id, reservation_id, hold_key, amount) "
	"SELECT $1, $2, k, a FROM unnest($3::text[], $4::bigint[]) AS h(k, a)", 4);

int store_reservation_insert(const char *tenant_id, const struct store_reservation *r, struct tg_error *err)
{
	char exp[STORE_I64_BUFSZ], buf[STORE_I64_BUFSZ];
	struct store_array keys = {0}, amounts = {0};
	int rc;

	{
		const char *p[] = {tenant_id, r->id, r->customer_id, store_i64(r->expires_ms, exp)};
		if ((rc = store_exec(&q_insert, p, NULL, err)) < 0)
			return rc;
	}
	if (r->nholds == 0)
		return 0;
	for (int i = 0; i < r->nholds; i++) {
		store_array_add(&keys, r->holds[i].key);
		store_array_add(&amounts, store_i64(r->holds[i].amount, buf));
	}
	const char *p[] = {tenant_id, r->id, store_array_text(&keys), store_array_text(&amounts)};
	rc = store_exec(&q_insert_holds, p, NULL, err);
	store_array_release(&keys);
	store_array_release(&amounts);
	return rc;
}

/* Both rows go in one statement: the holds are not a foreign key's cascade, so no row is deleted twice. */
/* $3: each id's customer (an event settles only its own customer's reservation), or NULL for any */
static struct store_stmt q_take = STORE_STMT(
	"WITH r AS (DELETE FROM reservations WHERE tenant_id = $1 AND id = ANY($2::text[]) "
	"      AND ($3::text[] IS NULL OR (id, customer_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))) "
	"      RETURNING id, customer_id), "
	"h AS (DELETE FROM reservation_holds WHERE tenant_id = $1 AND reservation_id IN (SELECT id FROM r) "
	"      RETURNING reservation_id, hold_key, amount) "
	"SELECT r.id, r.customer_id, "
	"       coalesce((SELECT json_agg(json_build_array(h.hold_key, h.amount::text)) FROM h "
	"                 WHERE h.reservation_id = r.id), '[]') AS holds "
	"FROM r", 3);

/* Turn a taken row into a store_reservation in the arena. */
static void from_row(const json_t *row, struct store_reservation *r, struct tg_arena *a)
{
	const json_t *holds = json_object_get(row, "holds");
	size_t i;
	json_t *h;

	r->id = tg_arena_strdup(a, store_str(row, "id"));
	r->customer_id = tg_arena_strdup(a, store_str(row, "customer_id"));
	r->nholds = (int)json_array_size(holds);
	r->holds = tg_arena_alloc(a, sizeof(*r->holds) * (size_t)(r->nholds + 1));
	json_array_foreach(holds, i, h) {
		int64_t amount = 0;
		r->holds[i].key = tg_arena_strdup(a, json_string_value(json_array_get(h, 0)));
		tg_parse_i64(json_string_value(json_array_get(h, 1)), INT64_MIN, INT64_MAX, &amount);
		r->holds[i].amount = amount;
	}
}

int store_reservations_take(const char *tenant_id, const char *const *ids, const char *const *customers, int n,
			    struct store_reservation **ret, int *nret, struct tg_arena *a, struct tg_error *err)
{
	struct store_array arr = {0}, cus = {0};
	json_t *rows = NULL, *row;
	size_t i;
	int rc;

	*ret = NULL;
	*nret = 0;
	for (int k = 0; k < n; k++) {
		store_array_add(&arr, ids[k]);
		if (customers)
			store_array_add(&cus, customers[k]);
	}
	const char *p[] = {tenant_id, store_array_text(&arr), customers ? store_array_text(&cus) : NULL};
	rc = store_exec(&q_take, p, &rows, err);
	store_array_release(&arr);
	store_array_release(&cus);
	if (rc < 0)
		return rc;
	*ret = tg_arena_alloc(a, sizeof(**ret) * (json_array_size(rows) + 1));
	json_array_foreach(rows, i, row)
		from_row(row, &(*ret)[(*nret)++], a);
	json_decref(rows);
	return 0;
}

/* Due on each tenant's own clock (real time + its offset, stopped at its end: see tg_clock_ms); of one tenant
 * ($4) or of all. */
static struct store_stmt q_due = STORE_STMT(
	"SELECT r.tenant_id, r.id FROM reservations r JOIN tenants t ON t.id = r.tenant_id "
	"WHERE r.expires_ms <= least($1::bigint + t.clock_offset_ms, $3::bigint) AND ($4::text IS NULL OR r.tenant_id = $4) "
	"ORDER BY r.expires_ms LIMIT $2", 4);

int store_reservations_due(int64_t real_now_ms, const char *tenant_id, int max, json_t **ret, struct tg_error *err)
{
	char now[STORE_I64_BUFSZ], lim[STORE_I64_BUFSZ], end[STORE_I64_BUFSZ];
	const char *p[] = {store_i64(real_now_ms, now), store_i64(max, lim), store_i64(TG_TIME_MAX_MS, end), tenant_id};

	return store_exec(&q_due, p, ret, err);
}

static struct store_stmt q_of_customer = STORE_STMT(
	"SELECT id FROM reservations WHERE tenant_id = $1 AND customer_id = $2", 2);

int store_reservations_of(const char *tenant_id, const char *customer_id, json_t **ret, struct tg_error *err)
{
	const char *p[] = {tenant_id, customer_id};
	return store_exec(&q_of_customer, p, ret, err);
}

static struct store_stmt q_held = STORE_STMT(
	"SELECT coalesce(sum(amount), 0)::text AS held FROM reservation_holds WHERE tenant_id = $1 AND hold_key = $2", 2);
/* holds on a quota counter in any period (hot_hold_key): what still holds now counts in this period too;
 * hold_base is the key without its period's start (migration 0018), indexed: a rebuild reads one
 * counter's holds, never every hold of the tenant (a prefix match did: 150 ms at 300,000 holds) */
static struct store_stmt q_held_prefix = STORE_STMT(
	"SELECT coalesce(sum(amount), 0)::text AS held FROM reservation_holds WHERE tenant_id = $1 AND hold_base = $2", 2);

int store_reservations_held(const char *tenant_id, const char *key, size_t prefix_len, int64_t *held,
			    struct tg_error *err)
{
	char *prefix = prefix_len ? tg_strndup(key, prefix_len) : NULL;
	const char *p[] = {tenant_id, prefix ? prefix : key};
	json_t *row;
	int rc = store_exec1(prefix ? &q_held_prefix : &q_held, p, &row, err);

	free(prefix);
	*held = 0;
	if (rc < 0)
		return rc;
	if (row)
		tg_parse_i64(store_str(row, "held"), INT64_MIN, INT64_MAX, held);
	json_decref(row);
	return 0;
}

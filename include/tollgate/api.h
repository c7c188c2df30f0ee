/* api.h — the route table and what every resource handler shares: body validation, paging, rendering. */
#ifndef TOLLGATE_API_H
#define TOLLGATE_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/fixed.h"
#include "tollgate/http.h"

extern const struct tg_route api_routes[];
extern const size_t api_nroutes;

/* The tg_wrap_fn around every worker-pool handler: Idempotency-Key replay on POST. */
int api_wrap(struct tg_req *req);
/* The same for the inline routes (/v1/check, /v1/events), split around the handler: see tg_http_opts. */
int api_idem_begin(struct tg_req *req);
void api_idem_end(struct tg_req *req, bool keep);
/* Run the route's handler inside a transaction with its audit entry, when the route changes configuration. */
int api_audited(struct tg_req *req);
/* The tg_http_opts.authenticate_slow: a key not cached here, looked up in PostgreSQL (blocking). */
int api_authenticate_slow(const char *authorization, struct tg_principal *ret, struct tg_error *err);
/* Give the ops handlers the server (for /metrics). */
void api_set_http(struct tg_http *h);

/* ---- body validation: each returns 0, or a negative tg_err with req->err naming the field ---- */

/* Reject any key of obj not in allowed (NULL-terminated): 400 unknown_parameter. */
int api_only(struct tg_req *req, const json_t *obj, const char *const *allowed);
/* A body is required (POST with fields): 400 when absent. Returns the object or NULL. */
json_t *api_body(struct tg_req *req);
/* Strings: absent → *ret untouched and 0 (unless required); null → *ret = NULL when nullable, and
 * missing_parameter when required as well (null is no value). */
int api_str(struct tg_req *req, const json_t *obj, const char *field, bool required, bool nullable,
	    size_t maxlen, const char **ret);
/* A display name: tg_jf_name() (at most maxbytes bytes, no control characters). */
int api_name(struct tg_req *req, const json_t *obj, const char *field, bool required, bool nullable,
	     size_t maxbytes, const char **ret);
/* A tenant-chosen id (1–128 of [A-Za-z0-9._:@+-]). */
int api_id(struct tg_req *req, const json_t *obj, const char *field, bool required, bool nullable, const char **ret);
int api_bool(struct tg_req *req, const json_t *obj, const char *field, bool required, bool *ret, bool *present);
int api_int(struct tg_req *req, const json_t *obj, const char *field, bool required, int64_t min, int64_t max,
	    int64_t *ret, bool *present);
int api_fixed(struct tg_req *req, const json_t *obj, const char *field, bool required, tg_fixed *ret,
	      bool *present);
/* One of values (NULL-terminated); *ret is its index. */
int api_enum(struct tg_req *req, const json_t *obj, const char *field, bool required, const char *const *values,
	     int *ret, bool *present);
/* A JSON object (borrowed) or NULL when absent. */
int api_object(struct tg_req *req, const json_t *obj, const char *field, bool required, json_t **ret);
/* Fail with a field error (400 unless err says otherwise). */
int api_bad(struct tg_req *req, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Validate a path id ({id}): a malformed one is 404 (it cannot exist). */
int api_path_id(struct tg_req *req, int index, const char **ret);

/* ---- query strings ---- */
int api_query_id(struct tg_req *req, const char *name, const char **ret);
int api_query_bool(struct tg_req *req, const char *name, bool *ret, bool *present);
int api_query_time(struct tg_req *req, const char *name, int64_t *ret_ms, bool *present);
/* limit (1–100, default 20) and starting_after (an id or NULL). */
int api_page(struct tg_req *req, int64_t *limit, const char **starting_after);
/* Reject query parameters not in allowed. */
int api_query_only(struct tg_req *req, const char *const *allowed);
/* Reject every query parameter: a GET that takes none says so (400 unknown_parameter), as the GETs that
 * take some do for the others, rather than ignore a filter the caller thinks applies. */
int api_query_none(struct tg_req *req);

/* ---- shared by the resource files ---- */
struct policy_tenant;
/* The caller's tenant snapshot (a new reference), loading it if needed; NULL with req->err filled. */
struct policy_tenant *api_tenant(struct tg_req *req);
/* Validate and store one limit from an API body (id generated when absent); *row is the stored object. */
int api_limit_create(struct tg_req *req, const json_t *body, json_t **row);
/* Fill the rebuilt value of every missing quota counter from the PostgreSQL rollups. Blocking. */
struct policy_counter;
struct hot_check;
int api_rebuild(const char *tenant_id, struct policy_counter *cs, int n, struct tg_error *err);
struct hot_balance;
/* A customer's balance object (new reference), or json null when it has none. Blocking. */
json_t *api_balance_json(struct tg_req *req, const char *customer);
int api_rebuild_balance(const char *tenant_id, struct hot_balance *b, struct tg_error *err);
/* hot_check_sync with rebuilds of what Redis lost (up to 3 rounds). Blocking; returns the hot_status. */
int api_check_sync(struct hot_check *hc, struct tg_arena *a, struct tg_error *err);
/* The writer's watch hook: attach the quota counters a submission's accepted events moved. */
struct store_submission;
void api_watch(struct store_submission *sub);
/* The writer's seen hook: mark the events whose ids Redis knows committed (hot_event_ids_seen). */
void api_seen_ids(struct store_submission **subs, int n);
/* The writer's before-commit hook: the live counters the batch will move noted in the journal (hot_journal_note). */
void api_before_commit(struct store_submission **subs, int n);
/* The writer's after-commit hook: committed usage into the Redis counters, reservations released,
 * committed event ids remembered. */
void api_after_commit(struct store_submission **subs, int n);
/* The writer's lost hook (a COMMIT whose outcome is unknown): every live counter the batch moved or would
 * have moved is dropped once Redis answers (hot_journal_suspect), to be rebuilt from PostgreSQL. */
void api_commit_lost(struct store_submission **subs, int n);

/* ---- replies ---- */
/* {"data": rows[0..limit), "has_more": more than limit rows} (steals rows). */
void api_reply_list(struct tg_req *req, json_t *rows, int64_t limit);
/* Map a not-found for resource kind/id to 404 "<kind>_not_found". */
int api_not_found(struct tg_req *req, const char *kind, const char *id);

#endif

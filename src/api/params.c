/* params.c — validating request bodies and query strings, one named field at a time. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/api.h"
#include "tollgate/json.h"

int api_bad(struct tg_req *req, const char *field, const char *fmt, ...)
{
	va_list ap;
	char msg[256];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tg_fail(&req->err, TG_EINVAL, "invalid_parameter", field, "%s", msg);
}

int api_only(struct tg_req *req, const json_t *obj, const char *const *allowed)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(key, *a) == 0) {
				ok = true;
				break;
			}
		if (!ok)
			return tg_fail(&req->err, TG_EINVAL, "unknown_parameter", key, "unknown field '%s'", key);
	}
	return 0;
}

json_t *api_body(struct tg_req *req)
{
	if (!req->json)
		tg_fail(&req->err, TG_EINVAL, "invalid_json", NULL, "a JSON object body is required");
	return req->json;
}

static json_t *field(const json_t *obj, const char *name, bool required, struct tg_req *req, int *rc)
{
	json_t *v = obj ? json_object_get(obj, name) : NULL;

	*rc = 0;
	if (!v && required)
		*rc = tg_fail(&req->err, TG_EINVAL, "missing_parameter", name, "'%s' is required", name);
	return v;
}

static bool is_plain_string(const json_t *v)
{
	return json_is_string(v) && !tg_json_is_number(v);
}

/* Strings and ids are checked by the shared tg_jf_* (src/util/jfield.c), so a request body and a stored
 * limit agree on what a field sent as null means. */
int api_str(struct tg_req *req, const json_t *obj, const char *name, bool required, bool nullable, size_t maxlen,
	    const char **ret)
{
	return tg_jf_str(obj, NULL, name, required, nullable, maxlen, ret, &req->err);
}

int api_name(struct tg_req *req, const json_t *obj, const char *name, bool required, bool nullable, size_t maxbytes,
	     const char **ret)
{
	return tg_jf_name(obj, NULL, name, required, nullable, maxbytes, ret, &req->err);
}

int api_id(struct tg_req *req, const json_t *obj, const char *name, bool required, bool nullable, const char **ret)
{
	return tg_jf_id(obj, NULL, name, required, nullable, ret, &req->err);
}

int api_bool(struct tg_req *req, const json_t *obj, const char *name, bool required, bool *ret, bool *present)
{
	int rc;
	json_t *v = field(obj, name, required, req, &rc);

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (!json_is_boolean(v))
		return api_bad(req, name, "'%s' must be true or false", name);
	*ret = json_is_true(v);
	if (present)
		*present = true;
	return 0;
}

int api_int(struct tg_req *req, const json_t *obj, const char *name, bool required, int64_t min, int64_t max,
	    int64_t *ret, bool *present)
{
	int rc;
	json_t *v = field(obj, name, required, req, &rc);

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (!tg_json_is_number(v))
		return api_bad(req, name, "'%s' must be a number", name);
	if (!tg_json_get_i64(v, min, max, ret))
		return api_bad(req, name, "'%s' must be a whole number from %lld to %lld", name, (long long)min,
			       (long long)max);
	if (present)
		*present = true;
	return 0;
}

int api_fixed(struct tg_req *req, const json_t *obj, const char *name, bool required, tg_fixed *ret, bool *present)
{
	int rc;
	json_t *v = field(obj, name, required, req, &rc);

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (!tg_json_is_number(v))
		return api_bad(req, name, "'%s' must be a number", name);
	switch (tg_json_get_fixed(v, ret)) {
	case TG_FIXED_OK:
		break;
	case TG_FIXED_EPRECISION:
		return api_bad(req, name, "'%s' has more than 6 digits after the decimal point", name);
	case TG_FIXED_ERANGE:
		return api_bad(req, name, "'%s' must be below 9000000000000 in absolute value", name);
	default:
		return api_bad(req, name, "'%s' must be a decimal number", name);
	}
	if (present)
		*present = true;
	return 0;
}

int api_enum(struct tg_req *req, const json_t *obj, const char *name, bool required, const char *const *values,
	     int *ret, bool *present)
{
	int rc;
	json_t *v = field(obj, name, required, req, &rc);
	char list[256] = "";

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (is_plain_string(v)) {
		for (int i = 0; values[i]; i++)
			if (strcmp(values[i], json_string_value(v)) == 0) {
				*ret = i;
				if (present)
					*present = true;
				return 0;
			}
	}
	for (int i = 0; values[i]; i++) {
		size_t n = strlen(list);
		snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", values[i]);
	}
	return api_bad(req, name, "'%s' must be one of: %s", name, list);
}

int api_object(struct tg_req *req, const json_t *obj, const char *name, bool required, json_t **ret)
{
	int rc;
	json_t *v = field(obj, name, required, req, &rc);

	if (rc < 0 || !v)
		return rc;
	if (!json_is_object(v))
		return api_bad(req, name, "'%s' must be an object", name);
	*ret = v;
	return 0;
}

int api_path_id(struct tg_req *req, int index, const char **ret)
{
	const char *id = index < req->nparams ? req->params[index] : NULL;

	if (!id || !tg_id_valid(id, strlen(id)))
		return tg_fail(&req->err, TG_ENOTFOUND, "not_found", NULL, "no such object");
	*ret = id;
	return 0;
}

int api_not_found(struct tg_req *req, const char *kind, const char *id)
{
	char code[64];
	char *c;

	snprintf(code, sizeof(code), "%s_not_found", kind);
	c = tg_arena_strdup(&req->arena, code);
	return tg_fail(&req->err, TG_ENOTFOUND, c, NULL, "no %s '%s'", kind, id ? id : "");
}

/* ---- query strings ---- */

int api_query_id(struct tg_req *req, const char *name, const char **ret)
{
	const char *v = tg_req_query(req, name);

	if (!v)
		return 0;
	if (!tg_id_valid(v, strlen(v)))
		return api_bad(req, name, "'%s' must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ + -", name);
	*ret = v;
	return 0;
}

int api_query_bool(struct tg_req *req, const char *name, bool *ret, bool *present)
{
	const char *v = tg_req_query(req, name);

	if (present)
		*present = false;
	if (!v)
		return 0;
	if (strcmp(v, "true") == 0)
		*ret = true;
	else if (strcmp(v, "false") == 0)
		*ret = false;
	else
		return api_bad(req, name, "'%s' must be true or false", name);
	if (present)
		*present = true;
	return 0;
}

int api_query_time(struct tg_req *req, const char *name, int64_t *ret_ms, bool *present)
{
	const char *v = tg_req_query(req, name);

	if (present)
		*present = false;
	if (!v)
		return 0;
	if (tg_time_parse(v, ret_ms) < 0)
		return api_bad(req, name, "'%s' must be an RFC 3339 time such as 2026-11-22T03:00:00Z", name);
	if (present)
		*present = true;
	return 0;
}

int api_page(struct tg_req *req, int64_t *limit, const char **starting_after)
{
	const char *l = tg_req_query(req, "limit");

	*limit = 20;
	*starting_after = NULL;
	if (l && !tg_parse_i64(l, 1, 100, limit))
		return api_bad(req, "limit", "'limit' must be a whole number from 1 to 100");
	return api_query_id(req, "starting_after", starting_after);
}

struct only_ctx {
	struct tg_req *req;
	const char *const *allowed;
};

static int check_query_name(void *arg, const char *name, const char *value)
{
	struct only_ctx *c = arg;

	TG_UNUSED(value);
	for (const char *const *a = c->allowed; *a; a++)
		if (strcmp(*a, name) == 0)
			return 0;
	return tg_fail(&c->req->err, TG_EINVAL, "unknown_parameter", name, "unknown query parameter '%s'", name);
}

int api_query_only(struct tg_req *req, const char *const *allowed)
{
	struct only_ctx c = {req, allowed};
	return tg_req_query_each(req, check_query_name, &c);
}

int api_query_none(struct tg_req *req)
{
	static const char *const none[] = {NULL};

	return api_query_only(req, none);
}

/* ---- replies ---- */

void api_reply_list(struct tg_req *req, json_t *rows, int64_t limit)
{
	bool more = (int64_t)json_array_size(rows) > limit;

	while ((int64_t)json_array_size(rows) > limit)
		json_array_remove(rows, json_array_size(rows) - 1);
	tg_req_reply(req, 200, tg_json_obj("data", rows, "has_more", json_boolean(more), NULL));
}

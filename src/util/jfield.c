/* jfield.c — validating one named JSON field at a time, with the field named in the error. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"

static void param_name(char *buf, size_t size, const char *prefix, const char *name)
{
	if (prefix && prefix[0])
		snprintf(buf, size, "%s.%s", prefix, name);
	else
		snprintf(buf, size, "%s", name);
}

int tg_jf_bad(struct tg_error *err, const char *prefix, const char *name, const char *fmt, ...)
{
	char param[128], msg[256];
	va_list ap;

	param_name(param, sizeof(param), prefix, name);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tg_fail(err, TG_EINVAL, "invalid_parameter", param, "%s", msg);
}

int tg_jf_only(const json_t *obj, const char *prefix, const char *const *allowed, struct tg_error *err)
{
	const char *key;
	json_t *v;
	char param[128];

	json_object_foreach((json_t *)obj, key, v) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(key, *a) == 0) {
				ok = true;
				break;
			}
		if (!ok) {
			param_name(param, sizeof(param), prefix, key);
			return tg_fail(err, TG_EINVAL, "unknown_parameter", param, "unknown field '%s'", param);
		}
	}
	return 0;
}

static int missing(struct tg_error *err, const char *prefix, const char *name)
{
	char param[128];

	param_name(param, sizeof(param), prefix, name);
	return tg_fail(err, TG_EINVAL, "missing_parameter", param, "'%s' is required", param);
}

static json_t *field(const json_t *obj, const char *prefix, const char *name, bool required, int *rc,
		     struct tg_error *err)
{
	json_t *v = obj ? json_object_get(obj, name) : NULL;

	*rc = !v && required ? missing(err, prefix, name) : 0;
	return v;
}

/* A field sent as null: refused where not nullable; where nullable it means "no value", so it cannot
 * stand in for a required field ({"scope": "tier", "tier": null} would store a tier limit with no
 * tier) and is as missing as a field left out. */
static int null_field(const char *prefix, const char *name, bool required, bool nullable, const char *what,
		      struct tg_error *err)
{
	if (!nullable)
		return tg_jf_bad(err, prefix, name, "'%s' must be %s, not null", name, what);
	if (required)
		return missing(err, prefix, name);
	return 0;
}

static bool is_plain_string(const json_t *v)
{
	return json_is_string(v) && !tg_json_is_number(v);
}

/* A string field: NULL with *rc = 0 when absent or null (then *ret = NULL, where nullable), or with *rc < 0
 * when refused; else the string value for the caller's own checks. */
static json_t *string_field(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable,
			    const char **ret, int *rc, struct tg_error *err)
{
	json_t *v = field(obj, prefix, name, required, rc, err);

	if (*rc < 0 || !v)
		return NULL;
	if (json_is_null(v)) {
		if ((*rc = null_field(prefix, name, required, nullable, "a string", err)) == 0)
			*ret = NULL;
		return NULL;
	}
	if (!is_plain_string(v)) {
		*rc = tg_jf_bad(err, prefix, name, "'%s' must be a string", name);
		return NULL;
	}
	return v;
}

int tg_jf_str(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable, size_t maxlen,
	      const char **ret, struct tg_error *err)
{
	int rc;
	json_t *v = string_field(obj, prefix, name, required, nullable, ret, &rc, err);

	if (!v)
		return rc;
	if (tg_utf8_chars(json_string_value(v), json_string_length(v)) > maxlen)
		return tg_jf_bad(err, prefix, name, "'%s' is longer than %zu characters", name, maxlen);
	for (const char *s = json_string_value(v); *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return tg_jf_bad(err, prefix, name, "'%s' must not contain control characters", name);
	*ret = json_string_value(v);
	return 0;
}

/* A C0 control (tab included), DEL, or a C1 control (U+0080–U+009F, "\xc2\x80"–"\xc2\x9f" in UTF-8). */
static bool has_control(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] <= 0x9f))
			return true;
	}
	return false;
}

int tg_jf_name(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable,
	       size_t maxbytes, const char **ret, struct tg_error *err)
{
	int rc;
	json_t *v = string_field(obj, prefix, name, required, nullable, ret, &rc, err);

	if (!v)
		return rc;
	if (json_string_length(v) > maxbytes)
		return tg_jf_bad(err, prefix, name, "'%s' is longer than %zu bytes (UTF-8)", name, maxbytes);
	if (has_control(json_string_value(v), json_string_length(v)))
		return tg_jf_bad(err, prefix, name, "'%s' must not contain control characters", name);
	*ret = json_string_value(v);
	return 0;
}

int tg_jf_id(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable,
	     const char **ret, struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);

	if (rc < 0 || !v)
		return rc;
	if (json_is_null(v)) {
		if ((rc = null_field(prefix, name, required, nullable, "an id", err)) == 0)
			*ret = NULL;
		return rc;
	}
	if (!is_plain_string(v))
		return tg_jf_bad(err, prefix, name, "'%s' must be a string id", name);
	if (!tg_id_valid(json_string_value(v), json_string_length(v)))
		return tg_jf_bad(err, prefix, name, "'%s' must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ + -",
				 name);
	*ret = json_string_value(v);
	return 0;
}

int tg_jf_bool(const json_t *obj, const char *prefix, const char *name, bool required, bool *ret, bool *present,
	       struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (!json_is_boolean(v))
		return tg_jf_bad(err, prefix, name, "'%s' must be true or false", name);
	*ret = json_is_true(v);
	if (present)
		*present = true;
	return 0;
}

int tg_jf_int(const json_t *obj, const char *prefix, const char *name, bool required, int64_t min, int64_t max,
	      int64_t *ret, bool *present, struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (!tg_json_is_number(v))
		return tg_jf_bad(err, prefix, name, "'%s' must be a number", name);
	if (!tg_json_get_i64(v, min, max, ret))
		return tg_jf_bad(err, prefix, name, "'%s' must be a whole number from %lld to %lld", name,
				 (long long)min, (long long)max);
	if (present)
		*present = true;
	return 0;
}

int tg_jf_fixed(const json_t *obj, const char *prefix, const char *name, bool required, tg_fixed *ret,
		bool *present, struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);

	if (present)
		*present = false;
	if (rc < 0 || !v)
		return rc;
	if (!tg_json_is_number(v))
		return tg_jf_bad(err, prefix, name, "'%s' must be a number", name);
	switch (tg_json_get_fixed(v, ret)) {
	case TG_FIXED_OK:
		break;
	case TG_FIXED_EPRECISION:
		return tg_jf_bad(err, prefix, name, "'%s' has more than 6 digits after the decimal point", name);
	case TG_FIXED_ERANGE:
		return tg_jf_bad(err, prefix, name, "'%s' must be below 9000000000000 in absolute value", name);
	default:
		return tg_jf_bad(err, prefix, name, "'%s' must be a decimal number", name);
	}
	if (present)
		*present = true;
	return 0;
}

int tg_jf_enum(const json_t *obj, const char *prefix, const char *name, bool required, const char *const *values,
	       int *ret, bool *present, struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);
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
	return tg_jf_bad(err, prefix, name, "'%s' must be one of: %s", name, list);
}

int tg_jf_object(const json_t *obj, const char *prefix, const char *name, bool required, json_t **ret,
		 struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);

	if (rc < 0 || !v)
		return rc;
	if (!json_is_object(v))
		return tg_jf_bad(err, prefix, name, "'%s' must be an object", name);
	*ret = v;
	return 0;
}

int tg_jf_array(const json_t *obj, const char *prefix, const char *name, bool required, json_t **ret,
		struct tg_error *err)
{
	int rc;
	json_t *v = field(obj, prefix, name, required, &rc, err);

	if (rc < 0 || !v)
		return rc;
	if (!json_is_array(v))
		return tg_jf_bad(err, prefix, name, "'%s' must be an array", name);
	*ret = v;
	return 0;
}

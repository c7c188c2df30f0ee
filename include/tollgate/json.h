/* json.h — JSON in and out with exact numbers: jansson for structure, our own number handling and dumper. */
#ifndef TOLLGATE_JSON_H
#define TOLLGATE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/fixed.h"
#include "tollgate/util.h"

/*
 * Quantities must be exact, and jansson turns "0.1" into a double. So every
 * number parsed by tg_json_parse() is kept as its verbatim lexeme, stored in a
 * jansson string whose first byte is NUL (a "number value"). Client strings
 * can never start with NUL: jansson rejects "\u0000" without JSON_ALLOW_NUL.
 * tg_json_dump() writes number values back bare, so a user's 0.30 in metadata
 * comes back as 0.30. Always read numbers with the getters below, never with
 * json_integer_value()/json_real_value(); jansson integers and reals built by
 * our own code are accepted by the getters and the dumper too.
 */

/* Parse text; returns a new reference, or NULL with err filled
 * (400 invalid_json; duplicate keys and non-object/array tops are errors too
 * when top_object is true; a number PostgreSQL could not store, such as
 * 1e-20000, is a 400 invalid_parameter naming its path, e.g. "metadata.x"). */
json_t *tg_json_parse(const char *text, size_t len, bool top_object, struct tg_error *err);
/* Characters (code points) in n bytes of UTF-8: what a string field's maxLength counts. */
size_t tg_utf8_chars(const char *s, size_t n);
/* Whether s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
bool tg_utf8_valid(const char *s, size_t n);

bool tg_json_is_number(const json_t *v);
/* The lexeme of a number value (or NULL); *len set. */
const char *tg_json_number_text(const json_t *v, size_t *len);
/* New number values (new references). */
json_t *tg_json_fixed(tg_fixed v);
json_t *tg_json_i64(int64_t v);

/* Read a number as fixed point; returns a tg_fixed status (TG_FIXED_ESYNTAX when not a number). */
int tg_json_get_fixed(const json_t *v, tg_fixed *ret);
/* Read a whole number (no fraction; "1e3" is fine, "1.5" is not); false otherwise or out of [min,max]. */
bool tg_json_get_i64(const json_t *v, int64_t min, int64_t max, int64_t *ret);

/* Serialize compactly (keys in insertion order). Appends to b. */
void tg_json_dump(const json_t *v, struct tg_buf *b);
/* Same, returning a malloc'd NUL-terminated string. */
char *tg_json_dumps(const json_t *v);

/* The length of v's dump once stored as jsonb and read back: PostgreSQL's numeric writes each number with
 * its exponent applied (1e300 as 301 digits, 1e-3 as 0.001), so this is what a read returns, however short
 * the request was. Numbers are those of tg_json_parse() (its lexemes are judged). */
size_t tg_json_stored_len(const json_t *v);

/* Build a json object from key/value pairs, stealing the values:
 * tg_json_obj("id", json_string(id), "n", tg_json_i64(3), NULL). NULL values become null. */
json_t *tg_json_obj(const char *key, ...);
/* json_string() that never returns NULL for invalid UTF-8 (replaced by U+FFFD) and maps a NULL s to null. */
json_t *tg_json_str(const char *s);
json_t *tg_json_time(int64_t ms); /* RFC 3339 string; ms < 0 → null */

/*
 * A streaming JSON writer for replies on the hot path: no json_t, no allocation
 * beyond the buffer. Values written after tg_jw_key() (in an object) or
 * directly (in an array); commas are placed for you.
 */
#define TG_JW_DEPTH 16
struct tg_jw {
	struct tg_buf *b;
	int depth;
	bool more[TG_JW_DEPTH]; /* this level already has an element: a comma before the next */
	bool after_key;
};
void tg_jw_init(struct tg_jw *w, struct tg_buf *b);
void tg_jw_begin_object(struct tg_jw *w);
void tg_jw_end_object(struct tg_jw *w);
void tg_jw_begin_array(struct tg_jw *w);
void tg_jw_end_array(struct tg_jw *w);
void tg_jw_key(struct tg_jw *w, const char *key);
void tg_jw_str(struct tg_jw *w, const char *s); /* NULL → null */
void tg_jw_fixed(struct tg_jw *w, tg_fixed v);
void tg_jw_int(struct tg_jw *w, int64_t v);
void tg_jw_bool(struct tg_jw *w, bool v);
void tg_jw_null(struct tg_jw *w);
void tg_jw_time(struct tg_jw *w, int64_t ms); /* RFC 3339; ms < 0 → null */
void tg_jw_json(struct tg_jw *w, const json_t *v); /* a json_t, through tg_json_dump */
void tg_jw_raw(struct tg_jw *w, const char *json, size_t n); /* a value already written as JSON */

/*
 * Field validation shared by api/ (request bodies) and policy/ (stored
 * configuration): each returns 0, or a negative tg_err with err naming the
 * field (prefix + name, e.g. "on_exceed.dimensions"). Absent fields leave
 * *ret untouched and return 0 unless required; JSON null is accepted only
 * where nullable (then *ret = NULL), and counts as absent: a required field
 * sent as null is missing_parameter.
 */
int tg_jf_only(const json_t *obj, const char *prefix, const char *const *allowed, struct tg_error *err);
int tg_jf_str(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable, size_t maxlen,
	      const char **ret, struct tg_error *err);
/* A display name (of a tenant, API key, customer, tier): at most maxbytes bytes of UTF-8 and no control
 * character — C0 (tab included), DEL or C1 (U+0080–U+009F) — that would garble a log line, a CSV cell or a
 * terminal showing it. The one check every name goes through. */
int tg_jf_name(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable,
	       size_t maxbytes, const char **ret, struct tg_error *err);
int tg_jf_id(const json_t *obj, const char *prefix, const char *name, bool required, bool nullable,
	     const char **ret, struct tg_error *err);
int tg_jf_bool(const json_t *obj, const char *prefix, const char *name, bool required, bool *ret, bool *present,
	       struct tg_error *err);
int tg_jf_int(const json_t *obj, const char *prefix, const char *name, bool required, int64_t min, int64_t max,
	      int64_t *ret, bool *present, struct tg_error *err);
int tg_jf_fixed(const json_t *obj, const char *prefix, const char *name, bool required, tg_fixed *ret,
		bool *present, struct tg_error *err);
int tg_jf_enum(const json_t *obj, const char *prefix, const char *name, bool required, const char *const *values,
	       int *ret, bool *present, struct tg_error *err);
int tg_jf_object(const json_t *obj, const char *prefix, const char *name, bool required, json_t **ret,
		 struct tg_error *err);
int tg_jf_array(const json_t *obj, const char *prefix, const char *name, bool required, json_t **ret,
		struct tg_error *err);
/* A 400 invalid_parameter naming prefix+name. */
int tg_jf_bad(struct tg_error *err, const char *prefix, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif

/* json.c — JSON parsing that keeps number lexemes exact, our dumper, and small builders. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/json.h"

/* ---- parsing ---- */

struct lexemes {
	const char *text, *end;
	const char *pos;
};

/* Next number lexeme in document order. The text already parsed as JSON, so
 * outside strings any '-' or digit starts a number (true/false/null hold none). */
static bool next_lexeme(struct lexemes *lx, const char **start, size_t *len)
{
	const char *p = lx->pos;

	while (p < lx->end) {
		char c = *p;
		if (c == '"') {
			for (p++; p < lx->end && *p != '"'; p++)
				if (*p == '\\')
					p++;
			p++;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			const char *s = p;
			/* not strchr("+-.eE", *p): that matches the NUL too */
			while (p < lx->end && (*p == '+' || *p == '-' || *p == '.' || *p == 'e' || *p == 'E' ||
					       (*p >= '0' && *p <= '9')))
				p++;
			*start = s;
			*len = (size_t)(p - s);
			lx->pos = p;
			return true;
		} else {
			p++;
		}
	}
	lx->pos = p;
	return false;
}

static json_t *number_value(const char *text, size_t len)
{
	char buf[352];

	if (len + 1 > sizeof(buf)) {
		/* absurdly long lexemes are kept (the getters will reject them) */
		char *big = tg_malloc(len + 1);
		big[0] = '\0';
		memcpy(big + 1, text, len);
		json_t *v = json_stringn_nocheck(big, len + 1);
		free(big);
		return v;
	}
	buf[0] = '\0';
	memcpy(buf + 1, text, len);
	return json_stringn_nocheck(buf, len + 1);
}

static bool is_jansson_number(const json_t *v)
{
	return json_is_integer(v) || json_is_real(v);
}

/*
 * A number PostgreSQL's numeric (so jsonb) can hold once stored: at most NUMBER_DIGITS_MAX digits on
 * each side of the point after the exponent is applied. jansson takes 1e-20000 or 0e-99999 (as 0.0),
 * but the INSERT of such a number fails; and what numeric writes back for an accepted number (1e-1000
 * as "0.000…1") has the same digits, so it parses again when read from the database.
 */
#define NUMBER_DIGITS_MAX 1000

static bool number_storable(const char *s, size_t n)
{
	size_t i = 0;
	int64_t int_digits = 0, frac_digits = 0, exp = 0;
	bool exp_neg = false;

	/* the text already parsed as JSON: -?digits(.digits)?([eE][+-]?digits)? */
	if (i < n && s[i] == '-')
		i++;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		int_digits++;
	if (i < n && s[i] == '.')
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			frac_digits++;
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			exp_neg = s[i++] == '-';
		for (; i < n; i++) {
			exp = exp * 10 + (s[i] - '0');
			if (exp > 10 * NUMBER_DIGITS_MAX)
				return false;
		}
	}
	if (exp_neg)
		exp = -exp;
	return int_digits + exp <= NUMBER_DIGITS_MAX && frac_digits - exp <= NUMBER_DIGITS_MAX;
}

/* The field a number sits in, for the error: "metadata.limits.0". */
static void path_push(char *path, size_t *plen, const char *key, size_t index)
{
	size_t cap = sizeof(((struct tg_error *)0)->param);
	int n = key ? snprintf(path + *plen, cap - *plen, "%s%s", *plen ? "." : "", key)
		    : snprintf(path + *plen, cap - *plen, "%s%zu", *plen ? "." : "", index);

	if (n > 0)
		*plen = *plen + (size_t)n < cap ? *plen + (size_t)n : cap - 1;
}

static json_t *number_at(struct lexemes *lx, char *path, size_t plen, struct tg_error *err)
{
	const char *start;
	size_t len;

	if (!next_lexeme(lx, &start, &len)) {
		tg_fail(err, TG_EINTERNAL, NULL, NULL, "could not read the numbers of the body");
		return NULL;
	}
	if (!number_storable(start, len)) {
		path[plen] = '\0';
		if (plen)
			tg_fail(err, TG_EINVAL, "invalid_parameter", path, "'%s' is a number out of range", path);
		else
			tg_fail(err, TG_EINVAL, "invalid_parameter", NULL, "the number is out of range");
		return NULL;
	}
	return number_value(start, len);
}

/* Replace every jansson number in v (document order) by a number value holding its lexeme. */
static int replace_numbers(json_t *v, struct lexemes *lx, char *path, size_t plen, struct tg_error *err)
{
	size_t sub = plen;
	json_t *num;

	if (json_is_object(v)) {
		const char *key;
		json_t *child;
		json_object_foreach(v, key, child) {
			sub = plen;
			path_push(path, &sub, key, 0);
			if (is_jansson_number(child)) {
				if (!(num = number_at(lx, path, sub, err)))
					return err->err;
				json_object_set_new_nocheck(v, key, num);
			} else if (replace_numbers(child, lx, path, sub, err) < 0) {
				return err->err;
			}
		}
	} else if (json_is_array(v)) {
		size_t i;
		json_t *child;
		json_array_foreach(v, i, child) {
			sub = plen;
			path_push(path, &sub, NULL, i);
			if (is_jansson_number(child)) {
				if (!(num = number_at(lx, path, sub, err)))
					return err->err;
				json_array_set_new(v, i, num);
			} else if (replace_numbers(child, lx, path, sub, err) < 0) {
				return err->err;
			}
		}
	}
	return 0;
}

/*
 * jansson refuses a number beyond a double's range ("real number overflow"), and with it the whole
 * body, so the field could not be named. Each such number is shown to jansson as "0" padded with
 * spaces (error columns stay right): only its lexeme is kept anyway, and number_storable() or the
 * getters then judge it against its field. Returns the masked copy, or NULL when none was needed.
 */
static char *mask_overflows(const char *text, size_t len)
{
	struct lexemes lx = {text, text + len, text};
	const char *start;
	size_t n;
	char *copy = NULL;

	while (next_lexeme(&lx, &start, &n)) {
		/* fewer than 309 digits and no exponent always fit */
		if (n < 309 && !memchr(start, 'e', n) && !memchr(start, 'E', n))
			continue;
		if (tg_fixed_parse(start, n, NULL) == TG_FIXED_ESYNTAX)
			continue; /* not a JSON number: jansson says so */
		_cleanup_free_ char *z = tg_strndup(start, n);
		if (!isinf(strtod(z, NULL)))
			continue;
		if (!copy) {
			copy = tg_malloc(len + 1);
			memcpy(copy, text, len);
			copy[len] = '\0';
		}
		copy[start - text] = '0';
		memset(copy + (start - text) + 1, ' ', n - 1);
	}
	return copy;
}

/*
 * The common request body — an object of plain ASCII strings, short plain numbers, true, false, null
 * and objects of those (two levels deep at most), such as a check's {"customer_id":"u_1","meter":
 * "tokens","amount":10,"dimensions":{"model":"gpt-4o"}} — is read here without jansson's lexer, which
 * costs several times what the body is worth on the hot path. The tree is the one jansson would build
 * (keys in document order, each number as its lexeme): anything else (an escape, a byte outside
 * 0x20–0x7e, an array, deeper nesting, a duplicate key, a long or unusual number, any malformed text)
 * returns NULL and is parsed the full way, so jansson still words every error.
 * tests/fuzz/fuzz_json.c holds the two ways to the same tree.
 */
#define FLAT_NUMBER_MAX 40 /* far from any double overflow or numeric digit cap: nothing to mask or check */
#define FLAT_DEPTH_MAX 2   /* the body, and objects in it */

static const char *flat_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* A plain string at p (after its opening quote): its end (the closing quote), or NULL. */
static const char *flat_str(const char *p, const char *end)
{
	while (p < end && *p >= 0x20 && *p < 0x7f && *p != '\\') {
		if (*p == '"')
			return p;
		p++;
	}
	return NULL;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)? at p: its length, or 0. */
static size_t flat_num(const char *p, const char *end)
{
	const char *s = p;
	size_t n;

	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	else
		return 0;
	if (p < end && *p == '.') {
		const char *d = ++p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == d)
			return 0;
	}
	if (p < end && (*p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
		return 0;
	n = (size_t)(p - s);
	return n <= FLAT_NUMBER_MAX ? n : 0;
}

static json_t *flat_object(const char **pp, const char *end, int depth);

static json_t *flat_value(const char **pp, const char *end, int depth)
{
	const char *p = *pp, *q;
	size_t n = (size_t)(end - p);

	if (*p == '{')
		return depth < FLAT_DEPTH_MAX ? flat_object(pp, end, depth + 1) : NULL;
	if (*p == '"') {
		if (!(q = flat_str(p + 1, end)))
			return NULL;
		*pp = q + 1;
		return json_stringn_nocheck(p + 1, (size_t)(q - p - 1));
	}
	if (*p == '-' || (*p >= '0' && *p <= '9')) {
		if (!(n = flat_num(p, end)))
			return NULL;
		*pp = p + n;
		return number_value(p, n);
	}
	if (n >= 4 && memcmp(p, "true", 4) == 0)
		q = p + 4;
	else if (n >= 5 && memcmp(p, "false", 5) == 0)
		q = p + 5;
	else if (n >= 4 && memcmp(p, "null", 4) == 0)
		q = p + 4;
	else
		return NULL;
	/* "truex" is jansson's error to word */
	if (q < end && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9')))
		return NULL;
	*pp = q;
	return *p == 't' ? json_true() : *p == 'f' ? json_false() : json_null();
}

/* An object at *pp (its opening brace), depth 1 for the body itself; *pp is left after its closing brace. */
static json_t *flat_object(const char **pp, const char *end, int depth)
{
	const char *p = flat_ws(*pp + 1, end), *key, *q;
	json_t *obj = json_object(), *v;

	if (p < end && *p == '}')
		goto close;
	for (;;) {
		if (p == end || *p != '"' || !(q = flat_str(p + 1, end)))
			goto fail;
		key = p + 1;
		if (json_object_getn(obj, key, (size_t)(q - key)))
			goto fail; /* a duplicate: jansson refuses it */
		p = flat_ws(q + 1, end);
		if (p == end || *p != ':')
			goto fail;
		p = flat_ws(p + 1, end);
		if (p == end || !(v = flat_value(&p, end, depth)))
			goto fail;
		if (json_object_setn_new_nocheck(obj, key, (size_t)(q - key), v) < 0)
			goto fail;
		p = flat_ws(p, end);
		if (p < end && *p == ',') {
			p = flat_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}')
			break;
		goto fail;
	}
close:
	*pp = p + 1;
	return obj;
fail:
	json_decref(obj);
	return NULL;
}

static json_t *parse_flat(const char *text, size_t len)
{
	const char *p = flat_ws(text, text + len), *end = text + len;
	json_t *obj;

	if (p == end || *p != '{' || !(obj = flat_object(&p, end, 1)))
		return NULL;
	if (flat_ws(p, end) != end) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/* The full way: jansson for structure (overflowing numbers masked), then every number by its lexeme. */
static json_t *parse_full(const char *text, size_t len, bool top_object, struct tg_error *err)
{
	json_error_t jerr;
	/* INT_AS_REAL: an integer beyond int64 must not fail the whole body ("too big integer"); every
	 * number is replaced by its exact lexeme below anyway, and the getters name the field it is in */
	size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | (top_object ? 0 : JSON_DECODE_ANY);
	json_t *root;
	struct lexemes lx = {text, text + len, text};
	char path[sizeof(err->param)] = "";
	const char *nul = memchr(text, '\0', len);

	/* No JSON text holds a NUL byte, but jansson 2.14 skips one right after a number or literal
	 * ({"a":1<NUL>} loads as {"a":1}), and the lexeme would then end in it: refuse it here. */
	if (nul) {
		int line = 1, column = 1;
		for (const char *p = text; p < nul; p++, column++)
			if (*p == '\n') {
				line++;
				column = 0;
			}
		tg_fail(err, TG_EINVAL, "invalid_json", NULL, "malformed JSON at line %d column %d: a NUL byte", line,
			column);
		return NULL;
	}
	_cleanup_free_ char *masked = mask_overflows(text, len);
	root = json_loadb(masked ? masked : text, len, flags, &jerr);
	if (!root) {
		tg_fail(err, TG_EINVAL, "invalid_json", NULL, "malformed JSON at line %d column %d: %s", jerr.line,
			jerr.column, jerr.text);
		return NULL;
	}
	if (top_object && !json_is_object(root)) {
		json_decref(root);
		tg_fail(err, TG_EINVAL, "invalid_json", NULL, "the request body must be a JSON object");
		return NULL;
	}
	if (is_jansson_number(root)) {
		json_decref(root);
		return number_at(&lx, path, 0, err);
	}
	if (replace_numbers(root, &lx, path, 0, err) < 0) {
		json_decref(root);
		return NULL;
	}
	return root;
}

json_t *tg_json_parse(const char *text, size_t len, bool top_object, struct tg_error *err)
{
	json_t *root;

	if (len == 0) {
		tg_fail(err, TG_EINVAL, "invalid_json", NULL, "request body is empty; a JSON object is expected");
		return NULL;
	}
	if ((root = parse_flat(text, len)))
		return root;
	return parse_full(text, len, top_object, err);
}

/* ---- numbers ---- */

bool tg_json_is_number(const json_t *v)
{
	return is_jansson_number(v) || (json_is_string(v) && json_string_length(v) > 0 && json_string_value(v)[0] == '\0');
}

const char *tg_json_number_text(const json_t *v, size_t *len)
{
	if (!json_is_string(v) || json_string_length(v) < 2 || json_string_value(v)[0] != '\0')
		return NULL;
	*len = json_string_length(v) - 1;
	return json_string_value(v) + 1;
}

json_t *tg_json_fixed(tg_fixed v)
{
	char buf[TG_FIXED_BUFSZ];

	if (tg_fixed_is_whole(v))
		return json_integer(v / TG_FIXED_SCALE);
	size_t n = tg_fixed_format(v, buf);
	return number_value(buf, n);
}

json_t *tg_json_i64(int64_t v)
{
	return json_integer(v);
}

int tg_json_get_fixed(const json_t *v, tg_fixed *ret)
{
	size_t len;
	const char *text = tg_json_number_text(v, &len);

	if (text)
		return tg_fixed_parse(text, len, ret);
	if (json_is_integer(v))
		return tg_fixed_from_int(json_integer_value(v), ret);
	if (json_is_real(v)) {
		char buf[64];
		int n = snprintf(buf, sizeof(buf), "%.6f", json_real_value(v));
		return n > 0 && (size_t)n < sizeof(buf) ? tg_fixed_parse(buf, (size_t)n, ret) : TG_FIXED_ERANGE;
	}
	return TG_FIXED_ESYNTAX;
}

/* -?[0-9]+ and nothing else: an integer's text. */
static bool integer_text(const char *s, size_t len)
{
	size_t i = len > 0 && s[0] == '-';

	if (i == len)
		return false;
	for (; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

bool tg_json_get_i64(const json_t *v, int64_t min, int64_t max, int64_t *ret)
{
	tg_fixed f;
	size_t len;
	const char *text = tg_json_number_text(v, &len);

	/* exactly, not through fixed point: that stops at a quantity's 9e12, and a test clock's offset in ms
	 * (or a time on that clock) goes past it */
	if (text && integer_text(text, len))
		return tg_parse_i64(text, min, max, ret);
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);
		if (i < min || i > max)
			return false;
		*ret = i;
		return true;
	}
	if (tg_json_get_fixed(v, &f) != TG_FIXED_OK || !tg_fixed_is_whole(f))
		return false;
	int64_t i = f / TG_FIXED_SCALE;
	if (i < min || i > max)
		return false;
	*ret = i;
	return true;
}

/* ---- dumping ---- */

void tg_json_dump(const json_t *v, struct tg_buf *b)
{
	size_t len;
	const char *text;

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *child;
		bool first = true;
		tg_buf_addc(b, '{');
		json_object_foreach((json_t *)v, key, child) {
			if (!first)
				tg_buf_addc(b, ',');
			first = false;
			tg_buf_addc(b, '"');
			tg_buf_add_json_str(b, key, strlen(key));
			tg_buf_add(b, "\":", 2);
			tg_json_dump(child, b);
		}
		tg_buf_addc(b, '}');
		break;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *child;
		tg_buf_addc(b, '[');
		json_array_foreach((json_t *)v, i, child) {
			if (i)
				tg_buf_addc(b, ',');
			tg_json_dump(child, b);
		}
		tg_buf_addc(b, ']');
		break;
	}
	case JSON_STRING:
		text = tg_json_number_text(v, &len);
		if (text) {
			tg_buf_add(b, text, len);
		} else {
			tg_buf_addc(b, '"');
			tg_buf_add_json_str(b, json_string_value(v), json_string_length(v));
			tg_buf_addc(b, '"');
		}
		break;
	case JSON_INTEGER:
		tg_buf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL: {
		double d = json_real_value(v);
		if (isfinite(d))
			tg_buf_addf(b, "%.17g", d);
		else
			tg_buf_adds(b, "null");
		break;
	}
	case JSON_TRUE:
		tg_buf_adds(b, "true");
		break;
	case JSON_FALSE:
		tg_buf_adds(b, "false");
		break;
	case JSON_NULL:
	default:
		tg_buf_adds(b, "null");
		break;
	}
}

char *tg_json_dumps(const json_t *v)
{
	struct tg_buf b = TG_BUF_INIT;

	tg_json_dump(v, &b);
	return tg_buf_detach(&b, NULL);
}

/*
 * The length of a number once PostgreSQL's numeric (so jsonb) writes it back: the exponent applied, as
 * many fraction digits as the lexeme had after it (its display scale), no sign on zero: 1e3 → "1000",
 * 1.50 → "1.50", 125e-4 → "0.0125", 1.0e2 → "100", -0.0 → "0.0". The lexeme is a JSON number that
 * number_storable() accepted, so the exponent is small.
 */
static size_t numeric_len(const char *s, size_t n)
{
	size_t i = 0;
	int64_t int_digits = 0, frac_digits = 0, exp = 0, first_nonzero = -1, digits = 0;
	bool neg = false, exp_neg = false;

	if (i < n && s[i] == '-') {
		neg = true;
		i++;
	}
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, int_digits++, digits++)
		if (s[i] != '0' && first_nonzero < 0)
			first_nonzero = digits;
	if (i < n && s[i] == '.')
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, frac_digits++, digits++)
			if (s[i] != '0' && first_nonzero < 0)
				first_nonzero = digits;
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			exp_neg = s[i++] == '-';
		for (; i < n && exp <= 100000; i++)
			exp = exp * 10 + (s[i] - '0');
	}
	if (exp_neg)
		exp = -exp;
	int64_t point = int_digits + exp; /* digits before the point once the exponent is applied */
	int64_t scale = frac_digits - exp > 0 ? frac_digits - exp : 0;
	int64_t whole = first_nonzero < 0 || first_nonzero >= point ? 1 : point - first_nonzero;
	return (size_t)((neg && first_nonzero >= 0 ? 1 : 0) + whole + (scale ? 1 + scale : 0));
}

/* What the numbers of v add to (or take from) its dump once numeric has rewritten them. */
static int64_t numeric_growth(const json_t *v)
{
	const char *text;
	size_t len;
	int64_t d = 0;

	if (json_is_object(v)) {
		const char *key;
		json_t *child;
		json_object_foreach((json_t *)v, key, child)
			d += numeric_growth(child);
	} else if (json_is_array(v)) {
		size_t i;
		json_t *child;
		json_array_foreach((json_t *)v, i, child)
			d += numeric_growth(child);
	} else if ((text = tg_json_number_text(v, &len))) {
		d = (int64_t)numeric_len(text, len) - (int64_t)len;
	}
	return d;
}

size_t tg_json_stored_len(const json_t *v)
{
	_cleanup_free_ char *text = tg_json_dumps(v);

	return (size_t)((int64_t)strlen(text) + numeric_growth(v));
}

/* ---- builders ---- */

json_t *tg_json_obj(const char *key, ...)
{
	json_t *o = json_object();
	va_list ap;

	va_start(ap, key);
	while (key) {
		json_t *v = va_arg(ap, json_t *);
		json_object_set_new(o, key, v ? v : json_null());
		key = va_arg(ap, const char *);
	}
	va_end(ap);
	return o;
}

/* Length of a valid UTF-8 sequence at s (max n bytes), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned min;

	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) { len = 2; min = 0x80; c &= 0x1F; }
	else if ((c & 0xF0) == 0xE0) { len = 3; min = 0x800; c &= 0x0F; }
	else if ((c & 0xF8) == 0xF0) { len = 4; min = 0x10000; c &= 0x07; }
	else return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	return len;
}

void tg_buf_add_utf8(struct tg_buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	while (n > 0) {
		size_t k = utf8_seq(p, n);
		if (k == 0) {
			tg_buf_adds(b, "\xEF\xBF\xBD");
			k = 1;
		} else {
			tg_buf_add(b, p, k);
		}
		p += k;
		n -= k;
	}
}

json_t *tg_json_str(const char *s)
{
	if (!s)
		return json_null();
	json_t *v = json_string(s);
	if (v)
		return v;
	struct tg_buf b = TG_BUF_INIT;
	tg_buf_add_utf8(&b, s, strlen(s));
	v = json_string(b.buf ? b.buf : "");
	tg_buf_release(&b);
	return v ? v : json_string("");
}

json_t *tg_json_time(int64_t ms)
{
	char buf[TG_TIME_BUFSZ];

	if (ms < 0)
		return json_null();
	tg_time_format(ms, buf);
	return json_string(buf);
}

/* ---- streaming writer ---- */

void tg_jw_init(struct tg_jw *w, struct tg_buf *b)
{
	memset(w, 0, sizeof(*w));
	w->b = b;
}

/* Before any value: the comma, unless it follows its key or opens its container. */
static void jw_value(struct tg_jw *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->more[w->depth])
		tg_buf_addc(w->b, ',');
	w->more[w->depth] = true;
}

static void jw_open(struct tg_jw *w, char c)
{
	jw_value(w);
	tg_buf_addc(w->b, c);
	if (w->depth < TG_JW_DEPTH - 1)
		w->depth++;
	w->more[w->depth] = false;
}

static void jw_close(struct tg_jw *w, char c)
{
	tg_buf_addc(w->b, c);
	if (w->depth > 0)
		w->depth--;
}

void tg_jw_begin_object(struct tg_jw *w)
{
	jw_open(w, '{');
}

void tg_jw_end_object(struct tg_jw *w)
{
	jw_close(w, '}');
}

void tg_jw_begin_array(struct tg_jw *w)
{
	jw_open(w, '[');
}

void tg_jw_end_array(struct tg_jw *w)
{
	jw_close(w, ']');
}

/* Keys are our own literals, written on every reply: one grow, and escaping only when one needs it. */
void tg_jw_key(struct tg_jw *w, const char *key)
{
	struct tg_buf *b = w->b;
	size_t n = strlen(key), i;

	jw_value(w);
	for (i = 0; i < n; i++)
		if ((unsigned char)key[i] < 0x20 || key[i] == '"' || key[i] == '\\')
			break;
	if (i < n) {
		tg_buf_addc(b, '"');
		tg_buf_add_json_str(b, key, n);
		tg_buf_add(b, "\":", 2);
	} else {
		tg_buf_grow(b, n + 3);
		b->buf[b->len] = '"';
		memcpy(b->buf + b->len + 1, key, n);
		memcpy(b->buf + b->len + 1 + n, "\":", 3); /* with the terminating NUL */
		b->len += n + 3;
	}
	w->after_key = true;
}

void tg_jw_raw(struct tg_jw *w, const char *json, size_t n)
{
	jw_value(w);
	tg_buf_add(w->b, json, n);
}

void tg_jw_str(struct tg_jw *w, const char *s)
{
	if (!s) {
		tg_jw_null(w);
		return;
	}
	jw_value(w);
	tg_buf_addc(w->b, '"');
	tg_buf_add_json_str(w->b, s, strlen(s));
	tg_buf_addc(w->b, '"');
}

void tg_jw_fixed(struct tg_jw *w, tg_fixed v)
{
	char num[TG_FIXED_BUFSZ];
	size_t n = tg_fixed_format(v, num);

	jw_value(w);
	tg_buf_add(w->b, num, n);
}

void tg_jw_int(struct tg_jw *w, int64_t v)
{
	char num[TG_I64_BUFSZ];
	size_t n = tg_fmt_i64(v, num);

	jw_value(w);
	tg_buf_add(w->b, num, n);
}

void tg_jw_bool(struct tg_jw *w, bool v)
{
	jw_value(w);
	tg_buf_adds(w->b, v ? "true" : "false");
}

void tg_jw_null(struct tg_jw *w)
{
	jw_value(w);
	tg_buf_adds(w->b, "null");
}

void tg_jw_time(struct tg_jw *w, int64_t ms)
{
	char t[TG_TIME_BUFSZ];

	if (ms < 0) {
		tg_jw_null(w);
		return;
	}
	tg_time_format(ms, t);
	tg_jw_str(w, t);
}

void tg_jw_json(struct tg_jw *w, const json_t *v)
{
	jw_value(w);
	tg_json_dump(v, w->b);
}

bool tg_utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str, *end = s + n;

	while (s < end) {
		unsigned c = *s++, need, min;
		if (c < 0x80)
			continue;
		if (c >= 0xC2 && c <= 0xDF)
			need = 1, min = 0x80, c &= 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 2, min = 0x800, c &= 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 3, min = 0x10000, c &= 0x07;
		else
			return false;
		if ((size_t)(end - s) < need)
			return false;
		for (unsigned k = 0; k < need; k++) {
			if ((s[k] & 0xC0) != 0x80)
				return false;
			c = c << 6 | (s[k] & 0x3F);
		}
		s += need;
		if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
			return false; /* overlong, past Unicode, or a surrogate */
	}
	return true;
}

size_t tg_utf8_chars(const char *s, size_t n)
{
	size_t chars = 0;

	for (size_t i = 0; i < n; i++)
		chars += ((unsigned char)s[i] & 0xC0) != 0x80; /* every byte but a continuation starts one */
	return chars;
}

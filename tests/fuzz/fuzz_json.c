/*
 * fuzz_json.c — request bodies through tg_json_parse (src/util/json.c). Differential: wherever the flat
 * reader (parse_flat) returns a tree, the full path (jansson, parse_full) must return the same tree, key
 * order and number lexemes included. And for both: every number value holds a JSON number, errors are
 * 400 invalid_json/invalid_parameter (never the internal "could not read the numbers"), and our dump of
 * a tree parses back to the same tree.
 */
#include "../../src/util/json.c" /* parse_flat and parse_full are static */
#include "fuzz.h"

/* json_equal, and also the same key order and the same number lexemes (json_equal sees only strings). */
static bool same_tree(const json_t *a, const json_t *b)
{
	size_t la, lb;
	const char *ta, *tb;

	if (!json_equal(a, b) || json_typeof(a) != json_typeof(b))
		return false;
	switch (json_typeof(a)) {
	case JSON_OBJECT: {
		void *ia = json_object_iter((json_t *)a), *ib = json_object_iter((json_t *)b);
		for (; ia && ib; ia = json_object_iter_next((json_t *)a, ia), ib = json_object_iter_next((json_t *)b, ib)) {
			if (json_object_iter_key_len(ia) != json_object_iter_key_len(ib) ||
			    memcmp(json_object_iter_key(ia), json_object_iter_key(ib), json_object_iter_key_len(ia)) != 0 ||
			    !same_tree(json_object_iter_value(ia), json_object_iter_value(ib)))
				return false;
		}
		return !ia && !ib;
	}
	case JSON_ARRAY:
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!same_tree(json_array_get(a, i), json_array_get(b, i)))
				return false;
		return true;
	case JSON_STRING:
		ta = tg_json_number_text(a, &la);
		tb = tg_json_number_text(b, &lb);
		if (!ta || !tb)
			return !ta && !tb;
		return la == lb && memcmp(ta, tb, la) == 0;
	default:
		return true;
	}
}

/* Every number value is a JSON number (the lexemes stayed in step with jansson), read by the getter. */
static void check_numbers(const json_t *v)
{
	size_t len, i;
	const char *text, *key;
	json_t *child;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, key, child)
			check_numbers(child);
		break;
	case JSON_ARRAY:
		json_array_foreach(v, i, child)
			check_numbers(child);
		break;
	case JSON_STRING:
		if ((text = tg_json_number_text(v, &len))) {
			tg_fixed f;
			FUZZ_CHECK(tg_json_is_number(v));
			FUZZ_CHECK(tg_fixed_parse(text, len, NULL) != TG_FIXED_ESYNTAX);
			FUZZ_CHECK(tg_json_get_fixed(v, &f) == tg_fixed_parse(text, len, NULL));
		} else {
			FUZZ_CHECK(!tg_json_is_number(v));
			FUZZ_CHECK(json_string_length(v) == 0 || json_string_value(v)[0] != '\0');
		}
		break;
	case JSON_INTEGER:
	case JSON_REAL:
		FUZZ_CHECK(!"a jansson number survived the parse");
		break;
	default:
		break;
	}
}

static void check_error(const struct tg_error *err)
{
	FUZZ_CHECK(err->err == TG_EINVAL);
	FUZZ_CHECK(err->code && (strcmp(err->code, "invalid_json") == 0 || strcmp(err->code, "invalid_parameter") == 0));
	FUZZ_CHECK(err->message[0] != '\0');
}

static void one(const char *text, size_t len, bool top_object)
{
	struct tg_error err = {0}, ferr = {0}, rerr = {0};
	json_t *flat = parse_flat(text, len);
	json_t *full = len ? parse_full(text, len, top_object, &ferr) : NULL;
	json_t *got = tg_json_parse(text, len, top_object, &err);

	if (flat) {
		/* the fast reader accepts only what the full path accepts, as the same tree */
		FUZZ_CHECK(json_is_object(flat));
		FUZZ_CHECK(full != NULL);
		FUZZ_CHECK(same_tree(flat, full));
	}
	FUZZ_CHECK(!got == !full || len == 0);
	if (!got) {
		check_error(&err);
		if (len)
			check_error(&ferr);
	} else {
		FUZZ_CHECK(!top_object || json_is_object(got));
		FUZZ_CHECK(same_tree(got, full));
		check_numbers(got);
		/* what we write back (stored metadata, replies) reads back the same */
		char *dump = tg_json_dumps(got);
		json_t *again = tg_json_parse(dump, strlen(dump), top_object, &rerr);
		FUZZ_CHECK(again != NULL);
		FUZZ_CHECK(same_tree(got, again));
		json_decref(again);
		free(dump);
	}
	json_decref(flat);
	json_decref(full);
	json_decref(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one((const char *)data, size, true);
	one((const char *)data, size, false);
	return 0;
}

/*
 * fuzz_accept.c — an Accept header as GET /v1/usage reads it (accept_match() and wants_csv()'s rule in
 * src/api/usage.c). Differential: a reference written from RFC 9110 §12.5.1 the plain way (split the
 * list on ',', each element on ';', lower-case, compare strings) must find the same q-value, the same
 * specificity and the same place in the list for text/csv and for application/json, and so the same
 * choice; q is always 0–1000 and the place within the list.
 */
#include <ctype.h>

#include "../../src/api/usage.c" /* accept_match() is static */
#include "fuzz.h"

static char *trimmed(char *s)
{
	char *e = s + strlen(s);

	while (*s == ' ' || *s == '\t')
		s++;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

/* qvalue = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ]: thousandths, or -1 */
static int ref_qvalue(const char *v)
{
	size_t n = strlen(v);

	if (n == 0 || n > 5 || (v[0] != '0' && v[0] != '1'))
		return -1;
	if (n == 1)
		return (v[0] - '0') * 1000;
	if (v[1] != '.')
		return -1;
	int q = 0, scale = 100;
	for (size_t i = 2; i < n; i++, scale /= 10) {
		if (!isdigit((unsigned char)v[i]))
			return -1;
		q += (v[i] - '0') * scale;
	}
	if (v[0] == '1' && q != 0)
		return -1;
	return (v[0] - '0') * 1000 + q;
}

static struct accept_match ref_match(const char *header, const char *type, const char *sub)
{
	struct accept_match best = {0, 0, 0};
	char *copy = strdup(header), *rest = copy, *elem, want[64], any_sub[64];
	int pos = 0;

	if (!copy)
		abort();
	snprintf(want, sizeof(want), "%s/%s", type, sub);
	snprintf(any_sub, sizeof(any_sub), "%s/*", type);
	while ((elem = strsep(&rest, ",")) != NULL) {
		char *params = elem, *range = trimmed(strsep(&params, ";"));
		int q = 1000, rank;
		for (char *p = range; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		rank = !strcmp(range, "*/*") ? 1 : !strcmp(range, any_sub) ? 2 : !strcmp(range, want) ? 3 : 0;
		for (char *param; params && (param = strsep(&params, ";")) != NULL;) {
			param = trimmed(param);
			if ((param[0] == 'q' || param[0] == 'Q') && param[1] == '=')
				q = ref_qvalue(param + 2);
		}
		if (rank > best.rank && q >= 0)
			best = (struct accept_match){q, rank, pos};
		pos++;
	}
	free(copy);
	return best;
}

static int elements(const char *s)
{
	int n = 1;

	for (; *s; s++)
		n += *s == ',';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *h = fuzz_cstr(data, size);
	struct accept_match csv = accept_match(h, "text", "csv"), json = accept_match(h, "application", "json");
	struct accept_match rcsv = ref_match(h, "text", "csv"), rjson = ref_match(h, "application", "json");

	FUZZ_CHECK(csv.q >= 0 && csv.q <= 1000 && json.q >= 0 && json.q <= 1000);
	FUZZ_CHECK(csv.pos >= 0 && csv.pos < elements(h) && json.pos >= 0 && json.pos < elements(h));
	FUZZ_CHECK(csv.q == rcsv.q && csv.rank == rcsv.rank && csv.pos == rcsv.pos);
	FUZZ_CHECK(json.q == rjson.q && json.rank == rjson.rank && json.pos == rjson.pos);
	free(h);
	return 0;
}

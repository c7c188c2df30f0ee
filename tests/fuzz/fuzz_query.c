/*
 * fuzz_query.c — a query string the way a request brings it: split on '&' and '=' and percent-decoded as
 * libmicrohttpd does with our unescape callback (src/http/server.c), then read by the query helpers of
 * src/api/params.c (api_query_only, api_page, api_query_id, api_query_time, api_query_bool). Decoding
 * never shortens a value with a NUL nor grows it (and, given as the path, keeps an encoded slash); each helper's success means a value its contract
 * allows (limit 1–100 or 20, valid ids, times that tg_time_parse reads the same); each failure is a
 * 400 naming the argument.
 */
#include "../../src/http/server.c" /* struct http_req, unescape() and collect_arg() are static */
#include "fuzz.h"
#include "tollgate/api.h"

#define MAX_ARGS 64

/* The reference decoder: %XY for two hex digits, except %00 (and %2F in the path), stays literal otherwise. */
static size_t ref_unescape(const char *in, char *out, bool path)
{
	size_t n = 0;

	for (size_t i = 0; in[i];) {
		int hi = in[i] == '%' ? hex_digit(in[i + 1]) : -1, lo = hi >= 0 ? hex_digit(in[i + 2]) : -1;
		if (hi >= 0 && lo >= 0 && hi * 16 + lo != 0 && !(path && hi * 16 + lo == '/')) {
			out[n++] = (char)(hi * 16 + lo);
			i += 3;
		} else {
			out[n++] = in[i++];
		}
	}
	out[n] = '\0';
	return n;
}

/* Decode s as libmicrohttpd does a query name or value; first, a copy as the path (the string its URI log
 * callback saw, which note_uri keeps). */
static void decode(char *s)
{
	struct http_loop hl = {0};
	size_t len = strlen(s), n;
	char *want = malloc(len + 1), *path = strdup(s);

	if (!want || !path)
		abort();
	ref_unescape(path, want, true);
	note_uri(&hl, path, NULL);
	n = unescape(&hl, NULL, path);
	FUZZ_CHECK(n <= len && n == strlen(path));
	FUZZ_CHECK(strcmp(path, want) == 0);
	FUZZ_CHECK(hl.uri == NULL); /* the path is decoded once; nothing later is taken for it */

	for (char *p = s; *p; p++) /* libmicrohttpd turns '+' into ' ' before unescaping */
		if (*p == '+')
			*p = ' ';
	ref_unescape(s, want, false);
	n = unescape(&hl, NULL, s);
	FUZZ_CHECK(n <= len);
	FUZZ_CHECK(n == strlen(s)); /* no NUL decoded into the middle */
	FUZZ_CHECK(strcmp(s, want) == 0);
	free(path);
	free(want);
}

static const char *const allowed[] = {"limit", "starting_after", "customer_id", "from", "to", "type", "dry", NULL};

static bool is_allowed(const char *name)
{
	for (const char *const *a = allowed; *a; a++)
		if (strcmp(*a, name) == 0)
			return true;
	return false;
}

static void check_failed(int rc, const struct tg_req *req, const char *name)
{
	FUZZ_CHECK(rc == TG_EINVAL && req->err.err == TG_EINVAL);
	FUZZ_CHECK(req->err.code != NULL && req->err.message[0] != '\0');
	if (name)
		FUZZ_CHECK(strncmp(req->err.param, name, sizeof(req->err.param) - 1) == 0);
}

static void read_args(struct http_req *r)
{
	struct tg_req *req = &r->pub;
	int64_t limit, ms;
	const char *after, *id, *first_unknown = NULL, *v;
	bool b, present;
	int rc;

	for (int i = 0; i < r->nquery && !first_unknown; i++)
		if (!is_allowed(r->query[i].name))
			first_unknown = r->query[i].name;
	rc = api_query_only(req, allowed);
	if (first_unknown)
		check_failed(rc, req, first_unknown);
	else
		FUZZ_CHECK(rc == 0);

	memset(&req->err, 0, sizeof(req->err));
	rc = api_page(req, &limit, &after);
	if (rc == 0) {
		FUZZ_CHECK(limit >= 1 && limit <= 100);
		FUZZ_CHECK(tg_req_query(req, "limit") || limit == 20);
		FUZZ_CHECK(!after || tg_id_valid(after, strlen(after)));
	} else {
		check_failed(rc, req, NULL);
		FUZZ_CHECK(strcmp(req->err.param, "limit") == 0 || strcmp(req->err.param, "starting_after") == 0);
	}

	memset(&req->err, 0, sizeof(req->err));
	id = NULL;
	rc = api_query_id(req, "customer_id", &id);
	if (rc == 0)
		FUZZ_CHECK(id ? tg_id_valid(id, strlen(id)) : !tg_req_query(req, "customer_id"));
	else
		check_failed(rc, req, "customer_id");

	memset(&req->err, 0, sizeof(req->err));
	ms = -1;
	rc = api_query_time(req, "from", &ms, &present);
	if (rc == 0 && present) {
		int64_t again;
		FUZZ_CHECK(tg_time_parse(tg_req_query(req, "from"), &again) == 0 && again == ms);
	} else if (rc == 0) {
		FUZZ_CHECK(!tg_req_query(req, "from") && ms == -1);
	} else {
		check_failed(rc, req, "from");
	}

	memset(&req->err, 0, sizeof(req->err));
	rc = api_query_bool(req, "dry", &b, &present);
	v = tg_req_query(req, "dry");
	if (rc == 0)
		FUZZ_CHECK(present ? (strcmp(v, b ? "true" : "false") == 0) : !v);
	else
		check_failed(rc, req, "dry");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *qs = fuzz_cstr(data, size);
	struct http_req r;
	int nargs = 0;

	memset(&r, 0, sizeof(r));
	tg_arena_init(&r.pub.arena);
	r.query = tg_arena_alloc(&r.pub.arena, sizeof(*r.query) * MAX_ARGS);
	/* libmicrohttpd's split: "&"-separated, "name" or "name=value", both decoded; empty pieces skipped */
	for (char *save = NULL, *arg = strtok_r(qs, "&", &save); arg && nargs < MAX_ARGS;
	     arg = strtok_r(NULL, "&", &save), nargs++) {
		char *eq = strchr(arg, '=');
		if (eq)
			*eq = '\0';
		decode(arg);
		if (eq)
			decode(eq + 1);
		collect_arg(&r, MHD_GET_ARGUMENT_KIND, arg, eq ? eq + 1 : NULL);
	}
	FUZZ_CHECK(r.nquery == nargs);
	read_args(&r);
	tg_arena_release(&r.pub.arena);
	free(qs);
	return 0;
}

/*
 * fuzz_route.c — "METHOD /path" through tg_method_parse and tg_route_match (src/http/router.c) against
 * the real route table. The match must agree with a segment-by-segment reference matcher; the first
 * route matching path and method wins; its {x} parameters are non-empty segments that rebuild the path
 * exactly; on no match, the allowed methods are those of every route the path matches.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "tollgate/api.h"
#include "tollgate/http.h"

/* The reference: same number of '/'-separated segments, literal ones equal, {x} ones non-empty. */
static bool ref_match(const char *pattern, const char *path)
{
	const char *p = pattern, *s = path;

	for (;;) {
		const char *pe = strchr(p, '/'), *se = strchr(s, '/');
		size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl = se ? (size_t)(se - s) : strlen(s);
		if (pl > 0 && p[0] == '{') {
			if (sl == 0)
				return false;
		} else if (pl != sl || memcmp(p, s, pl) != 0) {
			return false;
		}
		if (!pe || !se)
			return !pe && !se;
		p = pe + 1;
		s = se + 1;
	}
}

static bool matches(size_t i, const char *path)
{
	unsigned allowed;
	return tg_route_match(&api_routes[i], 1, api_routes[i].methods, path, NULL, NULL, NULL, &allowed) == 0;
}

static void check_params(const char *pattern, const char *path, const char *const *params, int nparams)
{
	char rebuilt[8192];
	size_t n = 0;
	int k = 0;

	for (const char *p = pattern; *p; p++) {
		if (*p == '{') {
			FUZZ_CHECK(k < nparams);
			FUZZ_CHECK(params[k][0] != '\0' && !strchr(params[k], '/'));
			size_t l = strlen(params[k]);
			FUZZ_CHECK(n + l < sizeof(rebuilt));
			memcpy(rebuilt + n, params[k], l);
			n += l;
			k++;
			p = strchr(p, '}');
		} else {
			FUZZ_CHECK(n + 1 < sizeof(rebuilt));
			rebuilt[n++] = *p;
		}
	}
	rebuilt[n] = '\0';
	FUZZ_CHECK(k == nparams);
	FUZZ_CHECK(strcmp(rebuilt, path) == 0);
}

static void route(enum tg_method m, const char *path)
{
	struct tg_arena arena;
	const char *params[TG_REQ_MAX_PARAMS] = {0};
	int nparams = -1;
	unsigned allowed = 0, want_allowed = 0;
	int idx;

	tg_arena_init(&arena);
	idx = tg_route_match(api_routes, api_nroutes, m, path, &arena, params, &nparams, &allowed);
	FUZZ_CHECK(idx >= -1 && idx < (int)api_nroutes);
	for (size_t i = 0; i < api_nroutes; i++) {
		bool hit = matches(i, path);
		FUZZ_CHECK(hit == ref_match(api_routes[i].pattern, path));
		if (idx >= 0 && (int)i < idx)
			FUZZ_CHECK(!hit || !(api_routes[i].methods & m)); /* the first match wins */
		if (hit)
			want_allowed |= api_routes[i].methods;
	}
	if (idx >= 0) {
		FUZZ_CHECK(api_routes[idx].methods & m);
		FUZZ_CHECK(matches((size_t)idx, path));
		check_params(api_routes[idx].pattern, path, params, nparams);
	} else {
		FUZZ_CHECK(allowed == want_allowed);
		FUZZ_CHECK(!(allowed & m));
	}
	tg_arena_release(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	char *sp = strchr(s, ' ');
	const char *path = sp ? sp + 1 : "/";
	enum tg_method m;

	if (sp)
		*sp = '\0';
	m = tg_method_parse(s);
	FUZZ_CHECK(m == 0 || m == TG_GET || m == TG_POST || m == TG_PATCH || m == TG_DELETE || m == TG_PUT);
	if (m)
		FUZZ_CHECK(strcmp(tg_method_name(m), s) == 0 || strcmp(s, "HEAD") == 0);
	/* an unknown method still gets its Allow header: every method is tried, as req_new() does */
	if (m)
		route(m, path);
	else
		for (unsigned b = TG_GET; b <= TG_PUT; b <<= 1)
			route((enum tg_method)b, path);
	free(s);
	return 0;
}

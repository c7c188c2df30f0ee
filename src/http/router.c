/* router.c — matching a method and path against the static route table; pure, unit-tested. */
#include <stdio.h>
#include <string.h>

#include "tollgate/http.h"

static const struct {
	enum tg_method m;
	const char *name;
} methods[] = {
	{TG_GET, "GET"}, {TG_POST, "POST"}, {TG_PATCH, "PATCH"}, {TG_DELETE, "DELETE"}, {TG_PUT, "PUT"},
};

enum tg_method tg_method_parse(const char *s)
{
	for (size_t i = 0; i < TG_ARRAY_SIZE(methods); i++)
		if (strcmp(s, methods[i].name) == 0)
			return methods[i].m;
	if (strcmp(s, "HEAD") == 0)
		return TG_GET; /* libmicrohttpd drops the body of HEAD replies itself */
	return 0;
}

const char *tg_method_name(enum tg_method m)
{
	for (size_t i = 0; i < TG_ARRAY_SIZE(methods); i++)
		if (methods[i].m == m)
			return methods[i].name;
	return "?";
}

void tg_methods_format(unsigned mask, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < TG_ARRAY_SIZE(methods); i++) {
		if (!(mask & methods[i].m))
			continue;
		int n = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", methods[i].name);
		if (n < 0 || (size_t)n >= size - len)
			return;
		len += (size_t)n;
	}
}

/* Match path against pattern segment by segment; {x} takes one non-empty segment. */
static bool match(const char *pattern, const char *path, struct tg_arena *arena, const char **params,
		  int *nparams)
{
	const char *p = pattern, *s = path;
	int n = 0;

	while (*p && *s) {
		if (*p == '{') {
			const char *end = strchr(s, '/');
			size_t len = end ? (size_t)(end - s) : strlen(s);
			if (len == 0 || n >= TG_REQ_MAX_PARAMS)
				return false;
			if (params && arena)
				params[n] = tg_arena_strndup(arena, s, len);
			n++;
			s += len;
			p = strchr(p, '}');
			if (!p)
				return false;
			p++;
		} else if (*p == *s) {
			p++;
			s++;
		} else {
			return false;
		}
	}
	if (*p || *s)
		return false;
	if (nparams)
		*nparams = n;
	return true;
}

int tg_route_match(const struct tg_route *routes, size_t n, enum tg_method method, const char *path,
		   struct tg_arena *arena, const char **params, int *nparams, unsigned *allowed)
{
	*allowed = 0;
	for (size_t i = 0; i < n; i++) {
		if (!match(routes[i].pattern, path, NULL, NULL, NULL))
			continue;
		if (routes[i].methods & method) {
			match(routes[i].pattern, path, arena, params, nparams);
			return (int)i;
		}
		*allowed |= routes[i].methods;
	}
	return -1;
}

/* scripts.c — every Lua script Redis runs for us (the .lua files of src/hot, compiled in), loaded by SHA. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "tollgate/crypto.h"

extern const struct tg_embedded hot_lua[];
extern const size_t hot_lua_count;

struct hot_script hot_script_check = {.name = "check.lua"};
struct hot_script hot_script_usage = {.name = "usage.lua"};
struct hot_script hot_script_balance = {.name = "balance.lua"};
struct hot_script hot_script_recover = {.name = "recover.lua"};
struct hot_script hot_script_heartbeat = {.name = "heartbeat.lua"};

struct hot_script *const hot_scripts[] = {&hot_script_check, &hot_script_usage, &hot_script_balance,
					 &hot_script_recover, &hot_script_heartbeat};
const int hot_nscripts = (int)(sizeof(hot_scripts) / sizeof(hot_scripts[0]));

static const char *lua(const char *name)
{
	for (size_t j = 0; j < hot_lua_count; j++)
		if (strcmp(hot_lua[j].name, name) == 0)
			return hot_lua[j].text;
	TG_BUG("script %s is not compiled in", name);
}

/* Every script is the prelude (exact integer helpers) followed by its own text. */
void hot_scripts_init(void)
{
	const char *prelude = lua("prelude.lua");

	for (int i = 0; i < hot_nscripts; i++) {
		struct hot_script *s = hot_scripts[i];
		size_t n = strlen(prelude) + strlen(lua(s->name)) + 2;
		char *text = tg_malloc(n);
		snprintf(text, n, "%s\n%s", prelude, lua(s->name));
		s->source = text;
		tg_sha1_hex(s->source, strlen(s->source), s->sha);
	}
}

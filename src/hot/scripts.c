/* scripts.c — every Lua script Redis runs for us (the .lua files of src/hot, compiled in), loaded by SHA. */
#include <string.h>

#include "internal.h"
#include "tollgate/crypto.h"

extern const struct tg_embedded hot_lua[];
extern const size_t hot_lua_count;

struct hot_script hot_script_check = {.name = "check.lua"};
struct hot_script hot_script_usage = {.name = "usage.lua"};
struct hot_script hot_script_balance = {.name = "balance.lua"};

struct hot_script *const hot_scripts[] = {&hot_script_check, &hot_script_usage, &hot_script_balance};
const int hot_nscripts = (int)(sizeof(hot_scripts) / sizeof(hot_scripts[0]));

void hot_scripts_init(void)
{
	for (int i = 0; i < hot_nscripts; i++) {
		struct hot_script *s = hot_scripts[i];
		for (size_t j = 0; j < hot_lua_count; j++)
			if (strcmp(hot_lua[j].name, s->name) == 0)
				s->source = hot_lua[j].text;
		if (!s->source)
			TG_BUG("script %s is not compiled in", s->name);
		tg_sha1_hex(s->source, strlen(s->source), s->sha);
	}
}

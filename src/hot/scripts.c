/* scripts.c — every Lua script Redis runs for us, loaded by SHA (see hot.h). */
#include <string.h>

#include "internal.h"
#include "tollgate/crypto.h"

/* Returns the server's idea of "now" in ms: a liveness probe for the script path. */
static struct hot_script s_probe = {
	.name = "probe",
	.source = "local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)",
};

struct hot_script *const hot_scripts[] = {&s_probe};
const int hot_nscripts = (int)(sizeof(hot_scripts) / sizeof(hot_scripts[0]));

void hot_scripts_init(void)
{
	for (int i = 0; i < hot_nscripts; i++)
		tg_sha1_hex(hot_scripts[i]->source, strlen(hot_scripts[i]->source), hot_scripts[i]->sha);
}

/* log.c — JSON-lines logger: each line is built in a stack buffer and written with one write(2). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/log.h"
#include "tollgate/util.h"

_Atomic int tg_log_level = TG_LOG_INFO;
static int log_fd = 2;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int tg_log_level_parse(const char *s)
{
	for (size_t i = 0; i < TG_ARRAY_SIZE(level_names); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	return -1;
}

void tg_log_set_fd(int fd)
{
	log_fd = fd;
}

void tg_log_raw(const char *lines, size_t len)
{
	while (len > 0) {
		ssize_t n = write(log_fd, lines, len);
		if (n <= 0)
			return; /* a log that cannot be written must not stop the server */
		lines += n;
		len -= (size_t)n;
	}
}

void tg_log_write(int level, const char *msg, const char *fmt, ...)
{
	char ts[TG_TIME_BUFSZ], detail[1024];
	struct tg_buf b = TG_BUF_INIT;

	if (level < 0 || level > TG_LOG_DEBUG)
		level = TG_LOG_ERROR;
	tg_time_format(tg_now_ms(), ts);
	tg_buf_addf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level_names[level]);
	tg_buf_add_json_str(&b, msg, strlen(msg));
	tg_buf_addc(&b, '"');
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
		if (n > 0) {
			size_t len = (size_t)n < sizeof(detail) ? (size_t)n : sizeof(detail) - 1;
			tg_buf_adds(&b, ",\"detail\":\"");
			tg_buf_add_json_str(&b, detail, len);
			tg_buf_addc(&b, '"');
		}
	}
	tg_buf_adds(&b, "}\n");
	tg_log_raw(b.buf, b.len);
	tg_buf_release(&b);
}

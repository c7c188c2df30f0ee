/* log.h — JSON-lines logging to stderr: one write(2) per line, level checked before any formatting. */
#ifndef TOLLGATE_LOG_H
#define TOLLGATE_LOG_H

#include <stdatomic.h>

enum tg_log_level { TG_LOG_ERROR = 0, TG_LOG_WARN = 1, TG_LOG_INFO = 2, TG_LOG_DEBUG = 3 };
extern _Atomic int tg_log_level;

int tg_log_level_parse(const char *s); /* -1 when unknown */
void tg_log_set_fd(int fd);
/* {"ts":..,"level":..,"msg":msg,"detail":<fmt formatted, escaped>}; fmt may be NULL. Never pass secrets. */
void tg_log_write(int level, const char *msg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Write already-formed JSON lines (each ending in '\n') in one write(2). */
void tg_log_raw(const char *lines, size_t len);

#define tg_log(level, ...)                                                                       \
	do {                                                                                       \
		if ((level) <= atomic_load_explicit(&tg_log_level, memory_order_relaxed))          \
			tg_log_write((level), __VA_ARGS__);                                        \
	} while (0)
#define log_error(...) tg_log(TG_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) tg_log(TG_LOG_WARN, __VA_ARGS__)
#define log_info(...) tg_log(TG_LOG_INFO, __VA_ARGS__)
#define log_debug(...) tg_log(TG_LOG_DEBUG, __VA_ARGS__)

#endif

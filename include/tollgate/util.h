/* util.h — small building blocks shared by every module: arenas, growable buffers, ids, time. */
#ifndef TOLLGATE_UTIL_H
#define TOLLGATE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define TG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TG_UNUSED(x) ((void)(x))
#define TG_LIKELY(x) __builtin_expect(!!(x), 1)
#define TG_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Allocation that cannot fail: on out-of-memory the process aborts (TG_BUG). */
void *tg_malloc(size_t n);
void *tg_calloc(size_t n, size_t size);
void *tg_realloc(void *p, size_t n);
char *tg_strdup(const char *s);
char *tg_strndup(const char *s, size_t n);

/* Cleanup helpers in the systemd style: `_cleanup_free_ char *s = ...;` */
static inline void tg_freep(void *p) { free(*(void **)p); }
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(tg_freep)
#define TAKE_PTR(p) __extension__({ __typeof__(p) _p = (p); (p) = NULL; _p; })

/*
 * Arena: memory with the lifespan of one request (or one job). Allocations are
 * never freed one by one; tg_arena_release() frees them all. Not thread-safe:
 * an arena belongs to whoever currently owns the request.
 */
struct tg_arena_chunk;
struct tg_arena {
	struct tg_arena_chunk *head;
	char *pos, *end;
	char first[1024]; /* the common small request needs no malloc at all */
};
void tg_arena_init(struct tg_arena *a);
void tg_arena_release(struct tg_arena *a);
void *tg_arena_alloc(struct tg_arena *a, size_t n);          /* 16-byte aligned, zeroed */
char *tg_arena_strdup(struct tg_arena *a, const char *s);
/* An array of n elements of size bytes (old, cap elements in an arena) with room for want: old itself, or a
 * copy in a, cap doubled (from 8) until want fits. */
void *tg_arena_grow(struct tg_arena *a, void *old, int n, int want, int *cap, size_t size);
char *tg_arena_strndup(struct tg_arena *a, const char *s, size_t n);
char *tg_arena_printf(struct tg_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Growable byte buffer, always NUL-terminated once anything was added (git's strbuf). */
struct tg_buf {
	char *buf;
	size_t len, cap;
};
#define TG_BUF_INIT {NULL, 0, 0}
void tg_buf_grow(struct tg_buf *b, size_t extra);
void tg_buf_add(struct tg_buf *b, const void *data, size_t n);
void tg_buf_adds(struct tg_buf *b, const char *s);
void tg_buf_addc(struct tg_buf *b, char c);
void tg_buf_addf(struct tg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tg_buf_vaddf(struct tg_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Append s as the inside of a JSON string (escaped, no quotes). */
void tg_buf_add_json_str(struct tg_buf *b, const char *s, size_t n);
/* Append n bytes of s as valid UTF-8: each invalid or cut-off sequence becomes U+FFFD. */
void tg_buf_add_utf8(struct tg_buf *b, const char *s, size_t n);
void tg_buf_reset(struct tg_buf *b);
void tg_buf_release(struct tg_buf *b);
char *tg_buf_detach(struct tg_buf *b, size_t *len); /* caller frees; buffer is reset */

/* Ids chosen by tenants: 1–128 characters from [A-Za-z0-9._:@+-]. */
#define TG_ID_MAX 128
bool tg_id_valid(const char *s, size_t len);
/* Server-made ids: prefix + 24 characters [0-9a-z] from the OS random source. buf ≥ 40. */
#define TG_SID_BUFSZ 40
void tg_sid_new(const char *prefix, char *buf);
/* The same shape from a per-thread generator seeded by the OS: for ids that need to be unique,
 * not unguessable (request ids), without a system call each. */
void tg_sid_fast(const char *prefix, char *buf);
/* The same shape again, its first 10 characters the instant ms in base 36: ids made later sort later
 * (to the millisecond), so rows keyed by them are added at the end of their btree index, not all over
 * it (event ids: a random key cost a consuming check's event_ids insert twice as much). */
void tg_sid_ordered(const char *prefix, int64_t ms, char *buf);

/* Time: milliseconds since the Unix epoch (UTC). */
int64_t tg_now_ms(void);          /* CLOCK_REALTIME */
int64_t tg_mono_us(void);         /* CLOCK_MONOTONIC, for durations */
void tg_wait_ms(int64_t ms);       /* sleep, restarting after signals */
#define TG_TIME_BUFSZ 32
/* 9999-11-30T23:59:59Z: where a test clock stops. Every period it can be in (a week, a month) ends by
 * 9999-12-07, so every time shown (resets_at, period_end, series ends) keeps RFC 3339's four-digit year,
 * and a month quota's reset stays reachable. */
#define TG_TIME_MAX_MS INT64_C(253399622399000)
/* A test clock's time: real time plus its offset, stopped at TG_TIME_MAX_MS (advances are refused past
 * it, but real time goes on after the last one). */
static inline int64_t tg_clock_ms(int64_t real_ms, int64_t offset_ms)
{
	return offset_ms < TG_TIME_MAX_MS - real_ms ? real_ms + offset_ms : TG_TIME_MAX_MS;
}
#define TG_I64_BUFSZ 21
/* The decimal digits of v (no sign for v >= 0), NUL-terminated; returns the length. No printf: hot path. */
size_t tg_fmt_i64(int64_t v, char *buf);
/* RFC 3339 UTC with second precision: "2026-11-22T03:00:00Z". */
size_t tg_time_format(int64_t ms, char *buf);
/* RFC 3339 with optional fraction and offset ("Z", "+02:00"); ret_ms set only on success. */
int tg_time_parse(const char *s, int64_t *ret_ms);
/* Days since 1970-01-01 for a civil date and back (proleptic Gregorian, UTC). */
int64_t tg_days_from_civil(int64_t y, unsigned m, unsigned d);
void tg_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

/* Text files compiled into the binary by src/util/embed.py (migrations, Lua scripts). */
struct tg_embedded {
	const char *name;
	const char *text;
};

/* Parse a whole decimal integer string (no sign unless allow_neg); false on junk or overflow. */
bool tg_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret);

#endif

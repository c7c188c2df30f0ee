/* mem.c — allocation that cannot fail, arenas with a request's lifespan, growable buffers. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/error.h"
#include "tollgate/util.h"

void *tg_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		TG_BUG("out of memory allocating %zu bytes", n);
	return p;
}

void *tg_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		TG_BUG("out of memory allocating %zu×%zu bytes", n, size);
	return p;
}

void *tg_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		TG_BUG("out of memory reallocating %zu bytes", n);
	return q;
}

char *tg_strdup(const char *s)
{
	return tg_strndup(s, strlen(s));
}

char *tg_strndup(const char *s, size_t n)
{
	char *p = tg_malloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* ---- arena ---- */

struct tg_arena_chunk {
	struct tg_arena_chunk *next;
	size_t size;
	_Alignas(16) char data[];
};

#define CHUNK_SIZE (4096 - sizeof(struct tg_arena_chunk)) /* a standard chunk's data */
#define BIG_ALLOC 3000                                    /* bigger allocations get a chunk of their own */

/*
 * DESIGN (chunk cache): a standard chunk an arena releases is kept, up to CHUNK_CACHE_MAX per thread,
 * for the next arena of that thread: a check takes one or two, and glibc serves 4 KiB blocks only
 * through its slow path (after consolidating its fast bins, on a loop that has just freed a reply's
 * small blocks). Thread-local, so no locks; an arena released on another thread than the one that
 * filled it (a request moved to the worker pool) only moves its chunks from one cache to the other. A
 * thread's cache is freed when the thread exits. tg_arena_alloc() zeroes what it hands out, so a
 * reused chunk is indistinguishable from a new one. Sanitizer builds keep nothing: a use after release
 * stays visible to them.
 */
#if defined(__SANITIZE_ADDRESS__)
#define CHUNK_CACHE_MAX 0
#else
/* 2 MiB a thread at most: a loop's requests in flight hold about two chunks each, and a cache smaller
 * than what they hold together empties and refills with every wave of them (64 missed all the time) */
#define CHUNK_CACHE_MAX 512
#endif

struct chunk_cache {
	struct tg_arena_chunk *head;
	int n;
	bool registered; /* for its freeing at the thread's exit */
};
static _Thread_local struct chunk_cache chunk_cache;
static pthread_key_t chunk_cache_key;
static pthread_once_t chunk_cache_once = PTHREAD_ONCE_INIT;

static void chunk_cache_free(void *arg)
{
	struct chunk_cache *cc = arg;

	while (cc->head) {
		struct tg_arena_chunk *next = cc->head->next;
		free(cc->head);
		cc->head = next;
	}
	cc->n = 0;
}

static void chunk_cache_init(void)
{
	if (pthread_key_create(&chunk_cache_key, chunk_cache_free) != 0)
		TG_BUG("pthread_key_create failed");
}

static void chunk_put(struct tg_arena_chunk *c)
{
	struct chunk_cache *cc = &chunk_cache;

	if (c->size != CHUNK_SIZE || cc->n >= CHUNK_CACHE_MAX) {
		free(c);
		return;
	}
	if (!cc->registered) {
		pthread_once(&chunk_cache_once, chunk_cache_init);
		pthread_setspecific(chunk_cache_key, cc);
		cc->registered = true;
	}
	c->next = cc->head;
	cc->head = c;
	cc->n++;
}

static struct tg_arena_chunk *chunk_get(size_t size)
{
	struct chunk_cache *cc = &chunk_cache;
	struct tg_arena_chunk *c = cc->head;

	if (size != CHUNK_SIZE || !c)
		return tg_malloc(sizeof(*c) + size);
	cc->head = c->next;
	cc->n--;
	return c;
}

void tg_arena_init(struct tg_arena *a)
{
	a->head = NULL;
	a->pos = a->first;
	a->end = a->first + sizeof(a->first);
}

void tg_arena_release(struct tg_arena *a)
{
	struct tg_arena_chunk *c = a->head;

	while (c) {
		struct tg_arena_chunk *next = c->next;
		chunk_put(c);
		c = next;
	}
	tg_arena_init(a);
}

void *tg_arena_alloc(struct tg_arena *a, size_t n)
{
	uintptr_t p = ((uintptr_t)a->pos + 15) & ~(uintptr_t)15;
	char *r;

	n = n ? n : 1;
	if (p + n > (uintptr_t)a->end || p < (uintptr_t)a->pos) {
		size_t size = n > BIG_ALLOC ? n : CHUNK_SIZE;
		struct tg_arena_chunk *c = chunk_get(size);

		c->size = size;
		c->next = a->head;
		a->head = c;
		if (n > BIG_ALLOC) {
			/* a big block gets its own chunk; keep bump-allocating from the old one */
			memset(c->data, 0, n);
			return c->data;
		}
		a->pos = c->data;
		a->end = c->data + size;
		p = (uintptr_t)a->pos;
	}
	r = (char *)p;
	a->pos = r + n;
	memset(r, 0, n);
	return r;
}

char *tg_arena_strndup(struct tg_arena *a, const char *s, size_t n)
{
	char *p = tg_arena_alloc(a, n + 1);
	memcpy(p, s, n);
	return p;
}

void *tg_arena_grow(struct tg_arena *a, void *old, int n, int want, int *cap, size_t size)
{
	void *grown;
	int c = *cap;

	if (want <= c)
		return old;
	while (c < want)
		c = c ? c * 2 : 8;
	grown = tg_arena_alloc(a, size * (size_t)c);
	if (n > 0)
		memcpy(grown, old, size * (size_t)n);
	*cap = c;
	return grown;
}

char *tg_arena_strdup(struct tg_arena *a, const char *s)
{
	return s ? tg_arena_strndup(a, s, strlen(s)) : NULL;
}

char *tg_arena_printf(struct tg_arena *a, const char *fmt, ...)
{
	va_list ap, ap2;
	int n;
	char *p;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	p = tg_arena_alloc(a, (size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	return p;
}

/* ---- buffers ---- */

void tg_buf_grow(struct tg_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	b->buf = tg_realloc(b->buf, cap);
	b->cap = cap;
}

void tg_buf_add(struct tg_buf *b, const void *data, size_t n)
{
	tg_buf_grow(b, n);
	memcpy(b->buf + b->len, data, n);
	b->len += n;
	b->buf[b->len] = '\0';
}

void tg_buf_adds(struct tg_buf *b, const char *s)
{
	tg_buf_add(b, s, strlen(s));
}

void tg_buf_addc(struct tg_buf *b, char c)
{
	tg_buf_grow(b, 1);
	b->buf[b->len++] = c;
	b->buf[b->len] = '\0';
}

void tg_buf_vaddf(struct tg_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	tg_buf_grow(b, 64);
	n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= b->cap - b->len) {
		tg_buf_grow(b, (size_t)n);
		vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap2);
	}
	va_end(ap2);
	b->len += (size_t)n;
}

void tg_buf_addf(struct tg_buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tg_buf_vaddf(b, fmt, ap);
	va_end(ap);
}

void tg_buf_add_json_str(struct tg_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, start = 0;

	tg_buf_grow(b, n + 2);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[7];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (i > start)
			tg_buf_add(b, s + start, i - start);
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
			u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = '\0';
			esc = u;
		}
		tg_buf_adds(b, esc);
		start = i + 1;
	}
	if (i > start)
		tg_buf_add(b, s + start, i - start);
}

void tg_buf_reset(struct tg_buf *b)
{
	b->len = 0;
	if (b->buf)
		b->buf[0] = '\0';
}

void tg_buf_release(struct tg_buf *b)
{
	free(b->buf);
	b->buf = NULL;
	b->len = b->cap = 0;
}

char *tg_buf_detach(struct tg_buf *b, size_t *len)
{
	char *p = b->buf ? b->buf : tg_strdup("");

	if (len)
		*len = b->len;
	b->buf = NULL;
	b->len = b->cap = 0;
	return p;
}

/* map.c — string-keyed open-addressing hash map with linear probing and tombstones. */
#include <string.h>

#include "tollgate/map.h"
#include "tollgate/util.h"

static char tomb;
#define TOMB (&tomb)

uint64_t tg_map_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h ? h : 1;
}

static struct tg_map_slot *find(const struct tg_map *m, const char *key, size_t n, uint64_t h)
{
	if (!m->cap)
		return NULL;
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		struct tg_map_slot *s = &m->slots[i];
		if (!s->key)
			return NULL;
		if (s->key != TOMB && s->hash == h && strncmp(s->key, key, n) == 0 && s->key[n] == '\0')
			return s;
	}
}

void *tg_map_getn(const struct tg_map *m, const char *key, size_t n)
{
	struct tg_map_slot *s = find(m, key, n, tg_map_hash(key, n));
	return s ? s->val : NULL;
}

void *tg_map_get(const struct tg_map *m, const char *key)
{
	return tg_map_getn(m, key, strlen(key));
}

static void grow(struct tg_map *m)
{
	struct tg_map old = *m;

	m->cap = old.cap ? (old.len * 2 >= old.cap / 2 ? old.cap * 2 : old.cap) : 16;
	m->slots = tg_calloc(m->cap, sizeof(*m->slots));
	m->len = m->used = 0;
	for (size_t i = 0; i < old.cap; i++) {
		struct tg_map_slot *s = &old.slots[i];
		if (!s->key || s->key == TOMB)
			continue;
		for (size_t j = s->hash & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
			if (!m->slots[j].key) {
				m->slots[j] = *s;
				m->len++;
				m->used++;
				break;
			}
		}
	}
	free(old.slots);
}

void *tg_map_put(struct tg_map *m, const char *key, void *val)
{
	size_t n = strlen(key);
	uint64_t h = tg_map_hash(key, n);
	struct tg_map_slot *s = find(m, key, n, h);

	if (s) {
		void *prev = s->val;
		s->val = val;
		return prev;
	}
	if ((m->used + 1) * 4 >= m->cap * 3)
		grow(m);
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		s = &m->slots[i];
		if (!s->key || s->key == TOMB) {
			if (!s->key)
				m->used++;
			s->key = tg_strndup(key, n);
			s->hash = h;
			s->val = val;
			m->len++;
			return NULL;
		}
	}
}

void *tg_map_del(struct tg_map *m, const char *key)
{
	size_t n = strlen(key);
	struct tg_map_slot *s = find(m, key, n, tg_map_hash(key, n));
	void *val;

	if (!s)
		return NULL;
	val = s->val;
	free(s->key);
	s->key = TOMB;
	s->val = NULL;
	m->len--;
	return val;
}

void tg_map_each(const struct tg_map *m, int (*fn)(void *arg, const char *key, void *val), void *arg)
{
	for (size_t i = 0; i < m->cap; i++) {
		struct tg_map_slot *s = &m->slots[i];
		if (s->key && s->key != TOMB && fn(arg, s->key, s->val))
			return;
	}
}

void tg_map_release(struct tg_map *m, void (*free_val)(void *))
{
	for (size_t i = 0; i < m->cap; i++) {
		struct tg_map_slot *s = &m->slots[i];
		if (s->key && s->key != TOMB) {
			free(s->key);
			if (free_val)
				free_val(s->val);
		}
	}
	free(m->slots);
	m->slots = NULL;
	m->cap = m->len = m->used = 0;
}

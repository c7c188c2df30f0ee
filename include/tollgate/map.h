/* map.h — an open-addressing hash map from strings to pointers. Not thread-safe; callers lock. */
#ifndef TOLLGATE_MAP_H
#define TOLLGATE_MAP_H

#include <stddef.h>
#include <stdint.h>

struct tg_map_slot {
	char *key; /* NULL: empty; TG_MAP_TOMB: deleted */
	uint64_t hash;
	void *val;
};

struct tg_map {
	struct tg_map_slot *slots;
	size_t cap, len, used; /* used counts live + tombstones */
};

#define TG_MAP_INIT {NULL, 0, 0, 0}
uint64_t tg_map_hash(const char *s, size_t n);
void *tg_map_get(const struct tg_map *m, const char *key);
void *tg_map_getn(const struct tg_map *m, const char *key, size_t n);
/* Insert or replace; the key is copied. Returns the previous value or NULL. */
void *tg_map_put(struct tg_map *m, const char *key, void *val);
/* Remove; returns the value or NULL. */
void *tg_map_del(struct tg_map *m, const char *key);
/* Visit every entry; fn returns non-zero to stop. */
void tg_map_each(const struct tg_map *m, int (*fn)(void *arg, const char *key, void *val), void *arg);
/* Free the map (and values with free_val when non-NULL). */
void tg_map_release(struct tg_map *m, void (*free_val)(void *));

#endif

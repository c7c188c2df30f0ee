/* registry.c — the current snapshot of every tenant, swapped atomically on reload (see policy.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/map.h"
#include "tollgate/policy.h"

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static struct tg_map tenants = TG_MAP_INIT; /* id → struct policy_tenant * (one reference held) */

struct policy_tenant *policy_registry_get(const char *tenant_id)
{
	struct policy_tenant *t;

	pthread_rwlock_rdlock(&lock);
	t = tg_map_get(&tenants, tenant_id);
	if (t)
		policy_tenant_ref(t);
	pthread_rwlock_unlock(&lock);
	return t;
}

struct collect {
	char **ids;
	size_t n;
};

static int collect_id(void *arg, const char *key, void *val)
{
	struct collect *c = arg;

	(void)val;
	c->ids[c->n++] = tg_strdup(key);
	return 0;
}

/* Tenants new, or whose clock or limits changed, since the worker last asked: their periods are looked at
 * first, however many other tenants there are. */
static struct tg_map changed = TG_MAP_INIT;

void policy_registry_put(const char *tenant_id, struct policy_tenant *t)
{
	struct policy_tenant *old;

	pthread_rwlock_wrlock(&lock);
	old = t ? tg_map_put(&tenants, tenant_id, t) : tg_map_del(&tenants, tenant_id);
	if (t && (!old || old->clock_offset_ms != t->clock_offset_ms || old->nlimits != t->nlimits))
		tg_map_put(&changed, tenant_id, t);
	pthread_rwlock_unlock(&lock);
	policy_tenant_unref(old);
}

static int id_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The keys of m, sorted (the caller holds the lock). */
static char **keys_of(const struct tg_map *m, size_t *n)
{
	struct collect c = {tg_calloc(m->len + 1, sizeof(char *)), 0};

	tg_map_each(m, collect_id, &c);
	qsort(c.ids, c.n, sizeof(char *), id_cmp);
	*n = c.n;
	return c.ids;
}

char **policy_registry_changed(size_t *n)
{
	char **ids;

	pthread_rwlock_wrlock(&lock);
	ids = keys_of(&changed, n);
	tg_map_release(&changed, NULL);
	pthread_rwlock_unlock(&lock);
	return ids;
}

/* In a stable order (the map's moves as it grows): a round robin over it visits every tenant. */
char **policy_registry_tenants(size_t *n)
{
	char **ids;

	pthread_rwlock_rdlock(&lock);
	ids = keys_of(&tenants, n);
	pthread_rwlock_unlock(&lock);
	return ids;
}

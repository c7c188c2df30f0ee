/* registry.c — the current snapshot of every tenant, swapped atomically on reload (see policy.h). */
#include <pthread.h>
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

void policy_registry_put(const char *tenant_id, struct policy_tenant *t)
{
	struct policy_tenant *old;

	pthread_rwlock_wrlock(&lock);
	old = t ? tg_map_put(&tenants, tenant_id, t) : tg_map_del(&tenants, tenant_id);
	pthread_rwlock_unlock(&lock);
	policy_tenant_unref(old);
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

char **policy_registry_tenants(size_t *n)
{
	struct collect c;

	pthread_rwlock_rdlock(&lock);
	c.ids = tg_calloc(tenants.len + 1, sizeof(char *));
	c.n = 0;
	tg_map_each(&tenants, collect_id, &c);
	pthread_rwlock_unlock(&lock);
	*n = c.n;
	return c.ids;
}

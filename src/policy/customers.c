/* customers.c — the in-process cache of customer → tier and organisation (see policy.h). */
#include <pthread.h>
#include <string.h>

#include "tollgate/map.h"
#include "tollgate/policy.h"

#define STRIPES 64
#define STRIPE_MAX 32768 /* 2M customers in all before stripes start to be cleared */

struct entry {
	char *tier, *parent_id;
	bool has_balance;
};

static struct stripe {
	pthread_mutex_t lock;
	struct tg_map map;
	uint64_t generation; /* bumped by every forget: a load that began before one must not be kept */
} stripes[STRIPES];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_init(&stripes[i].lock, NULL);
}

static void entry_free(void *p)
{
	struct entry *e = p;

	if (!e)
		return;
	free(e->tier);
	free(e->parent_id);
	free(e);
}

static struct stripe *stripe_of(const char *key, size_t n)
{
	pthread_once(&once, init);
	return &stripes[tg_map_hash(key, n) % STRIPES];
}

/* "tenant\x1fcustomer", cut to size - 1 bytes like snprintf would (on every check: no printf). */
static size_t make_key(char *buf, size_t size, const char *tenant, const char *customer)
{
	size_t t = strlen(tenant), c = strlen(customer), n = 0;

	if (t > size - 1)
		t = size - 1;
	memcpy(buf, tenant, t);
	n = t;
	if (n < size - 1)
		buf[n++] = '\x1f';
	if (c > size - 1 - n)
		c = size - 1 - n;
	memcpy(buf + n, customer, c);
	n += c;
	buf[n] = '\0';
	return n;
}

bool policy_customer_get(const char *tenant_id, const char *customer_id, struct tg_arena *a, const char **tier,
			 const char **parent_id, bool *has_balance)
{
	char key[320];
	size_t n = make_key(key, sizeof(key), tenant_id, customer_id);
	struct stripe *s = stripe_of(key, n);
	struct entry *e;
	bool hit = false;

	pthread_mutex_lock(&s->lock);
	e = tg_map_getn(&s->map, key, n);
	if (e) {
		*tier = tg_arena_strdup(a, e->tier);
		*parent_id = tg_arena_strdup(a, e->parent_id);
		*has_balance = e->has_balance;
		hit = true;
	}
	pthread_mutex_unlock(&s->lock);
	return hit;
}

uint64_t policy_customer_generation(const char *tenant_id, const char *customer_id)
{
	char key[320];
	size_t n = make_key(key, sizeof(key), tenant_id, customer_id);
	struct stripe *s = stripe_of(key, n);
	uint64_t g;

	pthread_mutex_lock(&s->lock);
	g = s->generation;
	pthread_mutex_unlock(&s->lock);
	return g;
}

bool policy_customer_put(const char *tenant_id, const char *customer_id, const char *tier, const char *parent_id,
			 bool has_balance, uint64_t generation)
{
	char key[320];
	size_t n = make_key(key, sizeof(key), tenant_id, customer_id);
	struct stripe *s = stripe_of(key, n);
	struct entry *e = tg_calloc(1, sizeof(*e));
	bool kept = false;

	e->tier = tier ? tg_strdup(tier) : NULL;
	e->parent_id = parent_id ? tg_strdup(parent_id) : NULL;
	e->has_balance = has_balance;
	pthread_mutex_lock(&s->lock);
	if (s->generation == generation) {
		if (s->map.len >= STRIPE_MAX)
			tg_map_release(&s->map, entry_free);
		entry_free(tg_map_put(&s->map, key, e));
		e = NULL;
		kept = true;
	}
	pthread_mutex_unlock(&s->lock);
	entry_free(e);
	return kept;
}

void policy_customer_forget(const char *tenant_id, const char *customer_id)
{
	char key[320];
	size_t n = make_key(key, sizeof(key), tenant_id, customer_id);
	struct stripe *s = stripe_of(key, n);

	pthread_mutex_lock(&s->lock);
	entry_free(tg_map_del(&s->map, key));
	s->generation++;
	pthread_mutex_unlock(&s->lock);
}

bool policy_subject_cached(const char *tenant_id, const char *customer_id, struct tg_arena *a,
			   struct policy_subject *s)
{
	const char *grandparent;
	bool own, org = false;

	memset(s, 0, sizeof(*s));
	s->customer_id = customer_id;
	if (!policy_customer_get(tenant_id, customer_id, a, &s->tier, &s->parent_id, &own))
		return false;
	if (s->parent_id && !policy_customer_get(tenant_id, s->parent_id, a, &s->parent_tier, &grandparent, &org))
		return false;
	s->balance_owner = own ? customer_id : org ? s->parent_id : NULL;
	return true;
}

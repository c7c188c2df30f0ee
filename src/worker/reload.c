/* reload.c — keeping every instance's in-memory configuration current via LISTEN/NOTIFY (see worker.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "tollgate/auth.h"
#include "tollgate/hot.h"
#include "tollgate/log.h"
#include "tollgate/map.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

#define FULL_RELOAD_MS 30000

static pthread_t reload_thread;
static _Atomic bool reload_stopping;
static bool reload_running;

/*
 * Freshness: every load notes when it started reading (monotonic µs) and a
 * tenant's keys and snapshot are replaced only by data read later than what
 * is in place. So a slow full reload cannot put back what a notification or a
 * handler's own reload has already replaced with newer data.
 */
static pthread_mutex_t fresh_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tg_map fresh = TG_MAP_INIT; /* tenant → stamp of the data in place */

/* Compile and publish a tenant's keys and configuration if newer than what is in place. */
static int publish(const char *tenant_id, const json_t *keys, const json_t *config, int64_t stamp,
		   struct tg_error *err)
{
	struct policy_tenant *t = NULL;

	if (config && !(t = policy_compile(config, err)))
		return err->err;
	pthread_mutex_lock(&fresh_lock);
	int64_t in_place = (int64_t)(intptr_t)tg_map_get(&fresh, tenant_id);
	if (stamp >= in_place) {
		tg_map_put(&fresh, tenant_id, (void *)(intptr_t)stamp);
		auth_keys_set_tenant(tenant_id, keys);
		policy_registry_put(tenant_id, t); /* NULL: the tenant is gone */
		t = NULL;
	}
	pthread_mutex_unlock(&fresh_lock);
	policy_tenant_unref(t);
	return 0;
}

int reload_all(struct tg_error *err)
{
	int64_t stamp = tg_mono_us();
	json_t *keys, *all, *row;
	struct tg_map by_tenant = TG_MAP_INIT;
	size_t i;
	int rc = store_keys_load(NULL, &keys, err);

	if (rc < 0)
		return rc;
	/* one query for every tenant: a full reload must not hold notifications back for long */
	if ((rc = store_config_load_all(&all, err)) < 0) {
		json_decref(keys);
		return rc;
	}
	json_array_foreach(keys, i, row) {
		const char *tenant = store_str(row, "tenant_id");
		json_t *list = tg_map_get(&by_tenant, tenant);
		if (!list) {
			list = json_array();
			tg_map_put(&by_tenant, tenant, list);
		}
		json_array_append(list, row);
	}
	json_array_foreach(all, i, row) {
		const char *tenant = store_str(row, "id");
		json_t *list = tg_map_get(&by_tenant, tenant), *none = NULL;
		if (!list)
			list = none = json_array();
		rc = publish(tenant, list, json_object_get(row, "config"), stamp, err);
		json_decref(none);
		if (rc < 0)
			break;
	}
	tg_map_release(&by_tenant, (void (*)(void *))json_decref);
	json_decref(keys);
	json_decref(all);
	return rc;
}

int reload_keys(struct tg_error *err)
{
	json_t *keys;
	int rc = store_keys_load(NULL, &keys, err);

	if (rc < 0)
		return rc;
	auth_keys_set_all(keys);
	json_decref(keys);
	return 0;
}

static int reload_one(const char *tenant_id, struct tg_error *err)
{
	int64_t stamp = tg_mono_us();
	json_t *keys, *config;
	int rc = store_keys_load(tenant_id, &keys, err);

	if (rc < 0)
		return rc;
	if ((rc = store_config_load(tenant_id, &config, err)) == 0)
		rc = publish(tenant_id, keys, config, stamp, err);
	json_decref(keys);
	json_decref(config);
	return rc;
}

/* Reloads asked for inside a transaction wait for its end: the snapshot must not show uncommitted state. */
static _Thread_local char *deferred[8];
static _Thread_local int ndeferred;
static _Thread_local char *forgets[8][2];
static _Thread_local bool forget_wallet[8];
static _Thread_local int nforgets;
static _Thread_local char *expiring; /* a tenant whose clock moved: its expired reservations go after the commit */

static void forget_now(const char *tenant_id, const char *customer_id, bool wallet)
{
	struct tg_error e;

	policy_customer_forget(tenant_id, customer_id);
	if (wallet && hot_balance_forget(tenant_id, customer_id, &e) < 0)
		log_warn("live balance of a deleted customer not dropped", "%s", e.detail);
	if (wallet)
		duties_customer_gone(tenant_id, customer_id);
}

void reload_flush(bool committed)
{
	struct tg_error err;

	for (int i = 0; i < ndeferred; i++) {
		if (committed && reload_tenant(deferred[i], &err) < 0)
			log_warn("tenant reload failed", "tenant %s: %s", deferred[i], err.detail);
		free(deferred[i]);
	}
	ndeferred = 0;
	for (int i = 0; i < nforgets; i++) {
		if (committed)
			forget_now(forgets[i][0], forgets[i][1], forget_wallet[i]);
		free(forgets[i][0]);
		free(forgets[i][1]);
	}
	nforgets = 0;
	if (expiring) {
		if (committed)
			duties_expire_reservations(expiring);
		free(expiring);
		expiring = NULL;
	}
}

void reload_expire_reservations(const char *tenant_id)
{
	if (store_in_transaction()) {
		/* a clock advance rolled back must not have let them go */
		free(expiring);
		expiring = tg_strdup(tenant_id);
		return;
	}
	duties_expire_reservations(tenant_id);
}

void reload_forget_customer(const char *tenant_id, const char *customer_id, bool wallet)
{
	/* forgotten after the commit: a check loading it meanwhile would cache the old state */
	if (store_in_transaction() && nforgets < (int)(sizeof(forgets) / sizeof(forgets[0]))) {
		forgets[nforgets][0] = tg_strdup(tenant_id);
		forgets[nforgets][1] = tg_strdup(customer_id);
		forget_wallet[nforgets] = wallet;
		nforgets++;
		return;
	}
	forget_now(tenant_id, customer_id, wallet);
}

int reload_tenant(const char *tenant_id, struct tg_error *err)
{
	if (store_in_transaction()) {
		for (int i = 0; i < ndeferred; i++)
			if (!strcmp(deferred[i], tenant_id))
				return 0;
		if (ndeferred < (int)(sizeof(deferred) / sizeof(deferred[0]))) {
			deferred[ndeferred++] = tg_strdup(tenant_id);
			return 0;
		}
	}
	return reload_one(tenant_id, err);
}

static void on_notify(void *arg, const char *channel, const char *payload)
{
	struct tg_error err;

	TG_UNUSED(arg);
	if (strcmp(channel, "tg_config") == 0) {
		if (reload_tenant(payload, &err) < 0)
			log_warn("tenant reload failed", "tenant %s: %s %s", payload, err.message, err.detail);
	} else if (strcmp(channel, "tg_customer") == 0) {
		/* "tenant customer": drop it; its next check reads it fresh */
		const char *sp = strchr(payload, ' ');
		if (sp) {
			char tenant[128];
			size_t n = (size_t)(sp - payload) < sizeof(tenant) - 1 ? (size_t)(sp - payload) : sizeof(tenant) - 1;
			memcpy(tenant, payload, n);
			tenant[n] = '\0';
			policy_customer_forget(tenant, sp + 1);
		}
	}
}

/* Full reloads run on their own thread: however long one takes, notifications keep being handled. */
static pthread_t full_thread;
static pthread_mutex_t full_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t full_cond = PTHREAD_COND_INITIALIZER;
static bool full_wanted;

static void want_full_reload(void)
{
	pthread_mutex_lock(&full_lock);
	full_wanted = true;
	pthread_cond_signal(&full_cond);
	pthread_mutex_unlock(&full_lock);
}

static void *full_main(void *arg)
{
	struct tg_error err;

	TG_UNUSED(arg);
	pthread_setname_np(pthread_self(), "reload-all");
	while (!atomic_load(&reload_stopping)) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += FULL_RELOAD_MS / 1000;
		pthread_mutex_lock(&full_lock);
		while (!full_wanted && !atomic_load(&reload_stopping))
			if (pthread_cond_timedwait(&full_cond, &full_lock, &until) != 0)
				break; /* the periodic safety net */
		full_wanted = false;
		pthread_mutex_unlock(&full_lock);
		if (atomic_load(&reload_stopping))
			break;
		if (reload_all(&err) < 0)
			log_warn("full reload failed", "%s", err.detail);
	}
	store_thread_end();
	return NULL;
}

static void *reload_main(void *arg)
{
	static const char *const channels[] = {"tg_config", "tg_customer", NULL};
	struct store_listener *l = NULL;
	struct tg_error err;

	TG_UNUSED(arg);
	pthread_setname_np(pthread_self(), "reload");
	while (!atomic_load(&reload_stopping)) {
		if (!l) {
			l = store_listen(channels, &err);
			if (!l) {
				log_warn("LISTEN failed; retrying", "%s", err.detail);
				for (int i = 0; i < 10 && !atomic_load(&reload_stopping); i++)
					tg_wait_ms(100);
				continue;
			}
			/* anything may have changed while we were not listening */
			want_full_reload();
		}
		if (store_listen_wait(l, 200, on_notify, NULL) < 0) {
			log_warn("LISTEN connection lost; reconnecting", NULL);
			store_listener_free(l);
			l = NULL;
			continue;
		}
	}
	store_listener_free(l);
	store_thread_end();
	hot_thread_end();
	return NULL;
}

int reload_start(void)
{
	atomic_store(&reload_stopping, false);
	if (pthread_create(&full_thread, NULL, full_main, NULL) != 0)
		return -1;
	if (pthread_create(&reload_thread, NULL, reload_main, NULL) != 0)
		return -1;
	reload_running = true;
	return 0;
}

void reload_stop(void)
{
	if (!reload_running)
		return;
	atomic_store(&reload_stopping, true);
	pthread_mutex_lock(&full_lock);
	pthread_cond_signal(&full_cond);
	pthread_mutex_unlock(&full_lock);
	pthread_join(reload_thread, NULL);
	pthread_join(full_thread, NULL);
	reload_running = false;
}

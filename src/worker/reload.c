/* reload.c — keeping every instance's in-memory configuration current via LISTEN/NOTIFY (see worker.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "tollgate/auth.h"
#include "tollgate/hot.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

#define FULL_RELOAD_MS 30000

static pthread_t reload_thread;
static _Atomic bool reload_stopping;
static bool reload_running;

/* Compile a tenant's configuration and publish it (or drop the tenant when config is NULL). */
static int publish(const char *tenant_id, const json_t *config, struct tg_error *err)
{
	struct policy_tenant *t;

	if (!config) {
		policy_registry_put(tenant_id, NULL);
		return 0;
	}
	t = policy_compile(config, err);
	if (!t)
		return err->err;
	policy_registry_put(tenant_id, t);
	return 0;
}

static int reload_config(const char *tenant_id, struct tg_error *err)
{
	json_t *config;
	int rc = store_config_load(tenant_id, &config, err);

	if (rc < 0)
		return rc;
	rc = publish(tenant_id, config, err);
	json_decref(config);
	return rc;
}

int reload_all(struct tg_error *err)
{
	json_t *keys, *all, *row;
	size_t i;
	int rc = store_keys_load(NULL, &keys, err);

	if (rc < 0)
		return rc;
	auth_keys_set_all(keys);
	json_decref(keys);
	/* one query for every tenant: a full reload must not hold notifications back for long */
	if ((rc = store_config_load_all(&all, err)) < 0)
		return rc;
	json_array_foreach(all, i, row) {
		if ((rc = publish(store_str(row, "id"), json_object_get(row, "config"), err)) < 0)
			break;
	}
	json_decref(all);
	return rc;
}

int reload_tenant(const char *tenant_id, struct tg_error *err)
{
	json_t *keys;
	int rc = store_keys_load(tenant_id, &keys, err);

	if (rc < 0)
		return rc;
	auth_keys_set_tenant(tenant_id, keys);
	json_decref(keys);
	return reload_config(tenant_id, err);
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

static void *reload_main(void *arg)
{
	static const char *const channels[] = {"tg_config", "tg_customer", NULL};
	struct store_listener *l = NULL;
	int64_t last_full = tg_mono_us() / 1000;
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
			if (reload_all(&err) < 0)
				log_warn("full reload failed", "%s", err.detail);
			last_full = tg_mono_us() / 1000;
		}
		if (store_listen_wait(l, 200, on_notify, NULL) < 0) {
			log_warn("LISTEN connection lost; reconnecting", NULL);
			store_listener_free(l);
			l = NULL;
			continue;
		}
		if (tg_mono_us() / 1000 - last_full >= FULL_RELOAD_MS) {
			if (reload_all(&err) < 0)
				log_warn("full reload failed", "%s", err.detail);
			last_full = tg_mono_us() / 1000;
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
	pthread_join(reload_thread, NULL);
	reload_running = false;
}

/* duties.c — the periodic background duties of every instance (see worker.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "tollgate/hot.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/policy.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

static pthread_t duties_thread;
static _Atomic bool duties_stopping;
static bool duties_running;

int duties_expire_reservations(void)
{
	size_t nt;
	char **tenants = policy_registry_tenants(&nt);
	int released = 0;

	for (size_t i = 0; i < nt; i++) {
		struct policy_tenant *t = policy_registry_get(tenants[i]);
		struct tg_error err;
		json_t *due = NULL, *id;
		size_t k;

		if (!t)
			continue;
		int64_t now = policy_now(t, tg_now_ms());
		if (hot_reservations_due(tenants[i], now, 1000, &due, &err) < 0) {
			policy_tenant_unref(t);
			log_warn("reservation expiry skipped", "%s", err.detail);
			break; /* Redis is down: try again next pass */
		}
		json_array_foreach(due, k, id) {
			char customer[TG_ID_MAX + 1];
			struct tg_arena a;
			struct hot_release rel;
			if (hot_reservation_owner(tenants[i], json_string_value(id), customer, sizeof(customer), &err) < 0)
				break;
			rel.customer_id = customer;
			rel.reservation_id = json_string_value(id);
			tg_arena_init(&a);
			if (hot_apply_usage(tenants[i], NULL, 0, now, NULL, 0, &rel, 1, &a, &err) == 0)
				released++;
			tg_arena_release(&a);
		}
		json_decref(due);
		policy_tenant_unref(t);
	}
	for (size_t i = 0; i < nt; i++)
		free(tenants[i]);
	free(tenants);
	return released;
}

static void sweep_idempotency(void)
{
	struct tg_error err;
	int64_t deleted = 0;

	if (store_idem_sweep(&deleted, &err) < 0)
		log_warn("idempotency sweep failed", "%s", err.detail);
	else if (deleted)
		log_debug("idempotency keys swept", "%lld", (long long)deleted);
}

static void *duties_main(void *arg)
{
	struct tg_metric *expired = tg_counter("tollgate_reservations_expired_total",
					       "Reservations released by the worker at their TTL.", "");
	int64_t last_sweep = 0;

	(void)arg;
	pthread_setname_np(pthread_self(), "duties");
	while (!atomic_load(&duties_stopping)) {
		int64_t started = tg_mono_us();
		tg_metric_add(expired, duties_expire_reservations());
		if (started - last_sweep > INT64_C(600) * 1000000) {
			sweep_idempotency();
			last_sweep = started;
		}
		for (int i = 0; i < 10 && !atomic_load(&duties_stopping); i++)
			tg_wait_ms(100);
	}
	store_thread_end();
	hot_thread_end();
	return NULL;
}

int duties_start(void)
{
	atomic_store(&duties_stopping, false);
	if (pthread_create(&duties_thread, NULL, duties_main, NULL) != 0)
		return -1;
	duties_running = true;
	return 0;
}

void duties_stop(void)
{
	if (!duties_running)
		return;
	atomic_store(&duties_stopping, true);
	pthread_join(duties_thread, NULL);
	duties_running = false;
}

/* handlers.h — every route handler, for the table in routes.c. */
#ifndef TOLLGATE_API_HANDLERS_H
#define TOLLGATE_API_HANDLERS_H

#include "tollgate/http.h"

int api_audit_list(struct tg_req *req);
int api_balance_credit(struct tg_req *req);
int api_balance_debit(struct tg_req *req);
int api_balance_get(struct tg_req *req);
int api_balance_transactions(struct tg_req *req);
int api_balance_update(struct tg_req *req);
int api_check(struct tg_req *req);
int api_customers_create(struct tg_req *req);
int api_customers_delete(struct tg_req *req);
int api_customers_get(struct tg_req *req);
int api_customers_list(struct tg_req *req);
int api_customers_update(struct tg_req *req);
int api_customers_usage(struct tg_req *req);
int api_deliveries_retry(struct tg_req *req);
int api_endpoints_create(struct tg_req *req);
int api_endpoints_delete(struct tg_req *req);
int api_endpoints_deliveries(struct tg_req *req);
int api_endpoints_get(struct tg_req *req);
int api_endpoints_list(struct tg_req *req);
int api_endpoints_rotate(struct tg_req *req);
int api_endpoints_test(struct tg_req *req);
int api_endpoints_update(struct tg_req *req);
int api_events_create(struct tg_req *req);
int api_events_list(struct tg_req *req);
int api_healthz(struct tg_req *req);
int api_keys_create(struct tg_req *req);
int api_keys_delete(struct tg_req *req);
int api_keys_list(struct tg_req *req);
int api_limits_create(struct tg_req *req);
int api_limits_delete(struct tg_req *req);
int api_limits_get(struct tg_req *req);
int api_limits_list(struct tg_req *req);
int api_limits_update(struct tg_req *req);
int api_meters_create(struct tg_req *req);
int api_meters_delete(struct tg_req *req);
int api_meters_get(struct tg_req *req);
int api_meters_list(struct tg_req *req);
int api_meters_update(struct tg_req *req);
int api_metrics(struct tg_req *req);
int api_readyz(struct tg_req *req);
int api_reservations_release(struct tg_req *req);
void api_forget_quotas(struct tg_req *req, const char *customer_id);
int api_balance_audit_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int api_test_clock_audit_get(const char *tenant_id, const char *id, json_t **ret, struct tg_error *err);
int api_tenant_get(struct tg_req *req);
int api_tenant_update(struct tg_req *req);
int api_tenants_create(struct tg_req *req);
int api_tenants_list(struct tg_req *req);
int api_test_clock_advance(struct tg_req *req);
int api_test_clock_get(struct tg_req *req);
int api_tiers_create(struct tg_req *req);
int api_tiers_delete(struct tg_req *req);
int api_tiers_get(struct tg_req *req);
int api_tiers_list(struct tg_req *req);
int api_tiers_update(struct tg_req *req);
int api_tokens_create(struct tg_req *req);
int api_usage_series(struct tg_req *req);

#endif

/* routes.c — the route table: method, path pattern, handler, required scope, flags. */
#include "handlers.h"
#include "tollgate/api.h"

#define R(m, p, h, s, f) {.methods = (m), .pattern = (p), .handler = (h), .scope = (s), .flags = (f)}

const struct tg_route api_routes[] = {
	R(TG_GET, "/healthz", api_healthz, TG_SCOPE_PUBLIC, RT_INLINE),
	R(TG_GET, "/readyz", api_readyz, TG_SCOPE_PUBLIC, 0),
	R(TG_GET, "/metrics", api_metrics, TG_SCOPE_PUBLIC, 0),

	R(TG_POST, "/v1/tenants", api_tenants_create, TG_SCOPE_ADMIN, 0),
	R(TG_GET, "/v1/tenants", api_tenants_list, TG_SCOPE_ADMIN, 0),
	R(TG_GET, "/v1/tenant", api_tenant_get, TG_SCOPE_READ, 0),
	R(TG_PATCH, "/v1/tenant", api_tenant_update, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/test_clock", api_test_clock_get, TG_SCOPE_READ, 0),
	R(TG_POST, "/v1/test_clock/advance", api_test_clock_advance, TG_SCOPE_ALL, 0),

	R(TG_POST, "/v1/api_keys", api_keys_create, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/api_keys", api_keys_list, TG_SCOPE_READ, 0),
	R(TG_DELETE, "/v1/api_keys/{id}", api_keys_delete, TG_SCOPE_ALL, 0),
	R(TG_POST, "/v1/auth/tokens", api_tokens_create, TG_SCOPE_ALL, 0),

	R(TG_POST, "/v1/customers", api_customers_create, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/customers", api_customers_list, TG_SCOPE_READ, 0),
	R(TG_GET, "/v1/customers/{id}", api_customers_get, TG_SCOPE_READ, RT_CUSTOMER),
	R(TG_PATCH, "/v1/customers/{id}", api_customers_update, TG_SCOPE_ALL, 0),
	R(TG_DELETE, "/v1/customers/{id}", api_customers_delete, TG_SCOPE_ALL, 0),

	R(TG_POST, "/v1/tiers", api_tiers_create, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/tiers", api_tiers_list, TG_SCOPE_READ, 0),
	R(TG_GET, "/v1/tiers/{id}", api_tiers_get, TG_SCOPE_READ, 0),
	R(TG_PATCH, "/v1/tiers/{id}", api_tiers_update, TG_SCOPE_ALL, 0),
	R(TG_DELETE, "/v1/tiers/{id}", api_tiers_delete, TG_SCOPE_ALL, 0),

	R(TG_POST, "/v1/meters", api_meters_create, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/meters", api_meters_list, TG_SCOPE_READ, 0),
	R(TG_GET, "/v1/meters/{id}", api_meters_get, TG_SCOPE_READ, 0),
	R(TG_PATCH, "/v1/meters/{id}", api_meters_update, TG_SCOPE_ALL, 0),
	R(TG_DELETE, "/v1/meters/{id}", api_meters_delete, TG_SCOPE_ALL, 0),

	R(TG_POST, "/v1/limits", api_limits_create, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/limits", api_limits_list, TG_SCOPE_READ, 0),
	R(TG_GET, "/v1/limits/{id}", api_limits_get, TG_SCOPE_READ, 0),
	R(TG_PATCH, "/v1/limits/{id}", api_limits_update, TG_SCOPE_ALL, 0),
	R(TG_DELETE, "/v1/limits/{id}", api_limits_delete, TG_SCOPE_ALL, 0),

	R(TG_POST, "/v1/check", api_check, TG_SCOPE_CHECK, RT_INLINE),
	R(TG_POST, "/v1/events", api_events_create, TG_SCOPE_CHECK, RT_INLINE),
	R(TG_GET, "/v1/events", api_events_list, TG_SCOPE_ANY, 0), /* check keys may read what they sent */
	R(TG_POST, "/v1/reservations/{id}/release", api_reservations_release, TG_SCOPE_CHECK, 0),
	R(TG_GET, "/v1/customers/{id}/usage", api_customers_usage, TG_SCOPE_READ, RT_CUSTOMER),
	R(TG_GET, "/v1/usage", api_usage_series, TG_SCOPE_READ, 0),

	R(TG_GET, "/v1/customers/{id}/balance", api_balance_get, TG_SCOPE_READ, RT_CUSTOMER),
	R(TG_PATCH, "/v1/customers/{id}/balance", api_balance_update, TG_SCOPE_ALL, 0),
	R(TG_POST, "/v1/customers/{id}/balance/credit", api_balance_credit, TG_SCOPE_ALL, 0),
	R(TG_POST, "/v1/customers/{id}/balance/debit", api_balance_debit, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/customers/{id}/balance/transactions", api_balance_transactions, TG_SCOPE_READ, RT_CUSTOMER),

	R(TG_POST, "/v1/webhook_endpoints", api_endpoints_create, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/webhook_endpoints", api_endpoints_list, TG_SCOPE_READ, 0),
	R(TG_GET, "/v1/webhook_endpoints/{id}", api_endpoints_get, TG_SCOPE_READ, 0),
	R(TG_PATCH, "/v1/webhook_endpoints/{id}", api_endpoints_update, TG_SCOPE_ALL, 0),
	R(TG_DELETE, "/v1/webhook_endpoints/{id}", api_endpoints_delete, TG_SCOPE_ALL, 0),
	R(TG_POST, "/v1/webhook_endpoints/{id}/rotate_secret", api_endpoints_rotate, TG_SCOPE_ALL, 0),
	R(TG_POST, "/v1/webhook_endpoints/{id}/test", api_endpoints_test, TG_SCOPE_ALL, 0),
	R(TG_GET, "/v1/webhook_endpoints/{id}/deliveries", api_endpoints_deliveries, TG_SCOPE_READ, 0),
	R(TG_POST, "/v1/webhook_deliveries/{id}/retry", api_deliveries_retry, TG_SCOPE_ALL, 0),

	R(TG_GET, "/v1/audit", api_audit_list, TG_SCOPE_READ, 0),
};

const size_t api_nroutes = sizeof(api_routes) / sizeof(api_routes[0]);

/* names.c — the API's words for each policy enum, in enum order (NULL-terminated for validation). */
#include "tollgate/policy.h"

const char *const policy_kind_names[] = {"quota", "rate", "workflow", NULL};
const char *const policy_scope_names[] = {"platform", "default", "tier", "customer", NULL};
const char *const policy_period_names[] = {"hour", "day", "week", "month", "all_time", NULL};
const char *const policy_enforcement_names[] = {"hard", "soft", "shadow", NULL};
const char *const policy_algorithm_names[] = {"token_bucket", "sliding_window", NULL};
const char *const policy_per_names[] = {"customer", "ip", "key", "platform", NULL};
const char *const policy_agg_names[] = {"sum", "count", "max", "latest", NULL};
const char *const policy_decision_names[] = {"allow", "deny", "fallback", "warn", NULL};

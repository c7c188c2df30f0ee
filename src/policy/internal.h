/* internal.h — the indexes of a compiled snapshot, shared by the files of policy/. */
#ifndef TOLLGATE_POLICY_INTERNAL_H
#define TOLLGATE_POLICY_INTERNAL_H

#include "tollgate/map.h"
#include "tollgate/policy.h"

/* Per meter: which limits may apply, by scope. */
struct meter_index {
	const struct policy_meter *meter;
	struct policy_limit_list platform, dflt;
	struct tg_map tier, customer; /* → struct policy_limit_list * */
};

struct policy_index {
	struct tg_map meters;     /* id → struct policy_meter * */
	struct tg_map by_meter;   /* meter id → struct meter_index * */
	struct tg_map by_type;    /* event type → struct policy_limit_list-like list of meters */
	struct tg_map limits;     /* id → struct policy_limit * */
	struct policy_limit_list workflow;
};

struct meter_list {
	const struct policy_meter **items;
	int n;
};

#endif

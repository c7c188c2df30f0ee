/* period.c — quota periods on UTC calendar boundaries: hour, day, week (Monday), month (1st), all time. */
#include "tollgate/policy.h"

#define HOUR_MS INT64_C(3600000)
#define DAY_MS (24 * HOUR_MS)

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && a < 0) ? q - 1 : q;
}

int64_t policy_period_start(enum policy_period p, int64_t now_ms)
{
	int64_t days = floor_div(now_ms, DAY_MS);
	int64_t y;
	unsigned m, d;

	switch (p) {
	case PERIOD_HOUR:
		return floor_div(now_ms, HOUR_MS) * HOUR_MS;
	case PERIOD_DAY:
		return days * DAY_MS;
	case PERIOD_WEEK:
		/* 1970-01-01 was a Thursday: days + 3 counts from a Monday */
		return (days - ((days + 3) % 7 + 7) % 7) * DAY_MS;
	case PERIOD_MONTH:
		tg_civil_from_days(days, &y, &m, &d);
		return tg_days_from_civil(y, m, 1) * DAY_MS;
	case PERIOD_ALL_TIME:
	default:
		return 0;
	}
}

int64_t policy_period_end(enum policy_period p, int64_t start_ms)
{
	int64_t y;
	unsigned m, d;

	switch (p) {
	case PERIOD_HOUR:
		return start_ms + HOUR_MS;
	case PERIOD_DAY:
		return start_ms + DAY_MS;
	case PERIOD_WEEK:
		return start_ms + 7 * DAY_MS;
	case PERIOD_MONTH:
		tg_civil_from_days(floor_div(start_ms, DAY_MS), &y, &m, &d);
		return (m == 12 ? tg_days_from_civil(y + 1, 1, 1) : tg_days_from_civil(y, m + 1, 1)) * DAY_MS;
	case PERIOD_ALL_TIME:
	default:
		return INT64_MAX;
	}
}

int64_t policy_period_seconds(enum policy_period p, int64_t now_ms)
{
	int64_t start = policy_period_start(p, now_ms);
	int64_t end = policy_period_end(p, start);

	return end == INT64_MAX ? 0 : (end - start) / 1000;
}

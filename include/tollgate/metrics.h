/* metrics.h — process-wide Prometheus counters and gauges registered by any module. */
#ifndef TOLLGATE_METRICS_H
#define TOLLGATE_METRICS_H

#include <stdint.h>

#include "tollgate/util.h"

/*
 * DESIGN: a series is found (or created) once under a mutex and the pointer
 * kept by the caller; updates are relaxed atomic adds with no lock. Rendering
 * takes the registry mutex only to walk the lists.
 */
struct tg_metric;

/* labels: the inside of the braces, already escaped, e.g. "code=\"quota_exceeded\"" or "". */
struct tg_metric *tg_counter(const char *name, const char *help, const char *labels);
struct tg_metric *tg_gauge(const char *name, const char *help, const char *labels);
void tg_metric_add(struct tg_metric *m, int64_t n);
void tg_metric_set(struct tg_metric *m, int64_t v);
int64_t tg_metric_value(const struct tg_metric *m);
/* Append every family in the Prometheus text format. */
void tg_metrics_render(struct tg_buf *out);

#endif

/* metrics.c — the registry behind metrics.h: families of labelled series, lock-free updates. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "tollgate/metrics.h"

struct tg_metric {
	char *labels;
	_Atomic int64_t value;
	struct tg_metric *next;
};

struct family {
	char *name, *help;
	const char *type;
	struct tg_metric *series;
	struct family *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct family *families, **families_tail = &families;

static struct tg_metric *find(const char *name, const char *help, const char *labels, const char *type)
{
	struct family *f;
	struct tg_metric *m, **tail;

	pthread_mutex_lock(&lock);
	for (f = families; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			break;
	if (!f) {
		f = tg_calloc(1, sizeof(*f));
		f->name = tg_strdup(name);
		f->help = tg_strdup(help);
		f->type = type;
		*families_tail = f;
		families_tail = &f->next;
	}
	for (tail = &f->series; (m = *tail); tail = &m->next)
		if (strcmp(m->labels, labels) == 0)
			break;
	if (!m) {
		m = tg_calloc(1, sizeof(*m));
		m->labels = tg_strdup(labels);
		*tail = m;
	}
	pthread_mutex_unlock(&lock);
	return m;
}

struct tg_metric *tg_counter(const char *name, const char *help, const char *labels)
{
	return find(name, help, labels, "counter");
}

struct tg_metric *tg_gauge(const char *name, const char *help, const char *labels)
{
	return find(name, help, labels, "gauge");
}

void tg_metric_add(struct tg_metric *m, int64_t n)
{
	atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}

void tg_metric_set(struct tg_metric *m, int64_t v)
{
	atomic_store_explicit(&m->value, v, memory_order_relaxed);
}

int64_t tg_metric_value(const struct tg_metric *m)
{
	return atomic_load_explicit(&((struct tg_metric *)m)->value, memory_order_relaxed);
}

void tg_metrics_render(struct tg_buf *out)
{
	pthread_mutex_lock(&lock);
	for (struct family *f = families; f; f = f->next) {
		tg_buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
		for (struct tg_metric *m = f->series; m; m = m->next) {
			int64_t v = atomic_load_explicit(&m->value, memory_order_relaxed);
			if (m->labels[0])
				tg_buf_addf(out, "%s{%s} %lld\n", f->name, m->labels, (long long)v);
			else
				tg_buf_addf(out, "%s %lld\n", f->name, (long long)v);
		}
	}
	pthread_mutex_unlock(&lock);
}

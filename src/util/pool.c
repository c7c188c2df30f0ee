/* pool.c — worker threads for blocking jobs (see pool.h for the design). */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/error.h"
#include "tollgate/pool.h"
#include "tollgate/util.h"

struct job {
	tg_pool_fn fn;
	void *arg;
	struct job *next;
};

struct tg_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, **tail;
	int queued;
	bool stopping;
	int nthreads;
	pthread_t *threads;
	void (*on_exit)(void);
	char name[16];
};

static void *pool_main(void *arg)
{
	struct tg_pool *p = arg;

	pthread_setname_np(pthread_self(), p->name);
	for (;;) {
		struct job *j;
		pthread_mutex_lock(&p->lock);
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->cond, &p->lock);
		j = p->head;
		if (!j) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		p->head = j->next;
		if (!p->head)
			p->tail = &p->head;
		p->queued--;
		pthread_mutex_unlock(&p->lock);
		j->fn(j->arg);
		free(j);
	}
	if (p->on_exit)
		p->on_exit();
	return NULL;
}

struct tg_pool *tg_pool_new(const char *name, int threads, void (*on_exit)(void))
{
	struct tg_pool *p = tg_calloc(1, sizeof(*p));

	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->tail = &p->head;
	p->on_exit = on_exit;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->nthreads = threads;
	p->threads = tg_calloc((size_t)threads, sizeof(pthread_t));
	for (int i = 0; i < threads; i++)
		if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0)
			TG_BUG("cannot start a %s thread", name);
	return p;
}

void tg_pool_submit(struct tg_pool *p, tg_pool_fn fn, void *arg)
{
	struct job *j = tg_malloc(sizeof(*j));

	j->fn = fn;
	j->arg = arg;
	j->next = NULL;
	pthread_mutex_lock(&p->lock);
	*p->tail = j;
	p->tail = &j->next;
	p->queued++;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

int tg_pool_queued(struct tg_pool *p)
{
	int n;

	pthread_mutex_lock(&p->lock);
	n = p->queued;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void tg_pool_free(struct tg_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->threads);
	free(p);
}

/* pool.h — a fixed set of worker threads running jobs from one FIFO queue. */
#ifndef TOLLGATE_POOL_H
#define TOLLGATE_POOL_H

/*
 * DESIGN: jobs are appended under one mutex and taken in FIFO order by the
 * first idle thread (condition variable). Jobs may block (PostgreSQL); each
 * thread keeps its own connections in thread-local storage (store/). Stopping
 * runs every job already queued, then joins the threads.
 */
struct tg_pool;
typedef void (*tg_pool_fn)(void *arg);

/* on_exit (may be NULL) runs on each thread before it ends (to close its connections). */
struct tg_pool *tg_pool_new(const char *name, int threads, void (*on_exit)(void));
void tg_pool_submit(struct tg_pool *p, tg_pool_fn fn, void *arg);
int tg_pool_queued(struct tg_pool *p);
void tg_pool_free(struct tg_pool *p); /* drains and joins */

#endif

/* loop.h — a small epoll reactor, one per event-loop thread. */
#ifndef TOLLGATE_LOOP_H
#define TOLLGATE_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

/*
 * DESIGN: each event-loop thread owns one tg_loop and everything registered on
 * it (the HTTP daemon, the listener, the Redis connection). Only the owning
 * thread touches it, except tg_loop_post() and tg_loop_stop(), which other
 * threads use to hand work back (a completed PostgreSQL job, a committed event
 * batch): they append to a mutex-protected inbox and write to an eventfd. One
 * pass = epoll_wait, the ready callbacks, the inbox, then every pass-end hook
 * (this is where the Redis pipeline is flushed in one write, so all the
 * commands produced by a pass share a round trip).
 */

struct tg_loop;
typedef void (*tg_loop_fd_cb)(void *arg, uint32_t events);
typedef void (*tg_loop_fn)(void *arg);
typedef int64_t (*tg_loop_timeout_fn)(void *arg); /* ms until something is due, -1 = none */

struct tg_loop *tg_loop_new(void);
void tg_loop_free(struct tg_loop *l);
/* The loop owned by the calling thread, or NULL (workers have none). */
struct tg_loop *tg_loop_current(void);

int tg_loop_add_fd(struct tg_loop *l, int fd, uint32_t events, tg_loop_fd_cb cb, void *arg);
int tg_loop_mod_fd(struct tg_loop *l, int fd, uint32_t events);
void tg_loop_del_fd(struct tg_loop *l, int fd);
/* Run fn(arg) at the end of every pass, in registration order (at most 8). */
void tg_loop_on_pass_end(struct tg_loop *l, tg_loop_fn fn, void *arg);
/* Ask for the epoll timeout before each wait (at most 8; the smallest wins). */
void tg_loop_on_timeout(struct tg_loop *l, tg_loop_timeout_fn fn, void *arg);
/* Thread-safe: run fn(arg) on the loop's thread soon. */
void tg_loop_post(struct tg_loop *l, tg_loop_fn fn, void *arg);
/* Run until tg_loop_stop() (thread-safe). */
void tg_loop_run(struct tg_loop *l);
void tg_loop_stop(struct tg_loop *l);

#endif

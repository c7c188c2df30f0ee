/* loop.c — the epoll reactor behind every event-loop thread (see loop.h for the threading design). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tollgate/error.h"
#include "tollgate/log.h"
#include "tollgate/loop.h"
#include "tollgate/util.h"

#define LOOP_MAX_HOOKS 8
#define LOOP_MAX_EVENTS 256

struct watch {
	int fd;
	tg_loop_fd_cb cb;
	void *arg;
	struct watch *next; /* registry list, so tg_loop_del_fd can find it */
};

struct posted {
	tg_loop_fn fn;
	void *arg;
	struct posted *next;
};

struct tg_loop {
	int epfd;
	int wakefd;
	_Atomic bool stop;
	struct watch *watches;
	struct {
		tg_loop_fn fn;
		void *arg;
	} pass_end[LOOP_MAX_HOOKS];
	int npass_end;
	struct {
		tg_loop_timeout_fn fn;
		void *arg;
	} timeouts[LOOP_MAX_HOOKS];
	int ntimeouts;
	pthread_mutex_t inbox_lock;
	struct posted *inbox_head, **inbox_tail;
};

static _Thread_local struct tg_loop *current_loop;

struct tg_loop *tg_loop_current(void)
{
	return current_loop;
}

static void on_wake(void *arg, uint32_t events);

struct tg_loop *tg_loop_new(void)
{
	struct tg_loop *l = tg_calloc(1, sizeof(*l));

	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->epfd < 0 || l->wakefd < 0)
		TG_BUG("epoll/eventfd: %s", strerror(errno));
	pthread_mutex_init(&l->inbox_lock, NULL);
	l->inbox_tail = &l->inbox_head;
	tg_loop_add_fd(l, l->wakefd, EPOLLIN, on_wake, l);
	return l;
}

void tg_loop_free(struct tg_loop *l)
{
	if (!l)
		return;
	while (l->watches) {
		struct watch *w = l->watches;
		l->watches = w->next;
		free(w);
	}
	while (l->inbox_head) {
		struct posted *p = l->inbox_head;
		l->inbox_head = p->next;
		free(p);
	}
	close(l->epfd);
	close(l->wakefd);
	pthread_mutex_destroy(&l->inbox_lock);
	free(l);
}

int tg_loop_add_fd(struct tg_loop *l, int fd, uint32_t events, tg_loop_fd_cb cb, void *arg)
{
	struct watch *w = tg_calloc(1, sizeof(*w));
	struct epoll_event ev = {.events = events, .data.ptr = w};

	w->fd = fd;
	w->cb = cb;
	w->arg = arg;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		free(w);
		return -1;
	}
	w->next = l->watches;
	l->watches = w;
	return 0;
}

static struct watch *find_watch(struct tg_loop *l, int fd, struct watch ***link)
{
	for (struct watch **pw = &l->watches; *pw; pw = &(*pw)->next) {
		if ((*pw)->fd == fd) {
			if (link)
				*link = pw;
			return *pw;
		}
	}
	return NULL;
}

int tg_loop_mod_fd(struct tg_loop *l, int fd, uint32_t events)
{
	struct watch *w = find_watch(l, fd, NULL);
	struct epoll_event ev = {.events = events, .data.ptr = w};

	if (!w)
		return -1;
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void tg_loop_del_fd(struct tg_loop *l, int fd)
{
	struct watch **link, *w = find_watch(l, fd, &link);

	if (!w)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	*link = w->next;
	/* a ready event for this fd may still sit in the current batch: neutralise, free later */
	w->cb = NULL;
	w->fd = -1;
	w->next = NULL;
	tg_loop_post(l, free, w);
}

void tg_loop_on_pass_end(struct tg_loop *l, tg_loop_fn fn, void *arg)
{
	if (l->npass_end >= LOOP_MAX_HOOKS)
		TG_BUG("too many pass-end hooks");
	l->pass_end[l->npass_end].fn = fn;
	l->pass_end[l->npass_end].arg = arg;
	l->npass_end++;
}

void tg_loop_on_timeout(struct tg_loop *l, tg_loop_timeout_fn fn, void *arg)
{
	if (l->ntimeouts >= LOOP_MAX_HOOKS)
		TG_BUG("too many timeout hooks");
	l->timeouts[l->ntimeouts].fn = fn;
	l->timeouts[l->ntimeouts].arg = arg;
	l->ntimeouts++;
}

void tg_loop_post(struct tg_loop *l, tg_loop_fn fn, void *arg)
{
	struct posted *p = tg_malloc(sizeof(*p));
	uint64_t one = 1;
	bool was_empty;

	p->fn = fn;
	p->arg = arg;
	p->next = NULL;
	pthread_mutex_lock(&l->inbox_lock);
	was_empty = l->inbox_head == NULL;
	*l->inbox_tail = p;
	l->inbox_tail = &p->next;
	pthread_mutex_unlock(&l->inbox_lock);
	if (was_empty && write(l->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("loop wake-up failed", "%s", strerror(errno));
}

static void on_wake(void *arg, uint32_t events)
{
	struct tg_loop *l = arg;
	uint64_t n;

	TG_UNUSED(events);
	while (read(l->wakefd, &n, sizeof(n)) > 0)
		;
}

static void drain_inbox(struct tg_loop *l)
{
	struct posted *p;

	pthread_mutex_lock(&l->inbox_lock);
	p = l->inbox_head;
	l->inbox_head = NULL;
	l->inbox_tail = &l->inbox_head;
	pthread_mutex_unlock(&l->inbox_lock);
	while (p) {
		struct posted *next = p->next;
		p->fn(p->arg);
		free(p);
		p = next;
	}
}

static int next_timeout(struct tg_loop *l)
{
	int64_t best = -1;

	if (l->inbox_head)
		return 0;
	for (int i = 0; i < l->ntimeouts; i++) {
		int64_t t = l->timeouts[i].fn(l->timeouts[i].arg);
		if (t >= 0 && (best < 0 || t < best))
			best = t;
	}
	if (best < 0 || best > 1000)
		best = 1000; /* wake at least once a second so stop requests are seen */
	return (int)best;
}

void tg_loop_run(struct tg_loop *l)
{
	struct epoll_event events[LOOP_MAX_EVENTS];

	current_loop = l;
	while (!atomic_load(&l->stop)) {
		int n = epoll_wait(l->epfd, events, LOOP_MAX_EVENTS, next_timeout(l));
		if (n < 0 && errno != EINTR)
			TG_BUG("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			struct watch *w = events[i].data.ptr;
			if (w->cb)
				w->cb(w->arg, events[i].events);
		}
		drain_inbox(l);
		for (int i = 0; i < l->npass_end; i++)
			l->pass_end[i].fn(l->pass_end[i].arg);
	}
	drain_inbox(l);
	current_loop = NULL;
}

void tg_loop_stop(struct tg_loop *l)
{
	uint64_t one = 1;

	atomic_store(&l->stop, true);
	if (write(l->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("loop wake-up failed", "%s", strerror(errno));
}

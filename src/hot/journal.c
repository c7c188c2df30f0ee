/* journal.c — the live counters this instance may leave out of step with PostgreSQL if it dies, and their
 * recovery by the instances that survive it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "tollgate/crypto.h"
#include "tollgate/log.h"
#include "tollgate/map.h"
#include "tollgate/metrics.h"
#include "tollgate/util.h"

/*
 * DESIGN: a quota counter on an event meter and a live balance move in Redis on one side of a
 * PostgreSQL commit: a consuming or reserving check moves them before its event or reservation
 * commits, the event writer after its COMMIT. A process that dies in between (kill -9, OOM, power)
 * leaves the counter ahead of PostgreSQL (usage or a hold nobody recorded) or behind it (committed
 * usage a hard limit then does not see). Rebuilding a counter from PostgreSQL is exact, so it is
 * enough to know which ones to drop:
 *
 *   tg:alive:<id>    this instance's heartbeat, a key that expires TOLLGATE_INSTANCE_TTL_MS after the
 *                    last refresh (every quarter of it)
 *   tg:instances     the set of instance ids
 *   tg:journal:<id>  the counters this instance moved or is about to move across a commit: a sorted
 *                    set of keys scored by the wall clock (check.lua notes a check's keys in the same
 *                    atomic run that moves them; the writer notes a batch's keys before its COMMIT).
 *                    Entries older than JOURNAL_KEEP_MS are trimmed: every such operation has ended.
 *
 * Every instance looks at the others' heartbeats each second; the journal of one whose heartbeat
 * is gone is recovered (recover.lua): each key it lists is deleted, so its next use rebuilds it from
 * PostgreSQL (what committed, nothing else), then the journal and the id go. An instance whose own
 * Redis update failed (hot_apply_usage after a commit, or a consuming check whose reply was lost, which
 * may have run) drops the keys of that update the same way once Redis answers. Dropping a counter a
 * live instance is using is safe: rebuilds are serialised with that instance's commits and marked (see
 * record.c), exactly as after a Redis flush.
 */

#define JOURNAL_KEEP_MS (120 * 1000)
/* A key this thread noted less than this long ago is not noted again: the entry stays for JOURNAL_KEEP_MS,
 * so whatever moves it meanwhile has a minute at least to commit before the entry can go. */
#define JOURNAL_FRESH_MS (60 * 1000)
#define FRESH_SLOTS 4096
#define RECOVER_CHUNK "500"

static struct {
	char id[17];
	char alive[40], journal[40];
	int ttl_ms;
	pthread_t thread;
	_Atomic bool stopping;
	bool running;
	_Atomic bool registered; /* a heartbeat was written: only then is anything noted */
	/* keys of failed updates, to drop once Redis answers */
	pthread_mutex_t lock;
	char **suspect;
	int nsuspect, capsuspect;
	_Atomic bool suspects;
	struct tg_metric *m_dropped, *m_recovered;
	/* bumped when this instance finds itself unlisted (its journal was recovered while it stalled): what
	 * threads remember having noted is void */
	_Atomic uint64_t epoch;
} J = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* What this thread noted lately: a direct-mapped table of key hashes (a collision only notes again). */
struct fresh {
	uint64_t hash, epoch;
	int64_t ms;
};
static _Thread_local struct fresh *fresh_tab;

static struct fresh *fresh_slot(const char *key, uint64_t *hash)
{
	*hash = tg_map_hash(key, strlen(key));
	if (!fresh_tab)
		fresh_tab = tg_calloc(FRESH_SLOTS, sizeof(*fresh_tab));
	return &fresh_tab[*hash % FRESH_SLOTS];
}

void hot_journal_noted(const char *key, int64_t ms)
{
	uint64_t h;
	struct fresh *f = fresh_slot(key, &h);

	*f = (struct fresh){h, atomic_load_explicit(&J.epoch, memory_order_acquire), ms};
}

bool hot_journal_fresh(const char *key, int64_t now_ms)
{
	uint64_t h;
	const struct fresh *f = fresh_slot(key, &h);

	return f->hash == h && f->epoch == atomic_load_explicit(&J.epoch, memory_order_acquire) &&
	       now_ms - f->ms < JOURNAL_FRESH_MS && now_ms >= f->ms;
}

static const char INSTANCES[] = "tg:instances";

const char *hot_journal_key(void)
{
	/* nothing is noted before this instance is listed: a journal nobody knows of would never be recovered */
	return atomic_load_explicit(&J.registered, memory_order_acquire) ? J.journal : NULL;
}

/* SET tg:alive:<id> PX ttl, SADD tg:instances <id>. */
static int heartbeat(struct tg_error *err)
{
	char ttl[24];
	snprintf(ttl, sizeof(ttl), "%d", J.ttl_ms);
	const char *argv[] = {"SET", J.alive, "1", "PX", ttl, "SADD", INSTANCES, J.id};
	redisReply *r = hot_sync_argv(5, argv, NULL, err);
	if (!r)
		return err->err;
	freeReplyObject(r);
	/* again each time: a journal recovered while this instance stalled unlisted it */
	r = hot_sync_argv(3, argv + 5, NULL, err);
	if (!r)
		return err->err;
	if (r->type == REDIS_REPLY_INTEGER && r->integer == 1 && atomic_load(&J.registered)) {
		log_warn("this instance's journal was recovered by another (it stalled past its heartbeat)", NULL);
		atomic_fetch_add_explicit(&J.epoch, 1, memory_order_release);
	}
	freeReplyObject(r);
	atomic_store_explicit(&J.registered, true, memory_order_release);
	return 0;
}

int hot_journal_note(const char *const *keys, int n, struct tg_error *err)
{
	if (!hot_journal_key() || n == 0)
		return 0;
	const char **argv = tg_malloc(sizeof(*argv) * (size_t)(2 + 2 * n));
	int64_t now = tg_now_ms();
	char wall[24];
	redisReply *r;
	int rc = 0, m = 0;

	snprintf(wall, sizeof(wall), "%lld", (long long)now);
	argv[0] = "ZADD";
	argv[1] = J.journal;
	for (int i = 0; i < n; i++) {
		if (hot_journal_fresh(keys[i], now))
			continue;
		argv[2 + 2 * m] = wall;
		argv[3 + 2 * m++] = keys[i];
	}
	if (m == 0) {
		free(argv);
		return 0;
	}
	r = hot_sync_argv(2 + 2 * m, argv, NULL, err);
	if (!r)
		rc = err->err;
	else if (r->type == REDIS_REPLY_ERROR) {
		rc = tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "Redis refused the journal entry");
		tg_error_detail(err, "%s", r->str);
	}
	if (r)
		freeReplyObject(r);
	for (int i = 0; rc == 0 && i < m; i++)
		hot_journal_noted(argv[3 + 2 * i], now);
	free(argv);
	return rc;
}

void hot_journal_suspect(const char *const *keys, int n)
{
	if (n == 0)
		return;
	pthread_mutex_lock(&J.lock);
	for (int i = 0; i < n; i++) {
		if (J.nsuspect == J.capsuspect) {
			J.capsuspect = J.capsuspect ? J.capsuspect * 2 : 64;
			J.suspect = tg_realloc(J.suspect, sizeof(*J.suspect) * (size_t)J.capsuspect);
		}
		J.suspect[J.nsuspect++] = tg_strdup(keys[i]);
	}
	pthread_mutex_unlock(&J.lock);
	atomic_store(&J.suspects, true);
}

/* Drop every key the journal of a stopped instance lists (chunk by chunk). Returns how many, -1 when the
 * instance is alive, or a negative tg_err when Redis failed. */
static int64_t recover(const char *id, struct tg_error *err)
{
	char alive[40], journal[40];
	int64_t total = 0;

	snprintf(alive, sizeof(alive), "tg:alive:%s", id);
	snprintf(journal, sizeof(journal), "tg:journal:%s", id);
	for (;;) {
		const char *keys[] = {alive, journal, INSTANCES};
		const char *args[] = {id, RECOVER_CHUNK};
		redisReply *r = hot_sync_script(&hot_script_recover, 3, keys, 2, args, NULL, err);
		if (!r)
			return err->err;
		if (r->type != REDIS_REPLY_INTEGER) {
			tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "recover.lua failed");
			tg_error_detail(err, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
			freeReplyObject(r);
			return err->err;
		}
		long long n = r->integer;
		freeReplyObject(r);
		if (n < 0)
			return total > 0 ? total : -1;
		if (n == 0)
			return total;
		total += n;
	}
}

/* Drop the keys of failed updates. */
static void drop_suspects(void)
{
	struct tg_error err;
	char **keys;
	int n;

	pthread_mutex_lock(&J.lock);
	keys = J.suspect;
	n = J.nsuspect;
	J.suspect = NULL;
	J.nsuspect = J.capsuspect = 0;
	atomic_store(&J.suspects, false);
	pthread_mutex_unlock(&J.lock);

	int done = 0;
	for (; done < n; done++) {
		const char *argv[] = {"DEL", keys[done]};
		redisReply *r = hot_sync_argv(2, argv, NULL, &err);
		if (!r)
			break;
		freeReplyObject(r);
	}
	if (done < n) {
		/* Redis still failing: keep what is left for the next turn */
		hot_journal_suspect((const char *const *)keys + done, n - done);
		log_warn("live counters not yet dropped after a failed update", "%s", err.detail);
	} else {
		tg_metric_add(J.m_dropped, n);
		log_warn("live counters dropped after a failed update; they rebuild from PostgreSQL", "%d keys", n);
	}
	for (int i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

/* Every other listed instance whose heartbeat is gone. */
static void recover_others(void)
{
	struct tg_error err;
	const char *argv[] = {"SMEMBERS", INSTANCES};
	redisReply *r = hot_sync_argv(2, argv, NULL, &err);

	if (!r || r->type != REDIS_REPLY_ARRAY) {
		if (r)
			freeReplyObject(r);
		return;
	}
	for (size_t i = 0; i < r->elements && !atomic_load(&J.stopping); i++) {
		const char *id = r->element[i]->str;
		if (r->element[i]->type != REDIS_REPLY_STRING || !strcmp(id, J.id) || strlen(id) >= sizeof(J.id))
			continue;
		int64_t n = recover(id, &err);
		if (n >= 0) {
			tg_metric_add(J.m_recovered, 1);
			tg_metric_add(J.m_dropped, n);
			log_warn("recovered the journal of a stopped instance; its live counters rebuild from PostgreSQL",
				 "instance %s, %lld keys", id, (long long)n);
		} else if (n != -1)
			log_warn("journal of a stopped instance not recovered", "instance %s: %s", id, err.detail);
	}
	freeReplyObject(r);
}

static void trim(void)
{
	struct tg_error err;
	char upto[24];
	snprintf(upto, sizeof(upto), "(%lld", (long long)(tg_now_ms() - JOURNAL_KEEP_MS));
	const char *argv[] = {"ZREMRANGEBYSCORE", J.journal, "-inf", upto};
	redisReply *r = hot_sync_argv(4, argv, NULL, &err);
	if (r)
		freeReplyObject(r);
}

static void *journal_main(void *arg)
{
	int64_t last_others = 0, last_trim = 0;
	int beat_ms = J.ttl_ms / 4 > 1000 ? 1000 : J.ttl_ms / 4;

	(void)arg;
	pthread_setname_np(pthread_self(), "journal");
	while (!atomic_load(&J.stopping)) {
		struct tg_error err;
		int64_t now = tg_now_ms();
		if (heartbeat(&err) < 0)
			log_warn("instance heartbeat not written", "%s", err.detail);
		if (atomic_load(&J.suspects))
			drop_suspects();
		if (now - last_others >= 1000) {
			recover_others();
			last_others = now;
		}
		if (now - last_trim >= 10000) {
			trim();
			last_trim = now;
		}
		for (int waited = 0; waited < beat_ms && !atomic_load(&J.stopping); waited += 50)
			tg_wait_ms(50);
	}
	hot_thread_end();
	return NULL;
}

int hot_journal_start(int ttl_ms, struct tg_error *err)
{
	unsigned char raw[8];

	tg_random_bytes(raw, sizeof(raw));
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(J.id + 2 * i, 3, "%02x", raw[i]);
	snprintf(J.alive, sizeof(J.alive), "tg:alive:%s", J.id);
	snprintf(J.journal, sizeof(J.journal), "tg:journal:%s", J.id);
	J.ttl_ms = ttl_ms;
	J.m_dropped = tg_counter("tollgate_live_counters_dropped_total",
				 "Live counters deleted so that they rebuild from PostgreSQL: listed in the journal of an "
				 "instance that stopped without finishing, or moved by a Redis update that failed.", "");
	J.m_recovered = tg_counter("tollgate_instances_recovered_total",
				   "Journals of stopped instances this instance recovered.", "");
	/* listed and alive before the first check, unless Redis is down now: then from the first heartbeat
	 * the thread writes (nothing is noted before) */
	if (heartbeat(err) < 0)
		log_warn("instance not yet registered in Redis; retrying", "%s", err->detail);
	hot_thread_end(); /* that connection was the main thread's */
	atomic_store(&J.stopping, false);
	J.running = true;
	if (pthread_create(&J.thread, NULL, journal_main, NULL) != 0) {
		J.running = false;
		return tg_fail(err, TG_EINTERNAL, NULL, NULL, "cannot start the journal thread");
	}
	return 0;
}

/* After a clean stop (every commit and update done): nothing of this instance is out of step. */
void hot_journal_stop(void)
{
	struct tg_error err;

	if (!J.running)
		return;
	atomic_store(&J.stopping, true);
	pthread_join(J.thread, NULL);
	if (atomic_load(&J.suspects))
		drop_suspects();
	if (!atomic_load(&J.suspects)) {
		const char *argv[] = {"DEL", J.journal, J.alive};
		redisReply *r = hot_sync_argv(3, argv, NULL, &err);
		if (r)
			freeReplyObject(r);
		const char *srem[] = {"SREM", INSTANCES, J.id};
		if ((r = hot_sync_argv(3, srem, NULL, &err)))
			freeReplyObject(r);
	}
	atomic_store(&J.registered, false);
	J.running = false;
	hot_thread_end();
}

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
 * commits, the event writer and the balance API after theirs. A process that dies in between
 * (kill -9, OOM, power) leaves the counter ahead of PostgreSQL (usage or a hold nobody recorded) or
 * behind it (committed usage a hard limit then does not see). Rebuilding a counter from PostgreSQL
 * is exact, so it is enough to know which ones to drop:
 *
 *   tg:alive:<id>    this instance's heartbeat, a key that expires TOLLGATE_INSTANCE_TTL_MS after the
 *                    last refresh (every quarter of it, at most every second: heartbeat.lua)
 *   tg:instances     the set of instance ids
 *   tg:journal:<id>  the counters this instance moved or is about to move across a commit: a sorted
 *                    set of keys scored by the wall clock (check.lua notes a check's keys in the same
 *                    atomic run that moves them; the writer notes a batch's keys before its COMMIT,
 *                    the balance API a wallet's before its ledger row).
 *
 * Every instance looks at the others' heartbeats each second; the journal of one whose heartbeat
 * is gone is recovered (recover.lua): each key it lists is deleted, so its next use rebuilds it from
 * PostgreSQL (what committed, nothing else), then the journal and the id go. An instance whose own
 * Redis update failed (hot_apply_usage after a commit, a consuming check whose reply was lost, a note
 * that could not be written) drops the keys of that update the same way once Redis answers. Dropping a
 * counter a live instance is using is safe: rebuilds are serialised with that instance's commits and
 * marked (see record.c), exactly as after a Redis flush.
 *
 * A thread that noted a key less than JOURNAL_FRESH_MS ago does not note it again. Entries older than
 * JOURNAL_KEEP_MS are trimmed, but never one that an operation still waiting in the event writer may
 * need (the writer reports its oldest submission): so a commit held up for minutes keeps its entries.
 * The "fresh" memory is void (an epoch moves) when this instance finds its heartbeat had lapsed, and
 * while its last heartbeat is older than half the TTL: its journal may have been recovered meanwhile.
 */

#define JOURNAL_KEEP_MS (120 * 1000)
#define JOURNAL_FRESH_MS (60 * 1000)
/* 24 bytes each, allocated in a thread when it first journals: 4,096 slots thrashed with 10,000 customers
 * (two consuming checks in three journaled again); 65,536 (1.5 MB a thread) keep tens of thousands of keys */
#define FRESH_SLOTS 65536
#define RECOVER_CHUNK "500"
#define DROP_CHUNK 100

static struct {
	char id[17];
	char alive[40], journal[40];
	int ttl_ms;
	int64_t (*oldest_ms)(void); /* the writer's oldest pending submission (wall ms), INT64_MAX if none */
	pthread_t thread;
	_Atomic bool stopping;
	bool running;
	_Atomic bool registered;   /* a heartbeat was written: only then is anything noted */
	_Atomic int64_t beat_ms;   /* monotonic clock (ms) of the last heartbeat written, 0 before the first */
	_Atomic uint64_t epoch;    /* moves when what threads remember having noted may be gone */
	/* keys of failed updates, to drop once Redis answers (a set: the key is the map's) */
	pthread_mutex_t lock;
	struct tg_map suspect;
	_Atomic bool suspects;
	struct tg_metric *m_dropped, *m_recovered;
} J = {.lock = PTHREAD_MUTEX_INITIALIZER, .suspect = TG_MAP_INIT};

static const char INSTANCES[] = "tg:instances";

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

const char *hot_journal_key(void)
{
	/* nothing is noted before this instance is listed: a journal nobody knows of would never be recovered */
	return atomic_load_explicit(&J.registered, memory_order_acquire) ? J.journal : NULL;
}

uint64_t hot_journal_epoch(void)
{
	return atomic_load_explicit(&J.epoch, memory_order_acquire);
}

void hot_journal_noted(const char *key, int64_t ms, uint64_t epoch)
{
	uint64_t h;
	struct fresh *f = fresh_slot(key, &h);

	*f = (struct fresh){h, epoch, ms};
}

bool hot_journal_fresh(const char *key, int64_t now_ms)
{
	uint64_t h;
	const struct fresh *f = fresh_slot(key, &h);

	int64_t beat = atomic_load(&J.beat_ms);
	if (beat == 0 || tg_mono_us() / 1000 - beat > J.ttl_ms / 2)
		return false; /* heartbeats late: this instance may be taken for dead soon, or already */
	return f->hash == h && f->epoch == hot_journal_epoch() && now_ms >= f->ms && now_ms - f->ms < JOURNAL_FRESH_MS;
}

/* An instance's heartbeat and journal keys. */
static void instance_keys(const char *id, char alive[40], char journal[40])
{
	snprintf(alive, 40, "tg:alive:%s", id);
	snprintf(journal, 40, "tg:journal:%s", id);
}

/* Run one of the journal's scripts, which answer an integer. */
static int script_int(const struct hot_script *s, int nkeys, const char **keys, int nargs, const char **args,
		      long long *ret, struct tg_error *err)
{
	redisReply *r = hot_sync_script(s, nkeys, keys, nargs, args, NULL, err);

	if (!r)
		return err->err;
	if (r->type != REDIS_REPLY_INTEGER) {
		tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "a journal script failed");
		tg_error_detail(err, "%s: %s", s->name, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		freeReplyObject(r);
		return err->err;
	}
	*ret = r->integer;
	freeReplyObject(r);
	return 0;
}

static int heartbeat(struct tg_error *err)
{
	char ttl[24];
	const char *keys[] = {J.alive, INSTANCES};
	const char *args[] = {J.id, ttl};
	int64_t now = tg_mono_us() / 1000, last = atomic_load(&J.beat_ms);
	long long lapsed;

	snprintf(ttl, sizeof(ttl), "%d", J.ttl_ms);
	if (script_int(&hot_script_heartbeat, 2, keys, 2, args, &lapsed, err) < 0)
		return err->err;
	/* lapsed, or maybe (the last confirmed one is old: a reply that said so may have been lost) */
	if (atomic_load(&J.registered) && (lapsed == 1 || now - last > J.ttl_ms / 2)) {
		if (lapsed == 1)
			log_warn("this instance's heartbeat had lapsed: it notes every key again", NULL);
		atomic_fetch_add_explicit(&J.epoch, 1, memory_order_release);
	}
	atomic_store(&J.beat_ms, now);
	atomic_store_explicit(&J.registered, true, memory_order_release);
	return 0;
}

void hot_journal_suspect(const char *const *keys, int n)
{
	if (n == 0)
		return;
	pthread_mutex_lock(&J.lock);
	for (int i = 0; i < n; i++)
		tg_map_put(&J.suspect, keys[i], (void *)1);
	pthread_mutex_unlock(&J.lock);
	atomic_store(&J.suspects, true);
}

int hot_journal_note(const char *const *keys, int n, bool always, struct tg_error *err)
{
	if (!hot_journal_key() || n == 0)
		return 0;
	const char **argv = tg_malloc(sizeof(*argv) * (size_t)(2 + 2 * n));
	int64_t now = tg_now_ms();
	uint64_t epoch = hot_journal_epoch();
	char wall[24];
	redisReply *r;
	int rc = 0, m = 0;

	snprintf(wall, sizeof(wall), "%lld", (long long)now);
	argv[0] = "ZADD";
	argv[1] = J.journal;
	for (int i = 0; i < n; i++) {
		if (!always && hot_journal_fresh(keys[i], now))
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
	for (int i = 0; i < m; i++) {
		if (rc == 0)
			hot_journal_noted(argv[3 + 2 * i], now, epoch);
		else /* not noted: whatever moves them next is dropped once Redis answers (while this lives) */
			hot_journal_suspect(&argv[3 + 2 * i], 1);
	}
	free(argv);
	return rc;
}

static int collect(void *arg, const char *key, void *val)
{
	const char ***out = arg;
	(void)val;
	*(*out)++ = key;
	return 0;
}

/* Drop the keys of failed updates, DROP_CHUNK per command. */
static void drop_suspects(void)
{
	struct tg_map taken;
	struct tg_error err;
	const char **keys, **end;
	int n, done = 0;

	pthread_mutex_lock(&J.lock);
	taken = J.suspect;
	J.suspect = (struct tg_map)TG_MAP_INIT;
	atomic_store(&J.suspects, false);
	pthread_mutex_unlock(&J.lock);

	n = (int)taken.len;
	keys = tg_malloc(sizeof(*keys) * (size_t)(n + 1) + sizeof(*keys) * (DROP_CHUNK + 1));
	end = keys;
	tg_map_each(&taken, collect, &end);
	while (done < n) {
		const char **argv = keys + n + 1;
		int m = n - done < DROP_CHUNK ? n - done : DROP_CHUNK;
		argv[0] = "UNLINK";
		memcpy(argv + 1, keys + done, sizeof(*argv) * (size_t)m);
		redisReply *r = hot_sync_argv(m + 1, argv, NULL, &err);
		bool ok = r && r->type == REDIS_REPLY_INTEGER;
		if (r && !ok)
			tg_error_detail(&err, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		if (r)
			freeReplyObject(r);
		if (!ok)
			break;
		done += m;
	}
	if (done < n) {
		/* Redis still failing (down, loading, read-only): what is left waits for the next turn */
		hot_journal_suspect(keys + done, n - done);
		log_warn("live counters not yet dropped after a failed update", "%s", err.detail);
	}
	if (done > 0) {
		tg_metric_add(J.m_dropped, done);
		log_warn("live counters dropped after a failed update; they rebuild from PostgreSQL", "%d keys", done);
	}
	free(keys);
	tg_map_release(&taken, NULL);
}

/* Drop every key the journal of a stopped instance lists (chunk by chunk, the heartbeat kept between).
 * Returns how many; -1 when the instance is alive; -2 when there was nothing (another survivor recovered
 * it); or a negative tg_err when Redis failed. */
static int64_t recover(const char *id, struct tg_error *err)
{
	char alive[40], journal[40];
	int64_t total = 0;

	instance_keys(id, alive, journal);
	for (bool first = true; !atomic_load(&J.stopping); first = false) {
		const char *keys[] = {alive, journal, INSTANCES};
		const char *args[] = {id, RECOVER_CHUNK, first ? "1" : "0"};
		long long n;
		if (script_int(&hot_script_recover, 3, keys, 3, args, &n, err) < 0)
			return err->err;
		if (n < 0)
			return total > 0 ? total : n;
		if (n == 0)
			return total;
		total += n;
		if (heartbeat(err) < 0) /* a long journal must not make this instance look dead */
			return err->err;
	}
	return total;
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
		} else if (n != -1 && n != -2)
			log_warn("journal of a stopped instance not recovered", "instance %s: %s", id, err.detail);
	}
	freeReplyObject(r);
}

/* Entries older than JOURNAL_KEEP_MS, and older than any the event writer's pending operations may need
 * (noted up to JOURNAL_FRESH_MS before they moved their counters, which is before they were queued). */
static void trim(void)
{
	struct tg_error err;
	char upto[24];
	int64_t cut = tg_now_ms() - JOURNAL_KEEP_MS;
	int64_t oldest = J.oldest_ms ? J.oldest_ms() : INT64_MAX;

	if (oldest != INT64_MAX && oldest - JOURNAL_FRESH_MS - 5000 < cut)
		cut = oldest - JOURNAL_FRESH_MS - 5000;
	snprintf(upto, sizeof(upto), "(%lld", (long long)cut);
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
		int64_t now = tg_mono_us() / 1000;
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

int hot_journal_start(int ttl_ms, int64_t (*oldest_ms)(void), struct tg_error *err)
{
	unsigned char raw[8];

	tg_random_bytes(raw, sizeof(raw));
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(J.id + 2 * i, 3, "%02x", raw[i]);
	instance_keys(J.id, J.alive, J.journal);
	J.ttl_ms = ttl_ms;
	J.oldest_ms = oldest_ms;
	J.m_dropped = tg_counter("tollgate_live_counters_dropped_total",
				 "Live counters deleted so that they rebuild from PostgreSQL: listed in the journal of an "
				 "instance that stopped without finishing, or moved by a Redis update that failed.", "");
	J.m_recovered = tg_counter("tollgate_instances_recovered_total",
				   "Journals of stopped instances this instance recovered.", "");
	if (ttl_ms < 6000)
		log_warn("TOLLGATE_INSTANCE_TTL_MS is short", "%d ms: a Redis call may take 2 s, so a busy instance "
			 "can miss its heartbeat and be taken for dead (its counters are then rebuilt)", ttl_ms);
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
	if (atomic_load(&J.suspects)) {
		log_warn("live counters of failed updates not dropped: Redis is failing; they stay listed in the "
			 "journal for another instance to recover", NULL);
	} else {
		atomic_store(&J.registered, false); /* nothing is noted any more */
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

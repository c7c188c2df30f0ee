/* internal.h — what the files of hot/ share: the async and blocking connections, the script table. */
#ifndef TOLLGATE_HOT_INTERNAL_H
#define TOLLGATE_HOT_INTERNAL_H

#include <hiredis/hiredis.h>

#include "tollgate/error.h"
#include "tollgate/hot.h"

/* A reply callback: r is borrowed (freed after the callback), NULL when the connection failed. */
typedef void (*hot_cb)(void *arg, redisReply *r);

struct hot_script {
	const char *name;
	const char *source; /* the prelude and the script (set by hot_scripts_init) */
	char sha[41];
};
extern struct hot_script hot_script_check, hot_script_usage, hot_script_balance, hot_script_recover,
	hot_script_heartbeat;
extern struct hot_script *const hot_scripts[];
extern const int hot_nscripts;
void hot_scripts_init(void);

/* Queue work on this loop's async connection: an item of this loop's batch for script s, its keys and its
 * part of the script's one argument (both copied). Every item of a batch is sent in one EVALSHA at the end of
 * the loop's pass, reloading the script on NOSCRIPT; the script answers a table with one element per item,
 * and cb gets its element (an error reply when the whole script failed, NULL when the connection did).
 * Returns -1 (cb not called) when the connection is down. */
int hot_async_batch(const struct hot_script *s, int nkeys, const char **keys, const size_t *keylens, const char *part,
		    size_t partlen, hot_cb cb, void *arg);

/* This thread's blocking connection, (re)connected when needed; NULL with err filled when Redis is down. */
redisContext *hot_sync(struct tg_error *err);
/* Run a command on the blocking connection; returns a reply to free with freeReplyObject, or NULL (err filled,
 * connection dropped so the next call reconnects). Error replies are returned as replies. */
redisReply *hot_sync_argv(int argc, const char **argv, const size_t *lens, struct tg_error *err);
/* n commands of argc arguments each (command i is argv[i * argc] onwards; lens NULL: strlen) in one write,
 * their replies read in order: 0, or a negative tg_err when the connection failed or a command answered
 * an error. */
int hot_sync_pipeline(int n, int argc, const char **argv, const size_t *lens, struct tg_error *err);
/* EVALSHA on the blocking connection with NOSCRIPT reload. */
redisReply *hot_sync_script(const struct hot_script *s, int nkeys, const char **keys, int nargs, const char **args,
			    const size_t *arglens, struct tg_error *err);

/* Element i of an array reply as an integer (scripts return exact values as decimal strings). */
int64_t hot_reply_i64(const redisReply *r, size_t i);

/* Growing KEYS/ARGV lists in an arena. */
struct hot_argv {
	const char **v;
	size_t *len;
	int n, cap;
	struct tg_arena *a;
};
void hot_argv_push(struct hot_argv *b, const char *s);
const char *hot_i64(struct tg_arena *a, int64_t v);
bool hot_sliding_log(const struct policy_limit *l);
const char *hot_workflow_key(struct tg_arena *a, const char *tenant, const char *id);

#endif

/* ids.c — seen event ids: a Redis cache in front of PostgreSQL's unique key (see hot.h). */
#include <stdio.h>

#include "internal.h"
#include "tollgate/util.h"

#define IDS_CHUNK 1000 /* keys per command: one command must not hold Redis long */

/* One slot per tenant (the keys of one MGET must share it under Redis Cluster). */
static const char *id_key(struct tg_arena *a, const char *tenant, const char *id)
{
	return tg_arena_printf(a, "tg:{%s|ev}:%s", tenant, id);
}

int hot_event_ids_seen(const char *tenant_id, const char *const *ids, int n, bool *seen, struct tg_error *err)
{
	struct tg_arena a;
	int rc = 0;

	tg_arena_init(&a);
	for (int at = 0; at < n && rc == 0; at += IDS_CHUNK) {
		int m = n - at < IDS_CHUNK ? n - at : IDS_CHUNK;
		const char **argv = tg_arena_alloc(&a, sizeof(*argv) * (size_t)(m + 1));
		redisReply *r;
		argv[0] = "MGET";
		for (int i = 0; i < m; i++)
			argv[1 + i] = id_key(&a, tenant_id, ids[at + i]);
		if (!(r = hot_sync_argv(m + 1, argv, NULL, err))) {
			rc = err->err;
			break;
		}
		if (r->type != REDIS_REPLY_ARRAY || (int)r->elements != m) {
			rc = tg_fail(err, TG_EUNAVAIL, "redis_error", NULL, "Redis refused the seen-ids lookup");
			tg_error_detail(err, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		} else {
			for (int i = 0; i < m; i++)
				seen[at + i] = r->element[i]->type != REDIS_REPLY_NIL;
		}
		freeReplyObject(r);
	}
	tg_arena_release(&a);
	return rc;
}

int hot_event_ids_remember(const char *tenant_id, const char *const *ids, int n, int ttl_s, struct tg_error *err)
{
	struct tg_arena a;
	char ttl[16];
	int rc = 0;

	snprintf(ttl, sizeof(ttl), "%d", ttl_s);
	tg_arena_init(&a);
	for (int at = 0; at < n && rc == 0; at += IDS_CHUNK) {
		int m = n - at < IDS_CHUNK ? n - at : IDS_CHUNK;
		const char **argv = tg_arena_alloc(&a, sizeof(*argv) * (size_t)m * 5);
		for (int i = 0; i < m; i++) {
			const char **v = argv + (size_t)i * 5;
			v[0] = "SET";
			v[1] = id_key(&a, tenant_id, ids[at + i]);
			v[2] = "1";
			v[3] = "EX";
			v[4] = ttl;
		}
		rc = hot_sync_pipeline(m, 5, argv, NULL, err);
	}
	tg_arena_release(&a);
	return rc;
}

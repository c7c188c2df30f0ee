/* ops.c — /healthz, /readyz and /metrics. */
#include <string.h>

#include "handlers.h"
#include "tollgate/api.h"
#include "tollgate/auth.h"
#include "tollgate/hot.h"
#include "tollgate/json.h"
#include "tollgate/metrics.h"
#include "tollgate/store.h"

static struct tg_http *http;

void api_set_http(struct tg_http *h)
{
	http = h;
}

int api_healthz(struct tg_req *req)
{
	tg_req_reply(req, 200, tg_json_obj("status", json_string("ok"), NULL));
	return 0;
}

int api_readyz(struct tg_req *req)
{
	struct tg_error pg_err, redis_err;
	bool pg = store_ping(&pg_err);
	bool redis = hot_ping(&redis_err);

	if (pg && redis) {
		tg_req_reply(req, 200, tg_json_obj("status", json_string("ready"), "postgres", json_string("ok"),
						    "redis", json_string("ok"), NULL));
		return 0;
	}
	tg_fail(&req->err, TG_EUNAVAIL, "not_ready", NULL, "%s%s%s unreachable", pg ? "" : "PostgreSQL",
		!pg && !redis ? " and " : "", redis ? "" : "Redis");
	tg_error_detail(&req->err, "%s %s", pg ? "" : pg_err.detail, redis ? "" : redis_err.detail);
	return req->err.err;
}

int api_metrics(struct tg_req *req)
{
	struct tg_buf b = TG_BUF_INIT;

	if (http)
		tg_http_metrics(http, &b);
	tg_metrics_render(&b);
	tg_req_reply_raw(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.buf ? b.buf : "", b.len);
	tg_buf_release(&b);
	return 0;
}

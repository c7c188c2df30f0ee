/* error.c — filling struct tg_error and the one table mapping tg_err to HTTP status and error type. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/error.h"
#include "tollgate/log.h"

static const struct {
	int status;
	const char *type;
	const char *code;
} err_map[TG_ERR_COUNT_] = {
	[0] = {200, "", ""},
	[-TG_EINVAL] = {400, "invalid_request", "invalid_request"},
	[-TG_ENOTFOUND] = {404, "invalid_request", "not_found"},
	[-TG_EMETHOD] = {405, "invalid_request", "method_not_allowed"},
	[-TG_ECONFLICT] = {409, "invalid_request", "conflict"},
	[-TG_ETOOBIG] = {413, "invalid_request", "body_too_large"},
	[-TG_EMEDIA] = {415, "invalid_request", "unsupported_media_type"},
	[-TG_EUNPROCESSABLE] = {422, "invalid_request", "unprocessable"},
	[-TG_EAUTH] = {401, "authentication", "unauthenticated"},
	[-TG_EPERM] = {403, "permission", "forbidden"},
	[-TG_ERATE] = {429, "rate_limited", "rate_limited"},
	[-TG_EQUOTA] = {429, "quota_exceeded", "quota_exceeded"},
	[-TG_EBALANCE] = {402, "insufficient_balance", "insufficient_balance"},
	[-TG_EUNAVAIL] = {503, "unavailable", "unavailable"},
	[-TG_EINTERNAL] = {500, "internal", "internal_error"},
};

static int err_index(enum tg_err err)
{
	int i = -(int)err;
	return (i > 0 && i < TG_ERR_COUNT_) ? i : -TG_EINTERNAL;
}

int tg_err_status(enum tg_err err)
{
	return err_map[err_index(err)].status;
}

const char *tg_err_type(enum tg_err err)
{
	return err_map[err_index(err)].type;
}

const char *tg_err_code(const struct tg_error *e)
{
	return e->code ? e->code : err_map[err_index(e->err)].code;
}

int tg_fail(struct tg_error *e, enum tg_err err, const char *code, const char *param, const char *fmt, ...)
{
	va_list ap;

	e->err = err;
	e->code = code;
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	e->detail[0] = '\0';
	return err;
}

void tg_error_detail(struct tg_error *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
}

void tg_error_clear(struct tg_error *e)
{
	e->err = TG_OK;
	e->code = NULL;
	e->param[0] = e->message[0] = e->detail[0] = '\0';
}

_Noreturn void tg_bug(const char *file, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tg_log_write(TG_LOG_ERROR, "bug", "%s:%d: %s", file, line, msg);
	abort();
}

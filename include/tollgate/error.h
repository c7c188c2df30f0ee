/* error.h — the one error type every fallible function fills, and its mapping to HTTP. */
#ifndef TOLLGATE_ERROR_H
#define TOLLGATE_ERROR_H

#include <stddef.h>

/*
 * Fallible functions return 0 or a negative tg_err and fill a caller-provided
 * struct tg_error. Only src/http/ turns one into a response body; the table in
 * src/util/error.c maps each tg_err to its HTTP status and API error type.
 */
enum tg_err {
	TG_OK = 0,
	TG_EINVAL = -1,       /* 400 invalid_request */
	TG_ENOTFOUND = -2,    /* 404 invalid_request */
	TG_EMETHOD = -3,      /* 405 invalid_request */
	TG_ECONFLICT = -4,    /* 409 invalid_request */
	TG_ETOOBIG = -5,      /* 413 invalid_request */
	TG_EMEDIA = -6,       /* 415 invalid_request */
	TG_EUNPROCESSABLE = -7, /* 422 invalid_request */
	TG_EAUTH = -8,        /* 401 authentication */
	TG_EPERM = -9,        /* 403 permission */
	TG_ERATE = -10,       /* 429 rate_limited */
	TG_EQUOTA = -11,      /* 429 quota_exceeded */
	TG_EBALANCE = -12,    /* 402 insufficient_balance */
	TG_EUNAVAIL = -13,    /* 503 unavailable */
	TG_EINTERNAL = -14,   /* 500 internal */
	TG_ERR_COUNT_ = 15
};

/* What a handler answers when it will complete the request later (not an error). */
#define TG_ASYNC 1

struct tg_error {
	enum tg_err err;
	const char *code;        /* static, e.g. "invalid_json"; NULL → derived from err */
	char param[128];         /* the offending field, "" when none */
	char message[256];       /* for the client: short, lower case, no full stop */
	char detail[512];        /* for the log only, never sent */
};

/* Fill e and return err. code is a static string (or NULL); param may be NULL. */
int tg_fail(struct tg_error *e, enum tg_err err, const char *code, const char *param,
	    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Add log-only detail to an error already filled. */
void tg_error_detail(struct tg_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tg_error_clear(struct tg_error *e);

int tg_err_status(enum tg_err err);       /* HTTP status */
const char *tg_err_type(enum tg_err err); /* API error type */
const char *tg_err_code(const struct tg_error *e); /* e->code or a default per err */

#define TG_BUG(...) tg_bug(__FILE__, __LINE__, __VA_ARGS__)
_Noreturn void tg_bug(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif

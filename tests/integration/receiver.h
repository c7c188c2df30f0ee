/* receiver.h — a small real HTTP server on loopback for webhook tests: a listening thread on a free
 * port that records every request (method, path, headers, body) and answers 200, or a chosen status
 * for the next N requests. Plus a Standard Webhooks signature verifier (OpenSSL).
 *
 * Each connection is served by its own thread and closed after one answer (Connection: close), so a
 * sender with many transfers in flight never waits on another one. */
#ifndef TOLLGATE_TEST_RECEIVER_H
#define TOLLGATE_TEST_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>

struct rcv_req {
	int seq;           /* 0, 1, 2... in arrival order */
	long long at_ms;   /* CLOCK_MONOTONIC ms when the request was complete */
	char method[16];
	char path[512];
	char *headers;     /* raw header block (after the request line), "Name: value\r\n" lines */
	char *body;        /* NUL-terminated; body_len bytes */
	size_t body_len;
	int answered;      /* the status code the receiver answered with */
};

struct receiver;

/* Listen on 127.0.0.1 on a free port. */
struct receiver *rcv_start(void);
void rcv_stop(struct receiver *r);
int rcv_port(const struct receiver *r);
/* "http://127.0.0.1:<port><path>" (static per receiver; path "" or e.g. "/hook"). */
const char *rcv_url(struct receiver *r, const char *path);

/* Answer `status` to the next n requests (then the default again). A 3xx answer carries
 * "Location: /redirected". */
void rcv_fail_next(struct receiver *r, int n, int status);
/* The status answered when no failure is pending (200 at start). */
void rcv_set_default(struct receiver *r, int status);
/* The body of every answer from now on (NULL: "ok" for 2xx, "no" otherwise). */
void rcv_set_body(struct receiver *r, const char *body);
/* Hold each answer for ms milliseconds (0: answer at once). */
void rcv_set_delay(struct receiver *r, int ms);

/* Requests recorded so far. */
int rcv_count(struct receiver *r);
/* A copy of request i (free with rcv_req_free); false when there is no such request. */
bool rcv_get(struct receiver *r, int i, struct rcv_req *out);
void rcv_req_free(struct rcv_req *q);
/* Wait until at least n requests were recorded or timeout_ms passed; returns the count. */
int rcv_wait(struct receiver *r, int n, int timeout_ms);
/* Forget every recorded request (numbering restarts at 0). */
void rcv_clear(struct receiver *r);

/* A header's value in a recorded request (case-insensitive name) copied into buf; NULL when absent. */
const char *rcv_header(const struct rcv_req *q, const char *name, char *buf, size_t size);

/* Standard Webhooks: is `sig_header` ("v1,<b64> v1,<b64>...") carrying a valid signature of
 * "<id>.<ts>.<body>" under secret "whsec_<base64 key>"? Returns how many of its signatures are valid
 * (0: none), or -1 when the secret is malformed. */
int sw_verify(const char *secret, const char *id, const char *ts, const char *body, size_t len,
	      const char *sig_header);
/* The "v1,<base64>" signature of a message under a secret; 0 on success. */
int sw_sign(const char *secret, const char *id, const char *ts, const char *body, size_t len, char *out,
	    size_t size);

#endif

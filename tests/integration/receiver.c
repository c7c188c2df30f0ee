/* receiver.c — a loopback HTTP receiver for webhook tests, and a Standard Webhooks verifier (see receiver.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "receiver.h"

#define MAX_REQUEST (4 * 1024 * 1024)

struct receiver {
	int fd;
	int port;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rcv_req *reqs;
	int n, cap;
	int fail_n, fail_status, default_status, delay_ms;
	char body[1024]; /* the answer's body; "" → "ok" or "no" */
	int active; /* connection threads still running */
	atomic_bool stopping;
	char url[600];
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static bool send_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		len -= (size_t)w;
	}
	return true;
}

/* The value of a header in a raw block, or NULL (copied into buf). */
static const char *header_in(const char *block, const char *name, char *buf, size_t size)
{
	size_t n = strlen(name);
	const char *p = block;

	while (p && *p) {
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			eol = p + strlen(p);
		if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			const char *e = eol;
			while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			size_t len = (size_t)(e - v);
			if (len >= size)
				len = size - 1;
			memcpy(buf, v, len);
			buf[len] = '\0';
			return buf;
		}
		p = *eol ? eol + 2 : eol;
	}
	return NULL;
}

const char *rcv_header(const struct rcv_req *q, const char *name, char *buf, size_t size)
{
	return header_in(q->headers, name, buf, size);
}

/* Decode a chunked body in place; returns its length or -1 when it is not complete yet. */
static long dechunk(const char *in, size_t len, char *out)
{
	size_t i = 0, o = 0;

	for (;;) {
		const char *eol = memmem(in + i, len - i, "\r\n", 2);
		if (!eol)
			return -1;
		unsigned long sz = strtoul(in + i, NULL, 16);
		i = (size_t)(eol - in) + 2;
		if (sz == 0)
			return memmem(in + i, len - i, "\r\n", 2) ? (long)o : -1; /* trailers end with an empty line */
		if (i + sz + 2 > len)
			return -1;
		memcpy(out + o, in + i, sz);
		o += sz;
		i += sz + 2;
	}
}

struct conn {
	struct receiver *r;
	int fd;
};

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct receiver *r = c->r;
	struct timeval tv = {5, 0};
	char *buf = malloc(MAX_REQUEST + 1), hv[64];
	size_t len = 0, head_len = 0;
	long body_len = -1;
	bool chunked = false, continued = false;

	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		if (len >= MAX_REQUEST)
			goto done;
		ssize_t got = recv(c->fd, buf + len, MAX_REQUEST - len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			goto done;
		len += (size_t)got;
		buf[len] = '\0';
		if (!head_len) {
			char *end = strstr(buf, "\r\n\r\n");
			if (!end)
				continue;
			head_len = (size_t)(end - buf) + 4;
			buf[head_len - 2] = '\0'; /* header block ends with its last CRLF */
			if (header_in(buf, "Transfer-Encoding", hv, sizeof(hv)) && strcasestr(hv, "chunked"))
				chunked = true;
			else if (header_in(buf, "Content-Length", hv, sizeof(hv)))
				body_len = atol(hv);
			else
				body_len = 0;
			if (!continued && header_in(buf, "Expect", hv, sizeof(hv)) && !strcasecmp(hv, "100-continue")) {
				continued = true;
				send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
			}
		}
		if (chunked) {
			char *tmp = malloc(len - head_len + 1);
			long n = dechunk(buf + head_len, len - head_len, tmp);
			if (n >= 0) {
				memcpy(buf + head_len, tmp, (size_t)n);
				len = head_len + (size_t)n;
				free(tmp);
				break;
			}
			free(tmp);
		} else if (len - head_len >= (size_t)body_len) {
			len = head_len + (size_t)body_len;
			break;
		}
	}
	buf[len] = '\0';

	struct rcv_req q = {0};
	char *sp1 = strchr(buf, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL, *line_end = strstr(buf, "\r\n");
	if (!sp1 || !sp2 || !line_end || sp2 > line_end)
		goto done;
	snprintf(q.method, sizeof(q.method), "%.*s", (int)(sp1 - buf), buf);
	snprintf(q.path, sizeof(q.path), "%.*s", (int)(sp2 - sp1 - 1), sp1 + 1);
	q.headers = strdup(line_end + 2);
	q.body_len = len - head_len;
	q.body = malloc(q.body_len + 1);
	memcpy(q.body, buf + head_len, q.body_len);
	q.body[q.body_len] = '\0';
	q.at_ms = now_ms();

	int delay;
	pthread_mutex_lock(&r->mu);
	if (r->fail_n > 0) {
		q.answered = r->fail_status;
		r->fail_n--;
	} else {
		q.answered = r->default_status;
	}
	delay = r->delay_ms;
	char text[sizeof(r->body)];
	snprintf(text, sizeof(text), "%s", r->body[0] ? r->body : q.answered >= 200 && q.answered < 300 ? "ok" : "no");
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->reqs = realloc(r->reqs, sizeof(*r->reqs) * (size_t)r->cap);
	}
	q.seq = r->n;
	r->reqs[r->n++] = q;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);

	if (delay > 0)
		nap(delay);
	char resp[256 + sizeof(text)];
	int n = snprintf(resp, sizeof(resp),
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n%s",
			 q.answered, q.answered >= 200 && q.answered < 300 ? "OK" : "Error", strlen(text),
			 q.answered >= 300 && q.answered < 400 ? "Location: /redirected\r\n" : "", text);
	send_all(c->fd, resp, (size_t)n);
done:
	free(buf);
	shutdown(c->fd, SHUT_WR);
	close(c->fd);
	pthread_mutex_lock(&r->mu);
	r->active--;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	free(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct receiver *r = arg;

	while (!atomic_load(&r->stopping)) {
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		int fd = accept(r->fd, NULL, NULL);
		if (fd < 0)
			continue;
		struct conn *c = malloc(sizeof(*c));
		pthread_t t;
		c->r = r;
		c->fd = fd;
		pthread_mutex_lock(&r->mu);
		r->active++;
		pthread_mutex_unlock(&r->mu);
		if (pthread_create(&t, NULL, conn_main, c) != 0) {
			close(fd);
			free(c);
			pthread_mutex_lock(&r->mu);
			r->active--;
			pthread_mutex_unlock(&r->mu);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

struct receiver *rcv_start(void)
{
	struct receiver *r = calloc(1, sizeof(*r));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int one = 1;

	r->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (r->fd < 0)
		goto fail;
	setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(r->fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(r->fd, 512) < 0 ||
	    getsockname(r->fd, (struct sockaddr *)&a, &alen) < 0)
		goto fail;
	r->port = ntohs(a.sin_port);
	r->default_status = 200;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	atomic_store(&r->stopping, false);
	if (pthread_create(&r->thread, NULL, accept_main, r) != 0)
		goto fail;
	return r;
fail:
	if (r->fd >= 0)
		close(r->fd);
	free(r);
	return NULL;
}

void rcv_stop(struct receiver *r)
{
	if (!r)
		return;
	atomic_store(&r->stopping, true);
	pthread_join(r->thread, NULL);
	close(r->fd);
	pthread_mutex_lock(&r->mu);
	r->delay_ms = 0;
	while (r->active > 0) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		pthread_cond_timedwait(&r->cv, &r->mu, &until);
	}
	pthread_mutex_unlock(&r->mu);
	for (int i = 0; i < r->n; i++)
		rcv_req_free(&r->reqs[i]);
	free(r->reqs);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
}

int rcv_port(const struct receiver *r)
{
	return r->port;
}

const char *rcv_url(struct receiver *r, const char *path)
{
	snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d%s", r->port, path ? path : "");
	return r->url;
}

void rcv_fail_next(struct receiver *r, int n, int status)
{
	pthread_mutex_lock(&r->mu);
	r->fail_n = n;
	r->fail_status = status;
	pthread_mutex_unlock(&r->mu);
}

void rcv_set_default(struct receiver *r, int status)
{
	pthread_mutex_lock(&r->mu);
	r->default_status = status;
	pthread_mutex_unlock(&r->mu);
}

void rcv_set_body(struct receiver *r, const char *body)
{
	pthread_mutex_lock(&r->mu);
	snprintf(r->body, sizeof(r->body), "%s", body ? body : "");
	pthread_mutex_unlock(&r->mu);
}

void rcv_set_delay(struct receiver *r, int ms)
{
	pthread_mutex_lock(&r->mu);
	r->delay_ms = ms;
	pthread_mutex_unlock(&r->mu);
}

int rcv_count(struct receiver *r)
{
	pthread_mutex_lock(&r->mu);
	int n = r->n;
	pthread_mutex_unlock(&r->mu);
	return n;
}

bool rcv_get(struct receiver *r, int i, struct rcv_req *out)
{
	bool ok = false;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&r->mu);
	if (i >= 0 && i < r->n) {
		*out = r->reqs[i];
		out->headers = strdup(r->reqs[i].headers);
		out->body = malloc(r->reqs[i].body_len + 1);
		memcpy(out->body, r->reqs[i].body, r->reqs[i].body_len + 1);
		ok = true;
	}
	pthread_mutex_unlock(&r->mu);
	return ok;
}

void rcv_req_free(struct rcv_req *q)
{
	free(q->headers);
	free(q->body);
	q->headers = q->body = NULL;
}

int rcv_wait(struct receiver *r, int n, int timeout_ms)
{
	long long until = now_ms() + timeout_ms;
	int have;

	pthread_mutex_lock(&r->mu);
	while (r->n < n && now_ms() < until) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
	}
	have = r->n;
	pthread_mutex_unlock(&r->mu);
	return have;
}

void rcv_clear(struct receiver *r)
{
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->n; i++)
		rcv_req_free(&r->reqs[i]);
	r->n = 0;
	pthread_mutex_unlock(&r->mu);
}

/* ---- Standard Webhooks ---- */

/* Strict base64 decode; returns the length or -1. */
static int b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	if (len == 0 || len % 4 != 0 || len / 4 * 3 > cap)
		return -1;
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0)
		return -1;
	if (in[len - 1] == '=')
		n--;
	if (len >= 2 && in[len - 2] == '=')
		n--;
	return n;
}

static int mac_of(const char *secret, const char *id, const char *ts, const char *body, size_t len,
		  unsigned char mac[32])
{
	unsigned char key[256];
	unsigned int maclen = 0;

	if (strncmp(secret, "whsec_", 6) != 0)
		return -1;
	int klen = b64_decode(secret + 6, strlen(secret + 6), key, sizeof(key));
	if (klen <= 0)
		return -1;
	size_t idl = strlen(id), tsl = strlen(ts), mlen = idl + 1 + tsl + 1 + len;
	unsigned char *msg = malloc(mlen);
	memcpy(msg, id, idl);
	msg[idl] = '.';
	memcpy(msg + idl + 1, ts, tsl);
	msg[idl + 1 + tsl] = '.';
	memcpy(msg + idl + tsl + 2, body, len);
	unsigned char *ok = HMAC(EVP_sha256(), key, klen, msg, mlen, mac, &maclen);
	free(msg);
	return ok && maclen == 32 ? 0 : -1;
}

int sw_sign(const char *secret, const char *id, const char *ts, const char *body, size_t len, char *out,
	    size_t size)
{
	unsigned char mac[32];
	char b64[64];

	if (mac_of(secret, id, ts, body, len, mac) < 0)
		return -1;
	EVP_EncodeBlock((unsigned char *)b64, mac, 32);
	snprintf(out, size, "v1,%s", b64);
	return 0;
}

int sw_verify(const char *secret, const char *id, const char *ts, const char *body, size_t len,
	      const char *sig_header)
{
	unsigned char mac[32], got[64];
	int valid = 0;

	if (mac_of(secret, id, ts, body, len, mac) < 0)
		return -1;
	if (!sig_header)
		return 0;
	char *copy = strdup(sig_header), *save = NULL;
	for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (strncmp(tok, "v1,", 3) != 0)
			continue;
		int n = b64_decode(tok + 3, strlen(tok + 3), got, sizeof(got));
		if (n == 32 && CRYPTO_memcmp(got, mac, 32) == 0)
			valid++;
	}
	free(copy);
	return valid;
}

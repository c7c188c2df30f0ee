/* ceiling.c — the HTTP ceiling for scripts/bench.
 *
 * A minimal libmicrohttpd server with one internal epoll thread and default
 * options: it accumulates a request body, parses it with jansson and answers
 * a fixed small JSON object. Whatever Tollgate's HTTP layer costs on top of
 * this is what scripts/bench reports as "ratio to the ceiling".
 *
 *   ceiling PORT        (listens on 127.0.0.1:PORT until SIGINT/SIGTERM)
 *
 * Build: gcc -O2 -o ceiling bench/ceiling.c $(pkg-config --cflags --libs libmicrohttpd jansson)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX (1024 * 1024) /* the same cap as tollgated */

static const char ok_body[] = "{\"allowed\":true}";
static const char bad_body[] = "{\"error\":{\"type\":\"invalid_request\",\"code\":\"invalid_json\"}}";
static const char big_body[] = "{\"error\":{\"type\":\"invalid_request\",\"code\":\"body_too_large\"}}";

static struct MHD_Response *ok_resp, *bad_resp, *big_resp;

struct body {
	char *data;
	size_t len, cap;
	int too_big;
};

static struct MHD_Response *fixed(const char *text, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_PERSISTENT);

	if (!r || MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES) {
		fprintf(stderr, "ceiling: cannot create a response\n");
		exit(1);
	}
	return r;
}

static int append(struct body *b, const char *data, size_t len)
{
	if (b->too_big || b->len + len > BODY_MAX) {
		b->too_big = 1;
		return 0;
	}
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 512;
		while (cap < b->len + len)
			cap *= 2;
		char *p = realloc(b->data, cap);
		if (!p)
			return -1;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct body *b = *con_cls;
	struct MHD_Response *resp = ok_resp;
	unsigned status = MHD_HTTP_OK;

	(void)cls;
	(void)url;
	(void)version;
	if (!b) { /* first call: headers only */
		b = calloc(1, sizeof(*b));
		if (!b)
			return MHD_NO;
		*con_cls = b;
		return MHD_YES;
	}
	if (*upload_data_size) { /* a chunk of the body */
		if (append(b, upload_data, *upload_data_size) < 0)
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	/* the whole request has arrived */
	if (b->too_big) {
		resp = big_resp;
		status = MHD_HTTP_CONTENT_TOO_LARGE;
	} else if (strcmp(method, MHD_HTTP_METHOD_POST) == 0) {
		json_error_t jerr;
		json_t *doc = json_loadb(b->data ? b->data : "", b->len, 0, &jerr);
		if (doc) {
			json_decref(doc);
		} else {
			resp = bad_resp;
			status = MHD_HTTP_BAD_REQUEST;
		}
	}
	return MHD_queue_response(conn, status, resp);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct body *b = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (b) {
		free(b->data);
		free(b);
		*con_cls = NULL;
	}
}

int main(int argc, char **argv)
{
	char *end;
	long port;
	struct sockaddr_in addr;
	struct MHD_Daemon *d;
	sigset_t sigs;
	int sig;

	if (argc != 2 || (errno = 0, port = strtol(argv[1], &end, 10), errno || *end || port < 1 || port > 65535)) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by MHD's thread */
	signal(SIGPIPE, SIG_IGN);

	ok_resp = fixed(ok_body, sizeof(ok_body) - 1);
	bad_resp = fixed(bad_body, sizeof(bad_body) - 1);
	big_resp = fixed(big_body, sizeof(big_body) - 1);

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = MHD_start_daemon(MHD_USE_EPOLL_INTERNALLY | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL, handle, NULL,
			     MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED,
			     completed, NULL, MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "ceiling: cannot listen on 127.0.0.1:%ld\n", port);
		return 1;
	}
	fprintf(stderr, "ceiling: listening on 127.0.0.1:%ld (libmicrohttpd %s, one internal epoll thread)\n", port,
		MHD_get_version());
	sigwait(&sigs, &sig);
	MHD_stop_daemon(d);
	MHD_destroy_response(ok_resp);
	MHD_destroy_response(bad_resp);
	MHD_destroy_response(big_resp);
	return 0;
}

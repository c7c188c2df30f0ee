/* webhooks.c — delivering the outbox: Standard Webhooks signatures, libcurl multi, retries (see worker.h). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "tollgate/config.h"
#include "tollgate/crypto.h"
#include "tollgate/json.h"
#include "tollgate/log.h"
#include "tollgate/metrics.h"
#include "tollgate/store.h"
#include "tollgate/util.h"
#include "tollgate/worker.h"

#define IN_FLIGHT 64
#define LEASE_MS 60000
#define GIVE_UP_MS (INT64_C(3) * 86400 * 1000)
#define MAX_DELAY_MS (INT64_C(6) * 3600 * 1000)
#define SNIPPET 256

/* ---- SSRF rules ---- */

/* A block of addresses: its first 32 bits (all of an IPv4 address) and its prefix length, 1 to 32. */
struct block {
	uint32_t net;
	int bits;
};

/* The IANA special-purpose registries (RFC 6890 and later): every block whose addresses are not
 * globally reachable, plus the documentation, benchmarking and deprecated ones no webhook receiver
 * can be on. A block with a few anycast addresses inside (192.0.0.0/24, 2001::/23) is refused whole. */
static const struct block v4_special[] = {
	{0x00000000, 8},  /* 0.0.0.0/8, "this network" */
	{0x0a000000, 8},  /* 10.0.0.0/8, private */
	{0x64400000, 10}, /* 100.64.0.0/10, shared address space (carrier-grade NAT) */
	{0x7f000000, 8},  /* 127.0.0.0/8, loopback */
	{0xa9fe0000, 16}, /* 169.254.0.0/16, link-local (cloud metadata services) */
	{0xac100000, 12}, /* 172.16.0.0/12, private */
	{0xc0000000, 24}, /* 192.0.0.0/24, IETF protocol assignments */
	{0xc0000200, 24}, /* 192.0.2.0/24, documentation (TEST-NET-1) */
	{0xc0586300, 24}, /* 192.88.99.0/24, deprecated 6to4 relay anycast */
	{0xc0a80000, 16}, /* 192.168.0.0/16, private */
	{0xc6120000, 15}, /* 198.18.0.0/15, benchmarking */
	{0xc6336400, 24}, /* 198.51.100.0/24, documentation (TEST-NET-2) */
	{0xcb007100, 24}, /* 203.0.113.0/24, documentation (TEST-NET-3) */
	{0xe0000000, 4},  /* 224.0.0.0/4, multicast */
	{0xf0000000, 4},  /* 240.0.0.0/4, reserved, and 255.255.255.255, broadcast */
};

/* Special-purpose blocks inside 2000::/3, the only IPv6 space that is global unicast: everything
 * outside it (::1, fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64, 5f00::/16, 64:ff9b:1::/48 and
 * the unassigned rest) is refused before this table is read. All are at most 32 bits long. */
static const struct block v6_special[] = {
	{0x20010000, 23}, /* 2001::/23, IETF protocol assignments (Teredo 2001::/32 among them) */
	{0x20010db8, 32}, /* 2001:db8::/32, documentation */
	{0x3fff0000, 20}, /* 3fff::/20, documentation */
};

static bool in_blocks(uint32_t a, const struct block *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a >> (32 - t[i].bits) == t[i].net >> (32 - t[i].bits))
			return true;
	return false;
}

static bool v4_forbidden(uint32_t a)
{
	return in_blocks(a, v4_special, sizeof(v4_special) / sizeof(*v4_special));
}

static uint32_t v4_at(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static bool v6_forbidden(const unsigned char *b)
{
	return (b[0] & 0xe0) != 0x20 || in_blocks(v4_at(b), v6_special, sizeof(v6_special) / sizeof(*v6_special));
}

static bool addr_forbidden(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return v4_forbidden(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
	if (sa->sa_family == AF_INET6) {
		const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const unsigned char translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
		static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
		/* an IPv4 address inside an IPv6 one: mapped (::ffff:a.b.c.d), translated (::ffff:0:a.b.c.d),
		 * NAT64 (64:ff9b::a.b.c.d, which a NAT64 gateway connects to) and 6to4 (2002:a.b.c.d::) are
		 * judged by the IPv4 rules; compatible (::a.b.c.d, deprecated) is refused, being outside 2000::/3 */
		if (!memcmp(b, mapped, 12) || !memcmp(b, translated, 12) || !memcmp(b, nat64, 12))
			return v4_forbidden(v4_at(b + 12));
		if (b[0] == 0x20 && b[1] == 0x02)
			return v4_forbidden(v4_at(b + 2));
		return v6_forbidden(b);
	}
	return true;
}

/* libcurl mends "http:/x" and "http:///x" into host "x", but to RFC 3986 neither has an authority: the
 * host must follow "scheme://" in the URL as written (curl itself refuses an empty one, "http://:80/"). */
static bool host_follows_slashes(const char *url)
{
	const char *colon = strchr(url, ':');

	return colon && colon[1] == '/' && colon[2] == '/' && colon[3] != '/' && colon[3] != '\\';
}

int webhook_url_check(const char *url, bool allow_private, struct tg_error *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int rc = 0;

	if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		rc = tg_fail(err, TG_EINVAL, "invalid_url", "url", "'url' must be an absolute http(s) URL");
		goto out;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		rc = tg_fail(err, TG_EINVAL, "invalid_url", "url", "'url' must use http or https");
		goto out;
	}
	if (!host_follows_slashes(url)) { /* in both modes: which host such a URL means is curl's guess */
		rc = tg_fail(err, TG_EINVAL, "invalid_url", "url", "'url' must name its host after '//' (http://host/path)");
		goto out;
	}
	if (allow_private)
		goto out;
	{
		char h[256];
		size_t n = strlen(host);
		/* curl keeps IPv6 literals in brackets */
		if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(h)) {
			memcpy(h, host + 1, n - 2);
			h[n - 2] = '\0';
		} else {
			snprintf(h, sizeof(h), "%s", host);
		}
		if (getaddrinfo(h, NULL, &hints, &ai) != 0) {
			rc = tg_fail(err, TG_EINVAL, "invalid_url", "url", "the host of 'url' does not resolve");
			goto out;
		}
	}
	for (struct addrinfo *p = ai; p; p = p->ai_next)
		if (addr_forbidden(p->ai_addr)) {
			rc = tg_fail(err, TG_EINVAL, "url_not_allowed", "url",
				     "'url' resolves to a loopback, private, link-local, multicast or other special-purpose address");
			break;
		}
out:
	if (ai)
		freeaddrinfo(ai);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return rc;
}

/* libcurl asks us for each socket: the address it is about to connect to is checked again here, so
 * DNS that changed since the endpoint was created cannot point a delivery inward. */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	(void)arg;
	if (purpose != CURLSOCKTYPE_IPCXN || (!tg_cfg.webhook_allow_private && addr_forbidden(&a->addr)))
		return CURL_SOCKET_BAD;
	return socket(a->family, a->socktype, a->protocol);
}

/* ---- signing ---- */

int webhook_sign(const char *secret, const char *id, int64_t ts, const char *body, size_t len, char *out, size_t size)
{
	unsigned char key[128], mac[32];
	char b64[64];
	long klen;
	struct tg_buf msg = TG_BUF_INIT;

	if (strncmp(secret, "whsec_", 6) != 0 || strlen(secret + 6) > 160)
		return -1;
	klen = tg_base64_decode(secret + 6, strlen(secret + 6), key);
	if (klen <= 0)
		return -1;
	tg_buf_addf(&msg, "%s.%lld.", id, (long long)ts);
	tg_buf_add(&msg, body, len);
	tg_hmac_sha256(key, (size_t)klen, msg.buf, msg.len, mac);
	tg_buf_release(&msg);
	tg_base64_encode(mac, sizeof(mac), b64);
	snprintf(out, size, "v1,%s", b64);
	return 0;
}

/* ---- delivery ---- */

struct transfer {
	CURL *h;
	struct curl_slist *headers;
	char *id;                 /* the delivery */
	int attempt;
	int64_t created_ms, started_ms, started_us;
	char *payload;
	struct tg_buf response;
	bool orphan; /* its endpoint was deleted after the delivery was made: failed, not retried */
};

static struct {
	pthread_t *threads;
	int n;
	_Atomic bool stopping;
	struct tg_metric *sent, *failed, *retried, *pending, *dead;
} D;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct transfer *t = arg;
	size_t add = size * n;

	if (t->response.len < SNIPPET)
		tg_buf_add(&t->response, p, add < SNIPPET - t->response.len ? add : SNIPPET - t->response.len);
	return add;
}

static int64_t backoff_ms(int attempt)
{
	int64_t d = tg_cfg.webhook_backoff_base_ms;

	for (int i = 1; i < attempt && d < MAX_DELAY_MS; i++)
		d *= 2;
	if (d > MAX_DELAY_MS)
		d = MAX_DELAY_MS;
	/* ±20% jitter, so retries of a burst do not arrive together */
	return d * 8 / 10 + (int64_t)(tg_random_u64() % (uint64_t)(d * 4 / 10 + 1));
}

/*
 * Easy handles are kept for the next transfers of this thread (curl_easy_reset clears their options and
 * keeps their buffers): a new handle per delivery cost a 16 KiB download buffer, a 64 KiB upload buffer
 * and their setup, which perf showed as most of this thread's time (malloc) at 500 deliveries a second.
 */
static _Thread_local CURL *spare_handles[IN_FLIGHT];
static _Thread_local int nspare_handles;

static CURL *handle_get(void)
{
	if (nspare_handles == 0)
		return curl_easy_init();
	CURL *h = spare_handles[--nspare_handles];
	curl_easy_reset(h);
	return h;
}

static void handle_put(CURL *h)
{
	if (nspare_handles < IN_FLIGHT)
		spare_handles[nspare_handles++] = h;
	else
		curl_easy_cleanup(h);
}

static void handles_release(void)
{
	while (nspare_handles > 0)
		curl_easy_cleanup(spare_handles[--nspare_handles]);
}

static struct transfer *start(CURLM *multi, const json_t *row)
{
	struct transfer *t = tg_calloc(1, sizeof(*t));
	const char *url = store_str(row, "url"), *secret = store_str(row, "secret");
	const char *prev = store_str(row, "previous_secret"), *payload = store_str(row, "payload");
	char hdr[512], sig[128], sig2[128], evid[TG_SID_BUFSZ + 8] = "";
	int64_t ts = tg_now_ms() / 1000;
	struct tg_error err;
	json_t *p;

	t->id = tg_strdup(store_str(row, "id"));
	t->orphan = url == NULL; /* curl refuses the empty URL at once: no request goes out */
	t->attempt = (int)store_int(row, "attempt", 1);
	t->created_ms = store_int(row, "created_ms", 0);
	t->payload = tg_strdup(payload ? payload : "{}");
	p = tg_json_parse(t->payload, strlen(t->payload), false, &err);
	if (p && json_is_string(json_object_get(p, "id")))
		snprintf(evid, sizeof(evid), "%s", json_string_value(json_object_get(p, "id")));
	json_decref(p);
	t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
	t->headers = curl_slist_append(t->headers, "User-Agent: Tollgate-Webhooks/" TOLLGATE_VERSION);
	snprintf(hdr, sizeof(hdr), "webhook-id: %s", evid);
	t->headers = curl_slist_append(t->headers, hdr);
	snprintf(hdr, sizeof(hdr), "webhook-timestamp: %lld", (long long)ts);
	t->headers = curl_slist_append(t->headers, hdr);
	if (!secret || webhook_sign(secret, evid, ts, t->payload, strlen(t->payload), sig, sizeof(sig)) < 0)
		sig[0] = '\0';
	/* during a rotation both signatures go out, space-separated: receivers accept either */
	if (prev && webhook_sign(prev, evid, ts, t->payload, strlen(t->payload), sig2, sizeof(sig2)) == 0)
		snprintf(hdr, sizeof(hdr), "webhook-signature: %s %s", sig, sig2);
	else
		snprintf(hdr, sizeof(hdr), "webhook-signature: %s", sig);
	t->headers = curl_slist_append(t->headers, hdr);
	snprintf(hdr, sizeof(hdr), "Tollgate-Delivery-Attempt: %d", t->attempt);
	t->headers = curl_slist_append(t->headers, hdr);
	t->headers = curl_slist_append(t->headers, "Expect:");

	t->h = handle_get();
	curl_easy_setopt(t->h, CURLOPT_URL, url ? url : "");
	curl_easy_setopt(t->h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->h, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(t->h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(t->h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(t->h, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(t->h, CURLOPT_POSTFIELDS, t->payload);
	curl_easy_setopt(t->h, CURLOPT_POSTFIELDSIZE, (long)strlen(t->payload));
	curl_easy_setopt(t->h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(t->h, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	/* never through a proxy from the environment (http_proxy, https_proxy, all_proxy): open_socket would
	 * check the proxy's address, not the endpoint's, and the proxy would connect anywhere. Set, these
	 * also spare libcurl reading the environment for every transfer. */
	curl_easy_setopt(t->h, CURLOPT_PROXY, "");
	curl_easy_setopt(t->h, CURLOPT_NOPROXY, "");
	curl_easy_setopt(t->h, CURLOPT_PRIVATE, t);
	t->started_ms = tg_now_ms();
	t->started_us = tg_mono_us();
	curl_multi_add_handle(multi, t->h);
	return t;
}

/* The outcome of a finished transfer, into a (whose strings point into t and buf). */
static void outcome_of(struct transfer *t, CURLcode res, char *error, size_t size, struct tg_buf *text,
		       struct store_attempt *a)
{
	long status = 0;

	curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &status);
	error[0] = '\0';
	if (res != CURLE_OK)
		snprintf(error, size, "%s", res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST
						    ? (tg_cfg.webhook_allow_private ? curl_easy_strerror(res)
										    : "connection refused or address not allowed")
						    : curl_easy_strerror(res));
	else if (status < 200 || status > 299)
		snprintf(error, size, "HTTP %ld", status);
	/* the snippet is cut at SNIPPET bytes and the body may be anything: store valid UTF-8 */
	tg_buf_add_utf8(text, t->response.buf ? t->response.buf : "", t->response.len);
	*a = (struct store_attempt){.id = t->id, .attempt = t->attempt, .status_code = (int)status,
				    .latency_ms = (int)((tg_mono_us() - t->started_us) / 1000), .started_ms = t->started_ms,
				    .error = error[0] ? error : NULL, .response = text->buf ? text->buf : ""};
	if (t->orphan) {
		snprintf(error, size, "its endpoint was deleted");
		a->error = error;
		a->outcome = "failed";
		tg_metric_add(D.failed, 1);
	} else if (res == CURLE_OK && status >= 200 && status <= 299) {
		a->outcome = "succeeded";
		tg_metric_add(D.sent, 1);
	} else if (tg_now_ms() + backoff_ms(t->attempt) > t->created_ms + GIVE_UP_MS) {
		a->outcome = "failed";
		tg_metric_add(D.failed, 1);
	} else {
		a->outcome = "pending";
		a->next_ms = tg_now_ms() + backoff_ms(t->attempt);
		tg_metric_add(D.retried, 1);
	}
}

static void transfer_free(CURLM *multi, struct transfer *t)
{
	curl_multi_remove_handle(multi, t->h);
	handle_put(t->h);
	curl_slist_free_all(t->headers);
	tg_buf_release(&t->response);
	free(t->payload);
	free(t->id);
	free(t);
}

/* Record the transfers that finished in one wake-up together: one statement, one commit. A batch
 * that fails is tried row by row, so one bad row cannot hold back the others; an attempt that is not
 * recorded is sent again when its lease runs out. */
static void finish_all(CURLM *multi, struct transfer **done, CURLcode *res, int n)
{
	struct store_attempt a[IN_FLIGHT];
	char error[IN_FLIGHT][256];
	struct tg_buf text[IN_FLIGHT];
	struct tg_error err;

	for (int i = 0; i < n; i++) {
		text[i] = (struct tg_buf)TG_BUF_INIT;
		outcome_of(done[i], res[i], error[i], sizeof(error[i]), &text[i], &a[i]);
	}
	if (store_delivery_attempts(a, n, &err) < 0) {
		for (int i = 0; i < n; i++)
			if (n == 1 || store_delivery_attempts(&a[i], 1, &err) < 0)
				log_warn("webhook attempt not recorded; it will be retried after its lease", "%s: %s",
					 a[i].id, err.detail);
	}
	for (int i = 0; i < n; i++) {
		tg_buf_release(&text[i]);
		transfer_free(multi, done[i]);
	}
}

static void *webhooks_main(void *arg)
{
	CURLM *multi = curl_multi_init();
	int running = 0, in_flight = 0;
	int64_t last_depth = 0, last_claim = 0;
	bool more = false; /* the last claim was full: more deliveries may be due already */

	(void)arg;
	pthread_setname_np(pthread_self(), "webhooks");
	while (!atomic_load(&D.stopping) || in_flight > 0) {
		/* claim when there is room, every 100 ms or at once while the queue keeps up full claims:
		 * not on every wake for socket activity (that would be a query per transfer event) */
		if (!atomic_load(&D.stopping) && in_flight < IN_FLIGHT &&
		    (more || tg_mono_us() - last_claim >= 100000)) {
			json_t *rows = NULL, *row;
			struct tg_error err;
			size_t i;
			int want = IN_FLIGHT - in_flight;
			last_claim = tg_mono_us();
			more = false;
			if (store_deliveries_claim(want, LEASE_MS, &rows, &err) < 0) {
				log_warn("webhook claim failed", "%s", err.detail);
			} else {
				more = (int)json_array_size(rows) == want;
				json_array_foreach(rows, i, row) {
					start(multi, row);
					in_flight++;
				}
			}
			json_decref(rows);
		}
		curl_multi_perform(multi, &running);
		CURLMsg *m;
		struct transfer *done[IN_FLIGHT];
		CURLcode res[IN_FLIGHT];
		int left, ndone = 0;
		while (ndone < IN_FLIGHT && (m = curl_multi_info_read(multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&done[ndone]);
			res[ndone++] = m->data.result;
		}
		if (ndone > 0) {
			finish_all(multi, done, res, ndone);
			in_flight -= ndone;
		}
		if (tg_mono_us() - last_depth > 5000000) {
			int64_t pending, failed;
			struct tg_error err;
			if (store_webhook_queue_depth(&pending, &failed, &err) == 0) {
				tg_metric_set(D.pending, pending);
				tg_metric_set(D.dead, failed);
			}
			last_depth = tg_mono_us();
		}
		/* wake for socket activity, or every 100 ms to look for newly due deliveries */
		curl_multi_poll(multi, NULL, 0, in_flight ? 20 : 100, NULL); /* waits even with no transfer (curl_multi_wait would return at once) */
	}
	curl_multi_cleanup(multi);
	handles_release();
	store_thread_end();
	return NULL;
}

int webhooks_start(int threads)
{
	D.sent = tg_counter("tollgate_webhook_deliveries_total", "Webhook attempts by outcome.", "outcome=\"succeeded\"");
	D.retried = tg_counter("tollgate_webhook_deliveries_total", "Webhook attempts by outcome.", "outcome=\"retry\"");
	D.failed = tg_counter("tollgate_webhook_deliveries_total", "Webhook attempts by outcome.", "outcome=\"failed\"");
	D.pending = tg_gauge("tollgate_webhook_queue_depth", "Webhook deliveries waiting to be sent.", "");
	D.dead = tg_gauge("tollgate_webhook_failed_deliveries", "Webhook deliveries that gave up after 3 days.", "");
	atomic_store(&D.stopping, false);
	D.n = threads;
	D.threads = tg_calloc((size_t)(threads + 1), sizeof(pthread_t));
	for (int i = 0; i < threads; i++)
		if (pthread_create(&D.threads[i], NULL, webhooks_main, NULL) != 0)
			return -1;
	return 0;
}

void webhooks_stop(void)
{
	atomic_store(&D.stopping, true);
	for (int i = 0; i < D.n; i++)
		pthread_join(D.threads[i], NULL);
	free(D.threads);
	D.threads = NULL;
	D.n = 0;
}

/* Unit tests for webhook_url_check (src/worker/webhooks.c): SSRF rules at the edges of each special-purpose block. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/error.h"
#include "tollgate/worker.h"
#include "unit.h"

/* Address literals only: getaddrinfo parses them without DNS. */
static const char *const refused[] = {
	/* IPv4: the first and last address of each block */
	"0.0.0.0", "0.255.255.255", "10.0.0.0", "10.255.255.255", "100.64.0.0", "100.127.255.255", "127.0.0.1",
	"127.255.255.255", "169.254.0.0", "169.254.255.255", "172.16.0.0", "172.31.255.255", "192.0.0.0",
	"192.0.0.255", "192.0.2.0", "192.0.2.255", "192.88.99.0", "192.88.99.255", "192.168.0.0", "192.168.255.255",
	"198.18.0.0", "198.19.255.255", "198.51.100.0", "198.51.100.255", "203.0.113.0", "203.0.113.255",
	"224.0.0.0", "239.255.255.255", "240.0.0.0", "255.255.255.255",
	/* IPv6 outside 2000::/3: unspecified, loopback, IPv4-compatible, discard-only, local-use NAT64,
	 * SRv6 SIDs, unique local, link-local, site-local, multicast */
	"[::]", "[::1]", "[::8.8.8.8]", "[100::]", "[100::ffff:ffff:ffff:ffff]", "[64:ff9b:1::]",
	"[64:ff9b:1:ffff:ffff:ffff:ffff:ffff]", "[64:ff9b:1::8.8.8.8]", "[5f00::]", "[5f00:ffff::1]", "[fc00::]",
	"[fdff:ffff::1]", "[fe80::1]", "[febf::1]", "[fec0::]", "[feff:ffff::1]", "[ff02::1]",
	/* IPv6 special blocks inside 2000::/3: IETF protocol assignments (Teredo first), documentation */
	"[2001::]", "[2001::1]", "[2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff]", "[2001:db8::]",
	"[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]", "[3fff::]", "[3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff]",
	/* special IPv4 inside IPv6: mapped, translated, NAT64, 6to4 */
	"[::ffff:127.0.0.1]", "[::ffff:192.0.2.1]", "[::ffff:0:127.0.0.1]", "[::ffff:0:10.0.0.1]",
	"[::ffff:0:203.0.113.9]", "[64:ff9b::10.0.0.1]", "[64:ff9b::198.51.100.1]", "[2002:c000:201::1]",
	"[2002:c058:6301::]", "[2002:cb00:7101::1]",
};

/* Public addresses, the nearest ones outside each block among them. */
static const char *const allowed[] = {
	"1.0.0.0", "1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
	"126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255", "172.32.0.0",
	"191.255.255.255", "192.0.1.0", "192.0.3.0", "192.88.98.255", "192.88.100.0", "192.167.255.255",
	"192.169.0.0", "198.17.255.255", "198.20.0.0", "198.51.99.255", "198.51.101.0", "203.0.112.255",
	"203.0.114.0", "223.255.255.255",
	"[2000::1]", "[2001:200::]", "[2001:4860:4860::8888]", "[2001:db7:ffff:ffff:ffff:ffff:ffff:ffff]",
	"[2001:db9::]", "[2606:4700::1111]", "[2a00:1450:4001::1]", "[3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff]",
	"[3fff:1000::]", "[3fff:ffff::1]",
	/* public IPv4 inside IPv6: mapped, translated, NAT64, 6to4 */
	"[::ffff:8.8.8.8]", "[::ffff:0:8.8.8.8]", "[64:ff9b::8.8.8.8]", "[2002:808:808::1]",
};

/* webhook_url_check on http://addr/hook, which it also writes to url. */
static int check(const char *addr, bool allow_private, char *url, size_t size, struct tg_error *err)
{
	snprintf(url, size, "http://%s/hook", addr);
	memset(err, 0, sizeof(*err));
	return webhook_url_check(url, allow_private, err);
}

START_TEST(test_special_purpose_refused)
{
	char url[128];
	struct tg_error err;

	for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
		ck_assert_msg(check(refused[i], false, url, sizeof(url), &err) == TG_EINVAL, "%s allowed", url);
		ck_assert_msg(err.code && !strcmp(err.code, "url_not_allowed"), "%s: code %s", url, err.code);
		ck_assert_str_eq(err.param, "url");
		/* TOLLGATE_WEBHOOK_ALLOW_PRIVATE=1 lets every one through */
		ck_assert_msg(check(refused[i], true, url, sizeof(url), &err) == 0, "%s refused with allow_private", url);
	}
}
END_TEST

START_TEST(test_public_allowed)
{
	char url[128];
	struct tg_error err;

	for (size_t i = 0; i < sizeof(allowed) / sizeof(*allowed); i++)
		ck_assert_msg(check(allowed[i], false, url, sizeof(url), &err) == 0, "%s refused: %s", url, err.message);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("webhook_url");
	TCase *tc = tcase_create("ssrf");

	tcase_add_test(tc, test_special_purpose_refused);
	tcase_add_test(tc, test_public_allowed);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

/*
 * fuzz_check.c — a POST /v1/check body as the server reads it: tg_json_parse (top object), then the check
 * handler's own validation (parse() in src/api/check.c, built on the field readers of src/api/params.c
 * and src/util/jfield.c). An accepted check holds only values its contract allows (ids, a non-negative
 * amount in range, an address in its canonical spelling, a TTL of 1 s to a day, at most 16 dimensions of 1–256 bytes, not both
 * consume and reserve); a refused one is a 400 with a code and a message.
 */
#include "../../src/api/check.c" /* parse() and struct check are static */
#include "fuzz.h"

static bool id_ok(const char *s)
{
	return s && tg_id_valid(s, strlen(s));
}

static void check_accepted(struct tg_req *req, const struct check *ck)
{
	const struct policy_check *c = &ck->chk;
	const char *ip = c->ip ? ip_canonical(&req->arena, c->ip) : NULL;

	FUZZ_CHECK(id_ok(ck->customer_id));
	FUZZ_CHECK(id_ok(c->meter));
	FUZZ_CHECK(c->amount >= 0 && c->amount <= TG_FIXED_MAX);
	FUZZ_CHECK(!c->ip || (ip && strcmp(ip, c->ip) == 0)); /* an address, in its one spelling */
	FUZZ_CHECK(!c->key || id_ok(c->key));
	FUZZ_CHECK(!(c->consume && c->reserve));
	FUZZ_CHECK(!c->reserve || strcmp(c->meter, POLICY_REQUESTS) != 0);
	FUZZ_CHECK(ck->rsv_ttl >= 1 && ck->rsv_ttl <= MAX_RESERVATION_TTL);
	FUZZ_CHECK(c->ndims >= 0 && c->ndims <= POLICY_MAX_DIMS);
	for (int i = 0; i < c->ndims; i++) {
		size_t n = strlen(c->dims[i].value);
		FUZZ_CHECK(id_ok(c->dims[i].key));
		FUZZ_CHECK(n >= 1 && n <= 256);
	}
	if (ck->has_workflow) {
		FUZZ_CHECK(id_ok(ck->wf.id));
		FUZZ_CHECK(!ck->wf.tool || id_ok(ck->wf.tool));
		FUZZ_CHECK(!ck->wf.args_hash || id_ok(ck->wf.args_hash));
		FUZZ_CHECK(ck->wf.depth >= 0 && ck->wf.depth <= 1000000);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tg_req req;
	struct check ck;
	int rc;

	memset(&req, 0, sizeof(req));
	memset(&ck, 0, sizeof(ck));
	tg_arena_init(&req.arena);
	ck.req = &req;
	req.json = size ? tg_json_parse((const char *)data, size, true, &req.err) : NULL;
	if (size && !req.json) {
		FUZZ_CHECK(req.err.err == TG_EINVAL && req.err.message[0] != '\0');
		goto out;
	}
	rc = parse(&req, &ck);
	if (rc == 0) {
		check_accepted(&req, &ck);
	} else {
		FUZZ_CHECK(rc == TG_EINVAL && req.err.err == TG_EINVAL);
		FUZZ_CHECK(req.err.code != NULL && req.err.message[0] != '\0');
		/* a body error names its field (even the field "") */
		FUZZ_CHECK(!req.json || req.err.param[0] != '\0' || json_object_get(req.json, ""));
	}
out:
	json_decref(req.json);
	tg_arena_release(&req.arena);
	return 0;
}

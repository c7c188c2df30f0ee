-- 0016_idempotent_headers: the response headers an Idempotency-Key replays.
--
-- POST /v1/check and /v1/events honour Idempotency-Key too; their replies carry headers a client acts
-- on (Retry-After, the RateLimit headers), so a replay sends them as the first reply did.
-- One "Name: value" per line; NULL for keys stored before (replayed without extra headers).
ALTER TABLE idempotency_keys ADD COLUMN headers text;

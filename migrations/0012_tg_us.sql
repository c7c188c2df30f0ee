-- 0012_tg_us: microseconds since the epoch as a timestamptz, exactly, as tg_ms (0011) does for
-- milliseconds. The events list's cursor (the instant of the event to start after) was written
-- to_timestamp(us / 1000000.0): a double, microseconds off far from now, so a page could start
-- before its cursor (repeating it) or after (skipping events of the same instant).
CREATE FUNCTION tg_us(us bigint) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT to_timestamp((us / 1000000)::float8) + (us % 1000000) * interval '1 microsecond' $$;

-- 0011_tg_ms: milliseconds since the epoch (how the server passes instants) as a timestamptz, exactly.
-- Written out as to_timestamp(ms / 1000.0), the division was numeric (0.57 µs a call against 0.07 µs
-- for this form, 1,000,000 calls on the development machine; the event writer makes about five per
-- event), and to_timestamp then took the quotient as a double: instants far from now (a test clock
-- pushed centuries ahead) came back off by microseconds (391,032 of 1,210,002 instants between the
-- years 70 and 11,800). Whole seconds as a double are exact, and so is adding the milliseconds as an
-- interval: every one of those instants comes back exact. STABLE like timestamptz + interval, so
-- that it is inlined (see 0009).
CREATE FUNCTION tg_ms(ms bigint) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT to_timestamp((ms / 1000)::float8) + (ms % 1000) * interval '1 millisecond' $$;

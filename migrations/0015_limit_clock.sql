-- 0015_limit_clock: when a limit was made, on its tenant's clock.
--
-- Period closing (limit.reset) starts at the period a limit was made in. It took created_at, which
-- is real time; a test-mode tenant's clock runs ahead of it, so the first close began up to the
-- clock's lead too early and closed periods, on the tenant's clock, from before the limit existed.
-- NULL for limits made before this migration: their created_at is used as before.
ALTER TABLE limits ADD COLUMN created_clock_ms bigint;

-- 0013_daily_rollups: usage per day beside usage per hour, so a period's usage is read from at most
-- 31 days and a few open hours instead of up to 744 hours (a month) or every hour ever (all_time).
--
-- Before this, the writer's threshold watch summed a monthly quota's hourly rollups in every batch:
-- one heap page per hour, so a customer cost ~2 ms of PostgreSQL at the end of a month and event
-- intake fell tenfold by the month's last days.
--
-- The worker compacts hours that ended more than an hour ago (tg_compact_rollups): it adds each hourly
-- rollup into its day and marks it compacted, remembering in in_day what of it the day holds. A writer
-- moving a rollup after that (an event up to 35 days late) marks it open again (compacted = false) and
-- touches nothing else: the next pass adds the difference. So at every moment a day-aligned period's
-- usage is its days plus its open hours (the partial index usage_rollups_open finds those), where an
-- open hour of a sum or count adds value - in_day (what its day does not hold yet); max and latest
-- combine the same either way. Hourly rollups stay the truth for hourly series.
--
-- Writers never wait for the days: compaction takes its hourly rows with FOR UPDATE SKIP LOCKED (a
-- rollup a writer's transaction holds is left for the next pass), so it waits for no writer, and only
-- compactions (several instances) meet on the days, which they take in one order.
ALTER TABLE usage_rollups ADD COLUMN compacted boolean NOT NULL DEFAULT false,
                          ADD COLUMN in_day numeric(26, 6) NOT NULL DEFAULT 0;

-- Readers find a subject's open hours here; compaction scans it whole (it holds the open rollups only:
-- the last two hours' and late ones'), which spares every new hourly rollup a second index.
CREATE INDEX usage_rollups_open ON usage_rollups (tenant_id, subject, meter_id, hour) WHERE NOT compacted;

-- agg: the meter's aggregation, as policy_agg numbers it (0 sum, 1 count, 2 max, 3 latest).
CREATE TABLE usage_rollups_daily (
    tenant_id text NOT NULL,
    subject   text NOT NULL,
    meter_id  text NOT NULL,
    day       timestamptz NOT NULL,
    dims      jsonb NOT NULL DEFAULT '{}'::jsonb,
    agg       smallint NOT NULL,
    value     numeric(26, 6) NOT NULL,
    last_ts   timestamptz NOT NULL,
    -- value and last_ts ride in the key's index: a period's days are read from it alone (an index-only
    -- scan, once VACUUM has marked the pages all-visible) instead of one heap page per day, since each
    -- pass writes all subjects' days together. Only compaction writes here, so it costs no writer.
    PRIMARY KEY (tenant_id, subject, meter_id, day, dims) INCLUDE (value, last_ts)
);

CREATE FUNCTION tg_day(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' $$;

-- Compacts at most lim open hourly rollups of hours before cutoff; returns how many it compacted.
-- A meter since deleted counts as a sum (nothing reads it unless it is defined again).
CREATE FUNCTION tg_compact_rollups(cutoff timestamptz, lim integer) RETURNS bigint
LANGUAGE sql VOLATILE AS
$$
WITH k AS (
    SELECT tenant_id, subject, meter_id, hour, dims, in_day FROM usage_rollups
    WHERE NOT compacted AND hour < cutoff
    LIMIT lim
    FOR UPDATE SKIP LOCKED
), c AS (
    UPDATE usage_rollups r SET compacted = true, in_day = r.value FROM k
    WHERE r.tenant_id = k.tenant_id AND r.subject = k.subject AND r.meter_id = k.meter_id
      AND r.hour = k.hour AND r.dims = k.dims
    RETURNING r.tenant_id, r.subject, r.meter_id, tg_day(r.hour) AS day, r.dims, r.value,
              r.value - k.in_day AS added, r.last_ts
), a AS (
    SELECT c.*, COALESCE((SELECT CASE m.spec->>'aggregation' WHEN 'count' THEN 1 WHEN 'max' THEN 2
                                      WHEN 'latest' THEN 3 ELSE 0 END
                          FROM meters m WHERE m.tenant_id = c.tenant_id AND m.id = c.meter_id), 1)::smallint AS agg
    FROM c
), g AS (
    SELECT tenant_id, subject, meter_id, day, dims, agg,
           CASE agg WHEN 2 THEN max(value) WHEN 3 THEN (array_agg(value ORDER BY last_ts DESC))[1]
                    ELSE sum(added) END AS value,
           max(last_ts) AS last_ts
    FROM a GROUP BY tenant_id, subject, meter_id, day, dims, agg
), d AS (
    INSERT INTO usage_rollups_daily AS y (tenant_id, subject, meter_id, day, dims, agg, value, last_ts)
    SELECT tenant_id, subject, meter_id, day, dims, agg, value, last_ts FROM g
    ORDER BY tenant_id, subject, meter_id, day, dims
    ON CONFLICT (tenant_id, subject, meter_id, day, dims) DO UPDATE SET
        value = CASE EXCLUDED.agg WHEN 2 THEN GREATEST(y.value, EXCLUDED.value)
                    WHEN 3 THEN CASE WHEN EXCLUDED.last_ts >= y.last_ts THEN EXCLUDED.value ELSE y.value END
                    ELSE y.value + EXCLUDED.value END,
        last_ts = GREATEST(y.last_ts, EXCLUDED.last_ts)
)
SELECT count(*) FROM c
$$;

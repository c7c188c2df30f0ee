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

-- Readers find a subject's open hours here; compaction sweeps it in key order, a pass going on from
-- where the last one stopped (it holds the open rollups only: the last two hours' and late ones'),
-- which spares every new hourly rollup a second index.
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

-- One pass of compaction: at most lim open hourly rollups of hours before cutoff, in the order of
-- usage_rollups_open from the key (after_t, after_s, after_m, after_h) on (NULLs: from the start), so
-- that a sweep of many passes walks that index once instead of once a pass. taken: the rollups it took
-- (fewer than lim: the sweep is done), compacted: those it added into their days, last_*: the key to
-- go on from. Planned at each call with its values (EXECUTE), so the limit and the key are known to
-- the planner: the rollups are taken through the index, and updated by their ctid. A meter not (or no
-- longer) defined combines as a count (a sum).
CREATE FUNCTION tg_compact_rollups_pass(cutoff timestamptz, lim integer, after_t text, after_s text, after_m text,
                                        after_h timestamptz, OUT taken bigint, OUT compacted bigint,
                                        OUT last_t text, OUT last_s text, OUT last_m text, OUT last_h timestamptz)
LANGUAGE plpgsql VOLATILE SET jit = off AS
$fn$
BEGIN
    EXECUTE $q$
    WITH k AS (
        SELECT ctid AS tid, tenant_id, subject, meter_id, hour, in_day FROM usage_rollups
        WHERE NOT compacted AND hour < $1
          AND (tenant_id, subject, meter_id, hour) >= (COALESCE($3, ''), COALESCE($4, ''), COALESCE($5, ''),
                                                       COALESCE($6, '-infinity'::timestamptz))
        ORDER BY tenant_id, subject, meter_id, hour LIMIT $2
        FOR UPDATE SKIP LOCKED
    ), c AS (
        UPDATE usage_rollups r SET compacted = true, in_day = r.value FROM k
        WHERE r.ctid = ANY (ARRAY(SELECT tid FROM k)) AND r.ctid = k.tid
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
    ), l AS (
        SELECT tenant_id, subject, meter_id, hour FROM k
        ORDER BY tenant_id DESC, subject DESC, meter_id DESC, hour DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM c), l.tenant_id, l.subject, l.meter_id, l.hour
    FROM (SELECT 1) AS one LEFT JOIN l ON true
    $q$ INTO taken, compacted, last_t, last_s, last_m, last_h
    USING cutoff, lim, after_t, after_s, after_m, after_h;
END
$fn$;

-- A whole sweep in one transaction (scripts/bench's setup, tests): passes of lim until done; returns how
-- many rollups it compacted.
CREATE FUNCTION tg_compact_rollups(cutoff timestamptz, lim integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS
$fn$
DECLARE
    p record;
    total bigint := 0;
    t text; s text; m text; h timestamptz;
BEGIN
    LOOP
        SELECT * INTO p FROM tg_compact_rollups_pass(cutoff, lim, t, s, m, h);
        total := total + p.compacted;
        EXIT WHEN p.taken < lim OR p.compacted = 0;
        t := p.last_t; s := p.last_s; m := p.last_m; h := p.last_h;
    END LOOP;
    RETURN total;
END
$fn$;

-- 0014_rollup_time_indexes: the worker's reads of a tenant's usage by time, without a subject.
--
-- Closing a period (limit.reset: every subject's usage in it), the daily usage.summary and the
-- search for a tenant's first usage after a point named the tenant and a time range, but the only
-- index led with (tenant_id, subject): PostgreSQL read every rollup of every tenant (a sequential
-- scan), 0.6-1.3 s with 2.9 million rollups, for every hourly quota every hour, and growing with
-- the table. These lead with the tenant and the time.
CREATE INDEX usage_rollups_tenant_hour ON usage_rollups (tenant_id, hour);
CREATE INDEX usage_rollups_daily_tenant_day ON usage_rollups_daily (tenant_id, day);

-- A meter's aggregation as policy_agg numbers it (0 sum, 1 count, 2 max, 3 latest); a meter not (or no
-- longer) defined, such as the built-in requests, counts. The daily usage.summary summed every meter,
-- so a max or latest meter's day read as the sum of its hours.
CREATE FUNCTION tg_meter_agg(tenant text, meter text) RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT COALESCE((SELECT CASE spec->>'aggregation' WHEN 'count' THEN 1 WHEN 'max' THEN 2 WHEN 'latest' THEN 3
                                ELSE 0 END
                     FROM meters WHERE tenant_id = tenant AND id = meter), 1)::smallint $$;

-- 0002_metering.sql — meters, limits, durable events (partitioned by month), their rollups.

CREATE TABLE meters (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         text NOT NULL,
    seq        bigserial UNIQUE,
    spec       json NOT NULL,            -- the canonical API object (policy_meter_json), key order kept
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE limits (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          text NOT NULL,
    seq         bigserial UNIQUE,
    kind        text NOT NULL,
    scope       text NOT NULL,
    meter       text,
    tier        text,
    customer_id text,
    spec        json NOT NULL,           -- the canonical API object (policy_limit_json), key order kept
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, meter) REFERENCES meters (tenant_id, id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (tenant_id, tier) REFERENCES tiers (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id) ON DELETE CASCADE
);
-- the built-in meter has no row: limits on it name no foreign key
ALTER TABLE limits DROP CONSTRAINT limits_tenant_id_meter_fkey;
CREATE INDEX limits_meter ON limits (tenant_id, meter);

CREATE TRIGGER meters_notify AFTER INSERT OR UPDATE OR DELETE ON meters
    FOR EACH ROW EXECUTE FUNCTION tg_notify_config();
CREATE TRIGGER limits_notify AFTER INSERT OR UPDATE OR DELETE ON limits
    FOR EACH ROW EXECUTE FUNCTION tg_notify_config();

-- Event ids, for exactly-once counting: the unique key a partitioned table cannot have.
CREATE TABLE event_ids (
    tenant_id text NOT NULL,
    id        text NOT NULL,
    ts        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE events (
    tenant_id      text NOT NULL,
    id             text NOT NULL,
    customer_id    text NOT NULL,
    type           text NOT NULL,
    ts             timestamptz NOT NULL,
    properties     jsonb NOT NULL DEFAULT '{}'::jsonb,
    meter_id       text,               -- set for usage recorded by a consuming check: counts for that meter only
    reservation_id text,
    workflow_id    text,
    received_at    timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
CREATE INDEX events_customer ON events (tenant_id, customer_id, ts);
CREATE INDEX events_tenant ON events (tenant_id, ts);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Create the month's partition of events if it does not exist yet (called by the event writer).
CREATE FUNCTION tg_ensure_events_partition(t timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m    timestamptz := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'events_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        -- serialise creators; another writer may have won the race meanwhile
        PERFORM pg_advisory_xact_lock(7428700102);
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                           name, m, m + interval '1 month');
        END IF;
    END IF;
END $$;

-- Usage per hour: the truth Redis counters are rebuilt from and usage series are read from.
-- subject: the customer itself, its organisation (totals of members), or '*' (the whole tenant).
CREATE TABLE usage_rollups (
    tenant_id text NOT NULL,
    subject   text NOT NULL,
    meter_id  text NOT NULL,
    hour      timestamptz NOT NULL,
    dims      jsonb NOT NULL DEFAULT '{}'::jsonb,
    value     numeric(26, 6) NOT NULL,
    events    bigint NOT NULL DEFAULT 0,
    last_ts   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subject, meter_id, hour, dims)
);

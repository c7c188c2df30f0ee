-- 0004_webhooks.sql — webhook endpoints, the delivery queue fanned out from the outbox, attempts,
-- at-most-once markers for fired events, period history and the worker duties' progress.

CREATE TABLE webhook_endpoints (
    tenant_id             text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                    text NOT NULL,
    seq                   bigserial UNIQUE,
    url                   text NOT NULL,
    description           text,
    events                text[] NOT NULL,
    secret                text NOT NULL,
    previous_secret       text,             -- after a rotation, also signed with for 24 h
    previous_expires_at   timestamptz,
    disabled              boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,
    seq             bigserial UNIQUE,
    tenant_id       text NOT NULL,
    endpoint_id     text NOT NULL,
    event_id        text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',   -- pending, succeeded, failed
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, seq DESC);

CREATE TABLE webhook_attempts (
    delivery_id text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    status_code integer,
    latency_ms  integer NOT NULL,
    error       text,
    response    text,                          -- the first 256 bytes of the body
    PRIMARY KEY (delivery_id, attempt)
);

-- One delivery per matching endpoint, in the transaction that wrote the event.
CREATE FUNCTION tg_webhook_fanout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id)
    SELECT 'whd_' || substr(md5(random()::text || clock_timestamp()::text || e.id), 1, 24),
           NEW.tenant_id, e.id, NEW.id
      FROM webhook_endpoints e
     WHERE e.tenant_id = NEW.tenant_id AND NOT e.disabled
       AND (NEW.type = ANY (e.events) OR '*' = ANY (e.events))
       AND NEW.type <> 'ping';
    PERFORM pg_notify('tg_webhook', NEW.tenant_id);
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_events_fanout AFTER INSERT ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION tg_webhook_fanout();

-- "At most once" for events that must not repeat (a threshold per period, a throttle per minute...).
CREATE TABLE webhook_once (
    tenant_id  text NOT NULL,
    key        text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Final usage of every closed period of every quota limit that had usage.
CREATE TABLE period_history (
    tenant_id    text NOT NULL,
    limit_id     text NOT NULL,
    subject      text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    usage        numeric(26, 6) NOT NULL,
    "limit"      numeric(26, 6) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, limit_id, subject, period_start)
);

-- How far each duty got, per tenant (and limit), so a restart resumes where it stopped.
CREATE TABLE duty_progress (
    tenant_id text NOT NULL,
    duty      text NOT NULL,         -- 'reset:<limit id>', 'summary'
    done_to   timestamptz NOT NULL,  -- everything before this instant is done
    PRIMARY KEY (tenant_id, duty)
);

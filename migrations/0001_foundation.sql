-- 0001_foundation.sql — tenants, API keys, tiers, customers, idempotency keys, change notifications.

-- RFC 3339 UTC text with second precision, the API's time format.
CREATE FUNCTION tg_ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;

CREATE TABLE tenants (
    id                    text PRIMARY KEY,
    seq                   bigserial UNIQUE,
    name                  text NOT NULL,
    test_mode             boolean NOT NULL DEFAULT false,
    -- a test-mode tenant's clock = real time + offset; the offset only grows
    clock_offset_ms       bigint NOT NULL DEFAULT 0 CHECK (clock_offset_ms >= 0),
    default_tier          text,
    auto_create_customers boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq         bigserial UNIQUE,
    name        text NOT NULL,
    prefix      text NOT NULL,
    secret_hash text NOT NULL UNIQUE,   -- SHA-256 hex of the secret; the secret itself is never stored
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, seq);

CREATE TABLE tiers (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         text NOT NULL,
    seq        bigserial UNIQUE,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- the default tier must exist while it is the default (deleting it → 409)
ALTER TABLE tenants ADD CONSTRAINT tenants_default_tier_fk
    FOREIGN KEY (id, default_tier) REFERENCES tiers (tenant_id, id) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE customers (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         text NOT NULL,
    seq        bigserial UNIQUE,
    name       text,
    email      text,
    tier       text,
    parent_id  text,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, tier) REFERENCES tiers (tenant_id, id),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES customers (tenant_id, id)
);
CREATE INDEX customers_tier ON customers (tenant_id, tier, seq);
CREATE INDEX customers_parent ON customers (tenant_id, parent_id, seq);

-- Idempotency-Key on POST: the first response, replayed for 24 h
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL,         -- '' for the admin API
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       integer NOT NULL DEFAULT 0,   -- 0 while the first request runs
    content_type text,
    response     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Every instance keeps compiled configuration in memory and reloads a tenant's
-- when told: these triggers tell, whichever path made the change.
CREATE FUNCTION tg_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('tg_config', COALESCE(NEW.id, OLD.id));
    ELSE
        PERFORM pg_notify('tg_config', COALESCE(NEW.tenant_id, OLD.tenant_id));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION tg_notify_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tg_customer', COALESCE(NEW.tenant_id, OLD.tenant_id) || ' ' || COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_notify AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tg_notify_config();
CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tg_notify_config();
CREATE TRIGGER tiers_notify AFTER INSERT OR UPDATE OR DELETE ON tiers
    FOR EACH ROW EXECUTE FUNCTION tg_notify_config();
CREATE TRIGGER customers_notify AFTER INSERT OR UPDATE OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION tg_notify_customer();

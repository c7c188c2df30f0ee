-- 0003_balances.sql — prepaid balances with a ledger, and the webhook outbox their changes write to.

CREATE TABLE balances (
    tenant_id             text NOT NULL,
    customer_id           text NOT NULL,
    balance               numeric(26, 6) NOT NULL DEFAULT 0,
    minimum_balance       numeric(26, 6) NOT NULL DEFAULT 0,
    low_balance_threshold numeric(26, 6),
    -- where the balance stands, so each crossing fires its webhook once: ok, low, depleted
    state                 text NOT NULL DEFAULT 'ok',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id) ON DELETE CASCADE
);

-- Every credit and debit; balances.balance is always the sum of its customer's rows.
CREATE TABLE ledger (
    tenant_id       text NOT NULL,
    id              text NOT NULL,
    seq             bigserial,
    customer_id     text NOT NULL,
    amount          numeric(26, 6) NOT NULL,          -- signed: credits > 0, debits < 0
    kind            text NOT NULL,                    -- credit, debit, usage
    description     text,
    idempotency_key text,
    event_id        text,
    reservation_id  text,
    balance_after   numeric(26, 6) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, customer_id, idempotency_key),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES balances (tenant_id, customer_id) ON DELETE CASCADE
);
CREATE INDEX ledger_customer ON ledger (tenant_id, customer_id, seq DESC);

-- A customer gaining a balance changes how its checks are gated: drop it from every cache.
CREATE FUNCTION tg_notify_balance_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tg_customer', COALESCE(NEW.tenant_id, OLD.tenant_id) || ' ' ||
                                     COALESCE(NEW.customer_id, OLD.customer_id));
    RETURN NULL;
END $$;
CREATE TRIGGER balances_notify AFTER INSERT OR DELETE ON balances
    FOR EACH ROW EXECUTE FUNCTION tg_notify_balance_owner();

-- Webhook events (the outbox): written in the same transaction as their cause.
CREATE TABLE webhook_events (
    tenant_id  text NOT NULL,
    id         text NOT NULL,
    seq        bigserial,
    type       text NOT NULL,
    data       json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhook_events_seq ON webhook_events (seq);

-- 0005_governance.sql — the audit log: who changed which resource when, written with the change.

CREATE TABLE audit_log (
    tenant_id     text NOT NULL,
    id            text NOT NULL,
    seq           bigserial,
    actor         text NOT NULL,          -- the API key id, "token:<key id>" or "admin"
    action        text NOT NULL,          -- e.g. limit.updated, customer.deleted, rate_limit.denied
    resource_type text NOT NULL,
    resource_id   text,
    before        json,
    after         json,
    request_id    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_list ON audit_log (tenant_id, seq DESC);
CREATE INDEX audit_log_resource ON audit_log (tenant_id, resource_type, resource_id, seq DESC);

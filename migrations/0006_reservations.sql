-- 0006_reservations: reservations are durable. A reserving check answers only once its holds are here,
-- so losing Redis does not hand them back: a rebuilt counter or live balance takes its "reserved" from
-- the active holds on its key. A row lives while the reservation is active; settling it (an event naming
-- it), releasing it or its expiry deletes it, in the transaction that records why.

CREATE TABLE reservations (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          text NOT NULL,
    customer_id text NOT NULL,
    expires_ms  bigint NOT NULL, -- on the tenant's clock
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX reservations_expiry ON reservations (expires_ms);

-- What each reservation holds: an amount on a Redis key (a quota counter or a live balance).
-- No foreign key: both tables are emptied together by one statement.
CREATE TABLE reservation_holds (
    tenant_id      text NOT NULL,
    reservation_id text NOT NULL,
    hold_key       text NOT NULL,
    amount         bigint NOT NULL,
    PRIMARY KEY (tenant_id, reservation_id, hold_key)
);
CREATE INDEX reservation_holds_key ON reservation_holds (tenant_id, hold_key);

-- 0008_webhook_fanout: the outbox trigger no longer sends NOTIFY tg_webhook (nobody listens: the
-- delivery threads claim due deliveries every 100 ms). A NOTIFY costs every committing transaction
-- the notification queue's global lock and wakes each backend that LISTENs on any channel (every
-- instance's configuration listener), once per webhook event. Pings, which fan out to nobody, no
-- longer run the trigger at all.

CREATE OR REPLACE FUNCTION tg_webhook_fanout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id)
    SELECT 'whd_' || substr(md5(random()::text || clock_timestamp()::text || e.id), 1, 24),
           NEW.tenant_id, e.id, NEW.id
      FROM webhook_endpoints e
     WHERE e.tenant_id = NEW.tenant_id AND NOT e.disabled
       AND (NEW.type = ANY (e.events) OR '*' = ANY (e.events));
    RETURN NULL;
END $$;

DROP TRIGGER webhook_events_fanout ON webhook_events;
CREATE TRIGGER webhook_events_fanout AFTER INSERT ON webhook_events
    FOR EACH ROW WHEN (NEW.type <> 'ping') EXECUTE FUNCTION tg_webhook_fanout();

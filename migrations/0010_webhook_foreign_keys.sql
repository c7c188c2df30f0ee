-- 0010_webhook_foreign_keys: deliveries and attempts no longer carry foreign keys.
-- Every delivery row's foreign key check took a KEY SHARE lock on its endpoint's row, and concurrent
-- ones (500 pings/s to one endpoint, or an event batch fanning out while others do) made PostgreSQL
-- build multixacts: the ping cost 340 us of execution, 195 us without the keys. An event batch that
-- fanned out to an endpoint deleted meanwhile also failed its whole transaction on the check.
-- Deleting an endpoint now deletes its deliveries and their attempts in the same statement
-- (store/webhooks.c), and a delivery whose endpoint went away in between (made by a batch that
-- committed after it) is failed by the delivery worker at its first claim, with one attempt logged.
ALTER TABLE webhook_deliveries DROP CONSTRAINT IF EXISTS webhook_deliveries_tenant_id_endpoint_id_fkey;
ALTER TABLE webhook_attempts DROP CONSTRAINT IF EXISTS webhook_attempts_delivery_id_fkey;

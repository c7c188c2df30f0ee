-- 0007_webhook_depth: the worker reports the queue depth every 5 s (tollgate_webhook_queue_depth and
-- tollgate_webhook_failed_deliveries). Counting by status scanned the whole table, which only grows;
-- pending rows already have a partial index (webhook_deliveries_due), and this one covers the failed
-- rows, so both counts read only the rows they count.

CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (id) WHERE status = 'failed';

-- 0017_webhook_test_clock: a test-mode tenant's webhook retries follow its test clock.
--
-- Advancing a tenant's clock by n seconds brings each of its scheduled retries n seconds closer (never
-- before now) and adds n to advanced_ms; the worker gives a delivery up once 3 days have passed since
-- it was made, counting created_at - advanced_ms, so advancing the clock 3 days fails a delivery that
-- keeps failing, as 3 real days would. created_at itself stays real time.
ALTER TABLE webhook_deliveries ADD COLUMN advanced_ms bigint NOT NULL DEFAULT 0;

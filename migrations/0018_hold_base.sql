-- 0018_hold_base: a reservation's hold on a quota counter holds in whatever period the counter is in now.
--
-- A hold is stored under the key of the counter it was made on, whose last part is the start of that
-- counter's period ("tg:{t:c}:q:<limit>~<tag>:day:1795392000"). A counter rebuilt in a later period counts
-- every active hold on the same counter of any period: the key without its period start, hold_base. It is
-- generated (a build that inserts holds without knowing of it still fills it) and indexed, so that a rebuild
-- reads the holds of one counter by key, not every hold of the tenant. Keys of live balances have no
-- period: their base is the whole key.
ALTER TABLE reservation_holds ADD COLUMN hold_base text GENERATED ALWAYS AS (
    CASE WHEN strpos(hold_key, '}:q:') > 0 THEN regexp_replace(hold_key, '[0-9]+$', '') ELSE hold_key END) STORED;
CREATE INDEX reservation_holds_base ON reservation_holds (tenant_id, hold_base);

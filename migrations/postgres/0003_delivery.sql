-- Delivery (docs/api.md §11): a sent card's WhatsApp status, followed from the API's
-- lastOutgoingMessages until final or until `delivery_window` ends, as SQLite's 0007.
ALTER TABLE messages ADD COLUMN delivery     text;
ALTER TABLE messages ADD COLUMN delivered_at bigint;
ALTER TABLE messages ADD COLUMN read_at      bigint;

ALTER TABLE messages ADD CONSTRAINT messages_delivery CHECK (delivery IN
    ('sent', 'delivered', 'read', 'failed', 'noAccount', 'notInGroup', 'unconfirmed'));

-- Cards already sent: followed if sent within the last day, else unconfirmed.
UPDATE messages SET delivery = CASE
    WHEN sent_at >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 86400000
        THEN 'sent'
    ELSE 'unconfirmed' END
WHERE state = 'sent';

CREATE INDEX messages_following ON messages (instance, sent_at)
    WHERE delivery IN ('sent', 'delivered');

-- Per-instance delivery counts, as the states' ('delivery:VALUE'), in shard 0.
INSERT INTO counts (instance, state, shard, n)
    SELECT instance, 'delivery:' || delivery, 0, COUNT(*) FROM messages
    WHERE delivery IS NOT NULL GROUP BY instance, delivery;

CREATE FUNCTION messages_delivery_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.delivery IS NOT NULL THEN
        INSERT INTO counts (instance, state, shard, n)
            VALUES (OLD.instance, 'delivery:' || OLD.delivery, 0, -1)
            ON CONFLICT (instance, state, shard) DO UPDATE SET n = counts.n - 1;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.delivery IS NOT NULL THEN
        INSERT INTO counts (instance, state, shard, n)
            VALUES (NEW.instance, 'delivery:' || NEW.delivery, 0, 1)
            ON CONFLICT (instance, state, shard) DO UPDATE SET n = counts.n + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_delivery_count_update AFTER UPDATE OF delivery ON messages
    FOR EACH ROW WHEN (OLD.delivery IS DISTINCT FROM NEW.delivery)
    EXECUTE FUNCTION messages_delivery_count();
CREATE TRIGGER messages_delivery_count_delete AFTER DELETE ON messages
    FOR EACH ROW WHEN (OLD.delivery IS NOT NULL)
    EXECUTE FUNCTION messages_delivery_count();

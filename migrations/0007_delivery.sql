-- Delivery (docs/api.md §11): what became of a sent card on WhatsApp, followed through
-- the `statusMessage` of `lastOutgoingMessages`.
--   delivery      NULL until the card is sent; then 'sent', 'delivered', 'read',
--                 'failed', 'noAccount', 'notInGroup' or 'unconfirmed' (a
--                 `Delivery` wire name); it only moves forward;
--   delivered_at  when it was first seen delivered (or read), Unix ms;
--   read_at       when it was first seen read, Unix ms.
ALTER TABLE messages ADD COLUMN delivery TEXT;
ALTER TABLE messages ADD COLUMN delivered_at INTEGER;
ALTER TABLE messages ADD COLUMN read_at INTEGER;

-- Cards sent before this version were never followed: those sent within the last day
-- (the default `delivery_window`) are followed from now on, older ones are
-- 'unconfirmed' at once (no event: they changed before the stream knew them).
UPDATE messages SET delivery = CASE
    WHEN sent_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000 THEN 'sent'
    ELSE 'unconfirmed' END
WHERE state = 'sent';

-- The cards being followed, per instance, oldest send first.
CREATE INDEX messages_following ON messages (instance, sent_at)
    WHERE delivery IN ('sent', 'delivered');

-- `counts` also keeps, per instance, how many cards have each delivery value
-- (pseudo-states 'delivery:VALUE'), so `status` never scans the sent cards.
INSERT INTO counts (instance, state, n)
    SELECT instance, 'delivery:' || delivery, COUNT(*) FROM messages
    WHERE delivery IS NOT NULL GROUP BY instance, delivery;

CREATE TRIGGER messages_delivery_count AFTER UPDATE OF delivery ON messages
WHEN OLD.delivery IS NOT NEW.delivery BEGIN
    UPDATE counts SET n = n - 1
        WHERE OLD.delivery IS NOT NULL AND instance = OLD.instance
        AND state = 'delivery:' || OLD.delivery;
    INSERT INTO counts (instance, state, n)
        SELECT NEW.instance, 'delivery:' || NEW.delivery, 1 WHERE NEW.delivery IS NOT NULL
        ON CONFLICT (instance, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER messages_delivery_count_delete AFTER DELETE ON messages
WHEN OLD.delivery IS NOT NULL BEGIN
    UPDATE counts SET n = n - 1
        WHERE instance = OLD.instance AND state = 'delivery:' || OLD.delivery;
END;

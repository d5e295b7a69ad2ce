-- Timing (docs/api.md §11): an enqueue may carry `notBefore`. The card is `queued` from
-- the start but joins its instance's line only once due:
--   not_before  the time the caller asked for (Unix ms), kept for display and for the
--               idempotency comparison; NULL when none was given;
--   due_at      set while the card is not yet in line (the time it joins), NULL once it
--               is. When it comes due the drain gives it the next place at the tail of
--               the line (`line_seq`) and clears `due_at`: its place in line is then
--               max(enqueuedAt, notBefore), and it never held the cards behind it.
ALTER TABLE messages ADD COLUMN not_before INTEGER;
ALTER TABLE messages ADD COLUMN due_at INTEGER;

-- The line of cards already due: the drain's head, `position`, the oldest queued.
CREATE INDEX messages_due_line ON messages (instance, line_seq)
    WHERE state = 'queued' AND due_at IS NULL;
-- The cards not yet due, by the time they join the line.
CREATE INDEX messages_not_yet_due ON messages (instance, due_at, line_seq)
    WHERE state = 'queued' AND due_at IS NOT NULL;

-- `counts` also keeps, per instance, how many of its queued cards are not yet due
-- (pseudo-state 'scheduled'): the enqueue writer adds them, this trigger takes one off
-- when such a card comes due or leaves `queued` (cancelled, expired).
CREATE TRIGGER messages_scheduled_left AFTER UPDATE OF state, due_at ON messages
WHEN OLD.state = 'queued' AND OLD.due_at IS NOT NULL
     AND (NEW.state <> 'queued' OR NEW.due_at IS NULL) BEGIN
    UPDATE counts SET n = n - 1 WHERE instance = OLD.instance AND state = 'scheduled';
END;

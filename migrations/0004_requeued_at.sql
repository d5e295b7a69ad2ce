-- `retry` no longer overwrites `enqueued_at` (when the card was first enqueued): the
-- time it was put back in line is kept here, NULL for a card never retried. Its place
-- in line is still `line_seq` (the tail at the retry), its expiry `expires_at`.
ALTER TABLE messages ADD COLUMN requeued_at INTEGER;

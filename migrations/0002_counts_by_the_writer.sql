-- The enqueue writer now adds its rows to `counts` itself, one upsert per instance and
-- group, instead of a trigger firing once per inserted row (the batch path's largest
-- per-row cost after the insert itself). State changes and deletes keep their triggers.
DROP TRIGGER messages_count_insert;

-- Timing and the event stream (docs/api.md §11) on PostgreSQL: the same columns,
-- indexes and tables as SQLite's migrations 0005 and 0006.
--
-- Timing: `not_before` is the time the caller asked for (Unix ms, NULL when none);
-- `due_at` is set while the card is queued but not yet in line (the time it joins),
-- NULL once it is. When it comes due the drain gives it the next place at the tail
-- (`line_seq` from the shared sequence) and clears `due_at`.
ALTER TABLE messages ADD COLUMN not_before bigint;
ALTER TABLE messages ADD COLUMN due_at bigint;

-- The line of cards already due: the drain's head, `position`, the oldest queued.
CREATE INDEX messages_due_line ON messages (instance, line_seq)
    WHERE state = 'queued' AND due_at IS NULL;
-- The cards not yet due, by the time they join the line.
CREATE INDEX messages_not_yet_due ON messages (instance, due_at, line_seq)
    WHERE state = 'queued' AND due_at IS NOT NULL;

-- `counts` also keeps, per instance, how many queued cards are not yet due
-- (pseudo-state 'scheduled'): the enqueue writers add them to their shards, this
-- trigger takes one off (in shard 0) when such a card comes due or leaves `queued`.
CREATE FUNCTION messages_scheduled_left() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counts (instance, state, shard, n) VALUES (OLD.instance, 'scheduled', 0, -1)
        ON CONFLICT (instance, state, shard) DO UPDATE SET n = counts.n - 1;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_scheduled_left AFTER UPDATE OF state, due_at ON messages
    FOR EACH ROW
    WHEN (OLD.state = 'queued' AND OLD.due_at IS NOT NULL
          AND (NEW.state <> 'queued' OR NEW.due_at IS NULL))
    EXECUTE FUNCTION messages_scheduled_left();

-- The event stream: one numbered row per state or delivery change of a card, written
-- in the same transaction as the change.
--
-- `seq` is gap-free and never visible out of order, with any number of writers in any
-- number of daemons: a transaction buffers its events and writes them with ONE final
-- statement before COMMIT, which moves `stream_counter.last` by their number and
-- inserts them numbered from the old value. The counter row's lock orders those
-- transactions: the next one's update waits until this one committed (or rolled back,
-- giving its numbers back), so seq N+1 commits after N. Readers read only up to
-- `stream_counter.last`, which commits together with the rows it counts.
CREATE TABLE stream (
    seq        bigint PRIMARY KEY,
    at         bigint NOT NULL,                 -- Unix ms of the change
    message_id text   COLLATE "C" NOT NULL,     -- messages.id
    instance   text   COLLATE "C" NOT NULL,
    event      text   NOT NULL                  -- an EventKind wire name
);

CREATE TABLE stream_counter (
    id   integer PRIMARY KEY CHECK (id = 1),
    last bigint  NOT NULL
);
INSERT INTO stream_counter (id, last) VALUES (1, 0);

-- Named consumers of the stream: the daemons' `[hooks.NAME]` and the outside
-- `contactq follow --consumer NAME`, each with the `seq` it delivered up to.
CREATE TABLE consumers (
    name          text    COLLATE "C" PRIMARY KEY,
    cursor        bigint  NOT NULL,
    updated_at    bigint  NOT NULL,
    failures      bigint  NOT NULL DEFAULT 0,
    last_error    text,
    last_error_at bigint
);

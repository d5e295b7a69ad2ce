-- The event stream (docs/api.md §11): one numbered row per state or delivery change of
-- a card, written by the write thread in the same transaction as the change.
--
-- `seq` is the row's INTEGER PRIMARY KEY: SQLite gives a new row one more than the
-- largest, and there is one writer, so a group's rows are numbered on from the last
-- committed one and a rolled-back group gives its numbers back. Retention
-- (`keep_done`) deletes from the oldest end and always keeps the newest row, so no
-- number is ever handed out twice. `stream_counter.last` is the largest committed
-- `seq`: the writer updates it as the last statement of each group before COMMIT, and
-- readers read only up to it. The card's view is built when the event is read, from
-- its `messages` row (`message_id`); only what cannot be rebuilt is kept here.
CREATE TABLE stream (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,             -- Unix ms of the change
    message_id TEXT    NOT NULL,             -- messages.id
    instance   TEXT    NOT NULL,
    event      TEXT    NOT NULL              -- an EventKind wire name
);

CREATE TABLE stream_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO stream_counter (id, last) VALUES (1, 0);

-- Named consumers of the stream: the daemon's `[hooks.NAME]` and the outside
-- `contactq follow --consumer NAME`. Each has delivered every event it takes up to
-- `cursor` (a `seq`); the failures since its last success and the last error are kept
-- for `status` and metrics.
CREATE TABLE consumers (
    name          TEXT    PRIMARY KEY,
    cursor        INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_error_at INTEGER
) WITHOUT ROWID;

-- contactq schema: one row per card, its events, idempotency keys and per-instance state.
-- Times are Unix milliseconds (UTC).

CREATE TABLE messages (
    seq                INTEGER PRIMARY KEY,           -- internal row id
    id                 TEXT    NOT NULL UNIQUE,       -- ULID, the public id; sorts by enqueue time
    instance           TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN
                           ('queued', 'sending', 'sent', 'failed', 'expired', 'cancelled')),
    line_seq           INTEGER NOT NULL,              -- place in the instance's FIFO line
    chat_id            TEXT    NOT NULL,
    phone              INTEGER NOT NULL,
    body               TEXT    NOT NULL,              -- the validated sendContact body
    idempotency_key    TEXT,
    peer_uid           INTEGER,
    enqueued_at        INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    attempt_started_at INTEGER,
    last_error         TEXT,
    id_message         TEXT,
    sent_at            INTEGER,
    ended_at           INTEGER
);

-- next to send: the head of an instance's queued line (and any card in flight)
CREATE INDEX messages_line ON messages (instance, state, line_seq);
-- expiry: queued cards by deadline
CREATE INDEX messages_expiry ON messages (expires_at) WHERE state = 'queued';
-- retention: ended cards by end time
CREATE INDEX messages_ended ON messages (ended_at) WHERE ended_at IS NOT NULL;
-- retention: forgetting idempotency keys whose cards are gone
CREATE INDEX messages_idempotency ON messages (instance, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- reconciliation: an idMessage is matched to at most one card
CREATE INDEX messages_id_message ON messages (id_message) WHERE id_message IS NOT NULL;

CREATE TABLE events (
    message_seq INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    attempt     INTEGER,
    http_status INTEGER,
    detail      TEXT
);
CREATE INDEX events_message ON events (message_seq);

CREATE TABLE idempotency (
    instance    TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    body_hash   TEXT    NOT NULL,
    message_ids TEXT    NOT NULL,   -- JSON array of message ids, in batch order
    batch       INTEGER NOT NULL,   -- 1 when the key covered a batch request
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (instance, key)
);

CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    paused       INTEGER NOT NULL DEFAULT 0,
    last_send_at INTEGER,            -- start of the latest sendContact request (pacing)
    hold_until   INTEGER,            -- quota (466) hold
    hold_reason  TEXT
);

-- Per-instance, per-state counts, kept by triggers so `status` never scans the queue.
CREATE TABLE counts (
    instance TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (instance, state)
) WITHOUT ROWID;

CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN
    INSERT INTO counts (instance, state, n) VALUES (NEW.instance, NEW.state, 1)
        ON CONFLICT (instance, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER messages_count_update AFTER UPDATE OF state ON messages
WHEN OLD.state <> NEW.state BEGIN
    UPDATE counts SET n = n - 1 WHERE instance = OLD.instance AND state = OLD.state;
    INSERT INTO counts (instance, state, n) VALUES (NEW.instance, NEW.state, 1)
        ON CONFLICT (instance, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE counts SET n = n - 1 WHERE instance = OLD.instance AND state = OLD.state;
END;

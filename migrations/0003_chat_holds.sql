-- A 466 for the chats quota (`CORRESPONDENTS_QUOTE_EXCEEDED`) refuses one chat, not the
-- instance: its cards step aside until `until` (Unix ms) or `resume`, and the other
-- chats' cards go on. Kept here so a restart does not send into the refusal again.
CREATE TABLE chat_holds (
    instance TEXT    NOT NULL,
    chat_id  TEXT    NOT NULL,
    until    INTEGER NOT NULL,
    reason   TEXT,
    PRIMARY KEY (instance, chat_id)
) WITHOUT ROWID;

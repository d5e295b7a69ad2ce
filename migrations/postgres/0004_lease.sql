-- The drain lease (docs/api.md §10): one drainer per instance across every daemon
-- sharing the database. Its expiry is set and compared with clock_timestamp() only,
-- the database's clock, never a host's; the epoch grows at every take-over, and every
-- drain write that can lead to a send checks (holder, epoch, unexpired) in its own
-- transaction. The advisory locks of 0001 are no longer used.
CREATE TABLE leases (
    instance   text        COLLATE "C" PRIMARY KEY,
    holder     text        COLLATE "C" NOT NULL,  -- one daemon process (a ULID per start)
    node       text        NOT NULL,              -- its daemon.node, shown as drainedBy
    epoch      bigint      NOT NULL CHECK (epoch > 0),
    expires_at timestamptz NOT NULL
);

-- The daemons sharing the database, each heartbeating its row (status "nodes").
CREATE TABLE nodes (
    name      text        COLLATE "C" PRIMARY KEY,
    last_seen timestamptz NOT NULL
);

-- Smart Sync's event log on PostgreSQL: the tables of the SQLite schema (migrations/sqlite/),
-- for any number of hosts sharing one database.

-- Ids are not taken from a sequence: an append transaction takes them, in order after the
-- last one (log_meta 'last_event_id'), while it holds the append lock to its commit, so that
-- events become visible in id order (see host/src/store/postgres.rs).
CREATE TABLE events (
    id             BIGINT  PRIMARY KEY,
    model          TEXT    NOT NULL,
    record_id      BIGINT  NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('create', 'write', 'unlink')),
    timestamp      TEXT    NOT NULL,
    payload        TEXT,
    changed_fields TEXT,
    dedupe_key     TEXT    UNIQUE,
    received_at    TEXT    NOT NULL,
    -- As in SQLite (0005_compaction.sql): rewrites by compaction, the record's values before
    -- the event, and what compaction folded into it.
    rev            INTEGER NOT NULL DEFAULT 0,
    previous       TEXT,
    folded_from    BIGINT,
    folded_at      BIGINT
);

-- Each record's events in log order: its newest event is one index probe away.
CREATE INDEX events_by_record ON events (model, record_id, id);

CREATE TABLE devices (
    user_id         BIGINT  NOT NULL,
    device_id       TEXT    NOT NULL,
    app_type        TEXT    NOT NULL,
    position        BIGINT  NOT NULL,
    sync_count      BIGINT  NOT NULL,
    first_sync_time TEXT    NOT NULL,
    last_sync_time  TEXT    NOT NULL,
    feed_epoch      BIGINT  NOT NULL DEFAULT 0,
    tombstone_mark  BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, app_type)
);

-- How far retention has gone, and the last id ever assigned ('last_event_id').
CREATE TABLE log_meta (
    key   TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE sources (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The event log: append-only, ids assigned by the server in commit order.
-- AUTOINCREMENT keeps ids from ever being reused, even after old events are pruned.
CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    model          TEXT    NOT NULL,
    record_id      INTEGER NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('create', 'write', 'unlink')),
    timestamp      TEXT    NOT NULL,
    payload        TEXT,
    changed_fields TEXT,
    dedupe_key     TEXT    UNIQUE,
    received_at    TEXT    NOT NULL
);

-- Where each device is in the log, per app_type.
CREATE TABLE devices (
    user_id         INTEGER NOT NULL,
    device_id       TEXT    NOT NULL,
    app_type        TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    sync_count      INTEGER NOT NULL,
    first_sync_time TEXT    NOT NULL,
    last_sync_time  TEXT    NOT NULL,
    PRIMARY KEY (user_id, device_id, app_type)
) WITHOUT ROWID;

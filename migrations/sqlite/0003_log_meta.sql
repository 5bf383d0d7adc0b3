-- Facts about the log as a whole. `pruned_through`: every event with an id up to this value may
-- have been deleted by retention; devices positioned before it must start over.
CREATE TABLE log_meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

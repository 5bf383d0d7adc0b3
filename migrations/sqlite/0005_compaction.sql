-- Compaction folds a record's older changes into a newer event of the same record and drops
-- them. `rev` counts how often an event was rewritten so: what was derived from an earlier
-- revision (a plugin's kept answer) is stale.
ALTER TABLE events ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
-- What the record was just before the event, worked out at append from its newest event:
-- NULL when not known, '' when it did not exist (new, or back after its deletion), else the
-- values before the event of the fields it changed, as a JSON object. Plugins read a record's
-- previous version from it, to tell a device that the record left its feed.
ALTER TABLE events ADD COLUMN previous TEXT;
-- The oldest change compaction folded into the event (NULL: none), and how far compaction had
-- gone (compacted_through) when it last folded changes into it: a device positioned at or after
-- the oldest, which began reading the log before that fold, may have read part of the history,
-- and what it holds of the record is not known.
ALTER TABLE events ADD COLUMN folded_from INTEGER;
ALTER TABLE events ADD COLUMN folded_at INTEGER;
-- log_meta gains, as compaction runs:
--   compacted_through:          every event up to this id had its record's older changes folded
--                               into it when compaction passed it;
--   tombstones_checked_through: deletions up to this id were looked at for dropping;
--   tombstones_dropped_through: the newest deletion dropped; a device positioned before it may
--                               have missed it, and must start over.

-- How far compaction had gone when the device began reading the log from its start: the
-- deletions up to there had their histories folded into them, and cannot concern it.
ALTER TABLE devices ADD COLUMN tombstone_mark INTEGER NOT NULL DEFAULT 0;

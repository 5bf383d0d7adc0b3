-- Each record's events in log order: the newest event of a record is one index probe away (an
-- Odoo version sent again is a duplicate only while it is its record's newest).
CREATE INDEX events_by_record ON events (model, record_id);

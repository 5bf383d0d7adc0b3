-- What the server keeps of each source it reads changes from by itself (an Odoo model's import,
-- sweep and deletion check): how far it got, as a JSON object the source defines, so that a
-- restart goes on where it stopped.
CREATE TABLE sources (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

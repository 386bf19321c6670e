-- Lifecycle events on their way to an app's back end (streams/lifecycle.py): written when a stream's
-- end is announced, deleted once delivered or given up. A row whose instance (owner) died is taken
-- by another and sent again, so an event outlives the process that was sending it.
CREATE TABLE IF NOT EXISTS lifecycle_deliveries (
    id         TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event      TEXT NOT NULL,
    body       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS lifecycle_deliveries_by_owner ON lifecycle_deliveries (owner);

-- The dashboard lists an app's last failed streams apart from its recent ones (Store.recent_failures):
-- by status, so the few failures are found without reading through every completed stream.
CREATE INDEX IF NOT EXISTS streams_by_app_status ON streams (app_id, status, created_at);

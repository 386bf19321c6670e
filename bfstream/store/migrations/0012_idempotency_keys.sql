-- Idempotency keys of /stream/create and /llm/query (api/idempotency.py): per app, the request's
-- fingerprint, the instance answering it while it runs (owner), and once answered, the answer as
-- JSON, replayed to a retry with the same key. Rows older than a day are forgotten.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    owner       TEXT,
    answer      TEXT,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);

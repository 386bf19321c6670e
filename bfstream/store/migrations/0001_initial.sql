-- The schema as it stood before migrations existed; IF NOT EXISTS lets it run over such a database.
-- Written in the SQL that SQLite and PostgreSQL share.
CREATE TABLE IF NOT EXISTS apps (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    created_at      DOUBLE PRECISION NOT NULL,
    browser_publish INTEGER NOT NULL DEFAULT 1,
    retain_text     INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS user_channels (
    app_id  TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    mode    TEXT NOT NULL,
    PRIMARY KEY (app_id, user_id, channel)
);
CREATE INDEX IF NOT EXISTS user_channels_by_channel ON user_channels (app_id, channel);
-- A channel stays authenticated after its last user is removed: emptying it must not open it to all.
CREATE TABLE IF NOT EXISTS authenticated_channels (
    app_id  TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    PRIMARY KEY (app_id, channel)
);
CREATE TABLE IF NOT EXISTS streams (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    service       TEXT NOT NULL,
    model         TEXT NOT NULL,
    channels      TEXT NOT NULL,
    action_name   TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    ended_at      DOUBLE PRECISION,
    finish_reason TEXT,
    usage         TEXT,
    error         TEXT,
    text          TEXT
);
CREATE INDEX IF NOT EXISTS streams_by_app ON streams (app_id, created_at);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

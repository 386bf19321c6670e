-- Provider keys an app keeps on the server (bfstream apps credentials), one per service, sealed
-- with the server's credentials key (bfstream/credentials.py): never stored in clear. They go
-- with their app.
CREATE TABLE IF NOT EXISTS app_credentials (
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    service    TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (app_id, service)
);

-- Several instances share one database: a record names the instance running the stream, and the
-- event number it had reached, so another instance can end it if that one dies.
ALTER TABLE streams ADD COLUMN owner TEXT;
ALTER TABLE streams ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX streams_running ON streams (status, owner);

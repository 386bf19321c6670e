-- A rotated key may keep working for a grace period, so back ends can switch without downtime:
-- the previous key's hash, and until when (Unix time) it is still accepted.
ALTER TABLE apps ADD COLUMN old_key_hash TEXT;
ALTER TABLE apps ADD COLUMN old_key_until DOUBLE PRECISION;
CREATE INDEX apps_by_old_key ON apps (old_key_hash);

-- The stream lifecycle events an app's webhook is subscribed to (a JSON list of names, NULL: none),
-- and the caller's metadata of each stream (a JSON object), kept so that whoever ends the stream,
-- its owner or the instance that ends it for a dead owner, can send it back with the event.
ALTER TABLE apps ADD COLUMN webhook_events TEXT;
ALTER TABLE streams ADD COLUMN metadata TEXT;

-- Backend tools and channel modes reach an app's back end by a signed POST: its URL, and the
-- secret that signs each request. The secret is kept as it is (a signature needs it), like the
-- token key in meta; it is shown once when made.
ALTER TABLE apps ADD COLUMN webhook_url TEXT;
ALTER TABLE apps ADD COLUMN webhook_secret TEXT;
-- The tool calls a stream made, as a JSON list: name, kind, round, duration, outcome.
ALTER TABLE streams ADD COLUMN tools TEXT;

-- The model's reasoning (the whole text of its reasoning events, when the request asked for them and
-- the app keeps text) and the sources the answer cited ({url, title?, snippet?} as a JSON list).
ALTER TABLE streams ADD COLUMN reasoning TEXT;
ALTER TABLE streams ADD COLUMN sources TEXT;

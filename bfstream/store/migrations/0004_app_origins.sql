-- The page origins (https://shop.example) allowed to open an app's connections and stop its
-- streams from a browser, as a JSON list; NULL allows any.
ALTER TABLE apps ADD COLUMN origins TEXT;

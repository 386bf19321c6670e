-- An app's FileMaker Server target (bfstream apps update APP --filemaker ...): backend tool calls run
-- there as scripts named after the tool, and lifecycle events run the events script, through the
-- FileMaker Data API. NULL host: no target. The account's password is not here: it is kept sealed in
-- app_credentials under the service name "FileMaker" (bfstream/filemaker/target.py).
ALTER TABLE apps ADD COLUMN filemaker_host TEXT;
ALTER TABLE apps ADD COLUMN filemaker_database TEXT;
ALTER TABLE apps ADD COLUMN filemaker_layout TEXT;
ALTER TABLE apps ADD COLUMN filemaker_account TEXT;
ALTER TABLE apps ADD COLUMN filemaker_events_script TEXT;

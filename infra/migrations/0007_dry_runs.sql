-- A dry run ("mode": "validate") is merged like an import, checks and error report included, but writes no
-- resource table: the merge reads this flag from the run row.
ALTER TABLE import_runs ADD COLUMN dry_run boolean NOT NULL DEFAULT false;

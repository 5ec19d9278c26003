-- The sweeper's re-send count is of re-sends in a row without progress: a long job whose writers stalled now
-- and then, but staged chunks in between, is never failed for it. resent_staged: chunks staged at the last one.
ALTER TABLE import_runs ADD COLUMN resent_staged integer NOT NULL DEFAULT 0;

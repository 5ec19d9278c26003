-- Recovery bookkeeping for the sweeper and the merge's staging check.
-- first_idx: the first record index of a chunk, so that the merge can count each claimed chunk's staged rows
-- (staging is UNLOGGED: a crash recovery empties it while the logged claims remain).
ALTER TABLE import_chunks ADD COLUMN first_idx integer;
ALTER TABLE import_runs
    -- When the chunker announced its last chunk: the start of the writers' part, for stall detection.
    ADD COLUMN chunked_at   timestamptz,
    -- When the sweeper last sent the messages of unstaged chunks again, and how often it did.
    ADD COLUMN resent_at    timestamptz,
    ADD COLUMN resends      integer NOT NULL DEFAULT 0,
    -- How often the merge found staged rows missing and sent their chunks to be staged again.
    ADD COLUMN restages     integer NOT NULL DEFAULT 0;

-- Per-chunk record counts, written in the chunk's staging transaction: job progress (processed, failed) is
-- then exactly-once by construction and costs no extra write per chunk.
ALTER TABLE import_chunks
    ADD COLUMN records integer NOT NULL DEFAULT 0,
    ADD COLUMN failed  integer NOT NULL DEFAULT 0;

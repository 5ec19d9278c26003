-- The merge joins a job's staged records back by (job_id, idx). With an index on job_id alone, a planner
-- working from stale statistics (staging tables fill up within seconds) can pick a nested loop that scans
-- the whole job once per record: a million-record merge then never finishes. (job_id, idx) bounds it.
DROP INDEX stage_users_job_id_idx;
DROP INDEX stage_articles_job_id_idx;
DROP INDEX stage_comments_job_id_idx;
CREATE INDEX stage_users_job_id_idx_idx ON stage_users (job_id, idx);
CREATE INDEX stage_articles_job_id_idx_idx ON stage_articles (job_id, idx);
CREATE INDEX stage_comments_job_id_idx_idx ON stage_comments (job_id, idx);

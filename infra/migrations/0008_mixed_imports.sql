-- Mixed imports (resource=mixed): one run stages records of all three resources and merges them in dependency
-- order. Each error row says which resource's record it is about (NULL: a mixed record that names none), so
-- that the outcome per resource can be counted; the run keeps those counts.
ALTER TABLE import_runs DROP CONSTRAINT import_runs_resource_check;
ALTER TABLE import_runs ADD CONSTRAINT import_runs_resource_check
    CHECK (resource IN ('users', 'articles', 'comments', 'mixed'));
ALTER TABLE import_runs ADD COLUMN counters_by_resource jsonb;
ALTER TABLE import_errors ADD COLUMN resource text;

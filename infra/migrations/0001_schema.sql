-- Domain tables. Ids are TEXT chosen by the source system (or derived from the natural key on import).

CREATE TABLE users (
    id         text PRIMARY KEY,
    email      text NOT NULL,
    name       text NOT NULL,
    role       text NOT NULL,
    active     boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE articles (
    id           text PRIMARY KEY,
    slug         text NOT NULL UNIQUE,
    title        text NOT NULL,
    body         text NOT NULL DEFAULT '',
    author_id    text NOT NULL REFERENCES users (id),
    tags         text[] NOT NULL DEFAULT '{}',
    published_at timestamptz,
    status       text NOT NULL CHECK (status IN ('draft', 'published')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX articles_author_id_idx ON articles (author_id);

CREATE TABLE comments (
    id         text PRIMARY KEY,
    article_id text NOT NULL REFERENCES articles (id),
    user_id    text NOT NULL REFERENCES users (id),
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_article_id_idx ON comments (article_id);
CREATE INDEX comments_user_id_idx ON comments (user_id);

-- Import pipeline bookkeeping.

CREATE TABLE import_runs (
    job_id         text PRIMARY KEY,
    resource       text NOT NULL CHECK (resource IN ('users', 'articles', 'comments')),
    chunks_total   integer,
    records_total  integer,
    merged_at      timestamptz,
    -- Set when the job failed: such a run is never merged.
    failed_at      timestamptz,
    succeeded      integer,
    failed         integer,
    errors_by_code jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per chunk whose records are staged; the primary key is what makes a redelivered chunk a no-op.
CREATE TABLE import_chunks (
    job_id    text NOT NULL,
    chunk_no  integer NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_no)
);

-- Staging: UNLOGGED because rows live only until their job is merged, and a crash simply means re-running
-- the job; skipping WAL roughly halves the cost of the COPY. No constraints: the merge checks everything.
CREATE UNLOGGED TABLE stage_users (
    job_id     text NOT NULL,
    idx        integer NOT NULL,
    line       integer,
    id         text,
    email      text,
    name       text,
    role       text,
    active     boolean,
    created_at timestamptz,
    updated_at timestamptz,
    raw        text NOT NULL
);
CREATE INDEX stage_users_job_id_idx ON stage_users (job_id);

CREATE UNLOGGED TABLE stage_articles (
    job_id       text NOT NULL,
    idx          integer NOT NULL,
    line         integer,
    id           text,
    slug         text,
    title        text,
    body         text,
    author_id    text,
    tags         text[],
    published_at timestamptz,
    status       text,
    created_at   timestamptz,
    updated_at   timestamptz,
    raw          text NOT NULL
);
CREATE INDEX stage_articles_job_id_idx ON stage_articles (job_id);

CREATE UNLOGGED TABLE stage_comments (
    job_id     text NOT NULL,
    idx        integer NOT NULL,
    line       integer,
    id         text,
    article_id text,
    user_id    text,
    body       text,
    created_at timestamptz,
    updated_at timestamptz,
    raw        text NOT NULL
);
CREATE INDEX stage_comments_job_id_idx ON stage_comments (job_id);

-- Per-record errors of a job, from validation (staged by the writers) and from the merge.
CREATE TABLE import_errors (
    job_id      text NOT NULL,
    idx         integer NOT NULL,
    line        integer,
    code        text NOT NULL,
    field       text,
    message     text NOT NULL,
    value_json  text,
    record_json text NOT NULL
);
CREATE INDEX import_errors_job_id_idx_idx ON import_errors (job_id, idx);

-- Chunks that keep failing in a writer, for the dead-letter path.
CREATE TABLE import_chunk_failures (
    job_id     text NOT NULL,
    chunk_no   integer NOT NULL,
    attempts   integer NOT NULL DEFAULT 1,
    last_error text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk_no)
);

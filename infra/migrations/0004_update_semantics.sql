-- Update semantics: a staged row says which columns its record gave. Bit i of `provided` stands for the i-th
-- column of the resource in bulkio.domain.resources.COLUMNS (users: id, email, name, role, active, created_at,
-- updated_at; articles: id, slug, title, body, author_id, tags, published_at, status, created_at, updated_at;
-- comments: id, article_id, user_id, body, created_at, updated_at). A column left out keeps its stored value on
-- update and takes its default on insert; a nullable column given as null is cleared. The default, every bit,
-- is the old meaning (the record gave every column) for rows staged before this migration.
ALTER TABLE stage_users ADD COLUMN provided integer NOT NULL DEFAULT -1;
ALTER TABLE stage_articles ADD COLUMN provided integer NOT NULL DEFAULT -1;
ALTER TABLE stage_comments ADD COLUMN provided integer NOT NULL DEFAULT -1;

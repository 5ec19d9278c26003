"""The merge: one SQL statement per resource that settles a job's staged records against the tables.

Its result depends only on the staged rows and on the tables as they were before it ran: never on chunk order
or on how many writers there were (the one exception: the random id of a new row whose derived id belongs to
another row, see below). Every identifier in it comes from the constants below.

The rules it implements (README, "Validation rules" and "Updates"):

- Target. A record with an id targets that row. A record without one targets the row holding its natural key
  now (users: email, case-insensitively; articles: slug), else a new row whose id is derived from the key
  (md5, so that two runs of a file make identical tables); when that derived id already belongs to another
  row (the key's first holder was renamed) or is claimed by an explicit id in the same job, the new row gets
  a random id (gen_random_uuid()) instead of overwriting anything.
- Update semantics. A staged row holds the columns its record gave (`provided`, bit i for COLUMNS[resource][i]).
  A column left out keeps the stored value on update and takes its default on insert; a nullable column given
  as null (article body, tags, published_at) is cleared. A new row needs its required columns
  (`missing_field`). Cross-field rules hold on the merged row (stored values plus the record): a draft has no
  published_at. `updated_at` becomes now() only when some value changes, unless the record gives its own.
- First accepted record wins. Checks against the tables' prior state come first, per record: required columns
  of a new row, a natural key owned by another row (`email_taken`, `slug_taken`), references to rows that do
  not exist, the draft rule. Only the records still standing then claim their target id and natural key, in
  record order: the earliest standing claimant wins, the later ones are `duplicate_in_file` and claim nothing,
  so a record that lost is never held against a record after it. That last step is a greedy matching (record
  order decides), computed in rounds by a recursive CTE over the few records that share a target or a key
  with another; everything else is plain set-based joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bulkio.domain.records import DEFAULT_USER_ACTIVE, DEFAULT_USER_ROLE
from bulkio.domain.resources import COLUMNS, Resource

STAGE_TABLES: dict[Resource, str] = {resource: f"stage_{resource.value}" for resource in Resource}


def provided_bit(resource: Resource, column: str) -> int:
    """The bit of `column` in a staged row's `provided` mask (the writers set it; see postgres._row_encoder)."""
    return 1 << COLUMNS[resource].index(column)


@dataclass(frozen=True, slots=True)
class _Reference:
    column: str
    table: str
    code: str
    noun: str


@dataclass(frozen=True, slots=True)
class _MergeSpec:
    resource: Resource
    noun: str
    key_column: str | None
    references: tuple[_Reference, ...]
    required: tuple[str, ...]
    """Columns a new row must have (NOT NULL without a default)."""
    defaults: dict[str, str] = field(default_factory=dict)
    """SQL of the value a new row takes for a column its record leaves out (created_at, updated_at: now())."""
    cleared: dict[str, str] = field(default_factory=dict)
    """Nullable columns: SQL of the value null (or an empty CSV cell) clears them to; also their default."""


_MERGE_SPECS: dict[Resource, _MergeSpec] = {
    Resource.USERS: _MergeSpec(
        Resource.USERS,
        "user",
        "email",
        (),
        required=("email", "name"),
        defaults={"role": f"'{DEFAULT_USER_ROLE}'", "active": "true" if DEFAULT_USER_ACTIVE else "false"},
    ),
    Resource.ARTICLES: _MergeSpec(
        Resource.ARTICLES,
        "article",
        "slug",
        (_Reference("author_id", "users", "unknown_author", "user"),),
        required=("slug", "title", "author_id"),
        cleared={"body": "''", "tags": "'{}'::text[]", "published_at": "NULL::timestamptz"},
    ),
    Resource.COMMENTS: _MergeSpec(
        Resource.COMMENTS,
        "comment",
        None,
        (
            _Reference("article_id", "articles", "unknown_article", "article"),
            _Reference("user_id", "users", "unknown_user", "user"),
        ),
        required=("article_id", "user_id", "body"),
    ),
}


def _key_sql(spec: _MergeSpec, alias: str) -> str:
    """The natural key as compared: emails case-insensitively, slugs as they are."""
    if spec.key_column is None:
        return "NULL::text"
    if spec.key_column == "email":
        return f"lower({alias}.email)"
    return f"{alias}.{spec.key_column}"


def _merged_value(spec: _MergeSpec, column: str) -> str:
    """The value of `column` in the row the record makes (r: the staged record, e: the stored row, if any)."""
    if column in spec.cleared:
        bit = provided_bit(spec.resource, column)
        clear = spec.cleared[column]
        return (
            f"CASE WHEN r.provided & {bit} <> 0 THEN coalesce(r.{column}, {clear})"
            f" WHEN e.id IS NOT NULL THEN e.{column} ELSE {clear} END"
        )
    if column == "status":
        # On insert a status left out follows published_at; on update the stored status stays.
        published = _merged_value(spec, "published_at")
        return f"coalesce(r.status, e.status, CASE WHEN ({published}) IS NOT NULL THEN 'published' ELSE 'draft' END)"
    if column == "created_at":
        return "coalesce(r.created_at, e.created_at, now())"
    default = spec.defaults.get(column)
    return f"coalesce(r.{column}, e.{column}, {default})" if default else f"coalesce(r.{column}, e.{column})"


def _missing_reference(ref: _Reference, mixed: bool) -> str:
    """The condition that the merged row's reference names no row. In a mixed job a parent of the same file counts
    as well: accepted by its own merge (which ran first), it is in the table; in a dry run, which writes no row,
    its staged record without an error stands for it, so that the dry run reports what the import would."""
    missing = f"NOT EXISTS (SELECT 1 FROM {ref.table} ref WHERE ref.id = m.{ref.column})"
    if not mixed:
        return missing
    parent_stage = STAGE_TABLES[Resource(ref.table)]
    return (
        f"{missing} AND NOT EXISTS (SELECT 1 FROM {parent_stage} p WHERE p.job_id = %(job_id)s"
        f" AND p.id = m.{ref.column} AND NOT EXISTS ("
        "SELECT 1 FROM import_errors pe WHERE pe.job_id = %(job_id)s AND pe.idx = p.idx))"
    )


def _reference_message(ref: _Reference, mixed: bool) -> str:
    """What a missing reference's error says; in a mixed job, the line of the parent the same file rejected."""
    fix = f"format('no {ref.noun} has id %%s: import the {ref.noun} first or fix {ref.column}', c.{ref.column})"
    if not mixed:
        return fix
    rejected_parent = (
        f"(SELECT format('{ref.noun} %%s was rejected at %%s of this file: fix that record, then import both again', "
        f"c.{ref.column}, min(coalesce('line ' || pe.line::text, 'record ' || pe.idx::text)))"
        f" FROM import_errors pe WHERE pe.job_id = %(job_id)s AND pe.resource = '{ref.table}'"
        f" AND left(pe.record_json, 1) = '{{' AND pe.record_json::json ->> 'id' = c.{ref.column}"
        " HAVING count(*) > 0)"
    )
    return f"coalesce({rejected_parent}, {fix})"


def _merge_sql(spec: _MergeSpec, mixed: bool = False) -> str:
    """Build the merge statement of one resource. Every identifier comes from the constants above.

    CTEs: checked (targets, merged rows and the per-record checks against the prior state),
    claims/contested/settlement/settled (who wins a shared id or key, in record order), key_holders (who
    holds a key another record found taken), errors, inserted and updated.

    New rows are inserted without ON CONFLICT (which costs a third of the insert: it probes the primary key
    before each row as well as after). No conflict can happen: a record inserts only when no row held its target
    id in the statement's snapshot (its own id, or a derived one checked against the table, or a random one),
    settlement accepts one record per target, and only merges write these tables, one per resource at a time
    (the advisory lock in postgres.ImportStore._merge). Should a row with that id appear anyway, the merge fails
    on the primary key and rolls back whole; the next try sees the row and updates it.

    Parameters: job_id, and writes (false for a dry run: every check and error as in a real run, no row written;
    the count it answers is then the records a real run would accept).
    """
    table = spec.resource.value
    stage = STAGE_TABLES[spec.resource]
    columns = COLUMNS[spec.resource]
    data_columns = [column for column in columns if column != "id"]
    merged_columns = [column for column in data_columns if column != "updated_at"]
    key = spec.key_column
    key_sql = _key_sql(spec, "r")
    generated_id = (
        f"CASE WHEN r.id IS NULL AND owner.id IS NULL THEN md5('{table}:' || {key_sql})::uuid::text END"
        if key
        else "NULL::text"
    )
    owner_join = (
        f"LEFT JOIN {table} owner ON {_key_sql(spec, 'owner')} = {key_sql}"
        if key
        else "LEFT JOIN (SELECT NULL::text AS id) owner ON false"
    )

    # ------------------------------------------------------------------ per-record checks (prior state)
    checks: list[tuple[str, str]] = [  # (flag name, condition on m: the merged row)
        (f"missing_{column}", f"NOT m.row_exists AND m.v_{column} IS NULL") for column in spec.required
    ]
    if key:
        checks.append(("key_taken", "m.natural_key IS NOT NULL AND m.key_owner_id <> m.known_target"))
    checks += [
        (ref.code, f"m.{ref.column} IS NOT NULL AND {_missing_reference(ref, mixed)}") for ref in spec.references
    ]
    if spec.resource is Resource.ARTICLES:
        checks.append(("draft_published", "m.v_status = 'draft' AND m.v_published_at IS NOT NULL"))
    flags = ",\n        ".join(f"coalesce({condition}, false) AS {name}" for name, condition in checks)
    standing = " OR ".join(f"f.{name}" for name, _ in checks)

    once_per_file = f"each {spec.noun} may appear once per file: remove or merge the later record"
    error_rows = [
        "(c.target_id IS NULL, 'missing_key', 'id', "
        + (
            f"'a record needs an id or its {key}: add one', NULL::text)"
            if key
            else f"'each {spec.noun} needs an id so that a re-import updates it instead of adding a copy', NULL::text)"
        ),
    ]
    error_rows += [
        f"(c.missing_{column}, 'missing_field', '{column}', format('{column} is required: no {spec.noun} has id %%s, "
        f"so this record would create it; add {column} (an update of an existing {spec.noun} may leave it out)', "
        "c.target_id), NULL::text)"
        for column in spec.required
    ]
    if key:
        # When an earlier accepted record of the job holds the key (it made the key its row's, or keeps it
        # there), the later one is reported as its duplicate: so a re-import reports what the first run did.
        error_rows += [
            f"(c.key_taken AND h.idx IS NULL, '{key}_taken', '{key}', "
            f"format('{key} belongs to another {spec.noun} (id %%s): use that id or another {key}', "
            f"c.key_owner_id), to_json(c.{key})::text)",
            f"(c.key_taken AND h.idx IS NOT NULL, 'duplicate_in_file', '{key}', "
            f"format('same {key} as %%s; {once_per_file}', h.place), to_json(c.{key})::text)",
        ]
    error_rows += [
        f"(c.{ref.code}, '{ref.code}', '{ref.column}', {_reference_message(ref, mixed)}, to_json(c.{ref.column})::text)"
        for ref in spec.references
    ]
    if spec.resource is Resource.ARTICLES:
        error_rows.append(
            "(c.draft_published, 'draft_has_published_at', 'published_at', "
            "format('a draft cannot have published_at: with the stored values, the article (id %%s) would be a "
            "draft published at %%s; set published_at to null, or status to published', c.target_id, "
            "to_json(c.v_published_at) #>> '{}'), to_json(c.v_published_at)::text)"
        )
    # The claims lost to an earlier accepted record (only standing records get this far).
    same_id = "(s.by_target_id IS NOT NULL AND c.id IS NOT NULL)"
    error_rows.append(
        f"(coalesce({same_id}, false), 'duplicate_in_file', 'id', "
        f"format('same id as %%s; {once_per_file}', s.by_target), to_json(c.id)::text)"
    )
    if key:
        error_rows += [
            f"(s.by_key IS NOT NULL, 'duplicate_in_file', '{key}', "
            f"format('same {key} as %%s; {once_per_file}', s.by_key), to_json(c.{key})::text)",
            f"(s.by_target IS NOT NULL AND s.by_key IS NULL AND NOT coalesce({same_id}, false), 'duplicate_in_file', "
            f"CASE WHEN c.id IS NULL THEN '{key}' ELSE 'id' END, "
            f"format('targets the same {spec.noun} (id %%s) as %%s; {once_per_file}', c.target_id, s.by_target), "
            f"CASE WHEN c.id IS NULL THEN to_json(c.{key}) ELSE to_json(c.id) END::text)",
        ]
    error_values = ",\n        ".join(error_rows)

    record_columns = ", ".join(f"r.{column}" for column in data_columns)
    merged_values = ",\n            ".join(f"{_merged_value(spec, column)} AS v_{column}" for column in merged_columns)
    stored_values = ", ".join(f"e.{column} AS e_{column}" for column in data_columns)
    changed = (
        f"ROW({', '.join(f'm.v_{column}' for column in merged_columns)}) IS DISTINCT FROM "
        f"ROW({', '.join(f'm.e_{column}' for column in merged_columns)})"
    )
    rewritten = (
        f"ROW({', '.join(f'f.v_{column}' for column in data_columns)}) IS DISTINCT FROM "
        f"ROW({', '.join(f'f.e_{column}' for column in data_columns)})"
    )
    # What the statement reads of `checked` after it: the record's own columns only where an error reports them.
    # The stored values and the record's other columns stay out of it: they would be materialized for every
    # record (an article's body as stored, as given and as merged: three copies of its widest column).
    reported_columns = ["id", *([key] if key else []), *(ref.column for ref in spec.references)]
    kept_columns = ", ".join(
        [
            *(f"f.{column}" for column in ("idx", "line", *reported_columns)),
            *(f"f.{column}" for column in ("natural_key", "place", "key_owner_id", "row_exists")),
            *(f"f.{name}" for name, _ in checks),
            *(f"f.v_{column}" for column in data_columns),
        ]
    )
    accepted = "c.target_id IS NOT NULL AND c.standing AND (s.state IS NULL OR s.state = 'a')"
    key_taken = "k.key_taken" if key else "false"

    return f"""
WITH RECURSIVE checked AS MATERIALIZED (
    -- One pass over the job's staged records: target, merged row (stored values plus the record), the checks
    -- against the tables' prior state. Materialized: each record's random id, if any, is drawn once.
    -- (OFFSET 0 keeps each level a level of its own: its expressions are computed once, not copied into the
    -- expressions of the level above.)
    SELECT {kept_columns},
        f.has_target AND NOT ({standing}) AS standing,
        -- Whether the row it makes differs from the stored one (the upsert skips the others: locking an unchanged
        -- row to find that out costs a write per row of a re-import).
        NOT f.row_exists OR {rewritten} AS rewrites,
        coalesce(f.known_target,
            CASE WHEN f.generated_id IS NULL THEN NULL
                 -- The derived id belongs to another row (its key's first holder was renamed), or an explicit
                 -- id of this job claims it: the new row gets a random id rather than overwriting that row.
                 WHEN EXISTS (SELECT 1 FROM {table} clash WHERE clash.id = f.generated_id)
                   OR f.generated_id IN (SELECT y.id FROM {stage} y WHERE y.job_id = %(job_id)s AND y.id IS NOT NULL)
                 THEN gen_random_uuid()::text
                 ELSE f.generated_id END) AS target_id
    FROM (
      SELECT m.*,
        {flags},
        coalesce(m.updated_at, CASE WHEN NOT m.row_exists OR {changed} THEN now() ELSE m.e_updated_at END)
            AS v_updated_at
      FROM (
        SELECT r.idx, r.line, r.id, {record_columns},
            {key_sql} AS natural_key,
            coalesce('line ' || r.line::text, 'record ' || r.idx::text) AS place,
            owner.id AS key_owner_id,
            -- A record's id, else the row holding its key now; else a new row (whose id is derived below).
            coalesce(r.id, owner.id) AS known_target,
            {generated_id} AS generated_id,
            coalesce(r.id, owner.id, {key_sql}) IS NOT NULL AS has_target,
            e.id IS NOT NULL AS row_exists,
            {merged_values},
            {stored_values}
        FROM {stage} r
        {owner_join}
        LEFT JOIN {table} e ON e.id = coalesce(r.id, owner.id)
        WHERE r.job_id = %(job_id)s
        OFFSET 0
      ) m
      OFFSET 0
    ) f
),
claims AS (
    SELECT c.idx, c.id, c.natural_key, c.target_id, c.place FROM checked c WHERE c.standing
),
contested AS (
    -- Records sharing their target or their key with another standing record; the rest win unopposed.
    SELECT c.* FROM claims c
    WHERE c.target_id IN (SELECT target_id FROM claims GROUP BY target_id HAVING count(*) > 1)
       OR c.natural_key IN (
           SELECT natural_key FROM claims WHERE natural_key IS NOT NULL GROUP BY natural_key HAVING count(*) > 1)
),
settlement (idx, id, natural_key, target_id, place, state, round, by_target, by_target_id, by_key) AS (
    -- Rounds of a greedy matching in record order. state: u(ndecided), a(ccepted), r(ejected). A record is
    -- rejected when an earlier record holding its target or key was accepted, and accepted when no earlier
    -- record holding them is still undecided. Rejected records drop out, so they block nothing.
    SELECT c.idx, c.id, c.natural_key, c.target_id, c.place, 'u'::text, 0, NULL::text, NULL::text, NULL::text
    FROM contested c
  UNION ALL
    SELECT w.idx, w.id, w.natural_key, w.target_id, w.place,
        CASE WHEN w.state = 'a' THEN 'a'
             WHEN w.target_winner < w.idx OR w.key_winner < w.idx THEN 'r'
             WHEN w.target_first_open >= w.idx AND coalesce(w.key_first_open >= w.idx, true) THEN 'a'
             ELSE 'u' END,
        w.round + 1,
        CASE WHEN w.state = 'u' AND w.target_winner < w.idx THEN w.target_winner_place END,
        CASE WHEN w.state = 'u' AND w.target_winner < w.idx THEN w.target_winner_id END,
        CASE WHEN w.state = 'u' AND w.key_winner < w.idx THEN w.key_winner_place END
    FROM (
        SELECT p.idx, p.id, p.natural_key, p.target_id, p.place, p.state, p.round,
            min(p.idx) FILTER (WHERE p.state = 'a') OVER by_target AS target_winner,
            max(p.place) FILTER (WHERE p.state = 'a') OVER by_target AS target_winner_place,
            max(p.id) FILTER (WHERE p.state = 'a') OVER by_target AS target_winner_id,
            min(p.idx) FILTER (WHERE p.state = 'u') OVER by_target AS target_first_open,
            min(p.idx) FILTER (WHERE p.state = 'a') OVER by_key AS key_winner,
            max(p.place) FILTER (WHERE p.state = 'a') OVER by_key AS key_winner_place,
            min(p.idx) FILTER (WHERE p.state = 'u') OVER by_key AS key_first_open,
            count(*) FILTER (WHERE p.state = 'u') OVER () AS open_records
        FROM settlement p
        WHERE p.state <> 'r'
        WINDOW by_target AS (PARTITION BY p.target_id),
               by_key AS (PARTITION BY p.natural_key, CASE WHEN p.natural_key IS NULL THEN p.idx END)
    ) w
    WHERE w.open_records > 0
),
settled AS MATERIALIZED (
    SELECT DISTINCT ON (t.idx) t.idx, t.state, t.by_target, t.by_target_id, t.by_key
    FROM settlement t
    ORDER BY t.idx, t.round DESC
),
key_holders AS (
    -- The accepted record holding each key that another record found taken (at most one per key).
    SELECT c.natural_key, c.idx, c.place
    FROM checked c
    LEFT JOIN settled s ON s.idx = c.idx
    WHERE {accepted} AND c.natural_key IN (SELECT k.natural_key FROM checked k WHERE {key_taken})
),
rejected AS MATERIALIZED (
    -- The few records that fail, picked before the joins that only their errors need.
    SELECT c.* FROM checked c LEFT JOIN settled s ON s.idx = c.idx WHERE NOT ({accepted})
),
errors AS (
    INSERT INTO import_errors (job_id, idx, line, code, field, message, value_json, record_json, resource)
    SELECT %(job_id)s, c.idx, c.line, e.code, e.field, e.message, e.value_json,
        -- Looked up per error (few), not joined: the original record is the widest column of all.
        (SELECT st.raw FROM {stage} st WHERE st.job_id = %(job_id)s AND st.idx = c.idx),
        '{table}'
    FROM rejected c
    LEFT JOIN settled s ON s.idx = c.idx
    LEFT JOIN key_holders h ON h.natural_key = c.natural_key AND h.idx < c.idx
    CROSS JOIN LATERAL (VALUES
        {error_values}
    ) AS e(applies, code, field, message, value_json)
    WHERE NOT ({accepted}) AND e.applies
      -- A step's errors are reported only for the records that passed the steps before it.
      AND (e.code = 'missing_key' OR c.target_id IS NOT NULL)
),
inserted AS (
    -- New rows go in with a plain INSERT: ON CONFLICT would probe the primary key before each row as well as
    -- after, and no conflict can happen here (see _merge_sql's docstring).
    INSERT INTO {table} ({", ".join(columns)})
    SELECT c.target_id, {", ".join(f"c.v_{column}" for column in data_columns)}
    FROM checked c
    LEFT JOIN settled s ON s.idx = c.idx
    WHERE {accepted} AND NOT c.row_exists AND %(writes)s
),
updated AS (
    -- A re-imported row that nothing changes is not written again (c.rewrites).
    UPDATE {table} t SET {", ".join(f"{column} = c.v_{column}" for column in data_columns)}
    FROM checked c
    LEFT JOIN settled s ON s.idx = c.idx
    WHERE t.id = c.target_id AND {accepted} AND c.row_exists AND c.rewrites AND %(writes)s
)
SELECT count(*) FROM checked c LEFT JOIN settled s ON s.idx = c.idx WHERE {accepted}
"""


MERGE_SQL: dict[Resource, str] = {resource: _merge_sql(spec) for resource, spec in _MERGE_SPECS.items()}
# A mixed job's: one per resource, run in dependency order in one transaction (bulkio.adapters.postgres).
MIXED_MERGE_SQL: dict[Resource, str] = {
    resource: _merge_sql(spec, mixed=True) for resource, spec in _MERGE_SPECS.items()
}

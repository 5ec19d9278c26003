"""The merge: one SQL statement per resource that settles a job's staged records against the tables.

Its result depends only on the staged rows and on the tables as they were before it ran: never on chunk order
or on how many writers there were. Every identifier in it comes from the constants below.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulkio.domain.resources import COLUMNS, Resource

STAGE_TABLES: dict[Resource, str] = {resource: f"stage_{resource.value}" for resource in Resource}


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
    # Values for columns that a record may leave out but the table requires.
    fallbacks: dict[str, str]


_MERGE_SPECS: dict[Resource, _MergeSpec] = {
    Resource.USERS: _MergeSpec(Resource.USERS, "user", "email", (), {}),
    Resource.ARTICLES: _MergeSpec(
        Resource.ARTICLES,
        "article",
        "slug",
        (_Reference("author_id", "users", "unknown_author", "user"),),
        {"body": "''", "tags": "'{}'::text[]"},
    ),
    Resource.COMMENTS: _MergeSpec(
        Resource.COMMENTS,
        "comment",
        None,
        (
            _Reference("article_id", "articles", "unknown_article", "article"),
            _Reference("user_id", "users", "unknown_user", "user"),
        ),
        {},
    ),
}

_TIMESTAMPS = ("created_at", "updated_at")


def _key_sql(spec: _MergeSpec, alias: str) -> str:
    """The natural key as compared: emails case-insensitively, slugs as they are."""
    if spec.key_column is None:
        return "NULL::text"
    if spec.key_column == "email":
        return f"lower({alias}.email)"
    return f"{alias}.{spec.key_column}"


def _merge_sql(spec: _MergeSpec) -> str:
    """Build the merge statement of one resource. Every identifier comes from the constants above.

    Steps, each applied only to the rows that passed the previous one (errors of one step are all reported):
    a) duplicates inside the job by id and by natural key: the earliest record wins;
    b) targets: a record without id takes the id of the row holding its natural key, else an id derived
       from the key (md5 UUID), so re-imports update; two survivors resolving to one id: the later loses;
    c+d) natural key owned by another row, unknown referenced rows (checked against the table's prior state);
    e) upsert of the survivors; f) their errors into import_errors.
    """
    table = spec.resource.value
    stage = STAGE_TABLES[spec.resource]
    columns = COLUMNS[spec.resource]
    data_columns = [column for column in columns if column != "id"]
    key = spec.key_column
    uniqueness_code = f"{key}_taken" if key else None

    owner_join = (
        f"LEFT JOIN {table} owner ON {_key_sql(spec, 'owner')} = st.natural_key"
        if key
        else "LEFT JOIN (SELECT NULL::text AS id) owner ON false"
    )
    generated_id = f"md5('{table}:' || st.natural_key)::uuid::text" if key else "NULL::text"
    reference_checks = "".join(
        f",\n        (c0.in_file_ok AND c0.earlier_same_target IS NULL AND NOT EXISTS ("
        f"SELECT 1 FROM {ref.table} ref WHERE ref.id = s.{ref.column})) AS {ref.code}"
        for ref in spec.references
    )
    rejections = [
        "c.target_id IS NULL",
        "c.earlier_same_id IS NOT NULL",
        "c.earlier_same_key IS NOT NULL",
        "c.earlier_same_target IS NOT NULL",
        "c.key_taken_by IS NOT NULL",
        *(f"c.{ref.code}" for ref in spec.references),
    ]
    once_per_file = f"each {spec.noun} may appear once per file: remove or merge the later record"
    error_rows = [
        "(c.target_id IS NULL, 'missing_key', 'id', "
        + (
            f"'a record needs an id or its {key}: add one', NULL::text)"
            if key
            else f"'each {spec.noun} needs an id so that a re-import updates it instead of adding a copy', NULL::text)"
        ),
        f"(c.earlier_same_id IS NOT NULL, 'duplicate_in_file', 'id', "
        f"format('same id as %%s; {once_per_file}', c.earlier_same_id), to_json(c.id)::text)",
    ]
    if key:
        error_rows += [
            f"(c.earlier_same_key IS NOT NULL, 'duplicate_in_file', '{key}', "
            f"format('same {key} as %%s; {once_per_file}', c.earlier_same_key), to_json(c.{key})::text)",
            f"(c.earlier_same_target IS NOT NULL, 'duplicate_in_file', "
            f"CASE WHEN c.id IS NULL THEN '{key}' ELSE 'id' END, "
            f"format('targets the same {spec.noun} (id %%s) as %%s; {once_per_file}', "
            f"c.target_id, c.earlier_same_target), "
            f"CASE WHEN c.id IS NULL THEN to_json(c.{key}) ELSE to_json(c.id) END::text)",
            f"(c.key_taken_by IS NOT NULL, '{uniqueness_code}', '{key}', "
            f"format('{key} belongs to another {spec.noun} (id %%s): use that id or another {key}', "
            f"c.key_taken_by), to_json(c.{key})::text)",
        ]
    error_rows += [
        f"(c.{ref.code}, '{ref.code}', '{ref.column}', "
        f"format('no {ref.noun} has id %%s: import the {ref.noun} first or fix {ref.column}', "
        f"c.{ref.column}), to_json(c.{ref.column})::text)"
        for ref in spec.references
    ]

    def inserted_value(column: str) -> str:
        if column == "created_at":
            # A record's own timestamp wins; else an existing row keeps its creation time.
            return "coalesce(c.created_at, c.existing_created_at, now())"
        if column == "updated_at":
            return "coalesce(c.updated_at, now())"
        if column in spec.fallbacks:
            return f"coalesce(c.{column}, {spec.fallbacks[column]})"
        return f"c.{column}"

    error_values = ",\n        ".join(error_rows)
    return f"""
WITH staged AS (
    -- Only what the window passes need: sorting narrow rows stays in memory; the records join back later.
    SELECT s.idx, s.id,
        {_key_sql(spec, "s")} AS natural_key,
        coalesce('line ' || s.line::text, 'record ' || s.idx::text) AS place
    FROM {stage} s
    WHERE s.job_id = %(job_id)s
),
resolved AS (
    SELECT st.*,
        owner.id AS key_owner_id,
        coalesce(st.id, owner.id, {generated_id}) AS target_id,
        CASE WHEN st.id IS NOT NULL AND row_number() OVER by_id > 1
             THEN first_value(st.place) OVER by_id END AS earlier_same_id,
        CASE WHEN st.natural_key IS NOT NULL AND row_number() OVER by_key > 1
             THEN first_value(st.place) OVER by_key END AS earlier_same_key
    FROM staged st
    {owner_join}
    WINDOW by_id AS (PARTITION BY st.id ORDER BY st.idx),
           by_key AS (PARTITION BY st.natural_key ORDER BY st.idx)
),
first_pass AS (
    SELECT r.*,
        (r.target_id IS NOT NULL AND r.earlier_same_id IS NULL AND r.earlier_same_key IS NULL) AS in_file_ok
    FROM resolved r
),
settled AS (
    SELECT f.*,
        CASE WHEN f.in_file_ok AND row_number() OVER by_target > 1
             THEN first_value(f.place) OVER by_target END AS earlier_same_target
    FROM first_pass f
    WINDOW by_target AS (PARTITION BY f.in_file_ok, f.target_id ORDER BY f.idx)
),
checked0 AS (
    SELECT s.*, c0.natural_key, c0.target_id, c0.key_owner_id, c0.in_file_ok,
        c0.earlier_same_id, c0.earlier_same_key, c0.earlier_same_target,
        existing.created_at AS existing_created_at,
        CASE WHEN c0.in_file_ok AND c0.earlier_same_target IS NULL AND c0.key_owner_id <> c0.target_id
             THEN c0.key_owner_id END AS key_taken_by{reference_checks}
    FROM settled c0
    JOIN {stage} s ON s.job_id = %(job_id)s AND s.idx = c0.idx
    LEFT JOIN {table} existing ON existing.id = c0.target_id
),
checked AS MATERIALIZED (
    SELECT c.*, NOT ({" OR ".join(rejections)}) AS accepted
    FROM checked0 c
),
errors AS (
    INSERT INTO import_errors (job_id, idx, line, code, field, message, value_json, record_json)
    SELECT %(job_id)s, c.idx, c.line, e.code, e.field, e.message, e.value_json, c.raw
    FROM checked c
    CROSS JOIN LATERAL (VALUES
        {error_values}
    ) AS e(applies, code, field, message, value_json)
    WHERE NOT c.accepted AND e.applies
),
upserted AS (
    INSERT INTO {table} ({", ".join(columns)})
    SELECT c.target_id, {", ".join(inserted_value(column) for column in data_columns)}
    FROM checked c
    WHERE c.accepted
    ON CONFLICT (id) DO UPDATE SET {", ".join(f"{column} = excluded.{column}" for column in data_columns)}
    RETURNING 1
)
SELECT count(*) FROM upserted
"""


MERGE_SQL: dict[Resource, str] = {resource: _merge_sql(spec) for resource, spec in _MERGE_SPECS.items()}


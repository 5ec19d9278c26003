"""Seeded generator of import files shaped like the reference data: users, articles and comments.

    python -m infra.tools.datagen users --rows 100000 --seed 7 --out users.csv
    python -m infra.tools.datagen comments --rows 5000 --seed 7 --out comments.json.gz --format json --gzip
    python -m infra.tools.datagen all --rows 10000 --seed 7 --out-dir data/ [--clean]

The identity of row i of a resource (its id, whether and how it is dirty, its email or slug) is a pure
function of (seed, resource, i). That is what lets articles point at the users of the users file generated with
the same seed and row count, and comments at both, without reading those files or holding any ids in memory.
Attributes nothing points at (role, bodies, tags, timestamps) come from one seeded stream per file, drawn the
same way whether a row is dirty or not, so a `clean` file differs from the dirty one only in the rows it repairs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip as gzip_module
import hashlib
import io
import random
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

RESOURCES = ("users", "articles", "comments")
FORMATS = ("csv", "ndjson", "json")

# Field order of the reference files (also the CSV header).
FIELDS: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "name", "role", "active", "created_at", "updated_at"),
    "articles": ("id", "slug", "title", "body", "author_id", "tags", "published_at", "status"),
    "comments": ("id", "article_id", "user_id", "body", "created_at"),
}
DEFAULT_FORMAT = {"users": "csv", "articles": "ndjson", "comments": "ndjson"}
ALL_FILE_NAMES = {"users": "users.csv", "articles": "articles.ndjson", "comments": "comments.ndjson"}

DIRTY_KINDS: dict[str, tuple[str, ...]] = {
    "users": ("empty_id", "invalid_email", "duplicate_email", "invalid_role"),
    "articles": ("invalid_slug", "duplicate_slug", "unknown_author", "draft_with_published_at", "missing_id"),
    "comments": ("unknown_article", "unknown_user", "body_too_long", "empty_body", "missing_id"),
}
# Each dirty kind takes this share of the rows (2 %), so files stay mostly valid.
_SLOTS = 10_000
_SLOTS_PER_DIRTY_KIND = 200

ROLES = ("admin", "author", "reader")
_ROLE_POOL = ("reader",) * 15 + ("author",) * 4 + ("admin",)
COMMENT_MAX_WORDS = 500

_FIRST_NAMES = (
    "Alice", "Bob", "Chloé", "David", "Emma", "Farid", "Grace", "Hugo", "Inès", "Jonas", "Kenji", "Léa",
    "Mateo", "Nadia", "Oliver", "Priya", "Quentin", "Rosa", "Sven", "Tanvi", "Umar", "Valentina", "Wei",
    "Ximena", "Yusuf", "Zoë", "José", "Renée", "Aarav", "Björn", "Camille", "Dmitri",
)  # fmt: skip
_LAST_NAMES = (
    "Martin", "Smith", "García", "Müller", "Rossi", "Nguyen", "Kowalski", "O'Brien", "Dubois", "Tanaka",
    "Silva", "Johansson", "Okafor", "Novak", "Haddad", "Fernández", "Schmidt", "Khan", "Larsen", "Moreau",
    "Costa", "Ivanova", "Park", "Yilmaz", "Singh", "Brown", "Lefèvre", "Andersen", "Chen", "Mbeki",
)  # fmt: skip
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "corp.example.io")
_TITLE_WORDS = (
    "scaling", "postgres", "bulk", "imports", "serverless", "queues", "streaming", "csv", "json", "lessons",
    "from", "production", "a", "guide", "to", "idempotent", "writers", "why", "we", "moved", "our", "data",
    "pipeline", "fast", "reliable", "migrations", "without", "downtime", "notes", "on", "backpressure",
    "designing", "schemas", "for", "growth", "the", "hidden", "cost", "of", "retries", "2024", "practical",
)  # fmt: skip
_BODY_WORDS = (
    "the", "a", "service", "import", "record", "file", "row", "batch", "worker", "queue", "database", "table",
    "index", "query", "merge", "error", "report", "user", "article", "comment", "we", "it", "this", "that",
    "is", "was", "runs", "loads", "checks", "writes", "reads", "fails", "retries", "scales", "keeps", "makes",
    "quickly", "slowly", "again", "always", "never", "often", "every", "each", "some", "many", "few", "one",
    "two", "hundred", "thousand", "million", "with", "without", "into", "from", "after", "before", "because",
    "when", "while", "and", "but", "or", "so", "then", "still", "only", "also", "very", "quite", "clean",
    "dirty", "large", "small", "simple", "careful", "stable", "eventual", "consistent", "ordered", "parallel",
    "chunk", "stream", "memory", "constant", "latency", "throughput", "cost", "budget", "team", "customer",
)  # fmt: skip
_TAGS = (
    "postgres", "python", "aws", "lambda", "s3", "sqs", "data", "performance", "testing", "design",
    "devops", "security", "api", "csv", "json", "tutorial", "release", "opinion", "howto", "news",
)  # fmt: skip

_SENTENCE_POOL_SIZE = 2048
# Every timestamp falls in [2019-01-01, 2025-01-01) and is handled as seconds since its start.
_TIME_START = 1_546_300_800
_TIME_SPAN = 6 * 365 * 86_400


class _Bits:
    """Consumes a digest as a sequence of uniform choices."""

    __slots__ = ("_value",)

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "little")

    def below(self, bound: int) -> int:
        self._value, choice = divmod(self._value, bound)
        return choice

    def pick(self, options: Sequence[str]) -> str:
        return options[self.below(len(options))]


class _Identities:
    """The identity of every row generated for one seed, computable for any row in any order.

    Digest layout of a row: bytes 0-15 its id, 16-31 choices about how it is dirty (and the foreign id an
    `unknown_*` row points at), 32-35 its dirty kind, 36-63 its natural attributes (name and email, or title
    and slug).
    """

    def __init__(self, seed: int) -> None:
        key = hashlib.blake2b(str(seed).encode(), digest_size=32).digest()
        self._hashers = {
            resource: hashlib.blake2b(key=key, person=resource.encode(), digest_size=64) for resource in RESOURCES
        }
        # Part of every email and slug, so that files of different seeds can be loaded into the same database.
        self.tag = key[:2].hex()

    def digest(self, resource: str, index: int) -> bytes:
        hasher = self._hashers[resource].copy()
        hasher.update(index.to_bytes(8, "little"))
        return hasher.digest()

    def dirty_kind(self, resource: str, index: int, digest: bytes) -> str | None:
        # Row 0 is always valid: every file then has an earlier row to repeat and a row to point at.
        if index == 0:
            return None
        bucket = int.from_bytes(digest[32:36], "little") % _SLOTS // _SLOTS_PER_DIRTY_KIND
        kinds = DIRTY_KINDS[resource]
        return kinds[bucket] if bucket < len(kinds) else None

    def record_id(self, resource: str, index: int) -> str:
        return _row_id(resource, self.digest(resource, index))

    def is_referenceable(self, resource: str, index: int) -> bool:
        """Accepted by the service and carrying its id in the (dirty) file."""
        return self.dirty_kind(resource, index, self.digest(resource, index)) is None

    def nearest_referenceable(self, resource: str, index: int) -> int:
        while not self.is_referenceable(resource, index):
            index -= 1
        return index

    def user_name_and_email(self, index: int, digest: bytes) -> tuple[str, str, str]:
        """Display name, valid email, and the ASCII local part of that email."""
        domain, person = divmod(int.from_bytes(digest[36:44], "little"), len(_PEOPLE))
        name, local = _PEOPLE[person]
        local = f"{local}.{self.tag}{index}"
        return name, f"{local}@{_EMAIL_DOMAINS[domain % len(_EMAIL_DOMAINS)]}", local

    def article_title_words(self, digest: bytes) -> list[str]:
        bits = _Bits(digest[36:])
        return [bits.pick(_TITLE_WORDS) for _ in range(3 + bits.below(5))]

    def article_slug(self, index: int, title_words: list[str]) -> str:
        return f"{'-'.join(title_words)}-{self.tag}{index}"


def generate(
    resource: str,
    rows: int,
    seed: int,
    clean: bool = False,
    *,
    user_rows: int | None = None,
    article_rows: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of `resource`, one at a time.

    Articles point at users of `generate("users", user_rows, seed)` and comments also at articles of
    `generate("articles", article_rows, seed)`; both counts default to `rows`. References always go to rows
    that are valid in the dirty files, so they hold against the clean files as well.
    """
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r}, expected one of {', '.join(RESOURCES)}")
    if rows < 0:
        raise ValueError("rows must not be negative")
    user_rows = rows if user_rows is None else user_rows
    article_rows = rows if article_rows is None else article_rows
    if rows and resource in ("articles", "comments") and user_rows < 1:
        raise ValueError(f"{resource} need at least one user to point at")
    if rows and resource == "comments" and article_rows < 1:
        raise ValueError("comments need at least one article to point at")
    identities = _Identities(seed)
    stream = random.Random(f"{seed}:{resource}")
    if resource == "users":
        return _users(identities, stream, rows, clean)
    if resource == "articles":
        return _articles(identities, stream, rows, clean, user_rows)
    return _comments(identities, stream, rows, clean, user_rows, article_rows)


def record_id(resource: str, seed: int, index: int) -> str:
    """Id of row `index` (0-based) of any file of `resource` generated with `seed`, dirty or not."""
    return _Identities(seed).record_id(resource, index)


def _users(identities: _Identities, stream: random.Random, rows: int, clean: bool) -> Iterator[dict[str, Any]]:
    # Bound once: this loop is the one that has to reach 100k rows/s.
    digest_of, random_fraction = identities.digest, stream.random
    for index in range(rows):
        digest = digest_of("users", index)
        name, email, local = identities.user_name_and_email(index, digest)
        role = _ROLE_POOL[int(random_fraction() * len(_ROLE_POOL))]
        active = random_fraction() < 0.9
        created = int(random_fraction() * _TIME_SPAN)
        updated = created + int(random_fraction() * (_TIME_SPAN - created))
        user_id = _uuid(digest[:16])
        kind = None if clean else identities.dirty_kind("users", index, digest)
        if kind is not None:
            how = _Bits(digest[16:32])
            if kind == "empty_id":
                user_id = ""
            elif kind == "invalid_email":
                domain = email.partition("@")[2]
                email = (
                    f"{local}@{domain.partition('.')[0]}",
                    f"{local}.{domain}",
                    f"{local}@@{domain}",
                    f"{name}@{domain}",
                    f"{local}@",
                )[how.below(5)]
            elif kind == "duplicate_email":
                earlier = identities.nearest_referenceable("users", how.below(index))
                _, earlier_email, _ = identities.user_name_and_email(earlier, identities.digest("users", earlier))
                email = (earlier_email, earlier_email.upper(), earlier_email.capitalize())[how.below(3)]
            else:
                role = "manager"
        yield {
            "id": user_id,
            "email": email,
            "name": name,
            "role": role,
            "active": active,
            "created_at": _iso(created),
            "updated_at": _iso(updated),
        }


def _articles(
    identities: _Identities, stream: random.Random, rows: int, clean: bool, user_rows: int
) -> Iterator[dict[str, Any]]:
    sentences = _sentence_pool()[0]
    below = _uniform_below(stream)
    for index in range(rows):
        digest = identities.digest("articles", index)
        title_words = identities.article_title_words(digest)
        title = " ".join(title_words).capitalize()
        slug = identities.article_slug(index, title_words)
        author_id = identities.record_id("users", identities.nearest_referenceable("users", below(user_rows)))
        tags = stream.sample(_TAGS, below(5))
        published = below(5) != 0
        published_at = _iso(below(_TIME_SPAN))
        paragraphs = [" ".join(stream.choices(sentences, k=2 + below(5))) for _ in range(1 + below(4))]
        record: dict[str, Any] = {
            "id": _row_id("articles", digest),
            "slug": slug,
            "title": title,
            "body": "\n\n".join(paragraphs),
            "author_id": author_id,
            "tags": tags,
            "published_at": published_at if published else None,
            "status": "published" if published else "draft",
        }
        kind = None if clean else identities.dirty_kind("articles", index, digest)
        if kind is not None:
            how = _Bits(digest[16:32])
            if kind == "invalid_slug":
                record["slug"] = (title, slug.title(), " ".join(title_words))[how.below(3)]
            elif kind == "duplicate_slug":
                earlier = identities.nearest_referenceable("articles", how.below(index))
                earlier_words = identities.article_title_words(identities.digest("articles", earlier))
                record["slug"] = identities.article_slug(earlier, earlier_words)
            elif kind == "unknown_author":
                record["author_id"] = _uuid(digest[16:32])
            elif kind == "draft_with_published_at":
                record["status"], record["published_at"] = "draft", published_at
            else:
                del record["id"]
        yield record


def _comments(
    identities: _Identities,
    stream: random.Random,
    rows: int,
    clean: bool,
    user_rows: int,
    article_rows: int,
) -> Iterator[dict[str, Any]]:
    sentences, sentence_words = _sentence_pool()
    below = _uniform_below(stream)
    for index in range(rows):
        digest = identities.digest("comments", index)
        article_index = identities.nearest_referenceable("articles", below(article_rows))
        user_index = identities.nearest_referenceable("users", below(user_rows))
        body = " ".join(stream.choices(sentences, k=1 + below(4)))
        record: dict[str, Any] = {
            "id": _row_id("comments", digest),
            "article_id": identities.record_id("articles", article_index),
            "user_id": identities.record_id("users", user_index),
            "body": body,
            "created_at": _iso(below(_TIME_SPAN)),
        }
        kind = None if clean else identities.dirty_kind("comments", index, digest)
        if kind is not None:
            how = _Bits(digest[16:32])
            if kind == "unknown_article":
                record["article_id"] = _uuid(digest[16:32])
            elif kind == "unknown_user":
                record["user_id"] = _uuid(digest[16:32])
            elif kind == "body_too_long":
                # Drawn from the digest rather than the stream, which must advance alike for every row.
                target_words = COMMENT_MAX_WORDS + 100 + how.below(1500)
                position, words, long_body = how.below(_SENTENCE_POOL_SIZE), 0, []
                while words <= target_words:
                    long_body.append(sentences[position % _SENTENCE_POOL_SIZE])
                    words += sentence_words[position % _SENTENCE_POOL_SIZE]
                    position += 1
                record["body"] = " ".join(long_body)
            elif kind == "empty_body":
                variant = how.below(3)
                if variant == 2:
                    del record["body"]
                else:
                    record["body"] = ("", "   ")[variant]
            else:
                del record["id"]
        yield record


def _uniform_below(stream: random.Random) -> Callable[[int], int]:
    """Like stream.randrange(bound), at a fifth of its cost; the bounds here are far below 2**53."""
    fraction = stream.random

    def below(bound: int) -> int:
        return int(fraction() * bound)

    return below


def write(
    resource: str,
    records: Iterable[dict[str, Any]],
    fmt: str,
    out: str | Path | IO[bytes],
    gzip: bool = False,
) -> int:
    """Streams `records` to `out` (a path, "-" for stdout, or a binary file); returns how many were written.

    CSV joins tags with `|` and writes booleans as true/false; JSON is one top-level array.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}, expected one of {', '.join(FORMATS)}")
    with _binary_sink(out, gzip) as sink:
        if fmt == "csv":
            return _write_csv(resource, records, sink)
        if fmt == "ndjson":
            return _write_ndjson(records, sink)
        return _write_json_array(records, sink)


def _write_csv(resource: str, records: Iterable[dict[str, Any]], sink: _ByteSink) -> int:
    fields = FIELDS[resource]
    spellings = [(fields.index(field), spell) for field, spell in _CSV_SPELLINGS[resource].items()]
    separators = len(fields) - 1
    # Only rows that need quoting go through the csv module: joining the others directly is twice as fast.
    quoted = io.StringIO()
    quoting_writer = csv.writer(quoted, lineterminator="\n")
    lines = [",".join(fields)]
    count = 0
    for record in records:
        row = list(map(record.get, fields))
        for position, spell in spellings:
            row[position] = spell(row[position])
        if None in row:
            row = ["" if value is None else value for value in row]
        line = _unquoted_csv_line(row, separators)
        if line is None:
            quoting_writer.writerow(row)
            line = quoted.getvalue().removesuffix("\n")
            quoted.seek(0)
            quoted.truncate()
        lines.append(line)
        count += 1
        if len(lines) >= _CSV_LINES_PER_WRITE:
            _write_lines(lines, sink)
    _write_lines(lines, sink)
    return count


_CSV_LINES_PER_WRITE = 4096


def _unquoted_csv_line(row: list[Any], separators: int) -> str | None:
    """The row joined by commas, or None when a value needs quoting (or is not a string)."""
    try:
        line = ",".join(row)
    except TypeError:
        return None
    if line.count(",") != separators or '"' in line or "\n" in line or "\r" in line:
        return None
    return line


def _write_lines(lines: list[str], sink: _ByteSink) -> None:
    if lines:
        lines.append("")
        sink.write("\n".join(lines).encode())
        lines.clear()


def _csv_boolean(value: Any) -> Any:
    return ("false", "true")[value] if isinstance(value, bool) else value


def _csv_tags(value: Any) -> Any:
    return "|".join(value) if isinstance(value, list) else value


# How the reference CSV files spell the values that are not strings.
_CSV_SPELLINGS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "users": {"active": _csv_boolean},
    "articles": {"tags": _csv_tags},
    "comments": {},
}


def _write_ndjson(records: Iterable[dict[str, Any]], sink: _ByteSink) -> int:
    count = 0
    for record in records:
        sink.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    return count


def _write_json_array(records: Iterable[dict[str, Any]], sink: _ByteSink) -> int:
    count = 0
    for record in records:
        sink.write(b",\n" if count else b"[\n")
        sink.write(orjson.dumps(record))
        count += 1
    sink.write(b"\n]\n" if count else b"[]\n")
    return count


class _ByteSink(Protocol):
    """Where a writer puts the file's bytes: the output itself or a GzipFile over it (which is not an IO)."""

    def write(self, data: bytes, /) -> int: ...


@contextlib.contextmanager
def _binary_sink(out: str | Path | IO[bytes], gzip: bool) -> Iterator[_ByteSink]:
    with contextlib.ExitStack() as owned:
        if out == "-":
            raw: IO[bytes] = sys.stdout.buffer
        elif isinstance(out, str | Path):
            raw = owned.enter_context(open(out, "wb", buffering=1 << 20))
        else:
            raw = out
        if gzip:
            # mtime=0 and no file name keep the bytes a function of the seed alone. Level 1 compresses this
            # text to 35 % instead of 29 % for level 6, but three times faster, so gzip does not dominate the run.
            yield owned.enter_context(
                gzip_module.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=1, mtime=0)
            )
        else:
            yield raw
        raw.flush()


def _row_id(resource: str, digest: bytes) -> str:
    return f"cm_{_uuid(digest[:16])}" if resource == "comments" else _uuid(digest[:16])


def _uuid(sixteen_bytes: bytes) -> str:
    """A version 4 UUID string, built by hand because uuid.UUID costs more than the rest of a user row."""
    h = sixteen_bytes.hex()
    variant = "89ab"[sixteen_bytes[8] >> 4 & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _iso(seconds_into_window: int) -> str:
    day, second_of_day = divmod(seconds_into_window, 86_400)
    minute_of_day, second = divmod(second_of_day, 60)
    return _WINDOW_DATES[day] + _CLOCK_MINUTES[minute_of_day] + _CLOCK_SECONDS[second]


# Looking dates and times of day up in these tables is several times cheaper than strftime or an f-string.
_WINDOW_DATES = tuple(
    time.strftime("%Y-%m-%d", time.gmtime(_TIME_START + day * 86_400)) for day in range(_TIME_SPAN // 86_400)
)
_CLOCK_MINUTES = tuple(f"T{minute // 60:02d}:{minute % 60:02d}:" for minute in range(1440))
_CLOCK_SECONDS = tuple(f"{second:02d}Z" for second in range(60))


def _ascii_lower(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(char for char in decomposed.lower() if char.isalnum())


def _all_people() -> tuple[tuple[str, str], ...]:
    """Every (display name, email local part) pair, worked out once instead of once per row."""
    people = []
    for first in _FIRST_NAMES:
        for last in _LAST_NAMES:
            ascii_first, ascii_last = _ascii_lower(first), _ascii_lower(last)
            for local in (f"{ascii_first}.{ascii_last}", f"{ascii_first}_{ascii_last}", ascii_first[0] + ascii_last):
                people.append((f"{first} {last}", local))
    return tuple(people)


_PEOPLE = _all_people()


@cache
def _sentence_pool() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A fixed pool of sentences and their word counts: drawing bodies from it is cheaper than word by word."""
    pool_stream = random.Random("bulkio-datagen-sentences")
    sentences = []
    for _ in range(_SENTENCE_POOL_SIZE):
        words = pool_stream.choices(_BODY_WORDS, k=5 + pool_stream.randrange(14))
        if pool_stream.random() < 0.3:
            comma_after = pool_stream.randrange(1, len(words))
            words[comma_after - 1] += ","
        sentences.append(" ".join(words).capitalize() + pool_stream.choice(".....?!"))
    return tuple(sentences), tuple(len(sentence.split()) for sentence in sentences)


def _generate_and_write(resource: str, args: argparse.Namespace, rows: int, fmt: str, out: str | Path) -> None:
    started = time.perf_counter()
    records = generate(
        resource,
        rows,
        args.seed,
        args.clean,
        user_rows=args.user_rows if args.user_rows is not None else args.rows,
        article_rows=args.article_rows if args.article_rows is not None else args.rows,
    )
    count = write(resource, records, fmt, out, gzip=args.gzip)
    seconds = time.perf_counter() - started
    rate = count / seconds if seconds > 0 else float("inf")
    print(f"{resource}: {count} rows in {seconds:.2f} s ({rate:,.0f} rows/s) -> {out}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.tools.datagen", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="resource", required=True)

    def add_common(command: argparse.ArgumentParser) -> None:
        command.add_argument("--rows", type=int, required=True)
        command.add_argument("--seed", type=int, required=True)
        command.add_argument("--gzip", action="store_true", help="gzip the output")
        command.add_argument("--clean", action="store_true", help="only valid records")
        command.add_argument("--user-rows", type=int, help="size of the users file pointed at (default: --rows)")
        command.add_argument("--article-rows", type=int, help="size of the articles file pointed at (ditto)")

    for resource in RESOURCES:
        command = commands.add_parser(resource, help=f"write a file of {resource}")
        add_common(command)
        command.add_argument("--out", required=True, help='output path, "-" for stdout')
        command.add_argument("--format", choices=FORMATS, help=f"default: {DEFAULT_FORMAT[resource]}")
    everything = commands.add_parser(
        "all", help="write users.csv, articles.ndjson and comments.ndjson that reference each other"
    )
    add_common(everything)
    everything.add_argument("--out-dir", required=True, type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.resource != "all":
        fmt = args.format or DEFAULT_FORMAT[args.resource]
        _generate_and_write(args.resource, args, args.rows, fmt, args.out)
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # The users and articles files are exactly as long as the ranges the other files point into.
    rows_per_file = {
        "users": args.user_rows if args.user_rows is not None else args.rows,
        "articles": args.article_rows if args.article_rows is not None else args.rows,
        "comments": args.rows,
    }
    for resource in RESOURCES:
        name = ALL_FILE_NAMES[resource] + (".gz" if args.gzip else "")
        _generate_and_write(resource, args, rows_per_file[resource], DEFAULT_FORMAT[resource], args.out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `bulkio` command: import, export, and the jobs' listing, view, cancel and commit.

Exit status: 0 when the job completed (or, without --wait, was accepted), 3 when it completed with errors (a
dry run: when the import would have), 1 when it failed, was cancelled or the API refused the call, 2 for a usage
error. `--json` prints one JSON object on stdout for scripts; the bars go to stderr, and only to a terminal.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from bulkio_cli import uploads
from bulkio_cli.client import Api, ApiError
from bulkio_cli.progress import byte_bar, export_bar, record_bar
from bulkio_cli.rows import RowCounter

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WITH_ERRORS = 0, 1, 2, 3
DONE = {"completed", "completed_with_errors", "validated"}
FINAL = DONE | {"failed", "cancelled"}
LONG_POLL_SECONDS = 20
DOWNLOAD_BYTES = 1024 * 1024
TOP_ERRORS = 5


def exit_status(job: dict[str, Any]) -> int:
    """The status a job's end gives the command; a dry run (validated) exits as its import would."""
    status = job.get("status")
    if status == "completed" or (status == "validated" and not job["counters"]["failed"]):
        return EXIT_OK
    if status in {"completed_with_errors", "validated"}:
        return EXIT_WITH_ERRORS
    if status in FINAL:
        return EXIT_FAILED
    return EXIT_OK  # accepted, not waited for


class Context:
    def __init__(self, base: str, token: str | None, export_base: str, as_json: bool) -> None:
        self._api = Api(base, token or "", export_base)
        self._has_token = bool(token)
        self.as_json = as_json

    @property
    def api(self) -> Api:
        if not self._has_token:
            raise click.UsageError("no token: set BULKIO_TOKEN (BULKIO_TOKEN=$(make -s token)) or pass --token")
        return self._api

    def say(self, text: str) -> None:
        """A line for people: on stdout, unless --json reserves stdout for the JSON object."""
        click.echo(text, err=self.as_json)

    def emit(self, document: Any) -> None:
        if self.as_json:
            click.echo(json.dumps(document, indent=None, separators=(",", ":")))


@contextmanager
def refusals() -> Iterator[None]:
    """An API refusal is the command's failure: its detail on stderr, exit status 1."""
    try:
        yield
    except ApiError as error:
        click.echo(f"bulkio: {error.detail} ({error.status} {error.code})", err=True)
        sys.exit(EXIT_FAILED)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api",
    envvar="BULKIO_API",
    default="http://127.0.0.1:3000/v1",
    show_default=True,
    help="the API's base URL, up to /v1 (BULKIO_API)",
)
@click.option("--token", envvar="BULKIO_TOKEN", help="a bearer token (BULKIO_TOKEN; make -s token)")
@click.option(
    "--export-url",
    envvar="BULKIO_EXPORT_URL",
    default=None,
    help="where streamed exports come from, up to /v1 (BULKIO_EXPORT_URL; the API by default)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout, for scripts")
@click.pass_context
def cli(ctx: click.Context, api: str, token: str | None, export_url: str | None, as_json: bool) -> None:
    """Bulk import and export of users, articles and comments."""
    base = api.rstrip("/")
    ctx.obj = Context(base, token, (export_url or base).rstrip("/"), as_json)


# ------------------------------------------------------------------------------------------------ import
@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--resource", required=True, type=click.Choice(["users", "articles", "comments", "mixed"]))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "ndjson", "json", "zip", "tar"]),
    help="inferred from the file name or content when left out",
)
@click.option("--dry-run", is_flag=True, help="validate everything, the merge's checks included; write nothing")
@click.option("--wait/--no-wait", default=False, help="follow the job to its end and exit with its outcome")
@click.option(
    "--rejected",
    type=click.Path(dir_okay=False, path_type=Path),
    help="once the job ended, save its rejected records here (fix them, import the file as it is)",
)
@click.option("--parent", "parent_job_id", help="the job whose rejected records this file holds")
@click.option(
    "--resumable-above",
    type=int,
    default=uploads.RESUMABLE_ABOVE_BYTES,
    show_default=True,
    help="files bigger than this many bytes go up in resumable parts",
)
@click.pass_obj
def import_command(
    ctx: Context,
    file: Path,
    resource: str,
    fmt: str | None,
    dry_run: bool,
    wait: bool,
    rejected: Path | None,
    parent_job_id: str | None,
    resumable_above: int,
) -> None:
    """Upload FILE as an import job, with a progress bar; with --wait, follow it to its end."""
    with refusals():
        job_id = _upload(ctx, file, resource, fmt, dry_run, parent_job_id, resumable_above)
        if not wait and rejected is None:
            job = ctx.api.call("GET", f"/imports/{job_id}")
            ctx.say(f"job {job_id} {job['status']}: bulkio show {job_id}")
            ctx.emit(job)
            sys.exit(EXIT_OK)
        job = _follow(ctx, job_id, rejected_hint=rejected is None)
        if rejected is not None:
            _save_rejected(ctx, job, rejected)
        ctx.emit(job)
        sys.exit(exit_status(job))


def _upload(
    ctx: Context,
    file: Path,
    resource: str,
    fmt: str | None,
    dry_run: bool,
    parent_job_id: str | None,
    resumable_above: int,
) -> str:
    size = file.stat().st_size
    request: dict[str, Any] = {"resource": resource, "format": fmt or _format_of(file)}
    if dry_run:
        request["mode"] = "validate"
    if parent_job_id:
        request["parent_job_id"] = parent_job_id
    with byte_bar(f"upload {file.name}", size) as bar:
        if size > resumable_above:
            key = uploads.upload_key(ctx.api, resource, file)
            resumed = uploads.resumable_job(ctx.api, key)
            if resumed is None:
                created = ctx.api.call("POST", "/imports", {**request, "upload_size": size})
                resumed = created["job_id"], created["upload"]
                uploads.remember(key, created["job_id"])
            else:
                ctx.say(f"resuming the upload of job {resumed[0]}")
            job_id, upload = resumed
            uploads.upload_parts(ctx.api, job_id, upload, file, bar)
            uploads.forget(key)
            return job_id
        created = ctx.api.call("POST", "/imports", request)
        uploads.put(ctx.api, created["upload"]["url"], file, 0, size, bar)
        return str(created["job_id"])


def _format_of(file: Path) -> str | None:
    """The format the file's name says (the API infers the rest from the content)."""
    suffixes = [suffix.lower() for suffix in file.suffixes]
    for suffix in reversed(suffixes):
        name = suffix.lstrip(".")
        if name in {"csv", "ndjson", "json", "zip", "tar"}:
            return name
        if name == "jsonl":
            return "ndjson"
        if name == "tgz":
            return "tar"
    return None


def _follow(ctx: Context, job_id: str, rejected_hint: bool = True) -> dict[str, Any]:
    """Long-polls the job to its end, drawing its records bar; prints the summary."""
    with record_bar(f"job {job_id[:8]}") as bar:
        job = ctx.api.call("GET", f"/imports/{job_id}")
        while job["status"] not in FINAL:
            _show_progress(bar, job)
            job = ctx.api.call("GET", f"/imports/{job_id}?wait={LONG_POLL_SECONDS}")
        _show_progress(bar, job)
    _summary(ctx, job, rejected_hint)
    return dict(job)


def _show_progress(bar: Any, job: dict[str, Any]) -> None:
    """The records bar: staged out of the total (estimated from the bytes read while the total is unknown)."""
    counters, progress = job["counters"], job["progress"]
    processed, total = counters["processed"], counters["total"]
    if total is None and progress["percent"]:
        total = round(processed * 100 / progress["percent"])
    if job["status"] in DONE:
        processed = total or processed
    rate = job["metrics"]["rows_per_second"]
    bar.update(total=total, completed=processed, rate=f"{rate:,.0f} rows/s" if rate else "")


def _summary(ctx: Context, job: dict[str, Any], rejected_hint: bool = True) -> None:
    counters = job["counters"]
    took = job["metrics"]["duration_seconds"]
    imported = "would import" if job["status"] == "validated" else "imported"
    line = (
        f"job {job['job_id']} {job['status']}: {counters['succeeded']:,} {imported}, {counters['failed']:,} rejected"
        f" of {counters['total'] or 0:,} records" + (f" in {took:.1f} s" if took else "")
    )
    ctx.say(line)
    if job.get("failure"):
        ctx.say(f"  {job['failure']['code']}: {job['failure']['message']}")
    for name, resource_counters in (job.get("counters_by_resource") or {}).items():
        ctx.say(f"  {name}: {resource_counters['succeeded']:,} {imported}, {resource_counters['failed']:,} rejected")
    by_code = sorted(job.get("errors_by_code", {}).items(), key=lambda item: (-item[1], item[0]))
    for code, count in by_code[:TOP_ERRORS]:
        ctx.say(f"  {count:>9,}  {code}")
    if job["counters"]["failed"] and rejected_hint:
        ctx.say(f"  the first errors: bulkio show {job['job_id']}; the rejected records, to fix: --rejected FILE")


def _save_rejected(ctx: Context, job: dict[str, Any], target: Path) -> None:
    fmt = "csv" if target.suffix.lower() == ".csv" else "ndjson"
    with (
        ctx.api.open("GET", f"{ctx.api.base}/imports/{job['job_id']}/rejected?format={fmt}") as response,
        target.open("wb") as sink,
    ):
        while piece := response.read(DOWNLOAD_BYTES):
            sink.write(piece)
    ctx.say(f"rejected records ({fmt}) saved to {target}")


# ------------------------------------------------------------------------------------------------ export
@cli.command("export")
@click.option("--resource", required=True, type=click.Choice(["users", "articles", "comments"]))
@click.option("--format", "fmt", default="ndjson", show_default=True, type=click.Choice(["ndjson", "json", "csv"]))
@click.option("--filter", "filters", multiple=True, metavar="NAME=VALUE", help="as GET /v1/exports takes them")
@click.option("--fields", help="comma-separated fields to export (all by default)")
@click.option("--limit", type=int)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--async", "run_async", is_flag=True, help="run an export job, then download its file")
@click.pass_obj
def export_command(
    ctx: Context,
    resource: str,
    fmt: str,
    filters: tuple[str, ...],
    fields: str | None,
    limit: int | None,
    output: Path,
    run_async: bool,
) -> None:
    """Export a resource to a file: streamed (rows and MB/s on the bar), or as an export job with --async."""
    pairs = dict(_pair(item) for item in filters)
    with refusals():
        if run_async:
            request: dict[str, Any] = {"resource": resource, "format": fmt, "filters": pairs}
            if fields:
                request["fields"] = fields.split(",")
            if limit:
                request["limit"] = limit
            job = _export_job(ctx, request)
            url = job["download_url"]
        else:
            query = {"resource": resource, "format": fmt, **pairs}
            if fields:
                query["fields"] = fields
            if limit:
                query["limit"] = str(limit)
            url = ctx.api.export_url(query)
        rows, size = _download(ctx, url, output, fmt)
    ctx.say(f"{rows:,} rows, {size:,} bytes written to {output}")
    ctx.emit({"resource": resource, "format": fmt, "rows": rows, "bytes": size, "output": str(output)})
    sys.exit(EXIT_OK)


def _pair(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--filter")
    return name, value


def _export_job(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    job = ctx.api.call("POST", "/exports", request)
    job_id = job["job_id"]
    while job["status"] not in {"completed", "failed"}:
        time.sleep(1)
        job = ctx.api.call("GET", f"/exports/{job_id}")
    if job["status"] == "failed":
        ctx.say(f"export job {job_id} failed: {job['failure']['message']}")
        ctx.emit(job)
        sys.exit(EXIT_FAILED)
    return dict(job)


def _download(ctx: Context, url: str, output: Path, fmt: str) -> tuple[int, int]:
    """Streams the body to the file, counting its rows and bytes."""
    counter = RowCounter(fmt)
    size = 0
    with export_bar(f"export → {output.name}") as bar, ctx.api.open("GET", url) as response, output.open("wb") as sink:
        while piece := response.read(DOWNLOAD_BYTES):
            sink.write(piece)
            size += len(piece)
            counter.feed(piece)
            bar.update(completed=size, rows=counter.rows)
    return counter.rows, size


# ------------------------------------------------------------------------------------------------ jobs
@cli.command("jobs")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.pass_obj
def jobs_command(ctx: Context, limit: int) -> None:
    """The newest import jobs."""
    with refusals():
        page = ctx.api.call("GET", f"/imports?limit={limit}")
    for job in page["jobs"]:
        counters = job["counters"]
        ctx.say(
            f"{job['job_id']}  {job['created_at'][:19]}  {job['resource']:<8}  {job['status']:<22}"
            f"  {counters['succeeded']:>9,} ok  {counters['failed']:>9,} rejected"
        )
    ctx.emit(page)


@cli.command("show")
@click.argument("job_id")
@click.pass_obj
def show_command(ctx: Context, job_id: str) -> None:
    """An import job: status, counters, the most frequent errors."""
    with refusals():
        job = ctx.api.call("GET", f"/imports/{job_id}")
    _summary(ctx, job)
    for error in job.get("errors", [])[:TOP_ERRORS]:
        ctx.say(f"  line {error['line']}: {error['code']} ({error['field']}): {error['message']}")
    ctx.emit(job)
    sys.exit(exit_status(job))


@cli.command("cancel")
@click.argument("job_id")
@click.pass_obj
def cancel_command(ctx: Context, job_id: str) -> None:
    """Stop an import job that has not ended."""
    with refusals():
        job = ctx.api.call("POST", f"/imports/{job_id}/cancel")
    ctx.say(f"job {job_id} {job['status']}")
    ctx.emit(job)


@cli.command("commit")
@click.argument("job_id")
@click.option("--wait/--no-wait", default=False, help="follow the new job to its end")
@click.pass_obj
def commit_command(ctx: Context, job_id: str, wait: bool) -> None:
    """Import what a validated dry run read, as a new job."""
    with refusals():
        created = ctx.api.call("POST", f"/imports/{job_id}/commit")
        if not wait:
            ctx.say(f"job {created['job_id']} {created['status']}: bulkio show {created['job_id']}")
            ctx.emit(created)
            sys.exit(EXIT_OK)
        job = _follow(ctx, created["job_id"])
    ctx.emit(job)
    sys.exit(exit_status(job))

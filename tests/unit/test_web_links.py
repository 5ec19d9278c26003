"""The API's links, which the web layer adds to what the services answer."""

from __future__ import annotations

from datetime import UTC, datetime

from bulkio.domain.export_jobs import ExportJob, ExportStatus, export_view
from bulkio.domain.jobs import JobFailure
from bulkio.web.links import export_links, import_links, with_export_links, with_import_links

# ============================================================================================== exports


def test_the_202_of_an_export_gets_its_self_link() -> None:
    body = with_export_links({"job_id": "job-1", "status": "queued"})
    assert body == {"job_id": "job-1", "status": "queued", "links": {"self": "/v1/exports/job-1"}}


def test_a_replayed_202_stored_with_its_links_keeps_them_once() -> None:
    stored = {"job_id": "job-1", "status": "queued", "links": {"self": "/v1/exports/job-1"}}
    assert with_export_links(stored) == stored


def test_an_export_view_gets_its_links() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = ExportJob("job-1", "users", "csv", {}, None, None, ExportStatus.FAILED, created, failure=JobFailure("x", "y"))
    view = with_export_links(export_view(job, created, ("https://download", created)))
    assert view["links"] == export_links("job-1") == {"self": "/v1/exports/job-1"}
    assert {"download_url", "expires_at", "failure"} <= set(view)


# ============================================================================================== imports


def test_import_links_name_the_job_and_its_error_report() -> None:
    assert import_links("job-1") == {"self": "/v1/imports/job-1", "errors": "/v1/imports/job-1/errors"}


def test_the_202_of_an_import_gets_its_links() -> None:
    body = {"job_id": "job-1", "status": "queued", "resource": "users", "format": "ndjson"}
    assert with_import_links(body) == {
        **body,
        "links": {"self": "/v1/imports/job-1", "errors": "/v1/imports/job-1/errors"},
    }


def test_an_import_view_gets_errors_url_and_links() -> None:
    view = {"job_id": "job-1", "status": "failed", "finished_at": None, "errors": [], "failure": {"code": "x"}}
    linked = with_import_links(view)
    assert linked["errors_url"] == "/v1/imports/job-1/errors"
    assert linked["links"] == {"self": "/v1/imports/job-1", "errors": "/v1/imports/job-1/errors"}
    assert {key: linked[key] for key in view} == view


def test_an_import_summary_gets_them_too() -> None:
    summary = {"job_id": "job-1", "status": "completed", "finished_at": None}
    assert set(with_import_links(summary)) == {"job_id", "status", "finished_at", "errors_url", "links"}

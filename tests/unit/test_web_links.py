"""The API's links, which the web layer adds to what the services answer."""

from __future__ import annotations

from bulkio.web.links import import_links, with_import_links

# ============================================================================================== imports


def test_import_links_name_the_job_and_its_error_report() -> None:
    assert import_links("job-1") == {"self": "/v1/imports/job-1", "errors": "/v1/imports/job-1/errors"}


def test_the_202_of_an_import_gets_its_links() -> None:
    body = {"job_id": "job-1", "status": "queued", "resource": "users", "format": "ndjson"}
    assert with_import_links(body) == {
        **body,
        "links": {"self": "/v1/imports/job-1", "errors": "/v1/imports/job-1/errors"},
    }


def test_an_import_view_gets_errors_url_and_links_after_its_errors_as_it_always_did() -> None:
    view = {"job_id": "job-1", "status": "failed", "finished_at": None, "errors": [], "failure": {"code": "x"}}
    linked = with_import_links(view)
    assert linked["errors_url"] == "/v1/imports/job-1/errors"
    assert linked["links"] == {"self": "/v1/imports/job-1", "errors": "/v1/imports/job-1/errors"}
    assert list(linked) == ["job_id", "status", "finished_at", "errors", "errors_url", "links", "failure"]


def test_an_import_summary_gets_them_after_finished_at() -> None:
    summary = {"job_id": "job-1", "status": "completed", "finished_at": None}
    assert list(with_import_links(summary)) == ["job_id", "status", "finished_at", "errors_url", "links"]

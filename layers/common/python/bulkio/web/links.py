"""The API's paths to its resources: the web layer adds them to what the services answer, which know no URLs."""

from __future__ import annotations

from typing import Any


def import_links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/imports/{job_id}", "errors": f"/v1/imports/{job_id}/errors"}


def with_import_links(body: dict[str, Any]) -> dict[str, Any]:
    """An import job's body (the 202 of POST /v1/imports, a job view, a summary in a listing) with its links; a
    job view or summary (it has `finished_at`) also gets `errors_url`. The response models set the order."""
    links = import_links(body["job_id"])
    errors_url = {"errors_url": links["errors"]} if "finished_at" in body else {}
    return {**body, **errors_url, "links": links}


def export_links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/exports/{job_id}"}


def with_export_links(body: dict[str, Any]) -> dict[str, Any]:
    """An export job's body (the 202 of POST /v1/exports, a job view) with its links."""
    return {**body, "links": export_links(body["job_id"])}

"""The API's paths to its resources: the web layer adds them to what the services answer, which know no URLs."""

from __future__ import annotations

from typing import Any


def import_links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/imports/{job_id}", "errors": f"/v1/imports/{job_id}/errors"}


def with_import_links(body: dict[str, Any]) -> dict[str, Any]:
    """An import job's body (the 202 of POST /v1/imports, a job view, a summary in a listing) with its links.

    A job view or summary (it has `finished_at`) also gets `errors_url`: both right after its `errors` (a view)
    or `finished_at` (a summary), ahead of `failure`, where they always came."""
    links = import_links(body["job_id"])
    if "finished_at" not in body:
        return {**body, "links": links}
    keys = [key for key in body if key not in ("errors_url", "links")]
    at = keys.index("errors" if "errors" in body else "finished_at") + 1
    added = {"errors_url": links["errors"], "links": links}
    return {**{key: body[key] for key in keys[:at]}, **added, **{key: body[key] for key in keys[at:]}}


def export_links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/exports/{job_id}"}


def with_export_links(body: dict[str, Any]) -> dict[str, Any]:
    """An export job's body (the 202 of POST /v1/exports, a job view) with its links.

    A job view (it has `finished_at`) gets them right after `finished_at`, ahead of the download and failure
    members, where they always came."""
    links = export_links(body["job_id"])
    if "finished_at" not in body:
        return {**body, "links": links}
    keys = list(body)
    at = keys.index("finished_at") + 1
    return {**{key: body[key] for key in keys[:at]}, "links": links, **{key: body[key] for key in keys[at:]}}

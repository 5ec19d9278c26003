"""Export job records in the jobs table (`pk = export#<id>`), next to the import jobs."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from botocore.exceptions import ClientError

from bulkio.adapters.jobs_repo import iso_now
from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.jobs import JobFailure, iso, parse_iso


def _pk(job_id: str) -> str:
    return f"export#{job_id}"


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: back to int/float for JSON."""
    return orjson.loads(orjson.dumps(value, default=lambda d: float(d) if isinstance(d, Decimal) else str(d)))


def _to_item(job: ExportJob) -> dict[str, Any]:
    return {
        "pk": _pk(job.job_id),
        "kind": "export",
        "job_id": job.job_id,
        "resource": job.resource,
        "format": job.format,
        # Stored as JSON text: DynamoDB refuses empty strings in some places and floats everywhere.
        "request_json": orjson.dumps(job.request).decode(),
        "status": job.status.value,
        "created_at": iso(job.created_at),
        "rows": 0,
        "bytes": 0,
        **({"owner": job.owner} if job.owner else {}),
    }


def _from_item(item: dict[str, Any]) -> ExportJob:
    request = orjson.loads(item["request_json"])
    failure = item.get("failure")
    return ExportJob(
        job_id=item["job_id"],
        resource=item["resource"],
        format=item["format"],
        filters=request.get("filters") or {},
        fields=request.get("fields"),
        compression=request.get("compression"),
        status=ExportStatus(item["status"]),
        created_at=parse_iso(item["created_at"]) or datetime.min,
        started_at=parse_iso(item.get("started_at")),
        finished_at=parse_iso(item.get("finished_at")),
        rows=int(item.get("rows", 0)),
        bytes=int(item.get("bytes", 0)),
        object_key=item.get("object_key"),
        failure=JobFailure(failure["code"], failure["message"]) if failure else None,
        request=request,
        owner=item.get("owner"),
    )


class DynamoExportJobRepository:
    def __init__(self, table: Any) -> None:
        self._table = table

    def create(self, job: ExportJob) -> None:
        try:
            self._table.put_item(Item=_to_item(job), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def get(self, job_id: str) -> ExportJob | None:
        item = self._table.get_item(Key={"pk": _pk(job_id)}, ConsistentRead=True).get("Item")
        return _from_item(_plain(item)) if item else None

    def start(self, job_id: str) -> bool:
        """queued → running; a retried worker may take a running job again (its upload starts over)."""
        return self._transition(
            job_id,
            "SET #s = :running, started_at = if_not_exists(started_at, :now)",
            {":running": ExportStatus.RUNNING.value, ":now": iso_now()},
            "#s IN (:queued, :running)",
            {":queued": ExportStatus.QUEUED.value},
        )

    def complete(self, job_id: str, rows: int, size: int, object_key: str) -> bool:
        return self._transition(
            job_id,
            "SET #s = :completed, finished_at = :now, #rows = :rows, #bytes = :bytes, object_key = :key",
            {
                ":completed": ExportStatus.COMPLETED.value,
                ":now": iso_now(),
                ":rows": rows,
                ":bytes": size,
                ":key": object_key,
            },
            "#s = :running",
            {":running": ExportStatus.RUNNING.value},
            {"#rows": "rows", "#bytes": "bytes"},
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return self._transition(
            job_id,
            "SET #s = :failed, finished_at = :now, failure = :failure",
            {":failed": ExportStatus.FAILED.value, ":now": iso_now(), ":failure": {"code": code, "message": message}},
            "#s IN (:queued, :running)",
            {":queued": ExportStatus.QUEUED.value, ":running": ExportStatus.RUNNING.value},
        )

    def _transition(
        self,
        job_id: str,
        update: str,
        values: dict[str, Any],
        condition: str,
        condition_values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> bool:
        try:
            self._table.update_item(
                Key={"pk": _pk(job_id)},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(pk) AND {condition}",
                ExpressionAttributeNames={"#s": "status", **(names or {})},
                ExpressionAttributeValues={**values, **condition_values},
            )
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise

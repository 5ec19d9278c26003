"""Export job records in the jobs table (`pk = export#<id>`), next to the import jobs. The item's format is
ExportJobItem (domain/export_messages.py); the status transitions are conditional updates here."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from bulkio.adapters.job_listing import list_page
from bulkio.adapters.jobs_repo import iso_now
from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.export_messages import ExportJobItem, StoredFailure


def _pk(job_id: str) -> str:
    return ExportJobItem.key(job_id)


class DynamoExportJobRepository:
    def __init__(self, table: Any) -> None:
        self._table = table

    def create(self, job: ExportJob) -> None:
        try:
            item = ExportJobItem.from_job(job).to_item()
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def list_jobs(
        self,
        limit: int,
        cursor: dict[str, Any] | None,
        owner: str | None = None,
        status: str | None = None,
        resource: str | None = None,
    ) -> tuple[list[ExportJob], dict[str, Any] | None]:
        """Newest first, one page: `owner`'s export jobs, or everyone's when None, of `status` and `resource`."""
        equal = {name: value for name, value in (("status", status), ("resource", resource)) if value is not None}
        items, last = list_page(self._table, "export", limit, cursor, owner, equal)
        return [ExportJobItem.model_validate(item).to_job() for item in items], last

    def get(self, job_id: str) -> ExportJob | None:
        item = self._table.get_item(Key={"pk": _pk(job_id)}, ConsistentRead=True).get("Item")
        # DynamoDB numbers come back as Decimal: the model makes them ints again.
        return ExportJobItem.model_validate(item).to_job() if item else None

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
            {
                ":failed": ExportStatus.FAILED.value,
                ":now": iso_now(),
                ":failure": StoredFailure(code=code, message=message).model_dump(),
            },
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

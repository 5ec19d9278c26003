"""Job records in DynamoDB (single table, partition key `pk`).

Items: `job#<id>` (an import job), `idem#<scope>#<key>` (an Idempotency-Key, expiring through TTL),
`drop#<bucket>#<key>#<etag>` (an S3 drop already turned into a job).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from bulkio.adapters.job_listing import list_page, owner_kind
from bulkio.domain.callbacks import CallbackState, DeliveryAttempt, DeliveryTrigger, JobCallback
from bulkio.domain.idempotency import IdempotencyClaim, StoredRequest
from bulkio.domain.jobs import (
    FINAL_STATUSES,
    Counters,
    ImportJob,
    ImportMode,
    JobFailure,
    JobSource,
    JobStatus,
    LeaseLost,
    SourceKind,
    final_status,
    iso,
    parse_iso,
    utc_now,
)
from bulkio.domain.resources import Format, ImportTarget

OPEN_JOBS_INDEX = "by_open_created"  # sparse: only jobs that have not ended (`open_kind` goes when they end)


# The statuses of a job that staged every chunk (a validated dry run did too).
COMPLETED_VALUES = frozenset(
    {JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_ERRORS.value, JobStatus.VALIDATED.value}
)


def _job_pk(job_id: str) -> str:
    return f"job#{job_id}"


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in {
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    }


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, Decimal | int) else None


def job_to_item(job: ImportJob) -> dict[str, Any]:
    source = {k: v for k, v in vars_of(job.source).items() if v is not None}
    item: dict[str, Any] = {
        "pk": _job_pk(job.job_id),
        "kind": "import",
        "job_id": job.job_id,
        "status": job.status.value,
        "source": source,
        "created_at": iso(job.created_at),
        "processed": job.counters.processed,
        "succeeded": job.counters.succeeded,
        "failed": job.counters.failed,
    }
    if job.resource is not None:
        item["resource"] = job.resource.value
    if job.format:
        item["format"] = job.format.value
    if job.mode is not ImportMode.IMPORT:
        item["mode"] = job.mode.value
    if job.parent_job_id:
        item["parent_job_id"] = job.parent_job_id
    if job.owner:
        item["owner"] = job.owner
        item["owner_kind"] = owner_kind(job.owner, "import")
    if not job.is_final or job.completion_pending:
        item["open_kind"] = "import"
    if job.completion_pending:
        item["completion_pending"] = True
    if job.is_final:
        item["finished_at"] = iso(job.finished_at)
    if job.failure is not None:
        item["failure"] = {"code": job.failure.code, "message": job.failure.message}
    if job.callback is not None:
        item["callback"] = {"url": job.callback.url, "secret": job.callback.secret}
        item["callback_state"] = job.callback.state.value
        item["callback_attempts"] = job.callback.attempts
    return item


def callback_from_item(item: dict[str, Any]) -> JobCallback | None:
    callback = item.get("callback")
    if not callback:
        return None
    return JobCallback(
        url=callback["url"],
        secret=callback["secret"],
        state=CallbackState(item.get("callback_state", CallbackState.PENDING.value)),
        attempts=_int(item.get("callback_attempts")) or 0,
        deliveries=len(item.get("deliveries") or ()),
        next_attempt_at=parse_iso(item.get("callback_next_at")),
    )


def delivery_to_item(attempt: DeliveryAttempt) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": attempt.delivery_id,
        "trigger": attempt.trigger.value,
        "at": iso(attempt.at),
        "ms": attempt.duration_ms,
        "delivered": attempt.delivered,
    }
    if attempt.status_code is not None:
        entry["status"] = attempt.status_code
    if attempt.error:
        entry["error"] = attempt.error
    if attempt.response_excerpt:
        entry["response"] = attempt.response_excerpt
    return entry


def delivery_from_item(entry: dict[str, Any]) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery_id=entry["id"],
        trigger=DeliveryTrigger(entry["trigger"]),
        at=parse_iso(entry["at"]) or datetime.min,
        duration_ms=_int(entry.get("ms")) or 0,
        status_code=_int(entry.get("status")),
        delivered=bool(entry.get("delivered")),
        error=entry.get("error"),
        response_excerpt=entry.get("response"),
    )


def vars_of(source: JobSource) -> dict[str, Any]:
    return {
        "kind": source.kind.value,
        "bucket": source.bucket,
        "key": source.key,
        "url": source.url,
        "filename": source.filename,
        "etag": source.etag,
        "version_id": source.version_id,
        "pinned": source.pinned or None,
        "size": source.size,
        "upload_id": source.upload_id,
        "upload_size": source.upload_size,
    }


def job_from_item(item: dict[str, Any]) -> ImportJob:
    source = item.get("source", {})
    failure = item.get("failure")
    return ImportJob(
        job_id=item["job_id"],
        resource=ImportTarget(item["resource"]) if item.get("resource") else None,
        format=Format(item["format"]) if item.get("format") else None,
        status=JobStatus(item["status"]),
        source=JobSource(
            kind=SourceKind(source["kind"]),
            bucket=source.get("bucket"),
            key=source.get("key"),
            url=source.get("url"),
            filename=source.get("filename"),
            etag=source.get("etag"),
            version_id=source.get("version_id"),
            pinned=bool(source.get("pinned")),
            size=_int(source.get("size")),
            upload_id=source.get("upload_id"),
            upload_size=_int(source.get("upload_size")),
        ),
        created_at=parse_iso(item["created_at"]) or datetime.min,
        started_at=parse_iso(item.get("started_at")),
        finished_at=parse_iso(item.get("finished_at")),
        chunks_total=_int(item.get("chunks_total")),
        # Progress of unfinished jobs is read from PostgreSQL (ImportApi.view); a completed job did them all.
        chunks_done=(_int(item.get("chunks_total")) or 0) if item.get("status") in COMPLETED_VALUES else 0,
        counters=Counters(
            total=_int(item.get("records_total")),
            processed=_int(item.get("processed")) or 0,
            succeeded=_int(item.get("succeeded")) or 0,
            failed=_int(item.get("failed")) or 0,
        ),
        errors_by_code={k: int(v) for k, v in item.get("errors_by_code", {}).items()},
        failure=JobFailure(failure["code"], failure["message"]) if failure else None,
        owner=item.get("owner"),
        lease_until=_int(item.get("lease_until")),
        chunker_runs=_int(item.get("chunker_runs")) or 0,
        bytes_read=_int(item.get("bytes_read")) or 0,
        completion_pending=bool(item.get("completion_pending")),
        rejected_reimported=_int(item.get("reimported_records")) or 0,
        records_read=_int(item.get("records_read")) or 0,
        mode=ImportMode(item.get("mode", ImportMode.IMPORT.value)),
        parent_job_id=item.get("parent_job_id"),
        committed_job_id=item.get("committed_job_id"),
        callback=callback_from_item(item),
        counters_by_resource=_counters_by_resource(item.get("counters_by_resource")),
    )


def _counters_by_resource(stored: dict[str, Any] | None) -> dict[str, dict[str, int]] | None:
    if stored is None:
        return None
    return {resource: {name: int(value) for name, value in counters.items()} for resource, counters in stored.items()}


class DynamoJobRepository:
    def __init__(self, table: Any) -> None:
        self._table = table

    # ------------------------------------------------------------ jobs
    def create(self, job: ImportJob) -> None:
        """Idempotent: writing the same new job twice (a retried request) leaves one item."""
        try:
            self._table.put_item(
                Item=job_to_item(job),
                ConditionExpression="attribute_not_exists(pk) OR #s IN (:q, :a)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":q": JobStatus.QUEUED.value, ":a": JobStatus.AWAITING_UPLOAD.value},
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise

    def get(self, job_id: str) -> ImportJob | None:
        item = self._table.get_item(Key={"pk": _job_pk(job_id)}, ConsistentRead=True).get("Item")
        return job_from_item(item) if item and item.get("kind") == "import" else None

    def job_for_drop(self, bucket: str, key: str, etag: str) -> str | None:
        item = self._table.get_item(Key={"pk": f"drop#{bucket}#{key}#{etag}"}, ConsistentRead=True).get("Item")
        return str(item["job_id"]) if item else None

    def list_jobs(
        self,
        limit: int,
        cursor: dict[str, Any] | None,
        owner: str | None = None,
        status: str | None = None,
        resource: str | None = None,
    ) -> tuple[list[ImportJob], dict[str, Any] | None]:
        """Newest first, one page: `owner`'s jobs, or everyone's when None, of `status` and `resource` if given.
        The returned cursor fetches the next page of the same listing, and only of that one."""
        equal = {name: value for name, value in (("status", status), ("resource", resource)) if value is not None}
        items, last = list_page(self._table, "import", limit, cursor, owner, equal)
        return [job_from_item(item) for item in items], last

    def create_for_drop(self, job: ImportJob) -> str:
        """Creates the job for an S3 drop once per (bucket, key, etag); returns the job id that owns it."""
        source = job.source
        drop_pk = f"drop#{source.bucket}#{source.key}#{source.etag}"
        # The resource's own client serializes plain Python values, like the Table methods do.
        client = self._table.meta.client
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": {"pk": drop_pk, "job_id": job.job_id},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {"Put": {"TableName": self._table.name, "Item": job_to_item(job)}},
                ]
            )
            return job.job_id
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
        existing = self._table.get_item(Key={"pk": drop_pk}, ConsistentRead=True)["Item"]
        return str(existing["job_id"])

    def open_jobs(self, page_size: int = 100) -> Iterator[ImportJob]:
        """Every import job that has not ended, or whose completion event has not gone out, oldest first, page by
        page (the sparse index by_open_created)."""
        query: dict[str, Any] = {
            "IndexName": OPEN_JOBS_INDEX,
            "KeyConditionExpression": Key("open_kind").eq("import"),
            "Limit": page_size,
        }
        while True:
            page = self._table.query(**query)
            for item in page.get("Items", []):
                job = job_from_item(item)
                # An index lags its table by a moment.
                if not job.is_final or job.completion_pending or job.awaits_callback:
                    yield job
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def start_processing(self, job_id: str, format_: Format | None, run_id: str, lease_seconds: int) -> bool:
        """Claims the job for one chunker run (`run_id`) with a lease the run renews while it reads. False when
        another run's lease is live, chunking finished, or the job has moved on."""
        now = int(time.time())
        names = {"#s": "status"}
        values: dict[str, Any] = {
            ":processing": JobStatus.PROCESSING.value,
            ":now": now,
            ":lease": now + lease_seconds,
            ":run": run_id,
            ":one": 1,
            ":started": iso_now(),
            ":q": JobStatus.QUEUED.value,
            ":a": JobStatus.AWAITING_UPLOAD.value,
        }
        update = (
            "SET #s = :processing, lease_until = :lease, chunker_run = :run,"
            " started_at = if_not_exists(started_at, :started) ADD chunker_runs :one"
        )
        if format_:
            update = update.replace(" ADD ", ", #f = :format ADD ")
            names["#f"] = "format"
            values[":format"] = format_.value
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression=update,
                ConditionExpression=(
                    "attribute_exists(pk) AND (#s IN (:q, :a) OR (#s = :processing AND lease_until < :now"
                    " AND attribute_not_exists(chunks_total)))"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return True
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise

    def renew_chunker_lease(self, job_id: str, run_id: str, lease_seconds: int) -> None:
        """Extends the lease of run `run_id`; LeaseLost when the job is no longer that run's (its lease ran out
        and another run took over, or the job ended)."""
        self._renew_lease(job_id, run_id, lease_seconds, {})

    def record_reading(self, job_id: str, run_id: str, bytes_read: int, records_read: int, lease_seconds: int) -> None:
        """How far run `run_id` has read the source (the basis of the job's progress until its total is known),
        with a renewal of its lease. LeaseLost as renew_chunker_lease."""
        self._renew_lease(job_id, run_id, lease_seconds, {"bytes_read": bytes_read, "records_read": records_read})

    def _renew_lease(self, job_id: str, run_id: str, lease_seconds: int, also_set: dict[str, int]) -> None:
        assignments = "".join(f", {name} = :{name}" for name in also_set)
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression=f"SET lease_until = :lease{assignments}",
                ConditionExpression="#s = :processing AND chunker_run = :run",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":lease": int(time.time()) + lease_seconds,
                    ":processing": JobStatus.PROCESSING.value,
                    ":run": run_id,
                    **{f":{name}": value for name, value in also_set.items()},
                },
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise LeaseLost(f"job {job_id} is no longer chunker run {run_id}'s") from error
            raise

    def release_chunker_lease(self, job_id: str, run_id: str) -> None:
        """Lets a retried chunker run claim the job again at once (only while chunking is unfinished)."""
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="#s = :processing AND chunker_run = :run AND attribute_not_exists(chunks_total)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":zero": 0, ":processing": JobStatus.PROCESSING.value, ":run": run_id},
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise

    def pin_source(self, job_id: str, source: JobSource) -> JobSource:
        """Records the source version the first chunker run reads; every later run reads that one. Returns the
        pinned source (another run's, if one pinned first)."""
        pinned = replace(source, pinned=True)
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression="SET #source = :source",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#source.pinned)",
                ExpressionAttributeNames={"#source": "source"},
                ExpressionAttributeValues={":source": {k: v for k, v in vars_of(pinned).items() if v is not None}},
            )
            return pinned
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
        job = self.get(job_id)
        if job is None:
            raise LookupError(f"no import job {job_id}")
        return job.source

    def set_format(self, job_id: str, format_: Format) -> None:
        self._table.update_item(
            Key={"pk": _job_pk(job_id)},
            UpdateExpression="SET #f = :f",
            ExpressionAttributeNames={"#f": "format"},
            ExpressionAttributeValues={":f": format_.value},
        )

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None:
        self._table.update_item(
            Key={"pk": _job_pk(job_id)},
            UpdateExpression="SET chunks_total = :c, records_total = :r",
            ExpressionAttributeValues={":c": chunks_total, ":r": records_total},
        )

    def finish(
        self,
        job_id: str,
        counters: Counters,
        errors_by_code: dict[str, int],
        mode: ImportMode = ImportMode.IMPORT,
        counters_by_resource: dict[str, dict[str, int]] | None = None,
    ) -> bool:
        """Marks the job completed (with or without errors; validated for a dry run) once; False if it had already
        ended."""
        by_resource = ", counters_by_resource = :r" if counters_by_resource is not None else ""
        return self._end(
            job_id,
            final_status(counters.failed, mode),
            "SET #processed = :p, #succeeded = :s, #failed = :f, records_total = :t, errors_by_code = :e" + by_resource,
            {
                ":p": counters.processed,
                ":s": counters.succeeded,
                ":f": counters.failed,
                ":t": counters.total or 0,
                ":e": errors_by_code,
                **({":r": counters_by_resource} if counters_by_resource is not None else {}),
            },
        )

    def credit_reimport(self, parent_id: str, child_id: str, records: int) -> None:
        try:
            self._table.update_item(
                Key={"pk": _job_pk(parent_id)},
                UpdateExpression="ADD reimported_records :records, reimport_jobs :child_set",
                ConditionExpression="attribute_exists(pk) AND NOT contains(reimport_jobs, :child)",
                ExpressionAttributeValues={":records": records, ":child_set": {child_id}, ":child": child_id},
            )
        except ClientError as error:
            if not _is_condition_failure(error):  # credited before (or the parent is gone): nothing to add
                raise

    def completion_published(self, job_id: str, keep_open: bool = False) -> None:
        if not keep_open:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression="REMOVE open_kind, completion_pending",
                ConditionExpression="attribute_exists(pk)",
            )
            return
        # An attempt may have been made (and have set the next one's time) before this write: kept, if so.
        self._table.update_item(
            Key={"pk": _job_pk(job_id)},
            UpdateExpression="SET callback_next_at = if_not_exists(callback_next_at, :now) REMOVE completion_pending",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": iso_now()},
        )

    def claim_callback_attempt(self, job_id: str, attempt: int, lease_until: datetime) -> bool:
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression="SET callback_attempts = :attempt, callback_next_at = :lease",
                ConditionExpression="callback_state = :pending AND callback_attempts = :previous",
                ExpressionAttributeValues={
                    ":attempt": attempt,
                    ":previous": attempt - 1,
                    ":lease": iso(lease_until),
                    ":pending": CallbackState.PENDING.value,
                },
            )
            return True
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise

    def record_delivery(
        self, job_id: str, attempt: DeliveryAttempt, settled: CallbackState | None, next_attempt_at: datetime | None
    ) -> None:
        update = "SET deliveries = list_append(if_not_exists(deliveries, :none), :attempt)"
        values: dict[str, Any] = {":none": [], ":attempt": [delivery_to_item(attempt)]}
        if settled is not None:
            update += ", callback_state = :state REMOVE open_kind, callback_next_at"
            values[":state"] = settled.value
        elif next_attempt_at is not None:
            update += ", callback_next_at = :next"
            values[":next"] = iso(next_attempt_at)
        self._table.update_item(
            Key={"pk": _job_pk(job_id)},
            UpdateExpression=update,
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=values,
        )

    def settle_callback(self, job_id: str, state: CallbackState) -> None:
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                UpdateExpression="SET callback_state = :state REMOVE open_kind, callback_next_at",
                ConditionExpression="callback_state = :pending",
                ExpressionAttributeValues={":state": state.value, ":pending": CallbackState.PENDING.value},
            )
        except ClientError as error:
            if not _is_condition_failure(error):  # settled meanwhile, by an attempt
                raise

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        item = self._table.get_item(
            Key={"pk": _job_pk(job_id)}, ProjectionExpression="deliveries", ConsistentRead=True
        ).get("Item")
        return [delivery_from_item(entry) for entry in (item or {}).get("deliveries", [])]

    def claim_commit(self, dry_run_id: str, commit_id: str) -> bool:
        """Records that the validated dry run is committed as job `commit_id`; False when it is not a validated
        dry run, or was committed as another job. Claiming the same commit again succeeds (a retried commit)."""
        try:
            self._table.update_item(
                Key={"pk": _job_pk(dry_run_id)},
                UpdateExpression="SET committed_job_id = :commit",
                ConditionExpression=(
                    "attribute_exists(pk) AND #s = :validated"
                    " AND (attribute_not_exists(committed_job_id) OR committed_job_id = :commit)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":commit": commit_id, ":validated": JobStatus.VALIDATED.value},
            )
            return True
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return self._end(
            job_id, JobStatus.FAILED, "SET failure = :failure", {":failure": {"code": code, "message": message}}
        )

    def cancel(self, job_id: str) -> bool:
        return self._end(job_id, JobStatus.CANCELLED, "SET cancelled_at = :cancelled", {":cancelled": iso_now()})

    def _end(self, job_id: str, status: JobStatus, update: str, values: dict[str, Any]) -> bool:
        final = {f":final{n}": s.value for n, s in enumerate(sorted(FINAL_STATUSES))}
        try:
            self._table.update_item(
                Key={"pk": _job_pk(job_id)},
                # The job stays in the open-jobs index until its completion event is out (completion_published):
                # the sweeper publishes it if whoever ended the job could not.
                UpdateExpression=update
                + ", #s = :status, finished_at = :finished, completion_pending = :pending REMOVE lease_until",
                ConditionExpression=f"attribute_exists(pk) AND NOT #s IN ({', '.join(final)})",
                ExpressionAttributeNames={
                    "#s": "status",
                    **{f"#{word}": word for word in ("processed", "succeeded", "failed") if f"#{word}" in update},
                },
                ExpressionAttributeValues={
                    **values,
                    **final,
                    ":status": status.value,
                    ":finished": iso_now(),
                    ":pending": True,
                },
            )
            return True
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise

    # ------------------------------------------------------------ idempotency keys
    def claim_idempotency_key(self, claim: IdempotencyClaim) -> StoredRequest | None:
        """Claims the key for this request; returns the live record instead when one exists."""
        now = int(time.time())
        pk = f"idem#{claim.scope}#{claim.key}"
        try:
            self._table.put_item(
                Item={
                    "pk": pk,
                    "fingerprint": claim.fingerprint,
                    "job_id": claim.job_id,
                    "expires_at": now + claim.ttl_seconds,
                    "locked_until": now + claim.lock_seconds,
                },
                # TTL deletion lags by up to days: an expired record counts as absent.
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": now},
            )
            return None
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
        return self.stored_request(claim.scope, claim.key)

    def stored_request(self, scope: str, key: str) -> StoredRequest | None:
        item = self._table.get_item(Key={"pk": f"idem#{scope}#{key}"}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return StoredRequest(
            fingerprint=item["fingerprint"],
            job_id=item["job_id"],
            expires_at=int(item["expires_at"]),
            locked_until=int(item.get("locked_until", 0)),
            response_status=_int(item.get("response_status")),
            response_body=item.get("response_body"),
        )

    def store_response(self, scope: str, key: str, status: int, body: str) -> None:
        self._table.update_item(
            Key={"pk": f"idem#{scope}#{key}"},
            UpdateExpression="SET response_status = :s, response_body = :b",
            ExpressionAttributeValues={":s": status, ":b": body},
        )

    def release_idempotency_key(self, scope: str, key: str) -> None:
        """Forgets a claim whose request failed, so that a retry with the same key can succeed."""
        self._table.delete_item(Key={"pk": f"idem#{scope}#{key}"})


def iso_now() -> str:
    return iso(utc_now()) or ""

"""Idempotency-Key handling shared by every job-creating request (imports, exports)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from bulkio.adapters.jobs_repo import IdempotencyClaim
from bulkio.domain.idempotency import Decision, StoredRequest, decide, fingerprint
from bulkio.problems import conflict, unprocessable

WAIT_FOR_FIRST_SECONDS = 10.0


@dataclass(slots=True)
class ApiResult:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyRecords(Protocol):
    def claim_idempotency_key(self, claim: IdempotencyClaim) -> StoredRequest | None: ...

    def store_response(self, scope: str, key: str, status: int, body: str) -> None: ...

    def release_idempotency_key(self, scope: str, key: str) -> None: ...


def idempotency_scope(kind: str, owner: str) -> str:
    """Keys are per caller: two callers choosing the same key never see each other's jobs."""
    return f"{kind}#{owner}"


def submit_once(
    records: IdempotencyRecords,
    scope: str,
    key: str | None,
    identity: dict[str, Any],
    ttl_seconds: int,
    create: Callable[[str], ApiResult],
    location: Callable[[str], str],
) -> ApiResult:
    """Runs `create(job_id)` once per Idempotency-Key: a repeat of the same request gets the first response
    (with Idempotent-Replayed), a different request with the key is 422, a concurrent repeat waits for the first.
    """
    if key is None:
        return create(str(uuid.uuid4()))
    request_fingerprint = fingerprint(identity)
    claim = IdempotencyClaim(scope, key, request_fingerprint, str(uuid.uuid4()), ttl_seconds)
    deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
    while True:
        stored = records.claim_idempotency_key(claim)
        if stored is None:
            return _create_remembered(records, scope, key, claim.job_id, create)
        decision = decide(stored, request_fingerprint, int(time.time()))
        if decision is Decision.MISMATCH:
            raise unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request in the last 24 hours: "
                "use a new key for a new request",
            )
        if decision is Decision.REPLAY:
            body = orjson.loads(stored.response_body or "{}")
            headers = {"Idempotent-Replayed": "true", "Location": location(stored.job_id)}
            return ApiResult(stored.response_status or 202, body, headers)
        if decision is Decision.TAKE_OVER:
            return _create_remembered(records, scope, key, stored.job_id, create)
        if decision is Decision.IN_PROGRESS and time.monotonic() > deadline:
            raise conflict(
                "idempotency_request_in_progress",
                "a request with this Idempotency-Key is still being processed: retry in a few seconds",
            )
        time.sleep(0.2)  # PROCEED (the record expired meanwhile) or IN_PROGRESS: look again


def _create_remembered(
    records: IdempotencyRecords, scope: str, key: str, job_id: str, create: Callable[[str], ApiResult]
) -> ApiResult:
    try:
        result = create(job_id)
    except Exception:
        records.release_idempotency_key(scope, key)
        raise
    records.store_response(scope, key, result.status, orjson.dumps(result.body).decode())
    return result

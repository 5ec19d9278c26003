"""Idempotency-Key handling shared by every job-creating request (imports, exports)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from bulkio.domain.errors import Conflict, Unprocessable
from bulkio.domain.idempotency import Decision, IdempotencyClaim, decide, fingerprint
from bulkio.domain.submissions import Submitted
from bulkio.services.ports import IdempotencyRecords

WAIT_FOR_FIRST_SECONDS = 10.0
# What the records keep as the first answer's status: a created job is always 202 Accepted.
CREATED_STATUS = 202


def idempotency_scope(kind: str, owner: str) -> str:
    """Keys are per caller: two callers choosing the same key never see each other's jobs."""
    return f"{kind}#{owner}"


def submit_once(
    records: IdempotencyRecords,
    scope: str,
    key: str | None,
    identity: dict[str, Any],
    ttl_seconds: int,
    create: Callable[[str], dict[str, Any]],
) -> Submitted:
    """Runs `create(job_id)`, which answers the response body, once per Idempotency-Key: a repeat of the same
    request gets the first body back (replayed), a different request with the key is refused (Unprocessable), a
    concurrent repeat waits for the first (and is refused, Conflict, if it takes too long)."""
    if key is None:
        job_id = str(uuid.uuid4())
        return Submitted(job_id, create(job_id))
    request_fingerprint = fingerprint(identity)
    claim = IdempotencyClaim(scope, key, request_fingerprint, str(uuid.uuid4()), ttl_seconds)
    deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
    while True:
        stored = records.claim_idempotency_key(claim)
        if stored is None:
            return _create_remembered(records, scope, key, claim.job_id, create)
        decision = decide(stored, request_fingerprint, int(time.time()))
        if decision is Decision.MISMATCH:
            raise Unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request in the last 24 hours: "
                "use a new key for a new request",
            )
        if decision is Decision.REPLAY:
            return Submitted(stored.job_id, orjson.loads(stored.response_body or "{}"), replayed=True)
        if decision is Decision.TAKE_OVER:
            return _create_remembered(records, scope, key, stored.job_id, create)
        if decision is Decision.IN_PROGRESS and time.monotonic() > deadline:
            raise Conflict(
                "idempotency_request_in_progress",
                "a request with this Idempotency-Key is still being processed: retry in a few seconds",
            )
        time.sleep(0.2)  # PROCEED (the record expired meanwhile) or IN_PROGRESS: look again


def _create_remembered(
    records: IdempotencyRecords, scope: str, key: str, job_id: str, create: Callable[[str], dict[str, Any]]
) -> Submitted:
    try:
        body = create(job_id)
    except Exception:
        records.release_idempotency_key(scope, key)
        raise
    records.store_response(scope, key, CREATED_STATUS, orjson.dumps(body).decode())
    return Submitted(job_id, body)

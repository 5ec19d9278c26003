"""Idempotency-Key rules (IETF httpapi-idempotency-key-header draft, Stripe's behaviour). Pure."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

MAX_KEY_LENGTH = 255


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isprintable() and key.isascii()


def fingerprint(request: dict[str, Any]) -> str:
    """A digest of what makes two requests 'the same': canonical JSON of the normalized request."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A request's claim on its Idempotency-Key: the job id it will create, held `lock_seconds` while it runs."""

    scope: str
    key: str
    fingerprint: str
    job_id: str
    ttl_seconds: int
    lock_seconds: int = 60


@dataclass(frozen=True, slots=True)
class StoredRequest:
    fingerprint: str
    job_id: str
    expires_at: int
    locked_until: int
    response_status: int | None = None
    response_body: str | None = None


class Decision(StrEnum):
    PROCEED = "proceed"  # no live record: this request does the work
    TAKE_OVER = "take_over"  # the first attempt died before answering: finish it under the same job id
    REPLAY = "replay"  # same request finished before: return its response
    MISMATCH = "mismatch"  # same key, different request: 422
    IN_PROGRESS = "in_progress"  # same request still running elsewhere: wait, then 409


def decide(stored: StoredRequest | None, request_fingerprint: str, now_epoch: int) -> Decision:
    if stored is None or stored.expires_at <= now_epoch:
        return Decision.PROCEED
    if stored.fingerprint != request_fingerprint:
        return Decision.MISMATCH
    if stored.response_status is None:
        return Decision.TAKE_OVER if stored.locked_until <= now_epoch else Decision.IN_PROGRESS
    return Decision.REPLAY

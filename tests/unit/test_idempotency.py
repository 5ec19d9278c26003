"""Idempotency-Key rules: which requests are 'the same', and what a repeated key leads to."""

from __future__ import annotations

import pytest
from bulkio.domain.idempotency import Decision, StoredRequest, decide, fingerprint, valid_key

NOW = 1_700_000_000
REQUEST = {"kind": "url", "resource": "users", "format": "csv", "url": "https://example.com/u.csv"}


def stored(
    request_fingerprint: str,
    *,
    expires_at: int = NOW + 3600,
    locked_until: int = NOW + 60,
    response_status: int | None = None,
) -> StoredRequest:
    body = '{"job_id": "job-1"}' if response_status is not None else None
    return StoredRequest(request_fingerprint, "job-1", expires_at, locked_until, response_status, body)


def test_fingerprint_does_not_depend_on_key_order() -> None:
    reordered = dict(reversed(list(REQUEST.items())))

    assert fingerprint(reordered) == fingerprint(REQUEST)


def test_fingerprint_is_a_sha256_hex_digest() -> None:
    digest = fingerprint(REQUEST)

    assert len(digest) == 64
    assert int(digest, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"resource": "articles"},
        {"format": None},
        {"url": "https://example.com/u2.csv"},
        {"kind": "presigned"},
        {"file_sha256": "ab" * 32},
    ],
)
def test_fingerprint_changes_with_any_part_of_the_request(change: dict[str, object]) -> None:
    assert fingerprint({**REQUEST, **change}) != fingerprint(REQUEST)


def test_without_a_stored_request_the_request_proceeds() -> None:
    assert decide(None, fingerprint(REQUEST), NOW) is Decision.PROCEED


@pytest.mark.parametrize("expires_at", [NOW, NOW - 1])
def test_an_expired_record_counts_as_absent_even_for_another_request(expires_at: int) -> None:
    expired = stored("another request", expires_at=expires_at, response_status=202)

    assert decide(expired, fingerprint(REQUEST), NOW) is Decision.PROCEED


def test_the_same_key_for_a_different_request_is_a_mismatch() -> None:
    assert decide(stored("another request", response_status=202), fingerprint(REQUEST), NOW) is Decision.MISMATCH


def test_a_mismatch_is_reported_even_while_the_first_request_runs() -> None:
    assert decide(stored("another request"), fingerprint(REQUEST), NOW) is Decision.MISMATCH


def test_a_finished_request_is_replayed() -> None:
    finished = stored(fingerprint(REQUEST), response_status=202)

    assert decide(finished, fingerprint(REQUEST), NOW) is Decision.REPLAY


def test_a_finished_request_is_replayed_after_its_lock_lapsed() -> None:
    finished = stored(fingerprint(REQUEST), locked_until=NOW - 100, response_status=202)

    assert decide(finished, fingerprint(REQUEST), NOW) is Decision.REPLAY


def test_the_same_request_still_locked_is_in_progress() -> None:
    running = stored(fingerprint(REQUEST), locked_until=NOW + 1)

    assert decide(running, fingerprint(REQUEST), NOW) is Decision.IN_PROGRESS


@pytest.mark.parametrize("locked_until", [NOW, NOW - 30])
def test_an_unanswered_request_whose_lock_lapsed_is_taken_over(locked_until: int) -> None:
    abandoned = stored(fingerprint(REQUEST), locked_until=locked_until)

    assert decide(abandoned, fingerprint(REQUEST), NOW) is Decision.TAKE_OVER


@pytest.mark.parametrize("key", ["a", "order-2024-05-01", "x" * 255, "key with spaces"])
def test_valid_keys(key: str) -> None:
    assert valid_key(key)


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "new\nline", "clé"])
def test_invalid_keys(key: str) -> None:
    assert not valid_key(key)

"""Completion callbacks against the in-memory fakes: a job created with callback_url POSTs its summary there when it
ends, signed with the secret its 202 gave; retried with backoff within the window, each attempt once; listed and
redelivered through the API; and a lost attempt is sent again by the sweeper."""

from __future__ import annotations

import hmac
import io
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulkio.domain.callbacks import (
    CallbackState,
    DeliveryTrigger,
    JobCallback,
    RetrySchedule,
    signature,
    signature_matches,
)
from bulkio.domain.errors import Conflict
from bulkio.domain.jobs import IMPORT_COMPLETED, ImportMode
from bulkio.domain.resources import Format, ImportTarget
from bulkio.domain.sources import SourceUnavailable
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key

from tests.fakes import CALLER, OWNER, FakeWorld, build_world, make_settings
from tests.unit.test_import_service import BUCKET, deliver_all, job_of, ndjson, user

HOOK = "https://hooks.example.com/bulkio"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def world() -> FakeWorld:
    return build_world(make_settings(chunk_records=2))


def import_with_callback(world: FakeWorld, records: list[dict[str, Any]], **fields: Any) -> tuple[str, str]:
    """A multipart import with a callback_url, run to its end: its id and the callback_secret of its 202."""
    request = NewImport(
        ImportTarget.USERS,
        Format.NDJSON,
        filename="users.ndjson",
        file=io.BytesIO(ndjson(records)),
        file_sha256="ab",
        callback_url=HOOK,
        **fields,
    )
    body = world.api.submit(request, None, OWNER).body
    world.chunker.on_object_created(BUCKET, source_key(body["job_id"]), "etag-1")
    deliver_all(world)
    return body["job_id"], body["callback_secret"]


def run_callbacks(world: FakeWorld) -> None:
    """Hands the callback function every queued message, whatever its delay."""
    for message, _ in world.callbacks.take():
        world.parts.callbacks.deliver(message)


def open_ids(world: FakeWorld) -> list[str]:
    return [job.job_id for job in world.jobs.open_jobs()]


# ------------------------------------------------------------------------------------------------ the rules
def test_a_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    header = signature("whsec_k", 1700000000, b'{"a":1}')
    assert header == "t=1700000000,v1=" + hmac.new(b"whsec_k", b'1700000000.{"a":1}', "sha256").hexdigest()
    assert signature_matches("whsec_k", header, b'{"a":1}', now=1700000100)
    assert not signature_matches("whsec_k", header, b'{"a":2}', now=1700000100)
    assert not signature_matches("whsec_other", header, b'{"a":1}', now=1700000100)
    assert not signature_matches("whsec_k", header, b'{"a":1}', now=1700000000 + 301)  # a replay, too old
    assert not signature_matches("whsec_k", "v1=abc", b'{"a":1}', now=1700000000)


def readme_verifier() -> Any:
    """The README's ten lines a receiver copies, run as they are written there."""
    text = README.read_text()
    block = re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", text, re.S)
    assert block is not None, "the README's signature check is gone"
    assert len(block.group(1).strip().splitlines()) <= 10
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)
    return namespace["verified"]


def test_the_readmes_check_verifies_what_the_service_signs_and_nothing_else() -> None:
    verified = readme_verifier()
    body = b'{"job_id":"j","status":"completed"}'
    header = signature("whsec_k", int(time.time()), body)

    assert verified("whsec_k", header, body)
    assert not verified("whsec_k", header, body + b" ")
    assert not verified("whsec_wrong", header, body)
    assert not verified("whsec_k", signature("whsec_k", int(time.time()) - 600, body), body)


def test_retries_double_from_the_first_delay_up_to_the_longest_within_the_window() -> None:
    schedule = RetrySchedule(first_delay_seconds=30, longest_delay_seconds=3600, window_seconds=86400)
    assert [schedule.delay_after(n) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.next_attempt(ended, 1, ended) == ended + timedelta(seconds=30)
    late = ended + timedelta(seconds=86400 - 100)
    assert schedule.next_attempt(ended, 9, late) is None  # an hour more would be past the window


# ------------------------------------------------------------------------------------------------ deliveries
def test_an_ended_job_posts_its_signed_summary_once_and_leaves_the_open_jobs(world: FakeWorld) -> None:
    job_id, secret = import_with_callback(world, [user(1), {"email": "bad", "name": "Bad"}])
    assert secret.startswith("whsec_")
    assert open_ids(world) == [job_id]  # ended, its callback not taken yet

    run_callbacks(world)

    [(url, body, headers)] = world.endpoint.requests
    summary = orjson.loads(body)
    assert url == HOOK
    assert (summary["job_id"], summary["status"]) == (job_id, "completed_with_errors")
    assert summary["counters"] == {"total": 2, "processed": 2, "succeeded": 1, "failed": 1}
    assert summary == world.events.published[0][1]  # the completion event's detail
    assert "callback" not in summary and secret not in body.decode()
    assert headers["Bulkio-Event"] == IMPORT_COMPLETED
    assert headers["Content-Type"] == "application/json"
    assert signature_matches(secret, headers["Bulkio-Signature"], body, now=int(time.time()))
    assert readme_verifier()(secret, headers["Bulkio-Signature"], body)

    callback = job_of(world, job_id).callback
    assert callback is not None and (callback.state, callback.deliveries) == (CallbackState.DELIVERED, 1)
    assert open_ids(world) == []
    assert world.sweeper.sweep() == {}


def test_the_secret_is_shown_once_and_never_in_a_view(world: FakeWorld) -> None:
    job_id, secret = import_with_callback(world, [user(1)])

    view = world.api.view(job_id, CALLER)
    listing = world.api.list_jobs(10, None, CALLER)["jobs"][0]
    assert {**view["callback"], "next_attempt_at": None} == {
        "url": HOOK,
        "state": "pending",
        "deliveries": 0,
        "next_attempt_at": None,
    }
    assert secret not in orjson.dumps(view).decode() and secret not in orjson.dumps(listing).decode()
    assert world.api.deliveries(job_id, CALLER)["deliveries"] == []


def test_a_refused_attempt_is_retried_after_the_first_delay_then_taken(world: FakeWorld) -> None:
    world.endpoint.statuses = [503, 200]
    job_id, _ = import_with_callback(world, [user(1)])

    run_callbacks(world)
    callback = job_of(world, job_id).callback
    assert callback is not None and callback.state is CallbackState.PENDING
    [(retry, delay)] = world.callbacks.take()
    assert (retry.attempt, retry.trigger, delay) == (2, DeliveryTrigger.AUTOMATIC, 30)

    # Handed over before it is due (a queue delivers early, or the delay was over SQS's 900 s): it waits again.
    world.parts.callbacks.deliver(retry)
    assert len(world.endpoint.requests) == 1
    [(again, wait)] = world.callbacks.take()
    assert again == retry and 0 < wait <= 30

    later = replace(world.parts.callbacks, now=lambda: datetime.now(UTC) + timedelta(seconds=31))
    later.deliver(retry)

    deliveries = world.api.deliveries(job_id, CALLER)
    assert [(d["outcome"], d["status_code"], d["trigger"]) for d in deliveries["deliveries"]] == [
        ("failed", 503, "automatic"),
        ("delivered", 200, "automatic"),
    ]
    assert "503" in deliveries["deliveries"][0]["error"]
    assert deliveries["callback"]["state"] == "delivered"
    assert open_ids(world) == []


def test_a_message_handed_over_twice_makes_one_attempt(world: FakeWorld) -> None:
    job_id, _ = import_with_callback(world, [user(1)])
    [(first, _)] = world.callbacks.take()

    world.parts.callbacks.deliver(first)
    world.parts.callbacks.deliver(first)  # SQS delivers at least once

    assert len(world.endpoint.requests) == 1
    assert len(world.jobs.deliveries(job_id)) == 1


def test_an_unreachable_endpoint_is_recorded_and_given_up_when_the_window_closes() -> None:
    world = build_world(make_settings(callback_retry_window_seconds=0))
    world.endpoint.error = SourceUnavailable("url_not_allowed", "hooks.example.com resolves to 10.0.0.7, private")
    job_id, _ = import_with_callback(world, [user(1)])

    run_callbacks(world)

    [attempt] = world.api.deliveries(job_id, CALLER)["deliveries"]
    assert (attempt["outcome"], attempt["status_code"]) == ("failed", None)
    assert "10.0.0.7" in attempt["error"]
    callback = job_of(world, job_id).callback
    assert callback is not None and callback.state is CallbackState.FAILED
    assert world.callbacks.sent == []  # no retry past the window
    assert open_ids(world) == []


def test_a_redelivery_posts_again_and_settles_a_failed_callback() -> None:
    world = build_world(make_settings(callback_retry_window_seconds=0))
    world.endpoint.statuses = [500, 204]
    job_id, secret = import_with_callback(world, [user(1)])
    run_callbacks(world)
    assert job_of(world, job_id).callback.state is CallbackState.FAILED  # type: ignore[union-attr]

    queued = world.api.redeliver(job_id, CALLER)
    assert queued == {"job_id": job_id, "status": "queued", "deliveries_url": f"/v1/imports/{job_id}/deliveries"}
    run_callbacks(world)

    deliveries = world.api.deliveries(job_id, CALLER)
    assert [(d["trigger"], d["outcome"]) for d in deliveries["deliveries"]] == [
        ("automatic", "failed"),
        ("redelivery", "delivered"),
    ]
    assert deliveries["callback"]["state"] == "delivered"
    first, second = world.endpoint.requests
    assert first[2]["Bulkio-Delivery"] != second[2]["Bulkio-Delivery"]
    assert signature_matches(secret, second[2]["Bulkio-Signature"], second[1], now=int(time.time()))


def test_deliveries_and_redeliveries_are_refused_where_there_is_nothing_to_deliver(world: FakeWorld) -> None:
    plain = world.api.submit(
        NewImport(ImportTarget.USERS, Format.NDJSON, filename="u.ndjson", file=io.BytesIO(b""), file_sha256="x"),
        None,
        OWNER,
    ).body["job_id"]
    with pytest.raises(Conflict) as refused:
        world.api.deliveries(plain, CALLER)
    assert refused.value.code == "no_callback"

    running = world.api.submit(
        NewImport(
            ImportTarget.USERS,
            Format.NDJSON,
            filename="u.ndjson",
            file=io.BytesIO(b"{}"),
            file_sha256="y",
            callback_url=HOOK,
        ),
        None,
        OWNER,
    ).body["job_id"]
    with pytest.raises(Conflict) as refused:
        world.api.redeliver(running, CALLER)
    assert refused.value.code == "job_not_ended"


# ------------------------------------------------------------------------------------------------ faults
def test_a_first_attempt_that_could_not_be_queued_is_queued_by_the_sweeper(world: FakeWorld) -> None:
    world.callbacks.error = ConnectionError("SQS is away")
    job_id, _ = import_with_callback(world, [user(1)])
    assert job_of(world, job_id).completion_pending  # still in the outbox
    assert world.sweeper.sweep() == {"error": 1}

    world.callbacks.error = None
    assert world.sweeper.sweep() == {"published": 1}
    run_callbacks(world)

    assert job_of(world, job_id).callback.state is CallbackState.DELIVERED  # type: ignore[union-attr]
    assert len(world.endpoint.requests) == 1
    assert open_ids(world) == []


def test_the_sweeper_sends_a_lost_attempt_again_and_gives_up_after_the_window(world: FakeWorld) -> None:
    job_id, _ = import_with_callback(world, [user(1)])
    world.callbacks.take()  # the first attempt's message is lost
    stored = world.jobs._jobs[job_id].job
    assert stored.callback is not None

    assert world.sweeper.sweep() == {"callback_wait": 1}  # not overdue yet
    stored.callback.next_attempt_at = datetime.now(UTC) - timedelta(hours=1)
    assert world.sweeper.sweep() == {"callback_resend": 1}
    [(resent, delay)] = world.callbacks.take()
    assert (resent.job_id, resent.attempt, delay) == (job_id, 1, 0)

    stored.finished_at = datetime.now(UTC) - timedelta(days=2)
    assert world.sweeper.sweep() == {"callback_give_up": 1}
    assert stored.callback.state is CallbackState.FAILED
    assert open_ids(world) == []


def test_a_commit_posts_to_its_dry_runs_callback_with_the_same_secret(world: FakeWorld) -> None:
    dry_run, secret = import_with_callback(world, [user(1)], mode=ImportMode.VALIDATE)
    run_callbacks(world)
    commit = world.api.commit(dry_run, CALLER)
    assert "callback_secret" not in commit.body
    world.chunker.run_chunker(commit.job_id)
    deliver_all(world)
    run_callbacks(world)

    statuses = [orjson.loads(body)["status"] for _, body, _ in world.endpoint.requests]
    assert statuses == ["validated", "completed"]
    _, body, headers = world.endpoint.requests[1]
    assert signature_matches(secret, headers["Bulkio-Signature"], body, now=int(time.time()))
    assert job_of(world, commit.job_id).callback == JobCallback(
        HOOK, secret, CallbackState.DELIVERED, attempts=1, deliveries=1
    )

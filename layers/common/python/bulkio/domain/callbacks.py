"""Completion callbacks: a job created with `callback_url` POSTs its summary there when it ends, signed with a
secret of its own, retried with exponential backoff until it is taken or the retry window closes. The rules (the
signature, the schedule, what a delivery message asks for) live here; sending and storing are the services'.

The signature follows the scheme of Stripe's and Svix's webhooks, which receivers know how to check:
`Bulkio-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. The timestamp inside the signed text
lets a receiver refuse replays older than a few minutes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

SIGNATURE_HEADER = "Bulkio-Signature"
DELIVERY_HEADER = "Bulkio-Delivery"  # a new id per attempt, as the deliveries list shows it
EVENT_HEADER = "Bulkio-Event"
SECRET_PREFIX = "whsec_"
# The most deliveries one job records (automatic retries over a day number about 30): redeliveries beyond are refused.
MAX_DELIVERIES = 200
# A response excerpt kept with each attempt, to tell the caller what their endpoint said.
RESPONSE_EXCERPT_CHARS = 200


class CallbackState(StrEnum):
    PENDING = "pending"  # not taken yet: retried on its schedule
    DELIVERED = "delivered"  # an attempt got a 2xx answer
    FAILED = "failed"  # the retry window closed without a 2xx: a redelivery may still be asked for


class DeliveryTrigger(StrEnum):
    AUTOMATIC = "automatic"  # the job's end, and the retries that follow
    REDELIVERY = "redelivery"  # POST /v1/imports/{id}/deliveries/redeliver


@dataclass(slots=True)
class JobCallback:
    """Where a job's end is POSTed, with what secret, and how far its delivery has got."""

    url: str
    secret: str  # never shown after the 202 that created the job
    state: CallbackState = CallbackState.PENDING
    attempts: int = 0  # automatic attempts started (claimed)
    deliveries: int = 0  # attempts recorded, automatic ones and redeliveries
    next_attempt_at: datetime | None = None


class CallbackMessage(BaseModel):
    """A message of the callback queue: deliver job `job_id`'s summary. An automatic one names the attempt it
    is for, so that a duplicate (SQS delivers at least once; the sweeper re-sends a lost one) finds it claimed
    and sends nothing."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    trigger: DeliveryTrigger = DeliveryTrigger.AUTOMATIC
    attempt: int = 1


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Bulkio-Signature header's value for `body`, sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_matches(secret: str, header: str, body: bytes, now: int, tolerance_seconds: int = 300) -> bool:
    """What a receiver checks: a v1 signature of this body with this secret, made at most `tolerance_seconds` ago."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp = fields.get("t", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_seconds:
        return False
    expected = signature(secret, int(timestamp), body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    first_delay_seconds: int  # after the first failed attempt; doubling after each further one
    longest_delay_seconds: int
    window_seconds: int  # from the job's end: no automatic attempt starts after it

    def delay_after(self, attempts: int) -> int:
        """The wait after `attempts` failed automatic attempts (1, 2, ...)."""
        return min(self.first_delay_seconds * 2 ** max(attempts - 1, 0), self.longest_delay_seconds)

    def next_attempt(self, finished_at: datetime, attempts: int, now: datetime) -> datetime | None:
        """When the next automatic attempt is due after `attempts` failed ones, or None: the window has closed."""
        due = now + timedelta(seconds=self.delay_after(attempts))
        return due if due <= finished_at + timedelta(seconds=self.window_seconds) else None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST to a job's callback_url, as GET /v1/imports/{id}/deliveries lists it."""

    delivery_id: str  # sent as Bulkio-Delivery
    trigger: DeliveryTrigger
    at: datetime
    duration_ms: int
    status_code: int | None  # None: no HTTP answer (refused, unreachable, timed out)
    delivered: bool
    error: str | None = None
    response_excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackAnswer:
    """The receiving endpoint's HTTP answer."""

    status_code: int
    excerpt: str  # the start of its body, as text

    @property
    def delivered(self) -> bool:
        return 200 <= self.status_code < 300

    def error(self) -> str | None:
        if self.delivered:
            return None
        if 300 <= self.status_code < 400:
            return (
                f"the endpoint answered HTTP {self.status_code}, a redirect: callbacks follow none, give the final URL"
            )
        return f"the endpoint answered HTTP {self.status_code}: any 2xx answer takes the delivery"


# How late a due attempt may be before the sweeper takes its message as lost (or its function as dead after
# claiming it) and sends it again: past the queue's longest delay and the function's timeout.
LOST_DELIVERY_SECONDS = 900 + 120


class CallbackSweep(StrEnum):
    WAIT = "wait"  # the next attempt is on its way, or not due yet
    RESEND = "resend"  # its message was lost: sent again
    GIVE_UP = "give_up"  # lost, and the retry window has closed


def sweep_callback(
    callback: JobCallback, finished_at: datetime | None, now: datetime, window_seconds: int
) -> CallbackSweep:
    """What the sweeper does for an ended job whose callback is pending. The callback function schedules every
    retry itself and gives up when the window closes; the sweeper only makes up for a lost message."""
    due = callback.next_attempt_at
    if due is None or now <= due + timedelta(seconds=LOST_DELIVERY_SECONDS):
        return CallbackSweep.WAIT
    if finished_at is not None and now > finished_at + timedelta(seconds=window_seconds):
        return CallbackSweep.GIVE_UP
    return CallbackSweep.RESEND

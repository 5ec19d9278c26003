"""What follows a job's end: its completion event, its parent's credit and its callback (the rules of callbacks:
bulkio/domain/callbacks.py).

The job record is the outbox. Ending a job marks its completion pending and keeps it among the open jobs; the
completion goes out here, by whoever ended the job or else by the sweeper. A job with a callback_url stays open
until its callback is taken or given up: the callback function schedules each retry on the callback queue, and
the sweeper sends again an attempt whose message was lost."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from aws_lambda_powertools import Logger

from bulkio.config import Settings
from bulkio.domain.callbacks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    CallbackMessage,
    CallbackState,
    CallbackSweep,
    DeliveryAttempt,
    DeliveryTrigger,
    RetrySchedule,
    signature,
    sweep_callback,
)
from bulkio.domain.jobs import IMPORT_COMPLETED, ImportJob, completion_payload, credited_parent, utc_now
from bulkio.domain.sources import SourceUnavailable
from bulkio.services.ports import CallbackQueue, CallbackSender, EventPublisher, ImportJobRepository

logger = Logger(child=True)

LONGEST_QUEUE_DELAY_SECONDS = 900  # SQS DelaySeconds: a later attempt's message hops until it is due


@dataclass(frozen=True, slots=True)
class Completion:
    jobs: ImportJobRepository
    events: EventPublisher
    callbacks: CallbackQueue

    def publish(self, job_id: str) -> bool:
        """A re-import credits its parent with the records it imported (once per child, however often this
        runs), the completion event goes on the bus, the callback's first attempt is queued, then the job's
        completion is recorded. False (and logged) when a step failed: the sweeper tries again on its next
        round. At least once: a crash before the last step publishes the event twice (a second message for
        the callback's first attempt finds it claimed, and sends nothing)."""
        job = self.jobs.get(job_id)
        if job is None or not job.is_final or not job.completion_pending:
            return False
        try:
            parent_id = credited_parent(job)
            if parent_id is not None:
                parent = self.jobs.get(parent_id)
                if parent is not None and parent.committed_job_id != job_id:
                    self.jobs.credit_reimport(parent.job_id, job_id, job.counters.succeeded)
            self.events.publish(IMPORT_COMPLETED, completion_payload(job, utc_now()))
            if job.awaits_callback:
                self.callbacks.send(CallbackMessage(job_id=job_id))
            self.jobs.completion_published(job_id, keep_open=job.awaits_callback)
        except Exception:
            logger.exception("the job's completion did not go out: the sweeper sends it", extra={"job_id": job_id})
            return False
        return True

    def sweep_callback(self, job: ImportJob, window_seconds: int) -> str:
        """The sweeper's part for an ended job whose callback is pending: a lost attempt is sent again, or given
        up once the retry window has closed."""
        if job.callback is None:
            return CallbackSweep.WAIT.value
        action = sweep_callback(job.callback, job.finished_at, utc_now(), window_seconds)
        if action is CallbackSweep.RESEND:
            logger.warning("a callback attempt was lost: sent again", extra={"job_id": job.job_id})
            self.callbacks.send(CallbackMessage(job_id=job.job_id, attempt=job.callback.attempts + 1))
        elif action is CallbackSweep.GIVE_UP:
            logger.warning("a callback was lost after its retry window: given up", extra={"job_id": job.job_id})
            self.jobs.settle_callback(job.job_id, CallbackState.FAILED)
        return f"callback_{action.value}"


@dataclass(frozen=True, slots=True)
class CallbackDeliverer:
    """The callback function's work: one message, one POST at most."""

    settings: Settings
    jobs: ImportJobRepository
    queue: CallbackQueue
    send: CallbackSender
    now: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic

    @property
    def schedule(self) -> RetrySchedule:
        return RetrySchedule(
            first_delay_seconds=self.settings.callback_retry_first_seconds,
            longest_delay_seconds=self.settings.callback_retry_longest_seconds,
            window_seconds=self.settings.callback_retry_window_seconds,
        )

    def deliver(self, message: CallbackMessage) -> None:
        job = self.jobs.get(message.job_id)
        if job is None or job.callback is None or not job.is_final:
            logger.info("callback message for no ended job with a callback: dropped", extra={"job_id": message.job_id})
            return
        if message.trigger is DeliveryTrigger.REDELIVERY:
            attempt = self._post(job, DeliveryTrigger.REDELIVERY)
            # A redelivery that is taken settles the callback; one that is not leaves the retries as they were.
            self.jobs.record_delivery(job.job_id, attempt, CallbackState.DELIVERED if attempt.delivered else None, None)
            return
        self._deliver_automatic(job, message)

    def _deliver_automatic(self, job: ImportJob, message: CallbackMessage) -> None:
        callback = job.callback
        assert callback is not None
        if callback.state is not CallbackState.PENDING or callback.attempts != message.attempt - 1:
            logger.debug("callback attempt made before or settled: dropped", extra={"job_id": job.job_id})
            return
        now = self.now()
        due = callback.next_attempt_at
        if due is not None and now < due:
            # A retry later than the queue can delay a message: it waits again, in steps, until it is due.
            self._requeue(message, due - now)
            return
        lease = timedelta(seconds=self.settings.callback_timeout_seconds + 30)
        if not self.jobs.claim_callback_attempt(job.job_id, message.attempt, now + lease):
            return
        attempt = self._post(job, DeliveryTrigger.AUTOMATIC)
        if attempt.delivered:
            self.jobs.record_delivery(job.job_id, attempt, CallbackState.DELIVERED, None)
            logger.info("callback delivered", extra={"job_id": job.job_id, "attempt": message.attempt})
            return
        finished = job.finished_at or now
        next_at = self.schedule.next_attempt(finished, message.attempt, self.now())
        if next_at is None:
            self.jobs.record_delivery(job.job_id, attempt, CallbackState.FAILED, None)
            logger.warning(
                "callback not taken within its retry window: given up (POST …/deliveries/redeliver sends it again)",
                extra={"job_id": job.job_id, "attempts": message.attempt},
            )
            return
        self.jobs.record_delivery(job.job_id, attempt, None, next_at)
        self._requeue(CallbackMessage(job_id=job.job_id, attempt=message.attempt + 1), next_at - self.now())
        logger.info(
            "callback not taken: retried later",
            extra={"job_id": job.job_id, "attempt": message.attempt, "error": attempt.error},
        )

    def _requeue(self, message: CallbackMessage, wait: timedelta) -> None:
        seconds = min(max(math.ceil(wait.total_seconds()), 0), LONGEST_QUEUE_DELAY_SECONDS)
        self.queue.send(message, seconds)

    def _post(self, job: ImportJob, trigger: DeliveryTrigger) -> DeliveryAttempt:
        callback = job.callback
        assert callback is not None
        delivery_id = str(uuid.uuid4())
        at = self.now()
        body = orjson.dumps(completion_payload(job, at))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(callback.secret, int(at.timestamp()), body),
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: IMPORT_COMPLETED,
        }
        started = self.monotonic()
        status_code: int | None = None
        excerpt: str | None = None
        try:
            answer = self.send(callback.url, body, headers)
            status_code, excerpt, error = answer.status_code, answer.excerpt or None, answer.error()
        except SourceUnavailable as refused:
            error = refused.message
        return DeliveryAttempt(
            delivery_id=delivery_id,
            trigger=trigger,
            at=at,
            duration_ms=round((self.monotonic() - started) * 1000),
            status_code=status_code,
            delivered=error is None,
            error=error,
            response_excerpt=excerpt,
        )

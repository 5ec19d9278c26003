"""The functions host's event sources: S3 notifications, SQS event source mappings and schedules.

SQS event sources behave as Lambda's: a message whose invocation failed is left alone, so it comes back when its
visibility timeout (the queue's, or what the function set with ChangeMessageVisibility) runs out, and after the
queue's maxReceiveCount it moves to the dead-letter queue. S3 events are asynchronous invocations: a bucket
notifies an internal queue per function, whose poller retries a failed invocation after
LOCAL_SQS_RETRY_DELAY_SECONDS, up to the function's attempts, then hands it to its OnFailure destination.
`Schedule` events invoke the function with an EventBridge "Scheduled Event" at their rate, one invocation at a
time per schedule.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

from infra.local.template_model import ACCOUNT_ID, REGION, Function, ScheduleEvent, SqsEvent, StackTemplate
from infra.local.workers import Outcome, WorkerGone

if TYPE_CHECKING:
    from infra.local.functions_host import FunctionsHost


class IdleBackoff:
    """Pause between empty polls, doubling from 50 ms to 1 s: every request costs moto several milliseconds
    of CPU, so idle pollers must not ask often; the first message after a busy spell waits at most 50 ms."""

    SHORTEST_SECONDS = 0.05
    LONGEST_SECONDS = 1.0

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._pause = self.SHORTEST_SECONDS

    def after(self, found: bool) -> None:
        if found:
            self._pause = self.SHORTEST_SECONDS
            return
        self._stopping.wait(self._pause)
        self._pause = min(self._pause * 2, self.LONGEST_SECONDS)


def sqs_records(messages: list[dict[str, Any]], queue_arn: str) -> list[dict[str, Any]]:
    """SQS messages as Lambda's SQS event source hands them to a function."""
    records = []
    for message in messages:
        attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            attributes[name] = {
                "stringValue": value.get("StringValue"),
                "binaryValue": base64.b64encode(value["BinaryValue"]).decode() if "BinaryValue" in value else None,
                "stringListValues": value.get("StringListValues", []),
                "binaryListValues": [base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])],
                "dataType": value["DataType"],
            }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": attributes,
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return records


def failed_message_ids(outcome: Outcome, message_ids: list[str], report_item_failures: bool) -> set[str]:
    """Messages to keep: all of them on an error; with ReportBatchItemFailures, the ones the function names."""
    if outcome.failed:
        return set(message_ids)
    if not report_item_failures:
        return set()
    response = outcome.json()
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return set()
    named = {failure.get("itemIdentifier") for failure in failures if isinstance(failure, dict)}
    if not named <= set(message_ids):
        return set(message_ids)  # Lambda treats an unknown or empty identifier as a failure of the whole batch
    return {message_id for message_id in message_ids if message_id in named}


def internal_s3_queue_name(stack: StackTemplate, function: Function) -> str:
    return f"{stack.stack_name}-local-s3-events-{function.logical_id}"


def start_event_sources(host: FunctionsHost) -> None:
    """Wire the buckets' notifications and start a poller thread per S3 event function, per enabled schedule
    and LOCAL_SQS_CONCURRENCY per SQS event."""
    _wire_s3_notifications(host)
    for function in host.stack.functions.values():
        for schedule in function.schedule_events:
            if schedule.enabled:
                host.spawn(partial(_run_schedule, host, function, schedule), f"schedule-{function.logical_id}")
        for event in function.sqs_events:
            for poller_no in range(host.config.sqs_concurrency):
                host.spawn(partial(_poll_sqs, host, function, event), f"sqs-{function.logical_id}-{poller_no}")


def _wire_s3_notifications(host: FunctionsHost) -> None:
    """Buckets notify an internal queue per function (moto delivers to SQS); a poller invokes the function."""
    s3, sqs = host.client("s3"), host.client("sqs")
    configurations: dict[str, list[dict[str, Any]]] = {}
    for function in host.stack.functions.values():
        if not function.s3_events:
            continue
        queue_name = internal_s3_queue_name(host.stack, function)
        queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"
        for index, event in enumerate(function.s3_events):
            rules = [
                {"Name": name, "Value": value}
                for name, value in (("prefix", event.prefix), ("suffix", event.suffix))
                if value
            ]
            configuration: dict[str, Any] = {
                "Id": f"{function.logical_id}-{index}",
                "QueueArn": queue_arn,
                "Events": event.events,
            }
            if rules:
                configuration["Filter"] = {"Key": {"FilterRules": rules}}
            configurations.setdefault(event.bucket, []).append(configuration)
        host.spawn(partial(_poll_s3, host, function, queue_url), f"s3-{function.logical_id}")
    for bucket, queue_configurations in configurations.items():
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configurations}
        )


def _poll_s3(host: FunctionsHost, function: Function, queue_url: str) -> None:
    sqs = host.client("sqs")
    pool = host.functions.pool(function.logical_id)
    idle = IdleBackoff(host.stopping)
    while not host.stopping.is_set():
        messages = _receive(host, sqs, queue_url, 1)
        idle.after(found=bool(messages))
        for message in messages:
            body = json.loads(message["Body"])
            attempts = int(message["Attributes"].get("ApproximateReceiveCount", "1"))
            if "Records" in body:  # the first message of a configured bucket is an s3:TestEvent
                event = {"Records": body["Records"]}
                outcome = pool.invoke(json.dumps(event).encode())
                if outcome.failed and attempts < function.async_attempts:
                    sqs.change_message_visibility(
                        QueueUrl=queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=host.config.retry_delay_seconds,
                    )
                    continue
                if outcome.failed:
                    host.async_invocation_failed(function, event, outcome, attempts)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _receive(host: FunctionsHost, sqs: Any, queue_url: str, batch_size: int) -> list[dict[str, Any]]:
    try:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch_size,
            # Short polls: moto's long poll spins while the queue holds in-flight messages, which would
            # burn a core during every import. An idle poller backs off instead (IdleBackoff).
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return messages
    except Exception as error:  # the endpoint restarting must not kill the poller
        if not host.stopping.is_set():
            host.access_log(f"receive from {queue_url} failed: {error}")
            host.stopping.wait(1)
        return []


def _poll_sqs(host: FunctionsHost, function: Function, event: SqsEvent) -> None:
    sqs = host.client("sqs")
    pool = host.functions.pool(function.logical_id)
    idle = IdleBackoff(host.stopping)
    while not host.stopping.is_set():
        messages = _receive(host, sqs, event.queue_url, event.batch_size)
        idle.after(found=bool(messages))
        if not messages:
            continue
        outcome = pool.invoke(json.dumps({"Records": sqs_records(messages, event.queue_arn)}).encode())
        message_ids = [message["MessageId"] for message in messages]
        kept = failed_message_ids(outcome, message_ids, event.report_batch_item_failures)
        done = [m for m in messages if m["MessageId"] not in kept]
        if done:
            sqs.delete_message_batch(
                QueueUrl=event.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)],
            )
        # The kept ones are left as they are: they come back when their visibility timeout ends, the
        # queue's or the one the function chose (a writer backs off with ChangeMessageVisibility).


def _run_schedule(host: FunctionsHost, function: Function, schedule: ScheduleEvent) -> None:
    interval = host.config.schedule_seconds or schedule.interval_seconds
    pool = host.functions.pool(function.logical_id)
    rule_arn = (
        f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{host.stack.stack_name}-{function.logical_id}-{schedule.name}"
    )
    while not host.stopping.wait(interval):
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT_ID,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": REGION,
            "resources": [rule_arn],
            "detail": {},
        }
        try:
            pool.invoke(json.dumps(event).encode())
        except WorkerGone:
            return  # the host is stopping

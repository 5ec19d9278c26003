"""The local AWS endpoint keeps S3 objects (and their ETags), DynamoDB items and SQS messages across a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.aws import FIXTURE_TEMPLATE, running_stack

pytestmark = pytest.mark.integration


def test_state_survives_a_restart(tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"RecordDir": str(tmp_path)}}))
    state_dir = tmp_path / "state"
    with running_stack(FIXTURE_TEMPLATE, state_dir, env_file, None, {}) as first:
        first.client("s3").put_object(
            Bucket=first.buckets["FilesBucket"], Key="kept/a b.bin", Body=b"\x00kept", ContentType="application/x-test"
        )
        first.client("dynamodb").put_item(
            TableName=first.tables["NotesTable"], Item={"pk": {"S": "note#1"}, "blob": {"B": b"\x01"}}
        )
        first.client("sqs").send_message(QueueUrl=first.queues["WorkDeadLetterQueue"], MessageBody="dead")
        # A 9 MiB file uploaded in parts (as the API streams multipart uploads): its ETag is not an MD5.
        big = tmp_path / "big.bin"
        big.write_bytes(bytes(range(256)) * (9 * 4096))
        first.client("s3").upload_file(str(big), first.buckets["FilesBucket"], "kept/big.bin")
        etags = {
            key: first.client("s3").head_object(Bucket=first.buckets["FilesBucket"], Key=key)["ETag"]
            for key in ("kept/a b.bin", "kept/big.bin")
        }
        assert "-" in etags["kept/big.bin"]

    with running_stack(FIXTURE_TEMPLATE, state_dir, env_file, None, {}) as second:
        stored = second.client("s3").get_object(Bucket=second.buckets["FilesBucket"], Key="kept/a b.bin")
        assert stored["Body"].read() == b"\x00kept"
        assert stored["ContentType"] == "application/x-test"
        # Jobs pin their source by ETag (and version): a restart must not change it.
        assert {
            key: second.client("s3").head_object(Bucket=second.buckets["FilesBucket"], Key=key)["ETag"] for key in etags
        } == etags
        item = second.client("dynamodb").get_item(TableName=second.tables["NotesTable"], Key={"pk": {"S": "note#1"}})[
            "Item"
        ]
        assert item["blob"]["B"] == b"\x01"
        messages = second.client("sqs").receive_message(
            QueueUrl=second.queues["WorkDeadLetterQueue"], WaitTimeSeconds=1
        )["Messages"]
        assert [message["Body"] for message in messages] == ["dead"]
        redrive = second.client("sqs").get_queue_attributes(
            QueueUrl=second.queues["WorkQueue"], AttributeNames=["RedrivePolicy"]
        )["Attributes"]
        assert json.loads(redrive["RedrivePolicy"])["maxReceiveCount"] == 2

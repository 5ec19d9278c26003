"""The real template.yaml on the embedded stack: it starts, provisions, and serves the API."""

from __future__ import annotations

import urllib.request

import pytest

from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.integration


def test_real_template_serves_health_and_provisions_resources(local_stack: RunningStack) -> None:
    with urllib.request.urlopen(f"{local_stack.api_url}/v1/health", timeout=30) as response:
        assert response.status == 200

    assert local_stack.buckets["ImportBucket"] in {
        bucket["Name"] for bucket in local_stack.client("s3").list_buckets()["Buckets"]
    }
    assert local_stack.tables["JobsTable"] in local_stack.client("dynamodb").list_tables()["TableNames"]
    dead_letter_url = local_stack.queues["ChunkDeadLetterQueue"]
    assert local_stack.client("sqs").get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["All"])

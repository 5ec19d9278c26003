"""boto3 clients, created once per process (a warm Lambda reuses them).

No endpoint is configured here: boto3 reads AWS_ENDPOINT_URL itself, so the same code talks to AWS,
LocalStack or the embedded stack.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# SigV4 everywhere: presigned URLs signed with SigV2 are refused by newer regions.
_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4")
# For calls that something else tries again (the sweeper publishes a completion event that did not go out): a
# function ending a job must not wait minutes on an unreachable endpoint.
_RETRIED_ELSEWHERE = Config(
    retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=10, signature_version="s3v4"
)


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)


@cache
def retried_elsewhere_client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_RETRIED_ELSEWHERE)


@cache
def dynamodb_table(name: str) -> Any:
    return boto3.session.Session().resource("dynamodb", config=_CONFIG).Table(name)

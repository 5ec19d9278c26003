"""Create the template's buckets, queues, tables and state machines on the local endpoint; safe to run again
and again (a state machine whose definition changed is updated).

`python -m infra.local.provision` (LOCAL_TEMPLATE, LOCAL_AWS_PORT as for the functions host).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3

from infra.local.template import load_template
from infra.local.template_model import ACCOUNT_ID, REGION, StackTemplate, Table

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# moto checks no permissions, but Step Functions requires a role ARN.
STATE_MACHINE_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/local-state-machine"


def local_client(service: str, endpoint: str) -> Any:
    """A boto3 client for the local endpoint, with the dummy credentials moto accepts."""
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def provision(stack: StackTemplate, endpoint: str) -> None:
    s3 = local_client("s3", endpoint)
    existing_buckets = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for bucket in stack.buckets.values():
        if bucket.name not in existing_buckets:
            s3.create_bucket(Bucket=bucket.name)
        if bucket.versioned:
            s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})

    sqs = local_client("sqs", endpoint)
    # Every queue before any attributes: a redrive policy can only name a queue that exists, and dead-letter
    # queues may have dead-letter queues of their own.
    urls = {queue.name: sqs.create_queue(QueueName=queue.name)["QueueUrl"] for queue in stack.queues.values()}
    for queue in stack.queues.values():
        if queue.attributes:
            sqs.set_queue_attributes(QueueUrl=urls[queue.name], Attributes=queue.attributes)

    dynamodb = local_client("dynamodb", endpoint)
    existing_tables = set(dynamodb.list_tables().get("TableNames", []))
    for table in stack.tables.values():
        if table.name not in existing_tables:
            indexes = (
                {"GlobalSecondaryIndexes": table.global_secondary_indexes} if table.global_secondary_indexes else {}
            )
            dynamodb.create_table(
                TableName=table.name,
                KeySchema=table.key_schema,
                AttributeDefinitions=table.attribute_definitions,
                BillingMode="PAY_PER_REQUEST",
                **indexes,
            )
        else:
            _add_missing_indexes(dynamodb, table)
        if table.ttl_attribute:
            status = dynamodb.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
            if status.get("TimeToLiveStatus") != "ENABLED":
                dynamodb.update_time_to_live(
                    TableName=table.name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
                )

    provision_state_machines(stack, endpoint)


def _add_missing_indexes(dynamodb: Any, table: Table) -> None:
    """A table kept from an earlier run gets the indexes the template has added since, as a stack update would."""
    present = {
        index["IndexName"]
        for index in dynamodb.describe_table(TableName=table.name)["Table"].get("GlobalSecondaryIndexes", [])
    }
    for index in table.global_secondary_indexes:
        if index["IndexName"] not in present:
            dynamodb.update_table(
                TableName=table.name,
                AttributeDefinitions=table.attribute_definitions,
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )


def provision_state_machines(stack: StackTemplate, endpoint: str) -> None:
    stepfunctions = local_client("stepfunctions", endpoint)
    existing = {
        machine["name"]: machine["stateMachineArn"]
        for page in stepfunctions.get_paginator("list_state_machines").paginate()
        for machine in page["stateMachines"]
    }
    for machine in stack.state_machines.values():
        definition = json.dumps(machine.definition)
        if machine.name not in existing:
            stepfunctions.create_state_machine(
                name=machine.name, definition=definition, roleArn=STATE_MACHINE_ROLE_ARN, type=machine.type
            )
        elif stepfunctions.describe_state_machine(stateMachineArn=existing[machine.name])["definition"] != definition:
            stepfunctions.update_state_machine(stateMachineArn=existing[machine.name], definition=definition)


def main() -> None:
    endpoint = f"http://127.0.0.1:{os.environ.get('LOCAL_AWS_PORT', '4566')}"
    template = Path(os.environ.get("LOCAL_TEMPLATE", REPOSITORY_ROOT / "template.yaml"))
    stack = load_template(
        template, parameter_overrides={"DatabaseUrl": os.environ.get("DATABASE_URL", "")}, aws_endpoint=endpoint
    )
    provision(stack, endpoint)
    print(
        f"provisioned {len(stack.buckets)} buckets, {len(stack.queues)} queues, {len(stack.tables)} tables, "
        f"{len(stack.state_machines)} state machines"
    )


if __name__ == "__main__":
    main()

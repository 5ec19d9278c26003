"""One page of a job listing from the jobs table, newest first: an owner's jobs of a kind (index by_owner_created)
or everyone's (by_kind_created), optionally only those of a status and a resource. Import and export jobs are
listed the same way."""

from __future__ import annotations

from functools import reduce
from typing import Any

from boto3.dynamodb.conditions import Attr, ConditionBase, Key
from botocore.exceptions import ClientError

from bulkio.domain.jobs import InvalidCursor

JOBS_BY_CREATION_INDEX = "by_kind_created"
JOBS_BY_OWNER_INDEX = "by_owner_created"  # sparse: only jobs with an owner (not S3 drops)


def owner_kind(owner: str, kind: str) -> str:
    return f"{owner}#{kind}"


def list_page(
    table: Any,
    kind: str,
    limit: int,
    cursor: dict[str, Any] | None,
    owner: str | None = None,
    equal: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Up to `limit` items, and the cursor of the next page (None on the last). `equal` keeps the items whose
    attributes have those values. DynamoDB filters after it reads, so a filtered page reads on until it is full;
    its cursor is then the key of its last item, which a query resumes after."""
    index, key_name, key_value = (
        (JOBS_BY_CREATION_INDEX, "kind", kind)
        if owner is None
        else (JOBS_BY_OWNER_INDEX, "owner_kind", owner_kind(owner, kind))
    )
    query: dict[str, Any] = {
        "IndexName": index,
        "KeyConditionExpression": Key(key_name).eq(key_value),
        "ScanIndexForward": False,
        "Limit": limit,
    }
    conditions: list[ConditionBase] = [Attr(name).eq(value) for name, value in (equal or {}).items()]
    if conditions:
        query["FilterExpression"] = reduce(lambda one, other: one & other, conditions)
    if cursor:
        if not isinstance(cursor, dict) or cursor.get(key_name) != key_value:
            raise InvalidCursor("the cursor belongs to another listing")
        query["ExclusiveStartKey"] = cursor
    items: list[dict[str, Any]] = []
    while True:
        try:
            page = table.query(**query)
        except ClientError as error:
            if cursor and error.response.get("Error", {}).get("Code") == "ValidationException":
                raise InvalidCursor("DynamoDB refused the cursor as a start key") from error
            raise
        for item in page.get("Items", []):
            items.append(item)
            if len(items) == limit:
                last = page.get("LastEvaluatedKey")
                if item is page["Items"][-1] and last is None:
                    return items, None
                return items, {"pk": item["pk"], key_name: item[key_name], "created_at": item["created_at"]}
        if "LastEvaluatedKey" not in page:
            return items, None
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

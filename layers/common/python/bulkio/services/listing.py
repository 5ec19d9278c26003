"""Job listings page by page: the cursor a client passes back is the repository's start key, as opaque text."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from bulkio.domain.errors import InvalidRequest
from bulkio.domain.jobs import InvalidCursor

Job = TypeVar("Job")


def listed_page(
    fetch: Callable[[dict[str, Any] | None], tuple[list[Job], dict[str, Any] | None]], cursor: str | None
) -> tuple[list[Job], str | None]:
    """One page from `fetch(start key)`, and the `next` cursor; InvalidRequest for a cursor not handed out."""
    try:
        start = orjson.loads(base64.urlsafe_b64decode(cursor)) if cursor else None
        jobs, last = fetch(start)
    except (ValueError, orjson.JSONDecodeError, InvalidCursor) as error:
        raise InvalidRequest("invalid_cursor", "cursor is not one this API returned: pass `next` as given") from error
    return jobs, base64.urlsafe_b64encode(orjson.dumps(last)).decode() if last else None

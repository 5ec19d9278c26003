"""What creating a job answers, whatever the job: the service's result, which the web layer renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job-creating request's outcome. `replayed` is true when an Idempotency-Key repeat got the first
    request's answer instead of a new job; `body` is that answer, exactly as first given."""

    job_id: str
    body: dict[str, Any]
    replayed: bool = False

"""Readiness: every part the service needs answers its probe, or the report says which does not and why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Probe = Callable[[], object]


def _check(probe: Probe, scrub: Callable[[str], str]) -> str:
    try:
        probe()
    except Exception as error:
        return scrub(f"unavailable: {type(error).__name__}: {error}")[:300]
    return "ok"


def check_health(probes: Mapping[str, Probe], scrub: Callable[[str], str] = lambda text: text) -> dict[str, Any]:
    """Runs each probe; `scrub` takes secrets out of an error before it goes into the report (a response)."""
    checks = {name: _check(probe, scrub) for name, probe in probes.items()}
    return {"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks}

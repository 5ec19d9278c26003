"""Loading a function's handler module in-process, as the unit tests drive them."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"


def load_function_app(folder: str) -> ModuleType:
    """Every function has an app.py: load this one under its own name so it cannot clash with the others."""
    spec = importlib.util.spec_from_file_location(f"bulkio_{folder}_app", FUNCTIONS / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True)
class LambdaContext:
    """What Powertools reads of Lambda's context object."""

    function_name: str = "function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:function"
    aws_request_id: str = "request-1"

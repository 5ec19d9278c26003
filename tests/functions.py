"""Loading a function's handler module in-process, as the unit tests drive them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from infra.local.lambda_runtime import LambdaContext

__all__ = ["LambdaContext", "load_function_app"]  # the tests take the local runtime's context from here

FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"


def load_function_app(folder: str) -> ModuleType:
    """Every function has an app.py: load this one under its own name so it cannot clash with the others."""
    spec = importlib.util.spec_from_file_location(f"bulkio_{folder}_app", FUNCTIONS / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

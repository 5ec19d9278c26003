"""template.yaml is what `sam deploy` sends to AWS, where nothing here can try it: cfn-lint (with the SAM
transform) checks it against CloudFormation's schemas and rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def test_the_template_passes_cfn_lint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1"]))
    assert [f"{match.rule.id} line {match.linenumber}: {match.message}" for match in matches] == []

"""The README's commands are copied into terminals as they are: every fenced bash block must parse as bash (a
loop left open makes the shell wait at `>` and swallow the lines after it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def bash_blocks() -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in BASH_BLOCK.finditer(text)]


def test_the_readme_has_bash_blocks() -> None:
    assert len(bash_blocks()) >= 10


@pytest.mark.parametrize(
    ("line", "block"), bash_blocks(), ids=lambda value: f"line {value}" if isinstance(value, int) else ""
)
def test_every_bash_block_of_the_readme_parses(line: int, block: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, f"README.md line {line}: {checked.stderr}"


def test_an_open_loop_is_caught() -> None:
    unclosed = "for a in 1 2; do for b in 3 4; do\n  echo $a $b\ndone\n"
    assert subprocess.run(["bash", "-n"], input=unclosed, capture_output=True, text=True).returncode != 0

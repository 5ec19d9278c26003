"""The bulkio command's row count of a streamed export, fed in pieces cut anywhere, against the parsed file."""

from __future__ import annotations

import csv
import io
import json

import pytest
from bulkio_cli.rows import RowCounter
from hypothesis import given
from hypothesis import strategies as st

ROWS = [{"id": "1", "body": 'a "quoted", multi\nline\r\nbody'}, {"id": "2", "body": "plain"}, {"id": "3", "body": ""}]


def exported(fmt: str) -> bytes:
    if fmt == "ndjson":
        return b"".join(json.dumps(row).encode() + b"\n" for row in ROWS)
    if fmt == "json":
        return ("[\n" + ",\n".join(json.dumps(row) for row in ROWS) + "\n]\n").encode()
    text = io.StringIO()
    writer = csv.DictWriter(text, ["id", "body"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(ROWS)
    return text.getvalue().encode()


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_rows_are_counted_wherever_the_pieces_are_cut(fmt: str, cuts: list[int]) -> None:
    body = exported(fmt)
    counter = RowCounter(fmt)
    start = 0
    for cut in sorted({min(cut, len(body)) for cut in cuts} | {len(body)}):
        counter.feed(body[start:cut])
        start = cut
    assert counter.rows == len(ROWS)


def test_an_empty_export_has_no_rows() -> None:
    assert RowCounter("csv").rows == RowCounter("json").rows == RowCounter("ndjson").rows == 0
    header_only = RowCounter("csv")
    header_only.feed(b"id,body\n")
    assert header_only.rows == 0

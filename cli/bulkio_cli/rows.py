"""Counting the rows of an export as it streams by, without parsing it: NDJSON has one row a line; the JSON
array one element a line (`[`, then `{…},` lines, then `]`); CSV one record a line after its header, except
for line breaks inside quoted cells (a quote inside a cell is doubled, so the parity of quotes says where
one is)."""

from __future__ import annotations


class RowCounter:
    def __init__(self, fmt: str) -> None:
        self._format = fmt
        self._lines = 0
        self._in_quotes = False  # CSV: inside a quoted cell at the end of what was fed
        self._at_line_start = True  # JSON: the next byte starts a line

    def feed(self, piece: bytes) -> None:
        if self._format == "csv":
            for number, segment in enumerate(piece.split(b'"')):
                if number:
                    self._in_quotes = not self._in_quotes
                if not self._in_quotes:
                    self._lines += segment.count(b"\n")
        elif self._format == "json":
            self._lines += piece.count(b"\n{") + (1 if self._at_line_start and piece.startswith(b"{") else 0)
            self._at_line_start = piece.endswith(b"\n")
        else:
            self._lines += piece.count(b"\n")

    @property
    def rows(self) -> int:
        return max(self._lines - 1, 0) if self._format == "csv" else self._lines

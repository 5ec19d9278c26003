"""The bounded line splitter: physical lines of a stream of chunks, where a line over the record limit streams
past without being buffered, and, for CSV, the quoting states that tell where a record ends when a line or a
record is too large to be handed to csv.reader."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable
from dataclasses import dataclass

from bulkio.domain.parsing.common import RAW_TEXT_LIMIT, _compile_matching_empty

# Where a CSV record ends depends on its quotes: a quoted cell may span lines. When a record is too large to be
# handed to csv.reader, these states (those of csv.reader(strict=True) with the default dialect, as far as they
# decide where a record ends) let the parser find that end itself, so that the text of an oversized quoted cell
# is never read as records of its own.
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED, _BROKEN = range(5)
"""At a cell's start; inside an unquoted cell; inside a quoted cell; just after a quote inside a quoted cell
(closing it, or the first of a doubled quote); after an error, when the reader drops the rest of the line."""
# A cell known to be complete: an unquoted one, or a quoted one followed by a comma (a closing quote at the end of
# a piece may be the first half of a doubled quote split across pieces, so that case is left to the loop below).
_COMPLETE_CELL = rb'(?:"(?:[^"]++|"")*+"(?=,)|[^",\r][^,\r]*+)?+'
_COMPLETE_CELLS = _compile_matching_empty(_COMPLETE_CELL + rb"(?:," + _COMPLETE_CELL + rb")*+")
_QUOTED_TEXT = _compile_matching_empty(rb'(?:[^"]++|"")*+')
_UNQUOTED_TEXT = _compile_matching_empty(rb"[^,\r]*+")
# A line that begins inside a quoted cell and ends inside one, so that its record goes on: the cell closes, a run of
# unquoted cells follows (without quotes, ending with a comma), a quote opens the next cell, and so on. While the
# rest of an oversized record is skipped, whole runs of such lines are passed over in one match. Only a shortcut
# (unquoted cells holding a quote are left out): a line it does not match is judged by _csv_quote_state.
_QUOTED_IN_LINE = rb'(?:[^"\n]++|"")*+'
_STAYS_QUOTED_LINE = _QUOTED_IN_LINE + rb'(?:",(?:[^"\r\n]*,)?+"' + _QUOTED_IN_LINE + rb")*+"
_STAYS_QUOTED = re.compile(_STAYS_QUOTED_LINE)
_LINES_STAYING_QUOTED = _compile_matching_empty(rb"(?:" + _STAYS_QUOTED_LINE + rb"\n)*+")
_QUOTE, _COMMA = ord('"'), ord(",")


def _csv_quote_state(piece: bytes, state: int) -> int:
    """The quoting state after `piece` (a physical line, or part of one: no '\\n'), starting from `state`.

    At the end of a line, the record goes on to the next line only in the _QUOTED state. Each step consumes a
    whole run in C (a regular expression), so hostile content costs no Python work per byte.
    """
    position, size = 0, len(piece)
    while position < size:
        if state == _FIELD_START:
            end = _COMPLETE_CELLS.match(piece, position).end()
            if end == size:
                return _FIELD_START if end == position or piece[end - 1] == _COMMA else _UNQUOTED
            # The cells stop at a quote opening a cell, or at a carriage return (a line ending, or an error).
            if piece[end] == _QUOTE:
                state, position = _QUOTED, end + 1
            else:
                return _BROKEN
        elif state == _UNQUOTED:
            end = _UNQUOTED_TEXT.match(piece, position).end()
            if end == size:
                return _UNQUOTED
            if piece[end] != _COMMA:
                return _BROKEN
            state, position = _FIELD_START, end + 1
        elif state == _QUOTED:
            end = _QUOTED_TEXT.match(piece, position).end()
            if end == size:
                return _QUOTED
            state, position = _QUOTE_IN_QUOTED, end + 1
        elif state == _QUOTE_IN_QUOTED:
            byte = piece[position]
            position += 1
            if byte == _QUOTE:
                state = _QUOTED  # a doubled quote: still inside the cell
            elif byte == _COMMA:
                state = _FIELD_START
            else:
                return _BROKEN  # a carriage return ends the line; anything else is an error (strict)
        else:
            return _BROKEN
    return state


@dataclass(slots=True)
class _OversizedLine:
    start: bytes
    """The first bytes of the line, for the error report."""
    state_from_record_start: int = _FIELD_START
    state_from_quoted: int = _QUOTED
    """CSV: the quoting state at the end of the line when it began a record, and when it began inside a quoted
    cell (the reader is in one of these two states at the start of any line)."""

    def scan(self, piece: bytes) -> None:
        self.state_from_record_start = _csv_quote_state(piece, self.state_from_record_start)
        self.state_from_quoted = _csv_quote_state(piece, self.state_from_quoted)


def _oversized(line: bytes, track_csv_quotes: bool) -> _OversizedLine:
    oversized = _OversizedLine(line[:RAW_TEXT_LIMIT])
    if track_csv_quotes:
        oversized.scan(line)
    return oversized


@dataclass(slots=True)
class _SkippedLines:
    """_split_lines' answer to _SKIP_QUOTED_RECORD."""

    count: int
    """Lines skipped: those after the line the request followed, up to the one that ends its record (included)."""


_SKIP_QUOTED_RECORD = "skip the rest of the quoted record"


def _split_lines(
    chunks: Iterable[bytes], max_line_bytes: int, track_csv_quotes: bool = False
) -> Generator[bytes | _OversizedLine | _SkippedLines, object, None]:
    """Physical lines without their '\\n'; a line longer than the limit is skipped without being buffered
    (with `track_csv_quotes`, its quoting states are followed as it streams past).

    CSV: sending _SKIP_QUOTED_RECORD after a line that began and ended inside a quoted cell skips the lines after
    it up to the one that ends the record, a chunk at a time rather than a line at a time; the send answers
    _SkippedLines. Only a send ever yields one.
    """
    pending = b""
    oversized: _OversizedLine | None = None
    skipped: int | None = None  # while a record's rest is skipped: lines skipped so far
    state, partial = _QUOTED, False  # meanwhile: the quoting state, and whether a line is partly read
    for chunk in chunks:
        if skipped is not None:
            skipped, state, partial, position = _skip_lines_staying_quoted(chunk, skipped, state, partial)
            if position < 0:
                continue
            yield _SkippedLines(skipped)
            skipped = None
            chunk = chunk[position:]
        if oversized is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                if track_csv_quotes:
                    oversized.scan(chunk)
                continue
            if track_csv_quotes:
                oversized.scan(chunk[:newline])
            if (yield oversized) is _SKIP_QUOTED_RECORD:
                skipped = 0
            oversized = None
            chunk = chunk[newline + 1 :]
        lines = (pending + chunk if pending else chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if skipped is not None:
                skipped += 1
                if not _continues_quoted_cell(line):
                    yield _SkippedLines(skipped)
                    skipped = None
            elif (
                yield line if len(line) <= max_line_bytes else _oversized(line, track_csv_quotes)
            ) is _SKIP_QUOTED_RECORD:
                skipped = 0
        if skipped is not None:
            state, partial = _csv_quote_state(pending, _QUOTED), bool(pending)
            pending = b""
        elif len(pending) > max_line_bytes:
            oversized = _oversized(pending, track_csv_quotes)
            pending = b""
    if skipped is not None:
        yield _SkippedLines(skipped + partial)
    elif oversized is not None or pending:
        last_line = pending if oversized is None else oversized
        if (yield last_line) is _SKIP_QUOTED_RECORD:
            yield _SkippedLines(0)  # nothing follows


def _skip_lines_staying_quoted(chunk: bytes, skipped: int, state: int, partial: bool) -> tuple[int, int, bool, int]:
    """Skip the lines of `chunk` that go on inside a quoted cell: (lines skipped so far, quoting state, whether the
    chunk ends inside a line, position after the line that ends the record or -1 if the record goes on)."""
    position, size = 0, len(chunk)
    while True:
        if not partial:  # at a line's start, inside the quoted cell
            end = _LINES_STAYING_QUOTED.match(chunk, position).end()
            skipped += chunk.count(b"\n", position, end)
            position = end
        newline = chunk.find(b"\n", position)
        if newline < 0:
            if position < size:
                state, partial = _csv_quote_state(chunk[position:], state), True
            return skipped, state, partial, -1
        state = _csv_quote_state(chunk[position:newline], state)
        skipped += 1
        position = newline + 1
        if state != _QUOTED:
            return skipped, _QUOTED, False, position
        partial = False


def _continues_quoted_cell(line: bytes | _OversizedLine) -> bool:
    """Whether a line that begins inside a quoted cell also ends inside one, so that the record goes on."""
    if isinstance(line, _OversizedLine):
        return line.state_from_quoted == _QUOTED
    return _STAYS_QUOTED.fullmatch(line) is not None or _csv_quote_state(line, _QUOTED) == _QUOTED

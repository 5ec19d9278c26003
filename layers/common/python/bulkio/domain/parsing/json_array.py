"""The JSON-array framer: the elements of one top-level JSON array, found in a stream of chunks without holding
the array, each with the line where it starts; a malformed or oversized element costs that element alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.parsing.common import (
    RAW_TEXT_LIMIT,
    FileErrorCode,
    SourceRecord,
    UnreadableFile,
    _compile_matching_empty,
    _json_type_name,
    _raw_text,
    _too_large,
)

_SKIP_WHITESPACE = _compile_matching_empty(rb"[ \t\r\n]*+")
# Each pattern runs, in C, up to the next byte the framer must look at; strings are skipped whole when they
# end inside the chunk, otherwise the match stops at their opening quote.
_TO_STRUCTURE_IN_CONTAINER = _compile_matching_empty(rb'(?:[^"{}\[\]]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_TO_STRUCTURE_AT_TOP = _compile_matching_empty(rb'(?:[^"{}\[\],]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_TO_STRING_END = _compile_matching_empty(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_OBJECT_END_CANDIDATE = re.compile(rb"\}[ \t\r\n]*+[,\]]")
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPEN_BRACKET, _CLOSE_BRACKET, _OPEN_BRACE, _CLOSE_BRACE = ord("["), ord("]"), ord("{"), ord("}")


# Where the framer stands in the text. Between elements (the states below _IN_ELEMENT) it skips whitespace and
# looks at the next byte; inside an element it runs to the next byte that opens or closes a string or container.
_BEFORE_ARRAY = 0  # only whitespace so far: '[' must come
_AFTER_OPENING = 1  # after '[': ']' closes the (empty) array, anything else starts an element
_AFTER_COMMA = 2  # after a top-level ',': anything starts an element (']' an empty one, an error)
_AFTER_ARRAY = 3  # after the closing ']': only whitespace may follow
_IN_ELEMENT = 4  # inside an element, outside its strings
_IN_STRING = 5  # inside a string of an element
_AFTER_BACKSLASH = 6  # inside a string, after a backslash that ended the last chunk: the next byte is escaped


def _frame_json_array(
    chunks: Iterator[bytes], max_record_bytes: int
) -> Iterator[tuple[int, bytes, bool, dict[str, Any] | None]]:
    """(start line, bytes, oversized, parsed object or None) of each element of a top-level JSON array.

    Elements are split at top-level commas only, so a malformed element costs that element alone; the bytes
    of an oversized element are its first RAW_TEXT_LIMIT bytes.
    Fast path: an object is usually followed by its own '}' and a separator, and if orjson accepts the text
    up to such a '}' as a whole value then that '}' is the element's end (JSON is read left to right), so
    most elements are found and parsed without the byte-level scan of the _IN_ELEMENT states.
    """
    state = _BEFORE_ARRAY
    line = 1  # line number at offset `counted` of the current chunk
    # The element the byte-level scan is in (states from _IN_ELEMENT on):
    element_line = 0  # the line where it starts
    depth = 0  # how deep inside it the scan is, in its objects and arrays
    carried = bytearray()  # its bytes from earlier chunks
    oversized = False  # it is over max_record_bytes: `carried` keeps only its first RAW_TEXT_LIMIT bytes
    for chunk in chunks:
        size = len(chunk)
        position = counted = element_start = 0
        while position < size:
            if state < _IN_ELEMENT:
                position = _SKIP_WHITESPACE.match(chunk, position).end()
                if position == size:
                    break
                byte = chunk[position]
                if state == _AFTER_ARRAY:
                    raise UnreadableFile(
                        FileErrorCode.TRAILING_DATA,
                        "there is data after the closing ']' of the array: put all records inside one array",
                    )
                if state == _BEFORE_ARRAY:
                    if byte != _OPEN_BRACKET:
                        raise _not_an_array()
                    state = _AFTER_OPENING
                    position += 1
                    continue
                line += chunk.count(b"\n", counted, position)
                counted = position
                if byte == _CLOSE_BRACKET and state == _AFTER_OPENING:
                    state = _AFTER_ARRAY
                    position += 1
                    continue
                if byte == _OPEN_BRACE:
                    candidate_end = _OBJECT_END_CANDIDATE.search(chunk, position)
                    if candidate_end is not None and candidate_end.start() - position < max_record_bytes:
                        candidate = chunk[position : candidate_end.start() + 1]
                        try:
                            value = orjson.loads(candidate)
                        except orjson.JSONDecodeError:
                            pass
                        else:
                            yield line, candidate, False, value
                            position = candidate_end.end()
                            state = _AFTER_COMMA if chunk[position - 1] == _COMMA else _AFTER_ARRAY
                            continue
                state = _IN_ELEMENT
                element_line = line
                element_start = position
            elif state == _IN_ELEMENT:
                pattern = _TO_STRUCTURE_IN_CONTAINER if depth else _TO_STRUCTURE_AT_TOP
                end = pattern.match(chunk, position).end()
                if end == size:
                    break
                byte = chunk[end]
                position = end + 1
                if byte == _QUOTE:
                    state = _IN_STRING
                elif byte in (_OPEN_BRACE, _OPEN_BRACKET):
                    depth += 1
                elif depth:
                    depth -= 1
                elif byte != _CLOSE_BRACE:  # a top-level ',' or ']' ends the element; a stray '}' stays in it
                    if oversized or len(carried) + end - element_start > max_record_bytes:
                        element = bytes((carried + chunk[element_start:end])[:RAW_TEXT_LIMIT])
                        yield element_line, element, True, None
                    elif carried:
                        yield element_line, bytes(carried + chunk[element_start:end]), False, None
                    else:
                        yield element_line, chunk[element_start:end], False, None
                    carried = bytearray()
                    oversized = False
                    state = _AFTER_COMMA if byte == _COMMA else _AFTER_ARRAY
            elif state == _IN_STRING:
                end = _TO_STRING_END.match(chunk, position).end()
                if end == size:
                    break
                if chunk[end] == _BACKSLASH:  # the match stops at a backslash only when it ends the chunk
                    state = _AFTER_BACKSLASH
                    break
                state = _IN_ELEMENT
                position = end + 1
            else:  # _AFTER_BACKSLASH
                state = _IN_STRING
                position += 1
        if state >= _IN_ELEMENT and not oversized:
            carried += memoryview(chunk)[element_start:]
            if len(carried) > max_record_bytes:
                oversized = True
                del carried[RAW_TEXT_LIMIT:]
        line += chunk.count(b"\n", counted)
    if state == _BEFORE_ARRAY:
        raise _not_an_array()
    if state != _AFTER_ARRAY:
        raise UnreadableFile(
            FileErrorCode.UNTERMINATED_JSON_ARRAY,
            "the file ends before the closing ']' of the array (truncated upload?): upload the complete file",
        )


def _not_an_array() -> UnreadableFile:
    return UnreadableFile(
        FileErrorCode.NOT_A_JSON_ARRAY,
        "a .json file must hold one array of objects, like [{...}, {...}]: "
        "wrap the records in [ ] or upload one object per line as .ndjson",
    )


def _json_array_records(chunks: Iterator[bytes], max_record_bytes: int) -> Iterator[SourceRecord]:
    frames = _frame_json_array(chunks, max_record_bytes)
    for index, (line, element, oversized, parsed) in enumerate(frames, 1):
        if parsed is not None:
            yield SourceRecord(index, line, parsed, None, None)
            continue
        if oversized:
            yield SourceRecord(index, line, None, _too_large(max_record_bytes), _raw_text(element))
            continue
        try:
            value = orjson.loads(element)
        except orjson.JSONDecodeError as exc:
            yield SourceRecord(index, line, None, _json_element_error(element, exc), _raw_text(element))
            continue
        if type(value) is dict:
            yield SourceRecord(index, line, value, None, None)
        else:
            error = RecordError(
                ErrorCode.INVALID_JSON,
                None,
                f"each array element must be a JSON object, got {_json_type_name(value)}: "
                'write each record as {"field": value, ...}',
            )
            yield SourceRecord(index, line, None, error, _raw_text(element))


def _json_element_error(element: bytes, exc: orjson.JSONDecodeError) -> RecordError:
    if not element.strip():
        message = "the array has an empty element: remove the extra comma"
    else:
        try:
            element.decode("utf-8")
        except UnicodeDecodeError:
            message = "the element is not valid UTF-8 text: save the file as UTF-8"
        else:
            message = (
                f"the element is not valid JSON ({exc}): check for a missing comma, quote or bracket; "
                "elements must be separated by commas"
            )
    return RecordError(ErrorCode.INVALID_JSON, None, message)

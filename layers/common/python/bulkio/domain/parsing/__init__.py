"""Streaming decode and framing of import files into records with their source line numbers.

One module per concern: `source` (format detection, and the entry point that hands the decompressed text to
the codec of its format), `gzip` (the decompression guard), `lines` (the bounded line splitter and the CSV
quoting states), `ndjson`, `json_array` (the JSON-array framer), `csv` (the CSV reader and its coercions), and
`common` (what they share). Underscored names are the package's internals, shared between its modules.
"""

from bulkio.domain.parsing.common import FileErrorCode, SourceRecord, UnreadableFile
from bulkio.domain.parsing.source import detect_format, iter_source_records

__all__ = ["FileErrorCode", "SourceRecord", "UnreadableFile", "detect_format", "iter_source_records"]

"""Large S3 object bodies streamed to and from disk, in front of moto.

moto reads a whole request body into memory and serves a GET from a full in-memory copy of the object: a
900 MB upload, then the chunker's read of it, made the local AWS endpoint the largest process of the stack,
growing with the file. This WSGI layer takes over the requests that carry large bodies, a plain PutObject, an
UploadPart and a plain GetObject (optionally of a version, of one byte range, or on an If-Match), and leaves
everything else to moto: the objects themselves stay in moto's backend (listing, HEAD, versions, deletes,
events), only their bytes live in a file that is never read into memory whole.

Anything unusual (a copy, server-side encryption, a checksum other than botocore's default CRC32, conditional
headers other than If-Match, response header overrides, a missing bucket or key, a delete marker) goes to moto
as before, so its answers and errors stay moto's.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from infra.local.template_model import ACCOUNT_ID

# An object body above this lives in a file (moto's own bodies too: MOTO_S3_DEFAULT_KEY_BUFFER_SIZE), and its
# PUT and GET go through here: a writer's chunk (140 KB to 1 MB) costs the endpoint a third less than through
# moto's request parsing, and never sits in a buffer. Below it, moto keeps the body in memory.
STREAMED_BODY_BYTES = 64 * 1024
PIECE_BYTES = 1024 * 1024
MAX_PART_NUMBER = 10_000
PARTITION = "aws"
# Query parameters of a presigned URL: they authenticate the request and change nothing else.
PRESIGN_PARAMETERS = re.compile(r"^X-Amz-(Algorithm|Credential|Date|Expires|SignedHeaders|Signature|Security-Token)$")
# Request headers that ask for more than storing or reading bytes: moto answers those.
PUT_HEADERS_FOR_MOTO = (
    "HTTP_X_AMZ_COPY_SOURCE",
    "HTTP_CONTENT_MD5",
    "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
)
# The checksum botocore sends with every PutObject by default (its flexible checksums): verified and kept here,
# as S3 does. Any other algorithm goes to moto.
CRC32 = "CRC32"
CRC32_HEADER = "HTTP_X_AMZ_CHECKSUM_CRC32"
GET_HEADERS_FOR_MOTO = (
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_CUSTOMER_ALGORITHM",
)
SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

StartResponse = Callable[..., Any]


def _object_path(environ: dict[str, Any]) -> tuple[str, str] | None:
    """(bucket, key) of a path-style object URL, the style the endpoint's clients use."""
    # PATH_INFO is already percent-decoded, and carries the UTF-8 bytes of the key as Latin-1 (PEP 3333).
    try:
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None  # moto answers
    parts = path.lstrip("/").split("/", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def _query(environ: dict[str, Any], allowed: set[str]) -> dict[str, str] | None:
    """The query's parameters when all of them are presign parameters or `allowed`; None otherwise."""
    found: dict[str, str] = {}
    for name, values in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items():
        if PRESIGN_PARAMETERS.match(name):
            continue
        if name not in allowed or len(values) != 1:
            return None
        found[name] = values[0]
    return found


def moto_s3_backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT_ID][PARTITION]


class StreamedObjects:
    """The WSGI layer: `answer` returns a response for the requests it takes, None for moto's."""

    def __init__(self, spool_dir: str | None = None, threshold: int = STREAMED_BODY_BYTES) -> None:
        self.spool_dir = spool_dir
        self.threshold = threshold

    def answer(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        method = environ["REQUEST_METHOD"]
        if method == "PUT":
            return self._put(environ, start_response)
        if method == "GET":
            return self._get(environ, start_response)
        return None

    # ------------------------------------------------------------------------------------------------ PUT
    def _put(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        """A PutObject, or an UploadPart of a multipart upload created without an additional checksum."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        target = _object_path(environ)
        query = _query(environ, {"partNumber", "uploadId"})
        if (
            length <= self.threshold
            or target is None
            or query is None
            or any(header in environ for header in PUT_HEADERS_FOR_MOTO)
            or not _crc32_or_no_checksum(environ)
            or environ.get("HTTP_CONTENT_ENCODING") == "aws-chunked"
            or environ.get("HTTP_X_AMZ_CONTENT_SHA256", "").startswith("STREAMING-")
        ):
            return None
        bucket_name, key_name = target
        backend = moto_s3_backend()
        if bucket_name not in backend.buckets:
            return None  # moto answers NoSuchBucket
        part = _part_of(backend.buckets[bucket_name], query)
        if query and part is None:
            return None  # moto answers: a part number out of range, an unknown upload, one half of the pair
        received = _receive(environ, length, self.spool_dir)
        if isinstance(received, bytes):
            start_response("400 Bad Request", [("Content-Type", "application/xml")])
            return [received]
        body, md5, crc = received
        if part is None:
            key = self._store(backend, bucket_name, key_name, body, length, md5, environ)
        else:
            key = backend.upload_part(bucket_name, part[0], part[1], b"")
            _give_bytes(key, body, length, md5)
        headers = [("ETag", key.etag), ("Content-Length", "0")]
        if CRC32_HEADER in environ or "HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM" in environ:
            if part is None:  # a part's checksum is only told back, as moto does
                key.checksum_algorithm, key.checksum_value = CRC32, crc
            headers.append(("x-amz-checksum-crc32", crc))
        if part is None and key.version_id != "null" and backend.get_bucket(bucket_name).is_versioned:
            headers.append(("x-amz-version-id", str(key.version_id)))
        start_response("200 OK", headers)
        return [b""]

    @staticmethod
    def _store(
        backend: Any, bucket_name: str, key_name: str, body: Any, size: int, etag: str, environ: dict[str, Any]
    ) -> Any:
        """The object in moto's backend with `body` as its bytes; its S3 event is sent once the bytes are in."""
        from moto.s3 import notifications
        from moto.s3.utils import metadata_from_headers

        key = backend.put_object(bucket_name, key_name, b"", disable_notification=True)
        _give_bytes(key, body, size, etag)
        headers = {
            name[5:].replace("_", "-").lower(): value for name, value in environ.items() if name.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        key.set_metadata(metadata_from_headers(headers))
        notifications.send_event(
            ACCOUNT_ID, notifications.S3NotificationEvent.OBJECT_CREATED_PUT_EVENT, backend.get_bucket(bucket_name), key
        )
        return key

    # ------------------------------------------------------------------------------------------------ GET
    def _get(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        target = _object_path(environ)
        query = _query(environ, {"versionId"}) if target is not None else None
        if target is None or query is None or any(header in environ for header in GET_HEADERS_FOR_MOTO):
            return None
        from moto.s3.models import FakeKey

        bucket_name, key_name = target
        backend = moto_s3_backend()
        if bucket_name not in backend.buckets:
            return None
        key = backend.get_object(bucket_name, key_name, version_id=query.get("versionId"))
        if not isinstance(key, FakeKey) or key.size <= self.threshold or key.encryption is not None:
            return None
        checksum_asked = environ.get("HTTP_X_AMZ_CHECKSUM_MODE") == "ENABLED" and key.checksum_algorithm is not None
        if checksum_asked and (key.checksum_algorithm != CRC32 or key.checksum_type not in (None, "FULL_OBJECT")):
            return None  # moto answers with the stored checksum (botocore asks on every GET)
        if_match = environ.get("HTTP_IF_MATCH")
        if if_match is not None and if_match.strip('"') != key.etag.strip('"'):
            return None  # moto answers 412 PreconditionFailed
        span = _byte_range(environ.get("HTTP_RANGE"), key.size)
        if span is None:
            return None  # moto answers an unsatisfiable or multiple range
        headers = {**key.response_dict, **key.metadata, "Accept-Ranges": "bytes"}
        if key.version_id != "null":
            headers["x-amz-version-id"] = str(key.version_id)
        first, last = span
        headers["content-length"] = str(last - first + 1)
        status = "200 OK"
        if environ.get("HTTP_RANGE"):
            status = "206 Partial Content"
            headers["content-range"] = f"bytes {first}-{last}/{key.size}"
        elif checksum_asked:  # a range is sent without the whole object's checksum, as S3 does
            headers["x-amz-checksum-crc32"] = str(key.checksum_value)
        with key.lock:
            descriptor = os.dup(key._value_buffer.fileno())
        start_response(status, list(headers.items()))
        return _FileSpan(descriptor, first, last + 1)


def _part_of(bucket: Any, query: dict[str, str]) -> tuple[str, int] | None:
    """(upload id, part number) of an UploadPart this layer can take: of an upload it knows, created without an
    additional checksum (its completion then needs each part's, which moto keeps), numbered 1 to 10,000."""
    upload_id, number = query.get("uploadId", ""), query.get("partNumber", "")
    multipart = bucket.multiparts.get(upload_id)
    if multipart is None or not number.isdigit() or not 1 <= int(number) <= MAX_PART_NUMBER:
        return None
    if multipart.metadata.get("x-amz-checksum-algorithm"):
        return None
    return upload_id, int(number)


def _receive(environ: dict[str, Any], length: int, spool_dir: str | None) -> tuple[Any, str, str] | bytes:
    """The request body in a temporary file, with its MD5 (hex) and CRC32 (as S3 writes it); or the error XML
    of a body shorter than its Content-Length or whose CRC32 header does not match."""
    # Not closed on success: the file becomes the storage of moto's key, which owns it from then on.
    body = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
    md5 = hashlib.md5()
    crc = 0
    remaining = length
    source = environ["wsgi.input"]
    while remaining:
        piece = source.read(min(PIECE_BYTES, remaining))
        if not piece:
            break
        md5.update(piece)
        crc = zlib.crc32(piece, crc)
        body.write(piece)
        remaining -= len(piece)
    if remaining:
        body.close()
        return _error_xml("IncompleteBody", "You did not provide the number of bytes specified by Content-Length")
    given_crc32 = environ.get(CRC32_HEADER)
    if given_crc32 is not None and given_crc32 != _crc32_text(crc):
        body.close()
        return _error_xml("BadDigest", "The CRC32 you specified did not match the calculated checksum.")
    body.flush()  # the reads go to the file itself (pread), past this object's buffer
    return body, md5.hexdigest(), _crc32_text(crc)


def _crc32_or_no_checksum(environ: dict[str, Any]) -> bool:
    """The request carries no additional checksum, or just the CRC32 this layer verifies."""
    algorithm = environ.get("HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM", CRC32)
    given = {header for header in environ if header.startswith("HTTP_X_AMZ_CHECKSUM_")}
    return algorithm.upper() == CRC32 and given <= {CRC32_HEADER}


def _crc32_text(crc: int) -> str:
    """A CRC32 as S3 writes it: the four bytes, big-endian, in base64."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _give_bytes(key: Any, body: Any, size: int, etag: str) -> None:
    """Makes the file `body` the bytes of moto's `key` (which owns it from then on)."""
    with key.lock:
        key._value_buffer.close()
        key._value_buffer = body
        key.contentsize = size
        key._etag = etag


def compute_etags_in_pieces() -> None:
    """moto computes an object's MD5 by reading its body 16 MB at a time; from a file, each read allocates the
    whole 16 MB however small the object, so the writers' concurrent chunk PUTs made the endpoint jump by
    hundreds of MB. Read a piece at a time instead. Applying it twice changes nothing."""
    from moto.s3.models import FakeKey

    if getattr(FakeKey.__dict__["etag"].fget, "in_pieces", False):
        return

    def etag(self: FakeKey) -> str:
        if self._etag is None:
            digest = hashlib.md5()
            with self.lock:
                self._value_buffer.seek(0)
                while piece := self._value_buffer.read(PIECE_BYTES):
                    digest.update(piece)
            self._etag = digest.hexdigest()
        return f'"{self._etag}"'

    etag.in_pieces = True  # type: ignore[attr-defined]
    FakeKey.etag = property(etag)  # type: ignore[assignment,method-assign]


_listing_versions = threading.local()


def list_versions_without_reading_bodies() -> None:
    """moto lists a bucket's versions from deep copies of every version of every key in the bucket, and a deep
    copy of a key reads its whole body and writes it to a new buffer: each purge of a job's chunk objects read
    the whole bucket, uploads included (the endpoint's bursts of 150-300 MiB at each job's end, and seconds of
    CPU and disk). The listing needs each version's metadata and a flag of its own (is_latest), not its bytes:
    while it runs, a key's copy gets an empty body. Applying it twice changes nothing."""
    from moto.s3.models import FakeKey, S3Backend

    list_with_bodies = S3Backend.list_object_versions

    def list_object_versions(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
        _listing_versions.active = True
        try:
            return list_with_bodies(self, *args, **kwargs)
        finally:
            _listing_versions.active = False

    def deep_copy(self: FakeKey, memo: dict[int, Any]) -> FakeKey:
        copied = object.__new__(FakeKey)  # untracked (see aws_endpoint.stop_tracking_model_instances)
        if not getattr(_listing_versions, "active", False):  # what copy.deepcopy does without this method
            copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
            return copied
        _ = self.etag  # computed on the original, which has the bytes, and kept in the copy
        copied.__dict__.update(self.__dict__)
        # Its own buffer and no multipart: disposing of the copy must not close the original's body.
        copied._value_buffer = tempfile.SpooledTemporaryFile()  # noqa: SIM115  # closed by dispose
        copied.multipart = None
        copied.lock = threading.Lock()
        return copied

    FakeKey.__deepcopy__ = deep_copy  # type: ignore[attr-defined]
    if not getattr(list_with_bodies, "without_bodies", False):
        list_object_versions.without_bodies = True  # type: ignore[attr-defined]
        S3Backend.list_object_versions = functools.wraps(list_with_bodies)(list_object_versions)  # type: ignore[method-assign]


def join_multipart_uploads_on_disk(spool_dir: str | None = None) -> None:
    """moto completes a multipart upload by joining its parts in memory, twice over (a 90 MB error report took
    180 MB, an export file of a gigabyte would take two): joined in a file instead, part by part. Uploads with
    additional checksums keep moto's own completion, which computes them. Applying it twice changes nothing."""
    from moto.s3 import notifications
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.models import S3_UPLOAD_PART_MIN_SIZE, S3Backend

    complete_in_memory = S3Backend.complete_multipart_upload
    if getattr(complete_in_memory, "joins_on_disk", False):
        return

    def complete_on_disk(self: S3Backend, bucket_name: str, multipart_id: str, body: Iterator[tuple[int, str]]) -> Any:
        bucket = self.get_bucket(bucket_name)
        multipart = bucket.multiparts[multipart_id]
        if multipart.metadata.get("x-amz-checksum-algorithm"):
            return complete_in_memory(self, bucket_name, multipart_id, body)
        # Not closed here: the file becomes the object's storage, owned by moto's key from then on.
        joined = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
        part_md5s = bytearray()
        size = count = 0
        last = None
        try:
            for number, etag in body:
                part = multipart.parts.get(number)
                if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
                    raise InvalidPart()
                if last is not None and last.contentsize < S3_UPLOAD_PART_MIN_SIZE:
                    raise EntityTooSmall()
                part_md5s.extend(bytes.fromhex(part.etag.replace('"', "")))
                with part.lock:
                    part._value_buffer.seek(0)
                    while piece := part._value_buffer.read(PIECE_BYTES):
                        joined.write(piece)
                size += part.contentsize
                last = part
                count += 1
            if count == 0:
                raise MalformedXML()
        except BaseException:
            joined.close()
            raise
        joined.flush()
        del bucket.multiparts[multipart_id]
        key = self.put_object(
            bucket_name,
            multipart.key_name,
            b"",
            storage=multipart.storage,
            etag=f"{hashlib.md5(bytes(part_md5s)).hexdigest()}-{count}",
            multipart=multipart,
            encryption=multipart.sse_encryption,
            kms_key_id=multipart.kms_key_id,
            disable_notification=True,
        )
        _give_bytes(key, joined, size, key.etag.strip('"'))
        key.set_metadata(multipart.metadata)
        self.put_object_tagging(key, multipart.tags)
        self.put_object_acl(bucket_name=bucket_name, key_name=key.name, acl=multipart.acl, disable_notification=True)
        completed = notifications.S3NotificationEvent.OBJECT_CREATED_COMPLETE_MULTIPART_UPLOAD_EVENT
        notifications.send_event(self.account_id, completed, bucket, key)
        return key

    complete_on_disk.joins_on_disk = True  # type: ignore[attr-defined]
    S3Backend.complete_multipart_upload = complete_on_disk  # type: ignore[method-assign]


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte of a single `Range: bytes=` span (the whole object without one); None when the
    header is anything else."""
    if not header:
        return 0, size - 1
    match = SINGLE_RANGE.match(header.strip())
    if match is None:
        return None
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:  # the last `end` bytes
        return max(size - int(end), 0), size - 1
    first = int(start)
    last = min(int(end), size - 1) if end else size - 1
    if first >= size or first > last:
        return None
    return first, last


class _FileSpan:
    """A WSGI body: bytes [start, stop) of a file descriptor, read in pieces; the descriptor is closed after."""

    def __init__(self, descriptor: int, start: int, stop: int) -> None:
        self._descriptor = descriptor
        self._position = start
        self._stop = stop

    def __iter__(self) -> Iterator[bytes]:
        while self._position < self._stop:
            piece = os.pread(self._descriptor, min(PIECE_BYTES, self._stop - self._position), self._position)
            if not piece:
                return
            self._position += len(piece)
            yield piece

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1


def _error_xml(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    ).encode()

"""S3 as the object store for uploads, chunks and error reports."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from bulkio.domain.objects import ObjectChanged, ObjectInfo, PresignedUpload
from bulkio.domain.uploads import UploadedPart

PART_SIZE = 8 * 1024 * 1024  # above S3's 5 MiB minimum part size
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes


def _error_code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


class S3ObjectStore:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def upload_stream(self, key: str, stream: BinaryIO, content_type: str = "application/octet-stream") -> None:
        """Streams `stream` to S3 in parts (boto3's managed transfer), never holding the whole object."""
        self._s3.upload_fileobj(stream, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def open(self, key: str, bucket: str | None = None) -> BinaryIO:
        """A streaming body read in pieces; FileNotFoundError when the object does not exist."""
        try:
            return self._s3.get_object(Bucket=bucket or self.bucket, Key=key)["Body"]
        except self._s3.exceptions.NoSuchKey as error:
            raise FileNotFoundError(f"s3://{bucket or self.bucket}/{key}") from error

    def open_version(self, key: str, bucket: str | None, version_id: str | None, etag: str | None) -> BinaryIO:
        """The object exactly as it was pinned: that version, or (without versioning) only while its ETag is
        unchanged. FileNotFoundError when it is gone, ObjectChanged when it was replaced."""
        params: dict[str, Any] = {"Bucket": bucket or self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        elif etag:
            params["IfMatch"] = etag
        try:
            return self._s3.get_object(**params)["Body"]
        except self._s3.exceptions.ClientError as error:
            code = _error_code(error)
            if version_id and etag and code in {"NoSuchVersion", "InvalidArgument", "400"}:
                # The version itself is gone (expired, or an object store that was restored without its
                # versions): the current object will do if it still holds the same bytes.
                return self.open_version(key, bucket, None, etag)
            if code in {"NoSuchKey", "NoSuchVersion", "404"}:
                raise FileNotFoundError(f"s3://{params['Bucket']}/{key}") from error
            if code in {"PreconditionFailed", "412"}:
                raise ObjectChanged(f"s3://{params['Bucket']}/{key}") from error
            raise

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def purge(self, prefix: str) -> int:
        # Each round lists from the start again: a listing resumed from the markers of versions just deleted
        # ends early on some S3 implementations (moto's), which would leave the rest behind without a word.
        purged = 0
        while True:
            page = self._s3.list_object_versions(Bucket=self.bucket, Prefix=prefix, MaxKeys=DELETE_BATCH)
            versions = [
                {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if not versions:
                return purged
            answer = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": versions, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RuntimeError(f"could not delete s3://{self.bucket}/{first['Key']}: {first['Message']}")
            purged += len(versions)

    def info(self, key: str, bucket: str | None = None) -> ObjectInfo | None:
        try:
            head = self._s3.head_object(Bucket=bucket or self.bucket, Key=key)
        except self._s3.exceptions.ClientError as error:
            if _error_code(error) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        version = head.get("VersionId")
        return ObjectInfo(
            size=head["ContentLength"],
            etag=head["ETag"].strip('"'),
            version_id=None if version in (None, "null") else str(version),
        )

    def presign_put(self, key: str, ttl_seconds: int) -> PresignedUpload:
        url = self._s3.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_seconds
        )
        return PresignedUpload(url, "PUT", datetime.now(UTC) + timedelta(seconds=ttl_seconds))

    def start_multipart(self, key: str) -> str:
        return str(self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])

    def presign_part(self, key: str, upload_id: str, part_number: int, ttl_seconds: int) -> str:
        return str(
            self._s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number},
                ExpiresIn=ttl_seconds,
            )
        )

    def uploaded_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        """FileNotFoundError when the upload is gone (completed, aborted, or expired by the lifecycle rule)."""
        parts: list[UploadedPart] = []
        marker = 0
        while True:
            try:
                page = self._s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
            except self._s3.exceptions.ClientError as error:
                if _error_code(error) in {"NoSuchUpload", "404"}:
                    raise FileNotFoundError(f"multipart upload {upload_id} of s3://{self.bucket}/{key}") from error
                raise
            parts += [
                UploadedPart(part["PartNumber"], part["ETag"].strip('"'), part["Size"])
                for part in page.get("Parts", [])
            ]
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts]},
        )

    def presign_get(self, key: str, ttl_seconds: int, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_seconds)

    def writer(self, key: str, content_type: str = "application/octet-stream") -> MultipartWriter:
        return MultipartWriter(self._s3, self.bucket, key, content_type)


class MultipartWriter(io.RawIOBase):
    """A write-only file object that uploads to S3 in parts of PART_SIZE: constant memory for any size.

    Use as a context manager: a clean exit completes the upload, an exception aborts it.
    """

    def __init__(self, s3_client: Any, bucket: str, key: str, content_type: str) -> None:
        super().__init__()
        self._s3, self._bucket, self._key, self._content_type = s3_client, bucket, key, content_type
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        self.bytes_written += len(data)
        while len(self._buffer) >= PART_SIZE:
            self._upload_part(bytes(self._buffer[:PART_SIZE]))
            del self._buffer[:PART_SIZE]
        return len(data)

    def _upload_part(self, body: bytes) -> None:
        if self._upload_id is None:
            created = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        part = self._s3.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    def complete(self) -> None:
        if self._upload_id is None:  # small object: one PUT is cheaper than a multipart upload
            self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), ContentType=self._content_type
            )
        else:
            if self._buffer:
                self._upload_part(bytes(self._buffer))
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buffer.clear()

    def abort(self) -> None:
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        self._buffer.clear()

    def __enter__(self) -> MultipartWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.complete()
        else:
            self.abort()

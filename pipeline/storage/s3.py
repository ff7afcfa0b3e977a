"""The document store in S3-compatible object storage (boto3), for workers on several machines.

UNTESTED on the development machine: no S3 server (MinIO or other) installs from a package
registry there, so this backend has only been type-checked, never run against a server.
Objects are `<prefix>/<sha256>`; a PUT is atomic in S3 (readers see the old object or the new
one, never part), so concurrent puts of the same content are harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import DocumentMissing, DocumentStoreError, MissingExtra
from pipeline.storage import check_sha256, missing_message

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    """Documents as S3 objects; `endpoint_url` for a non-AWS server, credentials and region
    from boto3's default chain (environment, ~/.aws, instance role)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        try:
            import boto3
        except ImportError:
            raise MissingExtra("the s3 document store needs boto3: pip install boto3") from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.where = f"s3://{bucket}/{self.prefix}" + (f" ({endpoint_url})" if endpoint_url else "")
        self._s3: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, sha256: str) -> str:
        sha = check_sha256(sha256)
        return f"{self.prefix}/{sha}" if self.prefix else sha

    def put(self, sha256: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=self._key(sha256), Body=data,
                            ContentType="application/pdf")  # fmt: skip

    def get(self, sha256: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            reply = self._s3.get_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise DocumentMissing(missing_message(sha256, self.where)) from None
            raise DocumentStoreError(f"{self.where}: {exc}") from exc
        body: bytes = reply["Body"].read()
        return body

    def delete(self, sha256: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(sha256))  # absent is fine

    def local_path(self, sha256: str) -> None:
        """No local files: readers get a temporary copy (pipeline/storage/local.py)."""
        return None

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise DocumentStoreError(f"{self.where}: {exc}") from exc
        return True

    def sweep(self, older_than_s: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        removed = 0
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["LastModified"] < cutoff:
                    self._s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
                    removed += 1
        return removed

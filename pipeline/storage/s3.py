"""The document store in S3-compatible object storage (boto3), for workers on several machines.

Objects are `<prefix>/<sha256>`; a PUT is atomic in S3 (readers see the old object or the new
one, never part), so concurrent puts of the same content are harmless. An object's
LastModified (set by every put) is its age for the sweep, which lists only names of that
form directly under the prefix: the bucket may hold other things, and a key prefix's own
documents are one level deeper (pipeline/storage/prefixed.py).

Tested over HTTP against moto's S3 server (tests/documents/test_s3_store.py), not against AWS
itself or MinIO.

Every failure is a DocumentStoreError saying what to fix (endpoint, bucket, credentials), or
DocumentMissing for an object that is not there; never a botocore exception.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import DocumentMissing, DocumentStoreError, MissingExtra
from pipeline.storage import check_sha256, is_sha256, missing_message

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
            "ExpiredToken", "InvalidToken"}  # fmt: skip
# Seconds to open a connection (boto3's default, 60, times its retries, would hold a job for
# minutes on an endpoint that drops packets); reads keep boto3's default.
_CONNECT_TIMEOUT_S = 10

# One client per endpoint for the process, made under a lock: open_store runs for every job,
# and a client cost ~4 ms of CPU each time (~180 ms the first, with boto3's import), on the
# worker's event loop; boto3 documents sessions (the default one too) as not thread-safe,
# its clients as thread-safe.
_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def _client(endpoint_url: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingExtra("the s3 document store needs boto3: pip install boto3") from None
    with _clients_lock:
        if endpoint_url not in _clients:
            config = Config(connect_timeout=_CONNECT_TIMEOUT_S,
                            retries={"mode": "standard", "max_attempts": 3})  # fmt: skip
            try:
                _clients[endpoint_url] = boto3.session.Session().client(
                    "s3", endpoint_url=endpoint_url, config=config
                )
            except ValueError as exc:  # botocore: "Invalid endpoint: …"
                raise DocumentStoreError(
                    f"PIPELINE_DOCUMENT_STORE_ENDPOINT={endpoint_url!r}: {exc}; give the S3 "
                    "server's URL, e.g. http://minio-host:9000"
                ) from None
        return _clients[endpoint_url]


class S3Store:
    """Documents as S3 objects; `endpoint_url` for a non-AWS server, credentials and region
    from boto3's default chain (environment, ~/.aws, instance role)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.where = f"s3://{bucket}/{self.prefix}" + (f" ({endpoint_url})" if endpoint_url else "")
        self._s3: Any = _client(endpoint_url)

    def _key(self, sha256: str) -> str:
        sha = check_sha256(sha256)
        return f"{self.prefix}/{sha}" if self.prefix else sha

    @contextlib.contextmanager
    def _errors(self, action: str, sha256: str | None = None) -> Iterator[None]:
        """botocore's exceptions as DocumentStoreError (DocumentMissing for an absent object
        when `sha256` is given), each saying what to check."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                if sha256 is not None:
                    raise DocumentMissing(missing_message(sha256, self.where)) from None
                code = "NoSuchBucket"  # no object named: what is not found is the bucket
            raise self._refused(action, code, exc) from None
        except NoCredentialsError:
            raise DocumentStoreError(
                f"{action} at {self.where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials, an instance role)"
            ) from None
        except EndpointConnectionError as exc:
            raise DocumentStoreError(
                f"{action} at {self.where}: cannot reach the S3 endpoint ({exc}); start the "
                "server or fix PIPELINE_DOCUMENT_STORE_ENDPOINT"
            ) from None
        except BotoCoreError as exc:  # timeouts, a connection dropped mid-body, bad replies
            raise DocumentStoreError(f"{action} at {self.where} failed: {exc}") from None

    def _refused(self, action: str, code: str, exc: Exception) -> DocumentStoreError:
        if code in _NO_BUCKET:
            return DocumentStoreError(
                f"{action} at {self.where}: the bucket {self.bucket!r} does not exist; create "
                "it or fix PIPELINE_DOCUMENT_STORE (s3://bucket/prefix)"
            )
        if code in _REFUSED:
            return DocumentStoreError(
                f"{action} at {self.where}: the S3 server refused our credentials ({code}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
            )
        return DocumentStoreError(f"{action} at {self.where} failed: {exc}")

    def put(self, sha256: str, data: bytes) -> None:
        with self._errors("storing a document"):
            self._s3.put_object(Bucket=self.bucket, Key=self._key(sha256), Body=data,
                                ContentType="application/pdf")  # fmt: skip

    def get(self, sha256: str) -> bytes:
        with self._errors("reading a document", sha256):
            reply = self._s3.get_object(Bucket=self.bucket, Key=self._key(sha256))
            body: bytes = reply["Body"].read()
        return body

    def delete(self, sha256: str) -> None:
        with self._errors("deleting a document"):  # an absent object is no error in S3
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(sha256))

    def local_path(self, sha256: str) -> None:
        """No local files: readers get a temporary copy (pipeline/storage/local.py)."""
        return None

    def exists(self, sha256: str) -> bool:
        try:
            with self._errors("looking for a document", sha256):
                self._s3.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except DocumentMissing:
            # HEAD has no body, so a missing bucket is a bare 404 too: ask the bucket.
            with self._errors("looking for a document"):
                self._s3.head_bucket(Bucket=self.bucket)
            return False
        return True

    def aged(self, older_than_s: float) -> list[str]:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        prefix = f"{self.prefix}/" if self.prefix else ""
        found = []
        with self._errors("looking for old documents"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if is_sha256(name) and obj["LastModified"] < cutoff:
                        found.append(name)
        return found

    def delete_aged(self, sha256: str, older_than_s: float) -> bool:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        try:
            with self._errors("looking at an old document", sha256):
                head = self._s3.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except DocumentMissing:
            return False
        if head["LastModified"] >= cutoff:
            return False  # put again since it was found aged: a job needs it now
        self.delete(sha256)
        return True

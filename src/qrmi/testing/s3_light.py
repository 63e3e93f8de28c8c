"""A light in-memory S3 store on 127.0.0.1, for benchmarks: the few operations QRMI's IBM
Quantum System backend, the reference's and the IBM fake use, at a fraction of moto's cost.

Path-style addressing, one bucket. Operations: create bucket (``PUT /b``), list objects v2
(``GET /b?list-type=2``), put/get/head/delete object (``/b/key``; tags from ``x-amz-tagging``),
get/put object tagging (``?tagging``). Signatures are not checked (moto does not check them
either); ``aws-chunked`` uploads (the AWS SDKs' streaming form) are decoded. Errors are S3's XML
(``NoSuchKey``, ``NoSuchBucket``). Anything else answers 501 ``NotImplemented``: this is not a
general S3, use :class:`~qrmi.testing.s3.S3Fake` (moto) for that.

Why: on moto each request costs a few milliseconds of CPU in the fake, so in throughput runs
the store, not the clients under test, set the pace.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

from qrmi.testing.s3 import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from qrmi.testing.server import FakeServer

__all__ = ["LightS3"]

_XML = [(b"content-type", b"application/xml")]


class _Object:
    __slots__ = ("body", "content_type", "tags")

    def __init__(self, body: bytes, content_type: str, tags: dict[str, str]) -> None:
        self.body = body
        self.content_type = content_type
        self.tags = tags


class _Store:
    """The objects of one bucket; thread-safe."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.created = False
        self.objects: dict[str, _Object] = {}
        self.lock = threading.Lock()


def _error(status: int, code: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
    ).encode()
    return status, _XML, body


def _tags_xml(tags: dict[str, str]) -> bytes:
    items = "".join(
        f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>" for k, v in tags.items()
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Tagging><TagSet>{items}</TagSet></Tagging>'
    ).encode()


def _parse_tags_xml(body: bytes) -> dict[str, str]:
    import xml.etree.ElementTree as ET  # only for PutObjectTagging

    root = ET.fromstring(body)
    tags = {}
    for tag in root.iter():
        if tag.tag.rsplit("}", 1)[-1] != "Tag":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in tag}
        tags[fields.get("Key", "")] = fields.get("Value", "")
    return tags


def _dechunk(body: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body: ``hex-size[;ext]\\r\\ndata\\r\\n`` ... ``0``."""
    out: list[bytes] = []
    position = 0
    while True:
        end = body.index(b"\r\n", position)
        size = int(body[position:end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        start = end + 2
        out.append(body[start : start + size])
        position = start + size + 2


def _list_xml(bucket: str, keys: list[str]) -> bytes:
    contents = "".join(f"<Contents><Key>{escape(k)}</Key></Contents>" for k in keys)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
        f"<Name>{escape(bucket)}</Name><KeyCount>{len(keys)}</KeyCount>"
        f"<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
    ).encode()


def _handle(
    store: _Store, method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if bucket != store.bucket:
        return _error(404, "NoSuchBucket", f"The specified bucket {bucket} does not exist")
    if not key:
        if method == "PUT":
            store.created = True
            return 200, [], b""
        if method == "GET" and params.get("list-type") == "2":
            with store.lock:
                keys = sorted(store.objects)
            return 200, _XML, _list_xml(bucket, keys)
        return _error(501, "NotImplemented", f"{method} on a bucket is not implemented")
    if not store.created:
        return _error(404, "NoSuchBucket", f"The specified bucket {bucket} does not exist")
    if "aws-chunked" in headers.get("content-encoding", "") or headers.get(
        "x-amz-content-sha256", ""
    ).startswith("STREAMING-"):
        body = _dechunk(body)
    with store.lock:
        found = store.objects.get(key)
        if method == "PUT" and "tagging" in params:
            if found is None:
                return _error(404, "NoSuchKey", "The specified key does not exist.")
            found.tags = _parse_tags_xml(body)
            return 200, [], b""
        if method == "PUT":
            tags = dict(parse_qsl(headers.get("x-amz-tagging", ""), keep_blank_values=True))
            content_type = headers.get("content-type", "binary/octet-stream")
            store.objects[key] = _Object(body, content_type, tags)
            etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'.encode()
            return 200, [(b"etag", etag)], b""
        if method == "DELETE":
            store.objects.pop(key, None)
            return 204, [], b""
    if found is None:
        if method == "HEAD":
            return 404, [], b""
        return _error(404, "NoSuchKey", "The specified key does not exist.")
    if method == "GET" and "tagging" in params:
        return 200, _XML, _tags_xml(found.tags)
    content = [
        (b"content-type", found.content_type.encode("latin-1")),
        (b"etag", f'"{hashlib.md5(found.body, usedforsecurity=False).hexdigest()}"'.encode()),
    ]
    if method == "HEAD":
        return 200, [*content, (b"content-length", str(len(found.body)).encode())], b""
    if method == "GET":
        return 200, content, found.body
    return _error(501, "NotImplemented", f"{method} on an object is not implemented")


def _app(store: _Store) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, answer_headers, body = _handle(
            store,
            scope["method"],
            scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0],
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            b"".join(chunks),
        )
        if scope["method"] != "HEAD" and not any(k == b"content-length" for k, _ in answer_headers):
            answer_headers = [*answer_headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": answer_headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    return app


class LightS3(FakeServer):
    """The light store, with :class:`~qrmi.testing.s3.S3Fake`'s attributes and helpers."""

    def __init__(
        self,
        *,
        bucket: str | None = None,
        region: str = "us-east-1",
        host: str = "127.0.0.1",
        http: str = "h11",
    ) -> None:
        self.bucket = bucket or f"qrmi-jobs-{uuid.uuid4().hex[:12]}"
        self.region = region
        self.access_key_id = FAKE_ACCESS_KEY_ID
        self.secret_access_key = FAKE_SECRET_ACCESS_KEY
        self._store = _Store(self.bucket)
        self._store.created = True
        super().__init__(_app(self._store), host=host, name="s3-light", http=http)

    def client(self) -> Any:
        """A boto3 S3 client for this store (path-style, SigV4)."""
        from qrmi.testing.s3 import store_client

        return store_client(self.url, self.access_key_id, self.secret_access_key, self.region)

    def serves(self, url: str) -> bool:
        """Whether ``url`` (a presigned URL) points at this store."""
        return url.startswith(f"{self.url}/{self.bucket}/")

    def transfer(self, method: str, url: str, body: bytes | None = None) -> bytes | None:
        """Answer a presigned ``GET`` or ``PUT`` of this store in memory, as over HTTP: the
        body read (``b""`` for a PUT), or ``None`` when the store answers an error."""
        target = urlsplit(url)
        status, _, answer = _handle(self._store, method, target.path, target.query, {}, body or b"")
        return answer if status == 200 else None

    def keys(self) -> list[str]:
        """The object keys in the bucket, sorted."""
        with self._store.lock:
            return sorted(self._store.objects)

    def read(self, key: str) -> bytes:
        """The bytes of object ``key``."""
        with self._store.lock:
            return self._store.objects[key].body

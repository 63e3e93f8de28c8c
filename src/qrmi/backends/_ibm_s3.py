"""The IBM Quantum System backend's job bucket (S3): inputs, results, logs and status tags.

Every operation is one presigned request (:mod:`._s3_presign`) through the shared
:class:`~qrmi.http.HttpClient`; S3's error answers become typed QRMI errors that say which
setting to check.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Mapping
from typing import NoReturn
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

import httpx

from qrmi.backends._s3_presign import Presigner
from qrmi.config import Settings
from qrmi.errors import AuthenticationFailedError, ConfigError, ServiceError
from qrmi.http import HttpClient, RetryPolicy

__all__ = ["PREFIX", "S3Storage"]

# The backend's logger: admins filter the backend's messages by one name.
logger = logging.getLogger("qrmi.backends.ibm_quantum_system")

#: The settings prefix of the IBM Quantum System backend, whose bucket this is.
PREFIX = "QRMI_IBM_QS_"


class S3Storage:
    """The job bucket: SigV4 presigned requests, path-style addressing, configurable endpoints.

    Every operation is one presigned request through :class:`~qrmi.http.HttpClient` (bounded
    retries, typed errors, no signature in messages): signing a URL locally and one plain
    request cost a fifth of the client CPU of boto3's ``get_object`` (its event hooks, signer
    and parser), and a process that never builds a boto3 client saves its start (about 0.3 s
    of the first task).
    """

    def __init__(self, endpoint: str, bucket: str, signers: tuple[Presigner, Presigner]) -> None:
        self._bucket = bucket
        # (for our own requests, for the URLs handed to the service)
        self._signers = signers
        self._reader = HttpClient(
            endpoint,
            service="S3",
            retry=RetryPolicy(max_attempts=5, deadline=120.0),
            timeout=60.0,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """Build the storage from the ``QRMI_IBM_QS_S3_*`` settings (no network I/O)."""
        key_id = settings.require(PREFIX + "AWS_ACCESS_KEY_ID")
        secret = settings.require(PREFIX + "AWS_SECRET_ACCESS_KEY")
        endpoint = settings.require(PREFIX + "S3_ENDPOINT")
        bucket = settings.require(PREFIX + "S3_BUCKET")
        region = settings.require(PREFIX + "S3_REGION")
        qsapi_endpoint = settings.get(PREFIX + "S3_ENDPOINT_FOR_QSAPI") or endpoint
        signers = (
            Presigner(endpoint, region, key_id, secret),
            Presigner(qsapi_endpoint, region, key_id, secret),
        )
        return cls(endpoint, bucket, signers)

    def put(self, key: str, body: bytes, *, tags: Mapping[str, str] | None = None) -> None:
        """Store ``body`` at ``key``, tagged with ``tags`` if the store takes tags.

        Tags are informative: a store that refuses them (no tagging support, or a key without
        ``s3:PutObjectTagging``) gets the object untagged rather than a failed task.
        """
        what = f"uploading {key} to S3 bucket {self._bucket}"
        headers = {"Content-Type": "application/json"}
        if tags:
            tagging = urlencode(dict(tags))
            response = self._request(
                "PUT", key, content=body, headers={**headers, "x-amz-tagging": tagging}
            )
            if response.status_code == 200:
                return
            code = _s3_error_code(response.text)
            if code not in _TAGGING_REFUSALS:
                self._fail(what, response)
            logger.info("S3 refused object tags (%s); storing %s untagged", code, key)
        response = self._request("PUT", key, content=body, headers=headers)
        if response.status_code != 200:
            self._fail(what, response)

    def exists(self, key: str) -> bool:
        """Whether there is an object at ``key``."""
        response = self._request("HEAD", key)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            self._fail(f"looking up {key} in S3 bucket {self._bucket}", response)
        return True

    def get(self, key: str) -> str | None:
        """The text at ``key``, or ``None`` if there is no such object."""
        response = self._request("GET", key)
        if response.status_code == 200:
            return response.content.decode("utf-8")
        if not _is_missing(response):
            self._fail(f"reading {key} from S3 bucket {self._bucket}", response)
        return None

    def tags(self, key: str, *, deadline: float | None = None) -> dict[str, str] | None:
        """The tags of the object at ``key``, or ``None`` if there is no such object; tries
        for ``deadline`` seconds at most when given."""
        what = f"reading the tags of {key} in S3 bucket {self._bucket}"
        response = self._request("GET", key, query={"tagging": ""}, deadline=deadline)
        if response.status_code == 200:
            return _tags_from_xml(response.content, what)
        if not _is_missing(response):
            self._fail(what, response)
        return None

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        """Replace the tags of the object at ``key``."""
        body = _tagging_xml(tags)
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        response = self._request(
            "PUT",
            key,
            query={"tagging": ""},
            content=body,
            headers={
                "Content-Type": "application/xml",
                "Content-MD5": base64.b64encode(digest).decode(),
            },
        )
        if response.status_code not in (200, 204):
            self._fail(f"tagging {key} in S3 bucket {self._bucket}", response)

    def presign(self, method: str, key: str, expires: int) -> str:
        """A presigned ``get`` or ``put`` URL for ``key``, valid ``expires`` seconds, for the
        service (signed for ``QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI``)."""
        return self._signers[1].presign(
            "GET" if method == "get" else "PUT", self._bucket, key, expires
        )

    def holds(self, url: str, key: str) -> bool:
        """Whether ``url`` (a presigned URL handed to the service) names ``key`` in this
        bucket."""
        return urlsplit(url).path == self._signers[1].path(self._bucket, key)

    def _request(
        self,
        method: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """One presigned request on ``key``; its ``x-amz-*`` headers are signed with the URL."""
        signed = {k: v for k, v in (headers or {}).items() if k.lower().startswith("x-amz-")}
        url = self._signers[0].presign(method, self._bucket, key, 300, headers=signed, query=query)
        return self._reader.request(
            method,
            url,
            content=content,
            headers=headers,
            authenticated=False,
            expected=(200, 204, 400, 403, 404, 501),
            deadline=deadline,
        )

    @staticmethod
    def _fail(what: str, response: httpx.Response) -> NoReturn:
        """Raise the typed error of an S3 error answer."""
        code = _s3_error_code(response.text) or str(response.status_code)
        _raise_s3_error(what, code, response.text)


def _is_missing(response: httpx.Response) -> bool:
    """Whether ``response`` says there is no such object (not: no such bucket)."""
    return response.status_code == 404 and _s3_error_code(response.text) in ("NoSuchKey", None)


#: S3 error codes of a store that does not take tags on upload.
_TAGGING_REFUSALS = frozenset(
    {"AccessDenied", "NotImplemented", "InvalidArgument", "InvalidTag", "MalformedXML"}
)


def _tagging_xml(tags: Mapping[str, str]) -> bytes:
    """The body of PutObjectTagging (values cut at S3's 256 characters)."""
    items = "".join(
        f"<Tag><Key>{xml_escape(k)}</Key><Value>{xml_escape(v[:256])}</Value></Tag>"
        for k, v in tags.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<TagSet>{items}</TagSet></Tagging>"
    ).encode()


def _tags_from_xml(body: bytes, what: str) -> dict[str, str]:
    """The tags of a GetObjectTagging answer (``<Tagging><TagSet><Tag><Key/><Value/>``)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ServiceError(f"{what} failed: the store answered malformed XML ({exc})") from None
    tags = {}
    for element in root.iter():
        if _local_name(element.tag) == "Tag":
            parts = {_local_name(child.tag): child.text or "" for child in element}
            if "Key" in parts:
                tags[parts["Key"]] = parts.get("Value", "")
    return tags


def _local_name(tag: str) -> str:
    """``Tag`` of ``{http://s3.amazonaws.com/doc/2006-03-01/}Tag``."""
    return tag.rpartition("}")[2]


def _s3_error_code(body: str) -> str | None:
    """``<Error><Code>...</Code>`` of an S3 error body."""
    match = re.search(r"<Code>([^<]+)</Code>", body)
    return match.group(1) if match else None


def _raise_s3_error(what: str, code: str, body: str) -> NoReturn:
    """Raise the typed error for an S3 error ``code``."""
    found = re.search(r"<Message>([^<]*)</Message>", body)
    message = found.group(1) if found else ""
    if code in _S3_AUTH_CODES:
        raise AuthenticationFailedError(
            f"{what} was refused ({code}: {message}); check "
            f"{PREFIX}AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
        )
    if code == "NoSuchBucket":
        raise ConfigError(f"{what} failed: the bucket does not exist; check {PREFIX}S3_BUCKET")
    raise ServiceError(f"{what} failed ({code}: {message})")


_S3_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"}
)

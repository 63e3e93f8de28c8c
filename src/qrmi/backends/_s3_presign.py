"""Presigned S3 URLs: SigV4 query-string authentication, path-style addressing.

The IBM Quantum System backend signs six URLs per task (three for the service, three for its
own requests). botocore's ``generate_presigned_url`` spends about 0.4 ms of CPU on each (its
client's event hooks, request model and serializer), and its signer alone on a ready request
(``S3SigV4QueryAuth.add_auth``) about 0.1 ms, which was still a third of the client's CPU in a
task (``benchmarks/bench_throughput.py``; profile in ``docs/benchmarks.md``): it parses the URL
it was just given, re-encodes the query and derives the signing key with four HMACs per
signature. The signing itself is a few lines of the AWS specification (``hmac`` and
``hashlib``), so this module builds the canonical request from its parts and keeps the day's
signing key. botocore is the oracle: the tests check that every URL equals
``generate_presigned_url``'s, byte for byte, for keys, headers and queries of every kind.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

__all__ = ["Presigner"]

ALGORITHM = "AWS4-HMAC-SHA256"
#: The payload hash of every presigned request: the payload is not known when signing.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _pairs(query: str) -> list[tuple[str, str]]:
    """The encoded ``(key, value)`` pairs of ``query``, which SigV4 sorts as pairs."""
    return [(key, value) for key, _, value in (item.partition("=") for item in query.split("&"))]


def _host_header(url: str) -> str:
    """The Host header of ``url`` as SigV4 signs it: lower case, an IPv6 address in brackets,
    the port unless it is the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _encoded(text: str) -> str:
    """URI-encode ``text`` as SigV4 wants query keys and values: all but ``A-Za-z0-9-_.~``."""
    return quote(text, safe="-_.~")


class Presigner:
    """Presigns requests to buckets at ``endpoint`` (``http(s)://host[:port][/prefix]``)."""

    def __init__(self, endpoint: str, region: str, key_id: str, secret: str) -> None:
        parts = urlsplit(endpoint)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path_prefix = parts.path.rstrip("/")
        self._host = _host_header(endpoint)
        self._region = region
        self._key_id = key_id
        self._secret = secret
        self._day_key: tuple[str, bytes] = ("", b"")

    def presign(
        self,
        method: str,
        bucket: str,
        key: str,
        expires: int,
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> str:
        """A URL for ``method`` on ``bucket/key`` valid ``expires`` seconds; ``headers``
        (``x-amz-tagging``, ...) are signed: the request must send them unchanged. ``query``
        adds parameters (``{"tagging": ""}`` for the object's tags)."""
        timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = timestamp[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        signed = {"host": self._host}
        for name, value in (headers or {}).items():
            signed[name.lower()] = " ".join(value.split())
        names = sorted(signed)
        signed_names = ";".join(names)
        operation = "".join(f"{_encoded(k)}={_encoded(v)}&" for k, v in (query or {}).items())
        auth = (
            f"X-Amz-Algorithm={ALGORITHM}"
            f"&X-Amz-Credential={_encoded(f'{self._key_id}/{scope}')}"
            f"&X-Amz-Date={timestamp}&X-Amz-Expires={int(expires)}"
            f"&X-Amz-SignedHeaders={_encoded(signed_names)}"
        )
        query_string = operation + auth
        path = self.path(bucket, key)
        canonical_request = "\n".join(
            (
                method.upper(),
                path,
                "&".join(f"{k}={v}" for k, v in sorted(_pairs(query_string))),
                "".join(f"{name}:{signed[name]}\n" for name in names),
                signed_names,
                UNSIGNED_PAYLOAD,
            )
        )
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                timestamp,
                scope,
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            )
        )
        signature = hmac.new(
            self._signing_key(day), string_to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        return f"{self._origin}{path}?{query_string}&X-Amz-Signature={signature}"

    def path(self, bucket: str, key: str) -> str:
        """The URL path of ``bucket/key`` at this endpoint."""
        return f"{self._path_prefix}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"

    def _signing_key(self, day: str) -> bytes:
        """The key of ``day`` (``YYYYMMDD``): four HMACs, derived once a day."""
        known_day, key = self._day_key
        if known_day != day:
            key = f"AWS4{self._secret}".encode()
            for part in (day, self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
            self._day_key = (day, key)
        return key

"""qrmi.backends._s3_presign gives, byte for byte, the URL botocore gives (same second)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from qrmi.backends._s3_presign import Presigner

KEY_ID, SECRET, REGION = "AKIAQRMIFAKE00000000", "fake-secret-access-key-qrmi", "us-east-1"


def s3_client(endpoint: str, region: str, key_id: str, secret: str) -> Any:
    """boto3's S3 client as the backend used to build it: the oracle of every URL below."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=region
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


@pytest.mark.parametrize(
    ("endpoint", "operation", "method", "key", "params", "headers"),
    [
        ("http://127.0.0.1:9000", "get_object", "GET", "results_1.json", {}, {}),
        ("https://s3.example.com", "head_object", "HEAD", "a b/ü+x.json", {}, {}),
        (
            "http://127.0.0.1:9000",
            "put_object",
            "PUT",
            "input_2.json",
            {"Tagging": "qrmi%3Auid=0&qrmi%3Aprogram_type=sampler"},
            {"x-amz-tagging": "qrmi%3Auid=0&qrmi%3Aprogram_type=sampler"},
        ),
        ("http://127.0.0.1:9000", "put_object", "PUT", "logs_3.json", {}, {}),
        ("http://127.0.0.1:80", "get_object", "GET", "results_4.json", {}, {}),  # default port
        ("https://s3.example.com:8443", "get_object", "GET", "results_5.json", {}, {}),
    ],
)
def test_signatures_equal_botocores(
    endpoint: str,
    operation: str,
    method: str,
    key: str,
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    client = s3_client(endpoint, REGION, KEY_ID, SECRET)
    presigner = Presigner(endpoint, REGION, KEY_ID, SECRET)

    def both() -> tuple[str, str]:
        theirs = client.generate_presigned_url(
            operation, Params={"Bucket": "jobs", "Key": key, **params}, ExpiresIn=600
        )
        return theirs, presigner.presign(method, "jobs", key, 600, headers=headers)

    theirs, ours = same_second(both)

    assert ours == theirs


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9000",
        "https://s3.example.com:443/store/",  # a path prefix; the default port left out
        "http://[::1]:9000",
    ],
)
def test_any_key_is_encoded_and_signed_as_botocore_does(endpoint: str) -> None:
    client = s3_client(endpoint, REGION, KEY_ID, SECRET)
    presigner = Presigner(endpoint, REGION, KEY_ID, SECRET)
    characters = string.ascii_letters + string.digits + " -_.~!*'()/+=&?%#:@,;ü€\u00a0"
    rng = random.Random(14)
    for _ in range(100):
        key = "".join(rng.choice(characters) for _ in range(rng.randint(1, 24)))

        def both(key: str = key) -> tuple[str, str]:
            theirs = client.generate_presigned_url(
                "get_object", Params={"Bucket": "jobs-1", "Key": key}, ExpiresIn=300
            )
            return theirs, presigner.presign("GET", "jobs-1", key, 300)

        theirs, ours = same_second(both)
        assert ours == theirs, key


def same_second(make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    """Two URLs signed within the same second (their X-Amz-Date and signature then agree)."""
    for _ in range(5):
        first, second = make()
        if _amz_date(first) == _amz_date(second):
            return first, second
    raise AssertionError("could not sign twice within one second")


def _amz_date(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Date"][0]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({"tagging": ""}, {}),
        # Keys one of which begins the other: SigV4 sorts (key, value) pairs, not "k=v" texts.
        ({"a-b": "1", "a": "x y", "versionId": "é/+"}, {}),
        ({}, {"X-Amz-Tagging": "  qrmi%3Auid=0   &a=b ", "x-amz-meta-run": "one  two"}),
    ],
)
def test_queries_and_headers_are_signed_as_botocore_signs_them(
    query: dict[str, str], headers: dict[str, str]
) -> None:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    endpoint = "http://127.0.0.1:9000"
    presigner = Presigner(endpoint, REGION, KEY_ID, SECRET)
    suffix = f"?{urlencode(query)}" if query else ""

    def both() -> tuple[str, str]:
        request = AWSRequest(
            method="PUT", url=f"{endpoint}/jobs/input_1.json{suffix}", headers=headers, data=b""
        )
        signer = S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", REGION, expires=300)
        signer.add_auth(request)
        ours = presigner.presign("PUT", "jobs", "input_1.json", 300, headers=headers, query=query)
        return str(request.url), ours

    theirs, ours = same_second(both)

    assert ours == theirs

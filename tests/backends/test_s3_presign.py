"""qrmi.backends._s3_presign gives the URL botocore's generate_presigned_url gives (same second)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from qrmi.backends._s3_presign import Presigner
from qrmi.backends.ibm_quantum_system import _s3_client

KEY_ID, SECRET, REGION = "AKIAQRMIFAKE00000000", "fake-secret-access-key-qrmi", "us-east-1"


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
    client = _s3_client(endpoint, REGION, KEY_ID, SECRET)
    presigner = Presigner(endpoint, REGION, KEY_ID, SECRET)

    def both() -> tuple[str, str]:
        theirs = client.generate_presigned_url(
            operation, Params={"Bucket": "jobs", "Key": key, **params}, ExpiresIn=600
        )
        return theirs, presigner.presign(method, "jobs", key, 600, headers=headers)

    theirs, ours = same_second(both)

    assert parse_qs(urlsplit(ours).query) == parse_qs(urlsplit(theirs).query)
    assert ours.split("?")[0] == theirs.split("?")[0]


def same_second(make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    """Two URLs signed within the same second (their X-Amz-Date and signature then agree)."""
    for _ in range(5):
        first, second = make()
        if _amz_date(first) == _amz_date(second):
            return first, second
    raise AssertionError("could not sign twice within one second")


def _amz_date(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Date"][0]


def test_a_subresource_query_is_signed_as_botocore_signs_it() -> None:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    endpoint = "http://127.0.0.1:9000"
    presigner = Presigner(endpoint, REGION, KEY_ID, SECRET)

    def both() -> tuple[str, str]:
        request = AWSRequest(method="PUT", url=f"{endpoint}/jobs/input_1.json?tagging=", data=b"")
        signer = S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", REGION, expires=300)
        signer.add_auth(request)
        ours = presigner.presign("PUT", "jobs", "input_1.json", 300, query={"tagging": ""})
        return request.url, ours

    theirs, ours = same_second(both)

    assert parse_qs(urlsplit(ours).query, keep_blank_values=True) == parse_qs(
        urlsplit(theirs).query, keep_blank_values=True
    )

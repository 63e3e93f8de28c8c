"""qrmi.backends._s3_presign signs exactly as botocore does (same instant, same signature)."""

from __future__ import annotations

import datetime
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
    theirs = client.generate_presigned_url(
        operation, Params={"Bucket": "jobs", "Key": key, **params}, ExpiresIn=600
    )
    their_query = parse_qs(urlsplit(theirs).query)
    when = datetime.datetime.strptime(their_query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.UTC
    )

    ours = Presigner(endpoint, REGION, KEY_ID, SECRET).presign(
        method, "jobs", key, 600, headers=headers, now=when
    )

    our_query = parse_qs(urlsplit(ours).query)
    assert our_query == their_query
    assert urlsplit(ours).path == urlsplit(theirs).path
    assert ours.split("?")[0] == theirs.split("?")[0]


def test_a_subresource_query_is_signed_as_botocore_signs_it() -> None:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    endpoint = "http://127.0.0.1:9000"
    request = AWSRequest(method="PUT", url=f"{endpoint}/jobs/input_1.json?tagging=", data=b"")
    S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", REGION, expires=300).add_auth(request)
    theirs = request.url
    their_query = parse_qs(urlsplit(theirs).query, keep_blank_values=True)
    when = datetime.datetime.strptime(their_query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.UTC
    )

    ours = Presigner(endpoint, REGION, KEY_ID, SECRET).presign(
        "PUT", "jobs", "input_1.json", 300, query={"tagging": ""}, now=when
    )

    assert parse_qs(urlsplit(ours).query, keep_blank_values=True) == their_query

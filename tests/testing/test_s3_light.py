"""LightS3: the operations the IBM Quantum System backend, the reference and the fake use."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from qrmi.testing.s3_light import LightS3


@pytest.fixture(scope="module")
def store() -> Iterator[LightS3]:
    with LightS3() as running:
        yield running  # type: ignore[misc]


def test_objects_tags_listing_and_errors_through_boto3(store: LightS3) -> None:
    client = store.client()
    client.put_object(Bucket=store.bucket, Key="in.json", Body=b'{"a": 1}', Tagging="k=v&x=1")
    assert client.get_object(Bucket=store.bucket, Key="in.json")["Body"].read() == b'{"a": 1}'
    assert client.head_object(Bucket=store.bucket, Key="in.json")["ContentLength"] == 8
    tags = client.get_object_tagging(Bucket=store.bucket, Key="in.json")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"k": "v", "x": "1"}
    client.put_object_tagging(
        Bucket=store.bucket, Key="in.json", Tagging={"TagSet": [{"Key": "s", "Value": "done"}]}
    )
    tags = client.get_object_tagging(Bucket=store.bucket, Key="in.json")["TagSet"]
    assert tags == [{"Key": "s", "Value": "done"}]
    assert "in.json" in store.keys()  # noqa: SIM118 - a list of S3 keys
    listed = client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert [item["Key"] for item in listed] == store.keys()
    with pytest.raises(ClientError, match="NoSuchKey"):
        client.get_object(Bucket=store.bucket, Key="missing.json")
    with pytest.raises(ClientError, match="NoSuchBucket"):
        client.get_object(Bucket="other", Key="in.json")


def test_presigned_put_and_get_as_the_service_does(store: LightS3) -> None:
    client = store.client()
    put = client.generate_presigned_url(
        "put_object", Params={"Bucket": store.bucket, "Key": "results.json"}, ExpiresIn=60
    )
    urllib.request.urlopen(urllib.request.Request(put, data=b"[1]", method="PUT"), timeout=10)
    get = client.generate_presigned_url(
        "get_object", Params={"Bucket": store.bucket, "Key": "results.json"}, ExpiresIn=60
    )
    with urllib.request.urlopen(get, timeout=10) as answer:
        assert answer.read() == b"[1]"
    assert store.read("results.json") == b"[1]"


def test_aws_chunked_uploads_are_decoded(store: LightS3) -> None:
    body = b"5;chunk-signature=ab\r\nhello\r\n6;chunk-signature=cd\r\n world\r\n0;x=y\r\n\r\n"
    request = urllib.request.Request(
        f"{store.url}/{store.bucket}/chunked.txt",
        data=body,
        method="PUT",
        headers={
            "Content-Encoding": "aws-chunked",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        },
    )
    urllib.request.urlopen(request, timeout=10)
    assert store.read("chunked.txt") == b"hello world"

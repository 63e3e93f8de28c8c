"""An S3-compatible store on 127.0.0.1: moto's server in a background thread.

moto keeps its state per process, so every :class:`S3Fake` creates its own bucket (a random
name unless one is given) to stay independent of other fakes in the same process. Path-style
addressing and SigV4 presigned URLs work as on AWS, MinIO or Ceph.

``S3Fake(own_process=True)`` runs moto in a child process instead of a thread: the same server,
but with an interpreter (and GIL) of its own, so that a busy store does not slow down the fakes
that share the parent process (the benchmarks use it). The child ends with its parent.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from typing import Any

__all__ = ["S3Fake", "store_client"]

#: Credentials the fake accepts (moto accepts any; these are what the settings dicts carry).
FAKE_ACCESS_KEY_ID = "AKIAQRMIFAKE00000000"
FAKE_SECRET_ACCESS_KEY = "fake-secret-access-key-qrmi"

# Run by the child of S3Fake(own_process=True): serve, say the port, stop when stdin closes.
_CHILD = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address=sys.argv[1], port=int(sys.argv[2]), verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


def store_client(url: str, access_key_id: str, secret_access_key: str, region: str) -> Any:
    """A boto3 S3 client for the store at ``url`` (path-style, SigV4)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
    ).client(
        "s3",
        endpoint_url=url,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


class S3Fake:
    """moto's S3 server on ``host`` (port 0: a free one) with one bucket, :attr:`bucket`."""

    def __init__(
        self,
        *,
        bucket: str | None = None,
        region: str = "us-east-1",
        host: str = "127.0.0.1",
        port: int = 0,
        own_process: bool = False,
    ) -> None:
        self.bucket = bucket or f"qrmi-jobs-{uuid.uuid4().hex[:12]}"
        self.own_process = own_process
        self._child: subprocess.Popen[str] | None = None
        self.region = region
        self.host = host
        self._port = port
        self.access_key_id = FAKE_ACCESS_KEY_ID
        self.secret_access_key = FAKE_SECRET_ACCESS_KEY
        self._server: Any = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None and self._child is None:
            raise RuntimeError("S3Fake is not running: call start() first.")
        return f"http://{self.host}:{self._port}"

    def start(self) -> S3Fake:
        """Start the server (no-op if running) and create the bucket."""
        if self._server is not None or self._child is not None:
            return self
        if self.own_process:
            self._start_child()
            self.client().create_bucket(Bucket=self.bucket)
            return self
        from moto.server import ThreadedMotoServer

        quiet = logging.getLogger("werkzeug")  # moto's server logs every request to stderr
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=self._port, verbose=False)
        server.start()
        self._server = server
        self._port = server.get_host_and_port()[1]
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def _start_child(self) -> None:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.host, str(self._port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.isdigit():
            child.kill()
            child.wait(timeout=10)
            raise RuntimeError(f"moto's S3 server did not start in a child process ({line!r})")
        self._child = child
        self._port = int(line)

    def stop(self) -> None:
        """Stop the server; no-op if not running."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._child is not None:
            child, self._child = self._child, None
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=15)
            if child.stdout is not None:
                child.stdout.close()

    def client(self) -> Any:
        """A boto3 S3 client for this store (path-style, SigV4)."""
        return store_client(self.url, self.access_key_id, self.secret_access_key, self.region)

    def keys(self) -> list[str]:
        """The object keys in the bucket, sorted."""
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        """The bytes of object ``key``."""
        data: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def __enter__(self) -> S3Fake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = self._server is not None or self._child is not None
        state = "running" if running else "stopped"
        return f"S3Fake(bucket={self.bucket!r}, {state})"

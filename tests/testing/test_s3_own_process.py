"""S3Fake(own_process=True): moto in a child process, same behaviour for clients."""

from __future__ import annotations

from qrmi.testing.s3 import S3Fake


def test_a_store_in_a_child_process_serves_objects_then_ends_with_stop() -> None:
    store = S3Fake(own_process=True).start()
    try:
        child = store._child
        assert child is not None and child.poll() is None
        store.client().put_object(Bucket=store.bucket, Key="a.json", Body=b"{}")
        assert store.keys() == ["a.json"]
        assert store.read("a.json") == b"{}"
        assert store.start() is store  # already running: no second child
    finally:
        store.stop()
    assert child.poll() is not None
    assert "stopped" in repr(store)

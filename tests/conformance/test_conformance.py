"""The conformance suite: what every backend must do, whatever the vendor."""

from __future__ import annotations

import json
import uuid

import pytest

from conformance.harness import BackendHarness, Tasks, wait_for_status
from qrmi.errors import TaskNotFoundError, TaskNotReadyError, UnsupportedPayloadError
from qrmi.models import ResourceStatus, ResourceStatusCode, TaskResult, TaskStatus
from qrmi.protocol import QuantumResourceProtocol


def _is_final(status: TaskStatus) -> bool:
    return status.is_final


def _is_running(status: TaskStatus) -> bool:
    return status == TaskStatus.Running or status.is_final


def test_resource_satisfies_the_protocol(resource: QuantumResourceProtocol) -> None:
    assert isinstance(resource, QuantumResourceProtocol)
    assert isinstance(resource.resource_id(), str) and resource.resource_id()


def test_status_has_the_documented_shape(resource: QuantumResourceProtocol) -> None:
    status = resource.status()

    assert isinstance(status, ResourceStatus)
    assert isinstance(status.status, ResourceStatusCode)
    assert status.status == ResourceStatusCode.Online
    json.dumps(status.to_dict())
    if status.capacity is not None:
        assert 0 <= status.capacity.available_slots <= status.capacity.max_slots
    if status.pending_job_count is not None:
        assert status.pending_job_count >= 0


def test_is_accessible_when_online(resource: QuantumResourceProtocol) -> None:
    assert resource.is_accessible() is True


def test_acquire_returns_a_token_and_release_is_idempotent(
    resource: QuantumResourceProtocol,
) -> None:
    token = resource.acquire()

    assert isinstance(token, str) and token
    resource.release(token)
    resource.release(token)


def test_two_acquisitions_get_different_tokens(resource: QuantumResourceProtocol) -> None:
    first, second = resource.acquire(), resource.acquire()
    try:
        assert first != second
    finally:
        resource.release(first)
        resource.release(second)


def test_task_lifecycle_ends_completed_with_a_result(
    harness: BackendHarness, resource: QuantumResourceProtocol, tasks: Tasks
) -> None:
    task_id = tasks.start(harness.quick_payload())

    assert isinstance(task_id, str) and task_id
    assert isinstance(resource.task_status(task_id), TaskStatus)
    final = wait_for_status(resource, task_id, _is_final, harness.timeout)
    assert final == TaskStatus.Completed, resource.task_logs(task_id)
    result = resource.task_result(task_id)
    assert isinstance(result, TaskResult)
    assert isinstance(result.value, str) and result.value
    if harness.check_result is not None:
        harness.check_result(result.value)
    assert isinstance(resource.task_logs(task_id), str)


def test_task_wait_returns_the_final_status(
    harness: BackendHarness, resource: QuantumResourceProtocol, tasks: Tasks
) -> None:
    task_id = tasks.start(harness.quick_payload())
    task_wait = getattr(resource, "task_wait", None)
    if task_wait is None:
        pytest.skip("resource has no task_wait (a pyqrmi extension)")

    assert task_wait(task_id, harness.timeout) == TaskStatus.Completed


def test_result_before_completion_is_not_ready(
    harness: BackendHarness, resource: QuantumResourceProtocol, tasks: Tasks
) -> None:
    task_id = tasks.start(harness.slow_payload())

    with pytest.raises(TaskNotReadyError):
        resource.task_result(task_id)


def test_stop_cancels_a_running_task(
    harness: BackendHarness, resource: QuantumResourceProtocol, tasks: Tasks
) -> None:
    task_id = tasks.start(harness.slow_payload())
    assert wait_for_status(resource, task_id, _is_running, harness.timeout) == TaskStatus.Running

    resource.task_stop(task_id)

    assert wait_for_status(resource, task_id, _is_final, harness.timeout) == TaskStatus.Cancelled
    with pytest.raises(TaskNotReadyError):
        resource.task_result(task_id)


def test_stop_cancels_a_queued_task_which_never_runs(
    harness: BackendHarness, resource: QuantumResourceProtocol, tasks: Tasks
) -> None:
    if harness.concurrency is None:
        pytest.skip("the backend cannot show a queued task")
    blockers = [tasks.start(harness.slow_payload()) for _ in range(harness.concurrency)]
    for blocker in blockers:
        wait_for_status(resource, blocker, _is_running, harness.timeout)
    queued = tasks.start(harness.slow_payload())
    assert resource.task_status(queued) == TaskStatus.Queued

    resource.task_stop(queued)
    for blocker in blockers:
        resource.task_stop(blocker)

    assert resource.task_status(queued) == TaskStatus.Cancelled
    follower = tasks.start(harness.quick_payload())
    assert wait_for_status(resource, follower, _is_final, harness.timeout) == TaskStatus.Completed
    assert resource.task_status(queued) == TaskStatus.Cancelled


def test_stop_after_completion_keeps_the_result(
    harness: BackendHarness, resource: QuantumResourceProtocol, tasks: Tasks
) -> None:
    task_id = tasks.start(harness.quick_payload())
    wait_for_status(resource, task_id, _is_final, harness.timeout)
    before = resource.task_result(task_id).value

    resource.task_stop(task_id)
    resource.task_stop(task_id)

    assert resource.task_status(task_id) == TaskStatus.Completed
    assert resource.task_result(task_id).value == before


@pytest.mark.parametrize("call", ["task_status", "task_result", "task_stop", "task_logs"])
def test_unknown_task_id_is_not_found(resource: QuantumResourceProtocol, call: str) -> None:
    unknown = str(uuid.uuid4())

    with pytest.raises(TaskNotFoundError, match=unknown):
        getattr(resource, call)(unknown)


def test_unsupported_payload_variant_is_refused(
    harness: BackendHarness, resource: QuantumResourceProtocol
) -> None:
    with pytest.raises(UnsupportedPayloadError, match="not supported"):
        resource.task_start(harness.unsupported_payload())


def test_target_is_json(resource: QuantumResourceProtocol) -> None:
    target = resource.target()

    assert isinstance(target.value, str)
    assert isinstance(json.loads(target.value), dict | list)


def test_metadata_is_a_dict_of_strings(resource: QuantumResourceProtocol) -> None:
    metadata = resource.metadata()

    assert isinstance(metadata, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    assert metadata.get("backend_name")

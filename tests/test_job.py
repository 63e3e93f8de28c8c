"""The job environment contract: resource lists, delimiter, legacy names, plugin errors."""

from __future__ import annotations

import pytest

from qrmi import QRMIService, get_job_qpu_resources_and_types


def test_lists_are_read_in_order() -> None:
    env = {"QRMI_JOB_QPU_RESOURCES": "a,b", "QRMI_JOB_QPU_TYPES": "local-emulator,pasqal-cloud"}
    assert get_job_qpu_resources_and_types(env) == (["a", "b"], ["local-emulator", "pasqal-cloud"])


def test_legacy_names_and_delimiter() -> None:
    env = {
        "SLURM_JOB_QPU_RESOURCES": "a:b",
        "SLURM_JOB_QPU_TYPES": "x:y",
        "QRMI_LIST_DELIMITER": ":",
    }
    assert get_job_qpu_resources_and_types(env) == (["a", "b"], ["x", "y"])


def test_new_names_win_over_legacy() -> None:
    env = {
        "QRMI_JOB_QPU_RESOURCES": "new",
        "QRMI_JOB_QPU_TYPES": "t",
        "SLURM_JOB_QPU_RESOURCES": "old",
        "SLURM_JOB_QPU_TYPES": "t",
    }
    assert get_job_qpu_resources_and_types(env)[0] == ["new"]


def test_missing_variables() -> None:
    with pytest.raises(RuntimeError, match="run inside a job submitted with --qpu"):
        get_job_qpu_resources_and_types({})


def test_length_mismatch() -> None:
    env = {"QRMI_JOB_QPU_RESOURCES": "a,b", "QRMI_JOB_QPU_TYPES": "t"}
    with pytest.raises(ValueError, match="lists 2 resources but QRMI_JOB_QPU_TYPES lists 1"):
        get_job_qpu_resources_and_types(env)


def test_plugin_error_is_raised() -> None:
    with pytest.raises(RuntimeError, match="acquire failed"):
        QRMIService({"QRMI_PLUGIN_ERROR": "acquire failed"})


def test_unknown_types_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    env = {"QRMI_JOB_QPU_RESOURCES": "weird", "QRMI_JOB_QPU_TYPES": "no-such-type"}
    service = QRMIService(env)
    assert service.resources() == []
    assert service.resource("weird") is None
    assert "skipping QPU resource weird" in caplog.text

"""What a job sees: the QPU resources the workload manager acquired for it.

The Slurm plugin (and the reference's) sets ``QRMI_JOB_QPU_RESOURCES`` and
``QRMI_JOB_QPU_TYPES`` (older name: ``SLURM_JOB_QPU_*``), split by ``QRMI_LIST_DELIMITER``
(default ``,``), plus each resource's ``{name}_{KEY}`` settings. Outside a job,
:class:`QRMIService` falls back to the configured resources, or to the local emulator, so the same
program runs on a laptop and under ``sbatch --qpu=...``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from qrmi.config import Config
from qrmi.errors import QrmiError
from qrmi.models import ResourceType
from qrmi.resource import QuantumResource

__all__ = ["QRMIService", "get_job_qpu_resources_and_types"]

logger = logging.getLogger(__name__)

RESOURCES_VAR = "QRMI_JOB_QPU_RESOURCES"
TYPES_VAR = "QRMI_JOB_QPU_TYPES"
LEGACY_RESOURCES_VAR = "SLURM_JOB_QPU_RESOURCES"
LEGACY_TYPES_VAR = "SLURM_JOB_QPU_TYPES"
DELIMITER_VAR = "QRMI_LIST_DELIMITER"
PLUGIN_ERROR_VAR = "QRMI_PLUGIN_ERROR"


def _job_list(
    environ: Mapping[str, str], name: str, legacy: str, delimiter: str
) -> list[str] | None:
    raw = environ.get(name)
    if raw is None:
        raw = environ.get(legacy)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(delimiter) if item.strip()]


def get_job_qpu_resources_and_types(
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """The job's resource names and their type strings, in ``--qpu`` order.

    Raises:
        RuntimeError: the variables are not set (not running inside a QPU job).
        ValueError: the two lists have different lengths.
    """
    env = os.environ if environ is None else environ
    delimiter = env.get(DELIMITER_VAR) or ","
    names = _job_list(env, RESOURCES_VAR, LEGACY_RESOURCES_VAR, delimiter)
    types = _job_list(env, TYPES_VAR, LEGACY_TYPES_VAR, delimiter)
    if names is None or types is None:
        raise RuntimeError(
            f"{RESOURCES_VAR} and {TYPES_VAR} are not set: run inside a job submitted with "
            "--qpu=NAMES (e.g. '#SBATCH --qpu=ibm_fez')"
        )
    if len(names) != len(types):
        raise ValueError(
            f"{RESOURCES_VAR} lists {len(names)} resources but {TYPES_VAR} lists "
            f"{len(types)} types; they must pair up one to one"
        )
    if not names:
        logger.warning("the job has no QPU resources (%s is empty)", RESOURCES_VAR)
    return names, types


class QRMIService:
    """The resources available to this program.

    Inside a QPU job: the job's resources (those that are accessible). Outside one: the
    resources of the QRMI config file (``$QRMI_CONFIG_FILE`` or ``/etc/slurm/qrmi_config.json``
    when readable), or the local emulator named ``local`` when there is no config.

    Raises:
        RuntimeError: the Slurm plugin reported an error (``QRMI_PLUGIN_ERROR``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        plugin_error = env.get(PLUGIN_ERROR_VAR)
        if plugin_error:
            raise RuntimeError(plugin_error)
        self._resources: dict[str, QuantumResource] = {}
        if env.get(RESOURCES_VAR) is not None or env.get(LEGACY_RESOURCES_VAR) is not None:
            self._load_job(env)
        else:
            self._load_config(env)

    def _load_job(self, env: Mapping[str, str]) -> None:
        names, types = get_job_qpu_resources_and_types(env)
        for name, type_string in zip(names, types, strict=True):
            self._add(name, type_string, None, env)

    def _load_config(self, env: Mapping[str, str]) -> None:
        config = Config.find() or Config.default()
        for rdef in config.resource_map.values():
            if not rdef.is_dynamic:
                self._add(rdef.name, rdef.resource_type, rdef.environment, env)

    def _add(
        self,
        name: str,
        kind: ResourceType | str,
        config: Mapping[str, str] | None,
        env: Mapping[str, str],
    ) -> None:
        try:
            resource = QuantumResource(name, kind, config=config, environ=env)
            accessible = resource.is_accessible()
        except QrmiError as exc:
            logger.warning("skipping QPU resource %s: %s", name, exc)
            return
        if not accessible:
            logger.warning("skipping QPU resource %s: it is not accessible", name)
            return
        self._resources[name] = resource

    def resources(self) -> list[QuantumResource]:
        """The accessible resources, in job order."""
        return list(self._resources.values())

    def resource(self, resource_id: str) -> QuantumResource | None:
        """The resource named ``resource_id``, or ``None``."""
        return self._resources.get(resource_id)

"""Configuration: the ``qrmi_config.json`` file and per-resource settings.

The file format is the reference's::

    {"resources": [{"name": "ibm_fez", "type": "ibm-quantum-system",
                    "environment": {"QRMI_IBM_QS_ENDPOINT": "https://..."}}]}

A backend reads its settings through :class:`Settings`: an explicit dict of unprefixed keys
(``QuantumResource.from_config``) wins over the process environment's ``{name}_{KEY}``
variables. Nothing here writes to ``os.environ``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Settings hold credentials, and every module that reads them imports this one: loading
# qrmi.log here masks credentials in the log records of all of them (and of every other qrmi.*
# logger), even when an application imports a submodule without going through ``qrmi.X``.
import qrmi.log  # noqa: F401
from qrmi.errors import ConfigError, EnvVarNotSetError, UnsupportedResourceTypeError
from qrmi.models import ResourceType
from qrmi.registry import did_you_mean, parse_type

if TYPE_CHECKING:
    from qrmi.gateway.quota import QuotaRule

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATHS",
    "DEFAULT_LOCAL_RESOURCE",
    "MAX_CONFIG_BYTES",
    "Config",
    "ResourceDef",
    "Settings",
]

#: Environment variable naming the config file, for tools run outside Slurm.
CONFIG_ENV_VAR = "QRMI_CONFIG_FILE"
#: Where the config is looked for when neither an argument nor ``QRMI_CONFIG_FILE`` names one.
DEFAULT_CONFIG_PATHS = (Path("/etc/slurm/qrmi_config.json"), Path("/etc/qrmi/qrmi_config.json"))
#: The resource available when no configuration exists at all.
DEFAULT_LOCAL_RESOURCE = "local"

#: Larger config files are refused: a config describes QPUs; this guards against a wrong file.
MAX_CONFIG_BYTES = 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ResourceDef:
    """One resource of the config file."""

    name: str
    resource_type: ResourceType | str
    is_dynamic: bool = False
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """A loaded ``qrmi_config.json``; ``resource_map`` maps names to definitions and
    ``quotas`` holds the rules of the optional ``"quotas"`` key (:mod:`qrmi.gateway.quota`)."""

    resource_map: dict[str, ResourceDef]
    path: Path | None = None
    quotas: tuple[QuotaRule, ...] = ()

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Config:
        """Read and validate a config file.

        Raises:
            ConfigError: the file is missing, unreadable, not a regular file, larger than
                :data:`MAX_CONFIG_BYTES`, not UTF-8, not JSON (or nested too deeply), or does
                not follow the format (unknown keys, unknown types, duplicate names,
                non-string values).
        """
        file = Path(path)
        data = _parse_json(_read_config_text(file), file)
        return Config.from_dict(data, path=file)

    @staticmethod
    def from_dict(data: Any, *, path: Path | None = None) -> Config:
        """Validate an already parsed config object (see :meth:`load`)."""
        where = f"QRMI config file {path}" if path else "QRMI config"
        problems: list[str] = []
        resource_map: dict[str, ResourceDef] = {}
        for index, item in enumerate(_resource_list(data, problems)):
            rdef = _resource_def(item, f"resources[{index}]", problems)
            if rdef is None:
                continue
            if rdef.name in resource_map:
                problems.append(
                    f"resources[{index}]: resource {rdef.name!r} is defined twice; "
                    "names must be unique"
                )
            resource_map[rdef.name] = rdef
        quotas = _quotas(data, resource_map, problems)
        if problems:
            raise ConfigError(f"{where} is invalid:\n" + "\n".join(f"  {p}" for p in problems))
        return Config(resource_map=resource_map, path=path, quotas=quotas)

    @staticmethod
    def find(path: str | os.PathLike[str] | None = None) -> Config | None:
        """Load the config named by ``path``, ``$QRMI_CONFIG_FILE`` or a default location.

        Returns ``None`` when no path was given and no default file exists.
        """
        if path is not None:
            return Config.load(path)
        env_path = os.environ.get(CONFIG_ENV_VAR, "").strip()
        if env_path:
            return Config.load(env_path)
        for candidate in DEFAULT_CONFIG_PATHS:
            if candidate.is_file() and os.access(candidate, os.R_OK):
                return Config.load(candidate)
        return None

    @staticmethod
    def default() -> Config:
        """The configuration used when none exists: one local emulator named ``local``."""
        local = ResourceDef(DEFAULT_LOCAL_RESOURCE, ResourceType.LocalEmulator)
        return Config(resource_map={local.name: local})

    def get(self, name: str) -> ResourceDef:
        """The definition of ``name``.

        Raises:
            ConfigError: no resource of that name; the message lists the ones that exist.
        """
        try:
            return self.resource_map[name]
        except KeyError:
            known = sorted(self.resource_map)
            where = f"in {self.path}" if self.path else "in the configuration"
            raise ConfigError(
                f"unknown resource {name!r}{did_you_mean(name, known)} {where}; "
                f"configured resources are: {', '.join(known) or '(none)'}"
            ) from None


def _read_config_text(file: Path) -> str:
    """The file's text, refusing what is not a small regular UTF-8 file.

    A FIFO or a device would block ``open`` or ``read`` forever, so the type is checked with
    ``stat`` first and the file opened with ``O_NONBLOCK`` (a FIFO swapped in between cannot
    block either), then checked again on the open descriptor.
    """
    try:
        _require_regular(file, os.stat(file).st_mode)
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read QRMI config file {file}: {exc.strerror}") from None
    try:
        _require_regular(file, os.fstat(fd).st_mode)
        raw = _read_at_most(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read QRMI config file {file}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"QRMI config file {file} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
            "a config describes QPUs and their settings: check that this is the right file"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"QRMI config file {file} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}; save it as UTF-8"
        ) from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _require_regular(file: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = file_kind(mode)
        raise ConfigError(
            f"QRMI config file {file} is {kind}; name a regular JSON file "
            "(/etc/slurm/qrmi_config.json by default)"
        )


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, for messages ("a FIFO (named pipe)", ...)."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _parse_json(text: str, file: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"QRMI config file {file} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"QRMI config file {file} is nested too deeply to be a QRMI config "
            '(expected {"resources": [{"name": ..., "environment": {...}}]})'
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError(f"QRMI config file {file} is not valid JSON: {exc}") from None


_RESOURCE_KEYS = ("name", "type", "environment", "is_dynamic")
_TOP_LEVEL_KEYS = ("resources", "quotas")


def _resource_list(data: Any, problems: list[str]) -> list[Any]:
    if not isinstance(data, dict):
        problems.append('the top level must be an object like {"resources": [...]}')
        return []
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            problems.append(
                f"{key!r}: unknown key; the top-level keys are "
                f"{', '.join(repr(k) for k in _TOP_LEVEL_KEYS)}"
            )
    resources = data.get("resources", [])
    if not isinstance(resources, list):
        problems.append('"resources" must be a list of resource objects')
        return []
    return resources


def _quotas(
    data: Any, resource_map: Mapping[str, ResourceDef], problems: list[str]
) -> tuple[QuotaRule, ...]:
    """The ``"quotas"`` rules (validated by :mod:`qrmi.gateway.quota`, imported only when the
    key is there: the Slurm helper's start stays fast)."""
    if not isinstance(data, dict) or "quotas" not in data:
        return ()
    from qrmi.gateway.quota import parse_quotas

    return parse_quotas(data["quotas"], resource_map, problems)


def _resource_def(item: Any, where: str, problems: list[str]) -> ResourceDef | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: must be an object with keys {', '.join(_RESOURCE_KEYS)}")
        return None
    name = item.get("name")
    if isinstance(name, str):
        where = f"{where} ({name!r})"
    before = len(problems)
    for key in item:
        if key not in _RESOURCE_KEYS:
            problems.append(
                f"{where}: unknown key {key!r}; valid keys are {', '.join(_RESOURCE_KEYS)}"
            )
    for key in ("name", "type", "environment"):
        if key not in item:
            hint = ' (write "environment": {} if empty)' if key == "environment" else ""
            problems.append(f"{where}: required key {key!r} is missing{hint}")
    if "name" in item:
        _check_name(item["name"], where, problems)
    kind: ResourceType | str | None = None
    if "type" in item:
        kind = _check_type(item["type"], where, problems)
    environment = item.get("environment", {})
    _check_environment(environment, where, problems)
    is_dynamic = item.get("is_dynamic", False)
    if not isinstance(is_dynamic, bool):
        problems.append(f"{where}: 'is_dynamic' must be true or false")
    if len(problems) > before or kind is None:
        return None
    return ResourceDef(str(name), kind, is_dynamic, dict(environment))


def _check_name(name: Any, where: str, problems: list[str]) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(
            f"{where}: resource name {name!r} must start with a letter or digit and contain "
            "only letters, digits, '_', '.' and '-' (it is used in --qpu lists, Slurm "
            "licenses and environment variable names)"
        )


def _check_type(kind: Any, where: str, problems: list[str]) -> ResourceType | str | None:
    if not isinstance(kind, str):
        problems.append(f"{where}: 'type' must be a type string such as \"local-emulator\"")
        return None
    try:
        return parse_type(kind)
    except UnsupportedResourceTypeError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _check_environment(environment: Any, where: str, problems: list[str]) -> None:
    if not isinstance(environment, dict):
        problems.append(f"{where}: 'environment' must be an object of KEY: \"value\" strings")
        return
    for key, value in environment.items():
        if not _KEY_RE.match(key):
            problems.append(f"{where}: environment key {key!r} is not a valid variable name")
        if not isinstance(value, str):
            problems.append(
                f"{where}: environment[{key!r}] must be a string; quote numbers and booleans "
                f"(got {_short_json(value)})"
            )


def _short_json(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Settings:
    """Per-resource settings, read as ``config[KEY]`` first, then ``environ[f"{name}_{KEY}"]``.

    Empty or blank values count as unset. Backends read every setting through this class so
    that error messages always name both places a setting can come from.
    """

    def __init__(
        self,
        resource_name: str,
        config: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.resource_name = resource_name
        self._config = dict(config or {})
        self._environ = os.environ if environ is None else environ

    def renamed(self, resource_name: str) -> Settings:
        """The same settings read as ``{resource_name}_{KEY}`` (IQM reads ``garnet_KEY`` for the
        resource ``garnet,<calibration set>``)."""
        return Settings(resource_name, self._config, self._environ)

    def env_name(self, key: str) -> str:
        """The environment variable that holds ``key`` for this resource."""
        return f"{self.resource_name}_{key}"

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``, or ``default`` when unset or blank."""
        for value in (self._config.get(key), self._environ.get(self.env_name(key))):
            if value is not None and value.strip():
                return value.strip()
        return default

    def get_global(self, name: str, default: str | None = None) -> str | None:
        """An unprefixed, job-level variable such as ``QRMI_JOB_ID`` (config dict first)."""
        for value in (self._config.get(name), self._environ.get(name)):
            if value is not None and value.strip():
                return value.strip()
        return default

    def require(self, key: str) -> str:
        """The value of ``key``.

        Raises:
            EnvVarNotSetError: the setting is missing; the message says where to set it.
        """
        value = self.get(key)
        if value is None:
            raise EnvVarNotSetError(
                f"{self.env_name(key)} environment variable is not set: set it, or add "
                f'"{key}" to the "environment" of resource {self.resource_name!r} in '
                "qrmi_config.json"
            )
        return value

    def get_int(self, key: str, default: int | None = None, *, minimum: int = 0) -> int | None:
        """``key`` as an integer >= ``minimum``; ``default`` when unset.

        Raises:
            ConfigError: the value is not an integer or is below ``minimum``.
        """
        raw = self.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(
                f"{self.env_name(key)}={raw!r} is not an integer; set it to a whole number"
            ) from None
        if value < minimum:
            raise ConfigError(f"{self.env_name(key)}={value} must be at least {minimum}")
        return value

    def get_float(self, key: str, default: float | None = None) -> float | None:
        """``key`` as a float; ``default`` when unset.

        Raises:
            ConfigError: the value is not a number.
        """
        raw = self.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{self.env_name(key)}={raw!r} is not a number") from None

    def get_bool(self, key: str, default: bool = False) -> bool:
        """``key`` as a boolean (true/false, yes/no, on/off, 1/0); ``default`` when unset.

        Raises:
            ConfigError: the value is none of the accepted spellings.
        """
        raw = self.get(key)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.env_name(key)}={raw!r} is not a boolean; use true or false")

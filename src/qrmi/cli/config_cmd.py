"""``qrmi config validate``: check a ``qrmi_config.json`` before Slurm reads it."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from qrmi.cli._common import error, out, warn
from qrmi.config import Config, ResourceDef
from qrmi.errors import ConfigError
from qrmi.models import ResourceType

__all__ = ["config_app", "config_warnings"]

config_app = typer.Typer(help="Check QRMI configuration files.", no_args_is_help=True)

# Setting-name prefixes of each built-in type; a key with another type's prefix is a
# copy-paste mistake the backend will silently ignore.
_PREFIXES: dict[str, tuple[str, ...]] = {
    "alice-bob-felis": ("QRMI_AB_FELIS_",),
    "ibm-quantum-compute-service": ("QRMI_IBM_QCS_",),
    "ibm-quantum-system": ("QRMI_IBM_QS_",),
    "iqm-server": ("QRMI_IQM_",),
    "local-emulator": ("QRMI_LOCAL_",),
    "pasqal-cloud": ("QRMI_PASQAL_CLOUD_",),
    "pasqal-local": ("QRMI_WARDEN_",),
    "qiskit-runtime-service": ("QRMI_IBM_QRS_",),
}

# Spellings found in the reference's own docs that its code never reads.
_MISSPELLINGS = {
    "QRMI_IBM_ISA_TOKEN": "QRMI_IQM_ISA_TOKEN",
    "QRMI_FELIS_API_KEY": "QRMI_AB_FELIS_API_KEY",
    "QRMI_IBM_DA_ENDPOINT": "QRMI_IBM_QS_ENDPOINT (the direct-access names were removed)",
}

_SECRET_WORDS = ("APIKEY", "API_KEY", "TOKEN", "SECRET", "PASSWORD", "ACCESS_KEY")


@config_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="The config file to check.", dir_okay=False)],
) -> None:
    """Check FILE; list every problem (exit 1) or summarise it (exit 0).

    Warnings (settings no backend of that type reads, credentials readable by other users) do
    not change the exit code.
    """
    try:
        config = Config.load(file)
    except ConfigError as exc:
        error(str(exc))
        raise typer.Exit(1) from None
    out.print(f"{escape(str(file))}: valid, {_count(len(config.resource_map))}")
    for rdef in config.resource_map.values():
        kind = "provider" if rdef.is_dynamic else "resource"
        out.print(
            f"  {escape(rdef.name)}: {_type_string(rdef)} {kind}, "
            f"{_count(len(rdef.environment), 'setting')}"
        )
    for message in config_warnings(config, file):
        warn(message)


def config_warnings(config: Config, file: Path) -> Iterator[str]:
    """Problems that do not make ``config`` invalid but are very likely mistakes."""
    for rdef in config.resource_map.values():
        yield from _key_warnings(rdef)
    if _holds_secrets(config) and _readable_by_others(file):
        yield (
            f"{file} holds credentials but other users can read it; "
            f"restrict it with: chmod 600 {file}"
        )


def _key_warnings(rdef: ResourceDef) -> Iterator[str]:
    own = _PREFIXES.get(_type_string(rdef), ())
    for key in rdef.environment:
        if key in _MISSPELLINGS:
            yield f"{rdef.name}: no backend reads {key}; did you mean {_MISSPELLINGS[key]}?"
            continue
        if any(key.startswith(prefix) for prefix in own):
            continue
        for other, prefixes in _PREFIXES.items():
            if any(key.startswith(prefix) for prefix in prefixes):
                yield (
                    f"{rdef.name}: {key} is a setting of {other} resources; a "
                    f"{_type_string(rdef)} resource ignores it"
                )


def _holds_secrets(config: Config) -> bool:
    return any(
        value and any(word in key.upper() for word in _SECRET_WORDS)
        for rdef in config.resource_map.values()
        for key, value in rdef.environment.items()
    )


def _readable_by_others(file: Path) -> bool:
    try:
        mode = file.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


def _type_string(rdef: ResourceDef) -> str:
    kind = rdef.resource_type
    return kind.type_string if isinstance(kind, ResourceType) else kind


def _count(number: int, noun: str = "resource") -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"

"""Fixtures of the conformance suite: one ``harness`` per ``harness_<backend>.py`` module."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.fixtures import in_use, resource, tasks
from conformance.harness import BackendHarness

__all__ = ["harness", "resource", "tasks"]

HARNESS_NAMES = sorted(
    path.stem.removeprefix("harness_") for path in Path(__file__).parent.glob("harness_*.py")
)


@pytest.fixture(scope="session", params=HARNESS_NAMES)
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendHarness]:
    module = importlib.import_module(f"conformance.harness_{request.param}")
    built: BackendHarness = module.make_harness(tmp_path_factory.mktemp(request.param))
    yield from in_use(built)

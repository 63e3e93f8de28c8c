"""Fixtures of the docs tests: the gateway tests' munged, emulators and gateways."""

from gateway.conftest import emulators, gateway, make_gateway, munge

__all__ = ["emulators", "gateway", "make_gateway", "munge"]

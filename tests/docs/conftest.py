"""Fixtures of the docs tests: the gateway tests' munged, emulators and gateways."""

from gateway.conftest import emulators, gateway, gateway_store, make_gateway, munge

__all__ = ["emulators", "gateway", "gateway_store", "make_gateway", "munge"]

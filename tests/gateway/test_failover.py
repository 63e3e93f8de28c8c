"""A job's client given several gateway addresses goes on with the next when one is down."""

from __future__ import annotations

import socket

import pytest

from qrmi.errors import ConfigError, ServiceUnavailableError
from qrmi.gateway.client import split_gateway_urls
from qrmi.gateway.testing import LocalGateway
from qrmi.resource import QuantumResource


def _dead_url() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_call_goes_to_the_next_address_when_the_first_is_down(gateway: LocalGateway) -> None:
    _, variables = gateway.open_job("701", qpus=["emu"])
    variables["QRMI_GATEWAY_URL"] = f"{_dead_url()}, {gateway.url}/"
    qpu = QuantumResource("emu", "local-emulator", environ=variables)

    assert qpu.is_accessible() is True
    assert qpu.status().status.name == "Online"


def test_every_address_down_is_a_clear_error_within_the_budget(gateway: LocalGateway) -> None:
    _, variables = gateway.open_job("702", qpus=["emu"])
    first, second = _dead_url(), _dead_url()
    variables["QRMI_GATEWAY_URL"] = f"{first},{second}"
    variables["emu_QRMI_GATEWAY_RETRY_SECONDS"] = "0.5"
    qpu = QuantumResource("emu", "local-emulator", environ=variables)

    with pytest.raises(ServiceUnavailableError, match="no QRMI gateway of") as caught:
        qpu.status()

    assert first in str(caught.value) and second in str(caught.value)


@pytest.mark.parametrize("text", ["", " , ", "gw1:8443", "https://gw1,ftp://gw2"])
def test_an_unusable_address_list_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="QRMI_GATEWAY_URL"):
        split_gateway_urls(text)


def test_an_address_list_is_tidied() -> None:
    assert split_gateway_urls("https://gw1:8443/, https://gw2:8443") == [
        "https://gw1:8443",
        "https://gw2:8443",
    ]

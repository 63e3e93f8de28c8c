"""Config file loading and per-resource settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qrmi import Config, ConfigError, EnvVarNotSetError, ResourceType, Settings
from qrmi.config import CONFIG_ENV_VAR, MAX_CONFIG_BYTES


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_load_reference_example(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "resources": [
                {
                    "name": "ibm_torino",
                    "type": "ibm-quantum-compute-service",
                    "environment": {"QRMI_IBM_QCS_ENDPOINT": "https://example/api/v1"},
                },
                {"name": "FRESNEL", "type": "pasqal-cloud", "environment": {}},
                {"name": "local", "type": "local-emulator", "environment": {}, "is_dynamic": False},
            ]
        },
    )
    config = Config.load(path)
    assert list(config.resource_map) == ["ibm_torino", "FRESNEL", "local"]
    torino = config.resource_map["ibm_torino"]
    assert torino.resource_type == ResourceType.IBMQuantumComputeService
    assert torino.environment == {"QRMI_IBM_QCS_ENDPOINT": "https://example/api/v1"}
    assert config.get("local").resource_type == ResourceType.LocalEmulator


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{not json", "not valid JSON"),
        ([], "top level must be an object"),
        ({"resources": [], "extra": 1}, "'extra': unknown key"),
        ({"resources": {}}, '"resources" must be a list'),
        ({"resources": [{"name": "a", "type": "local-emulator"}]}, "'environment' is missing"),
        (
            {"resources": [{"name": "a", "type": "quantum-magic", "environment": {}}]},
            "unknown resource type 'quantum-magic'; valid type strings are: ",
        ),
        (
            {"resources": [{"name": "a", "type": "local-emulator", "environment": {}, "lanes": 2}]},
            "unknown key 'lanes'; valid keys are name, type, environment, is_dynamic",
        ),
        (
            {"resources": [{"name": "a b", "type": "local-emulator", "environment": {}}]},
            "resource name 'a b' must start with a letter or digit",
        ),
        (
            {"resources": [{"name": "a", "type": "local-emulator", "environment": {"X": 3}}]},
            "environment['X'] must be a string; quote numbers",
        ),
        (
            {
                "resources": [
                    {"name": "a", "type": "local-emulator", "environment": {}},
                    {"name": "a", "type": "local-emulator", "environment": {}},
                ]
            },
            "resource 'a' is defined twice",
        ),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, data: object, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_type_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, {"resources": [{"name": "a", "type": "x", "environment": {}}]})
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    for known in ("alice-bob-felis", "ibm-quantum-system", "local-emulator", "pasqal-local"):
        assert known in str(info.value)


def test_misspelt_names_get_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"resources": [{"name": "ibm_fez", "type": "ibm-quantum-sytem", "environment": {}}]},
    )
    with pytest.raises(
        ConfigError, match="'ibm-quantum-sytem' \\(did you mean 'ibm-quantum-system'"
    ):
        Config.load(path)
    config = Config.from_dict(
        {"resources": [{"name": "ibm_fez", "type": "local-emulator", "environment": {}}]}
    )
    with pytest.raises(ConfigError, match="'ibm_fex' \\(did you mean 'ibm_fez'\\?\\)"):
        config.get("ibm_fex")


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"resources": [{"name": "a", "type": "nope", "environment": {}}, {"name": "b"}]},
    )
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    message = str(info.value)
    assert "resources[0] ('a')" in message
    assert "resources[1] ('b'): required key 'type' is missing" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read QRMI config file"):
        Config.load(tmp_path / "absent.json")


def test_unknown_resource_lists_known(tmp_path: Path) -> None:
    config = Config.load(
        write(tmp_path, {"resources": [{"name": "a", "type": "local-emulator", "environment": {}}]})
    )
    with pytest.raises(ConfigError, match="unknown resource 'b' .*configured resources are: a"):
        config.get("b")


def test_find_prefers_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, {"resources": []})
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    found = Config.find()
    assert found is not None
    assert found.path == path


def test_default_is_a_local_emulator() -> None:
    assert Config.default().get("local").resource_type == ResourceType.LocalEmulator


def test_settings_explicit_config_wins_over_environment() -> None:
    settings = Settings("qpu", {"KEY": "from-config"}, {"qpu_KEY": "from-env", "qpu_OTHER": "x"})
    assert settings.get("KEY") == "from-config"
    assert settings.get("OTHER") == "x"
    assert settings.get("MISSING", "default") == "default"


def test_settings_blank_values_are_unset() -> None:
    settings = Settings("qpu", {"KEY": "  "}, {"qpu_KEY": ""})
    assert settings.get("KEY") is None


def test_settings_require_names_both_places() -> None:
    with pytest.raises(EnvVarNotSetError) as info:
        Settings("ibm_fez", {}, {}).require("QRMI_IBM_QS_ENDPOINT")
    message = str(info.value)
    assert message.startswith("ibm_fez_QRMI_IBM_QS_ENDPOINT environment variable is not set")
    assert '"QRMI_IBM_QS_ENDPOINT"' in message


def test_settings_typed_values() -> None:
    settings = Settings("q", {"N": "4", "B": "yes", "F": "0.5", "BAD": "four"}, {})
    assert settings.get_int("N") == 4
    assert settings.get_bool("B") is True
    assert settings.get_float("F") == 0.5
    with pytest.raises(ConfigError, match="q_BAD='four' is not an integer"):
        settings.get_int("BAD")
    with pytest.raises(ConfigError, match="not a boolean"):
        settings.get_bool("BAD")
    with pytest.raises(ConfigError, match="must be at least 1"):
        Settings("q", {"N": "0"}, {}).get_int("N", minimum=1)


def test_settings_never_write_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    before = dict(os.environ)
    Settings("q", {"A": "1"}).get("A")
    assert dict(os.environ) == before


def test_a_fifo_as_config_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "qrmi_config.json"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    with pytest.raises(ConfigError, match=r"qrmi_config\.json is a FIFO \(named pipe\)"):
        Config.load(fifo)


def test_a_directory_or_device_as_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory; name a regular JSON file"):
        Config.load(tmp_path)
    with pytest.raises(ConfigError, match="/dev/zero is a character device"):
        Config.load("/dev/zero")


def test_non_utf8_config_names_the_file_and_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"resources": [{"name": "caf\u00e9"}]}'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.json is not UTF-8 text: byte 0xe9 at offset"):
        Config.load(path)


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=r"deep\.json is nested too deeply"):
        Config.load(path)


def test_huge_integer_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"resources": ' + "9" * 5000 + "}")
    with pytest.raises(ConfigError, match=r"big\.json is not valid JSON"):
        Config.load(path)


def test_oversized_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"resources": [], "pad": "x" * MAX_CONFIG_BYTES}))
    with pytest.raises(ConfigError, match=r"huge\.json is larger than 1024 KiB"):
        Config.load(path)

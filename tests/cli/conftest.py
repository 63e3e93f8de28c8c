"""The CLI tests share the test vendor and fixtures of ``tests/tools``."""

from tools.conftest import (  # noqa: F401 - fixtures
    _vendor_registered,
    config_file,
    run_script,
    vendor_dir,
    write_input,
)

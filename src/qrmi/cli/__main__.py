"""``python -m qrmi.cli``: the ``qrmi`` command."""

from qrmi.cli import main

main()

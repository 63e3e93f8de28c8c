"""Backends: one module per vendor API, each a subclass of :class:`qrmi.backends.base.Backend`."""

"""Tests of the QRMI gateway (qrmi.gateway)."""

"""The backend conformance suite: every backend passes the same tests (see README.md)."""

"""qrmi.testing.auth.TokenIssuer."""

from __future__ import annotations

import threading

import pytest

from qrmi.errors import InvalidInputError
from qrmi.testing import TokenIssuer


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_issued_tokens_validate_until_they_expire() -> None:
    clock = Clock()
    issuer = TokenIssuer(lifetime=100, clock=clock)
    issued = issuer.issue("alice")
    assert (issued.subject, issued.expires_in, issued.expires_at) == ("alice", 100, clock.now + 100)
    assert issuer.validate(issued.token) == issued
    clock.now += 99.9
    assert issuer.validate(issued.token) is not None
    clock.now += 0.1
    assert issuer.validate(issued.token) is None
    assert issuer.active_count == 0


def test_tokens_are_opaque_and_distinct() -> None:
    issuer = TokenIssuer(prefix="iam")
    first, second = issuer.issue(), issuer.issue()
    assert first.token != second.token
    assert first.token.startswith("iam-") and len(first.token) > 20
    assert first.token not in repr(first)


def test_per_token_lifetime_overrides_the_default() -> None:
    clock = Clock()
    issuer = TokenIssuer(lifetime=3600, clock=clock)
    short = issuer.issue(lifetime=5)
    clock.now += 6
    assert issuer.validate(short.token) is None


def test_expire_all_invalidates_every_token_but_keeps_issuing() -> None:
    issuer = TokenIssuer()
    old = [issuer.issue() for _ in range(3)]
    issuer.expire_all()
    assert all(issuer.validate(t.token) is None for t in old)
    fresh = issuer.issue()
    assert issuer.validate(fresh.token) == fresh
    assert issuer.issued_count == 4 and issuer.active_count == 1


def test_revoke_invalidates_one_token() -> None:
    issuer = TokenIssuer()
    kept, revoked = issuer.issue(), issuer.issue()
    issuer.revoke(revoked.token)
    issuer.revoke("never-issued")
    assert issuer.validate(revoked.token) is None
    assert issuer.validate(kept.token) == kept


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        ("Bearer {t}", True),
        ("bearer {t}", True),
        ("Bearer  {t}", True),
        ("Basic {t}", False),
        ("{t}", False),
        ("Bearer wrong", False),
        ("", False),
        (None, False),
    ],
)
def test_validate_header(header: str | None, valid: bool) -> None:
    issuer = TokenIssuer()
    token = issuer.issue().token
    value = None if header is None else header.format(t=token)
    assert (issuer.validate_header(value) is not None) is valid


def test_validate_header_with_another_scheme() -> None:
    issuer = TokenIssuer()
    token = issuer.issue().token
    assert issuer.validate_header(f"Token {token}", scheme="Token") is not None
    assert issuer.validate(None) is None and issuer.validate("") is None


def test_issuing_from_many_threads_counts_every_token() -> None:
    issuer = TokenIssuer()
    tokens: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            token = issuer.issue().token
            with lock:
                tokens.append(token)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert issuer.issued_count == 400 and len(set(tokens)) == 400


def test_lifetime_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match="lifetime"):
        TokenIssuer(lifetime=0)
    with pytest.raises(InvalidInputError, match="lifetime"):
        TokenIssuer().issue(lifetime=-1)

"""The outbound TLS policy: pure decisions, every mode at every step."""

from __future__ import annotations

import pytest

from mailcase.config import OUTBOUND_TLS_MODES
from mailcase.tls.outbound import (
    after_handshake,
    decide,
    domain_matches,
    mode_for_domain,
    on_ehlo,
    plaintext_fallback_allowed,
    verifies,
)


@pytest.mark.parametrize(
    ("pattern", "domain", "match"),
    [
        ("example.com", "example.com", True),
        ("example.com", "EXAMPLE.com.", True),
        ("example.com", "mail.example.com", False),
        ("*.example.com", "mail.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),  # subdomains only (Salesforce)
        ("*.example.com", "badexample.com", False),
        ("*", "anything.test", True),
    ],
)
def test_domain_patterns(pattern: str, domain: str, match: bool) -> None:
    assert domain_matches(pattern, domain) is match


def test_most_specific_pattern_wins() -> None:
    per = {"*.example.com": "required", "*.mail.example.com": "off",
           "mx.mail.example.com": "required_verify"}
    assert mode_for_domain("preferred", per, "example.com") == "preferred"
    assert mode_for_domain("preferred", per, "a.example.com") == "required"
    assert mode_for_domain("preferred", per, "a.mail.example.com") == "off"
    assert mode_for_domain("preferred", per, "mx.mail.example.com") == "required_verify"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown TLS mode"):
        on_ehlo("sometimes", starttls_offered=True)


@pytest.mark.parametrize(
    ("mode", "offered", "action"),
    [
        ("off", True, "plaintext"),
        ("off", False, "plaintext"),
        ("preferred", True, "starttls"),
        ("preferred", False, "plaintext"),
        ("required", True, "starttls"),
        ("required", False, "refuse"),
        ("preferred_verify", True, "starttls"),
        ("preferred_verify", False, "plaintext"),
        ("required_verify", True, "starttls"),
        ("required_verify", False, "refuse"),
    ],
)
def test_after_ehlo(mode: str, offered: bool, action: str) -> None:
    d = on_ehlo(mode, starttls_offered=offered)
    assert d.action == action
    if action == "refuse":
        assert "does not offer STARTTLS" in d.reason


@pytest.mark.parametrize("mode", [m for m in OUTBOUND_TLS_MODES
                                  if m not in ("off", "preferred")])
def test_a_failed_handshake_never_falls_back_to_plaintext(mode: str) -> None:
    d = after_handshake(mode, verified=False, error="certificate has expired")
    assert d.action == "refuse" and "certificate has expired" in d.reason
    assert not plaintext_fallback_allowed(mode)


def test_opportunistic_tls_falls_back_to_plaintext_after_a_failed_handshake() -> None:
    """Issue 12.4: `preferred` is Postfix's `may` (RFC 7435): a failed handshake is retried
    in plaintext, not deferred until the queue time runs out."""
    d = after_handshake("preferred", verified=False, error="unsupported protocol")
    assert d.action == "fallback" and "unsupported protocol" in d.reason
    assert "plaintext" in d.reason
    assert plaintext_fallback_allowed("preferred")


@pytest.mark.parametrize(
    ("mode", "verified", "action"),
    [
        ("preferred", False, "proceed"),
        ("required", False, "proceed"),
        ("preferred_verify", False, "refuse"),
        ("preferred_verify", True, "proceed"),
        ("required_verify", False, "refuse"),
        ("required_verify", True, "proceed"),
    ],
)
def test_after_a_handshake(mode: str, verified: bool, action: str) -> None:
    assert after_handshake(mode, verified=verified).action == action


def test_verify_modes() -> None:
    assert [m for m in OUTBOUND_TLS_MODES if verifies(m)] == ["preferred_verify", "required_verify"]


def test_decide_combines_domain_mode_and_step() -> None:
    per = {"secure.test": "required_verify"}
    assert decide("preferred", per, "secure.test", starttls_offered=False).action == "refuse"
    assert decide("preferred", per, "other.test", starttls_offered=False).action == "plaintext"
    assert decide("preferred", per, "secure.test", starttls_offered=True,
                  verified=False).action == "refuse"
    assert decide("preferred", per, "other.test", starttls_offered=True,
                  verified=False).action == "proceed"

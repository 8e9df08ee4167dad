"""The generated self-signed certificate was valid 825 days plus 5 minutes (not-before set 5
minutes back, not-after 825 days ahead): over the 825-day limit that clients such as Apple's
apply to every TLS server certificate, so they refused it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from mailcase.tls.certs import ensure_certificate


def test_generated_certificate_stays_within_825_days(tmp_path: Path) -> None:
    cert_path, _ = ensure_certificate(tmp_path / "tls", "mx.example.test")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now  # clocks a little behind still accept it
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=825)

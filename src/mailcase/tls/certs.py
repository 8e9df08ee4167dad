"""Certificates for the SMTP server.

On first start without a configured certificate a self-signed one is generated for the
configured host name. It uses ECDSA P-256, not RSA: the handshake costs about half the server
CPU (DESIGN.md, performance notes), which matters with a connection per message.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailcase.filemodes import PRIVATE_FILE, private_dir, tighten

__all__ = ["SELF_SIGNED_DAYS", "describe_certificate", "ensure_certificate", "generate_self_signed"]


#: Validity of a generated certificate, in days, counted from its not-before time (5 minutes
#: back, for clocks a little behind). 825 days is the most Apple platforms accept for any TLS
#: server certificate, private CAs and self-signed ones included (the 398-day limit is for
#: publicly trusted CAs, which this is not); it is kept this long because nothing renews a
#: generated certificate yet, and a client that does verify must not meet an expired one soon.
SELF_SIGNED_DAYS = 825


def generate_self_signed(hostname: str, *, days: int = SELF_SIGNED_DAYS) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) for `hostname`, valid for `days` in all from
    5 minutes ago (never longer: a validity of 825 days plus 5 minutes was refused)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    sans: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        sans.append(x509.DNSName("localhost"))
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    not_before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(tls_dir: Path, hostname: str) -> tuple[Path, Path]:
    """Paths of the generated certificate and key under `tls_dir`, generating them if absent.

    The key file is created 0600 and written before the certificate, so that a crash between
    the two leaves no certificate without its key.
    """
    private_dir(tls_dir)
    cert_path, key_path = tls_dir / "server.crt", tls_dir / "server.key"
    if cert_path.exists() and key_path.exists():
        tighten(key_path)
        tighten(cert_path)
        return cert_path, key_path
    cert_pem, key_pem = generate_self_signed(hostname)
    _write_private(key_path, key_pem)
    tmp = cert_path.with_suffix(".tmp")
    _write_private(tmp, cert_pem)
    os.replace(tmp, cert_path)
    return cert_path, key_path


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 whatever the umask, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def describe_certificate(cert_file: Path) -> str:
    """The first certificate of a PEM chain in words, for the start-up log: its subject and
    when it expires (an operator sees a certificate about to expire without openssl)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as e:
        return f"{cert_file} (unreadable: {e})"
    expires = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"subject {cert.subject.rfc4514_string()}, expires {expires}"

"""DKIM keys, messages and signatures made by the tests (nothing fetched, nothing stored)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailcase.authcheck import AuthResults, authenticate
from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer

AUTHSERV_ID = "mx.mailcase.test"


@dataclass(frozen=True)
class DKIMKey:
    private: bytes  # what dkimpy's sign() takes: PEM (RSA) or the base64 seed (ed25519)
    txt: str  # the DNS TXT record that publishes the public key
    algorithm: bytes  # the a= tag


def rsa_key(bits: int = 2048) -> DKIMKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DKIMKey(private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode(), b"rsa-sha256")


def ed25519_key() -> DKIMKey:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return DKIMKey(
        base64.b64encode(seed),
        "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode(),
        b"ed25519-sha256",
    )


def message(
    from_: str = "Alice <alice@example.test>",
    *,
    subject: str = "Order 1027",
    body: str = "Hello,\r\nplease find the order attached.\r\n",
    extra: str = "",
) -> bytes:
    head = (
        f"From: {from_}\r\n"
        "To: support@mailcase.test\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "Message-ID: <1027@example.test>\r\n"
        f"{extra}"
    )
    return (head + "\r\n" + body).encode()


def sign(
    msg: bytes,
    key: DKIMKey,
    domain: str,
    selector: str = "sel",
    *,
    algorithm: bytes | None = None,
    identity: str | None = None,
) -> bytes:
    """`msg` with a DKIM-Signature prepended."""
    header = dkim.sign(
        msg,
        selector.encode(),
        domain.encode(),
        key.private,
        identity=identity.encode() if identity else None,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        signature_algorithm=algorithm or key.algorithm,
    )
    return bytes(header) + msg


def publish(server: DNSServer, key: DKIMKey, domain: str, selector: str = "sel") -> None:
    server.set(f"{selector}._domainkey.{domain}", "TXT", key.txt)


def check(
    msg: bytes,
    resolver: Resolver,
    *,
    client_ip: str = "127.0.0.1",
    mail_from: str = "bounce@example.test",
    helo: str = "mail.example.test",
) -> AuthResults:
    return authenticate(
        msg,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        resolver=resolver,
        authserv_id=AUTHSERV_ID,
    )

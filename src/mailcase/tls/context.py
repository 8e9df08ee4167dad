"""Server SSL contexts and the facts of a negotiated TLS session.

TLS 1.2 and 1.3 only, ECDHE with AEAD ciphers only for TLS 1.2 (TLS 1.3 suites are all
modern). `ServerTLS` holds the current context; `reload()` builds a new one from the files
and swaps it in, so that a SIGHUP changes the certificate for new handshakes without
dropping sessions already running.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from mailcase.errors import TLSSetupError
from mailcase.smtp.server import TLSFacts

__all__ = ["ServerTLS", "facts_from_ssl_object", "server_context"]

# Mozilla "intermediate" TLS 1.2 list: forward secrecy and AEAD only.
_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def server_context(
    cert_file: Path, key_file: Path, *, min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
) -> ssl.SSLContext:
    """A server context for STARTTLS; raises TLSSetupError saying which file is wrong."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as e:
        raise TLSSetupError(
            f"TLS certificate or key not found ({e.filename}); fix tls.cert_file/tls.key_file"
        ) from None
    except ssl.SSLError as e:
        raise TLSSetupError(
            f"cannot load TLS certificate {cert_file} with key {key_file}: {e.reason or e}; "
            "check that both are PEM and belong together"
        ) from None
    return ctx


def facts_from_ssl_object(obj: ssl.SSLObject | ssl.SSLSocket) -> TLSFacts:
    """Version, cipher and bits as Postfix writes them: TLSv1.3, TLS_AES_256_GCM_SHA384, 256."""
    cipher = obj.cipher()
    version = obj.version() or "unknown"
    if cipher is None:
        return TLSFacts(version=version, cipher="unknown", bits=0)
    name, _proto, bits = cipher
    return TLSFacts(version=version, cipher=name, bits=int(bits or 0))


class ServerTLS:
    """The current server context, reloadable from its files."""

    def __init__(
        self, cert_file: Path, key_file: Path, min_version: Literal["TLSv1.2", "TLSv1.3"]
    ) -> None:
        self.cert_file, self.key_file, self.min_version = cert_file, key_file, min_version
        self.context = server_context(cert_file, key_file, min_version=min_version)

    def reload(self) -> None:
        """Load the files again; on failure keep the old context and raise TLSSetupError."""
        self.context = server_context(self.cert_file, self.key_file, min_version=self.min_version)

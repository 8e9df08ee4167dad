"""TLS: certificates, SSL contexts and the facts of a negotiated session."""

from mailcase.tls.certs import ensure_certificate, generate_self_signed
from mailcase.tls.context import ServerTLS, facts_from_ssl_object, server_context

__all__ = [
    "ServerTLS",
    "ensure_certificate",
    "facts_from_ssl_object",
    "generate_self_signed",
    "server_context",
]

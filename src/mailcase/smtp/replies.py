"""SMTP replies as values.

A `Reply` is what the server says: a three-digit code, an enhanced status code (RFC 3463,
advertised with ENHANCEDSTATUSCODES, RFC 2034) and text. Replies are values, never strings
assembled at the call site, so that tests compare them and the wire format lives in one place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = [
    "BAD_SIZE_PARAMETER",
    "BAD_UTF8_COMMAND",
    "BARE_LF_COMMAND",
    "BARE_NEWLINE",
    "BYE",
    "CONTROL_CHARACTERS",
    "DATA_AFTER_BDAT",
    "DUPLICATE_PARAMETER",
    "EXPN_NOT_SUPPORTED",
    "HELP",
    "IMPROPER_PIPELINING",
    "MESSAGE_TOO_BIG",
    "MUST_STARTTLS",
    "NEED_HELO",
    "NEED_MAIL",
    "NESTED_MAIL",
    "NO_VALID_RECIPIENTS",
    "NUL_IN_DATA",
    "OK",
    "PARAMETER_VALUE_UNEXPECTED",
    "PRE_GREETING_TRAFFIC",
    "RCPT_AFTER_BDAT",
    "READY_STARTTLS",
    "RECIPIENT_OK",
    "MAILBOX_DISABLED",
    "RELAY_DENIED",
    "SHUTTING_DOWN",
    "TOO_MANY_FROM_IP",
    "REQUIRETLS_WITHOUT_TLS",
    "Reply",
    "SENDER_OK",
    "SERVICE_NOT_AVAILABLE_CONNECTIONS",
    "SMTPUTF8_DISABLED",
    "STARTTLS_NOT_AVAILABLE",
    "START_DATA",
    "STORAGE_FAILED",
    "SYNTAX_BDAT",
    "SYNTAX_DATA",
    "SYNTAX_EHLO",
    "SYNTAX_HELO",
    "SYNTAX_MAIL",
    "SYNTAX_RCPT",
    "SYNTAX_RSET",
    "SYNTAX_STARTTLS",
    "SYNTAX_VRFY",
    "TIMEOUT",
    "TLS_ALREADY_ACTIVE",
    "TOO_MANY_ERRORS",
    "TOO_MANY_RECIPIENTS",
    "UNKNOWN_COMMAND",
    "UNKNOWN_RECIPIENT",
    "UNSUPPORTED_BODY",
    "VRFY_CANNOT",
    "chunk_received",
    "command_line_too_long",
    "data_line_too_long",
    "ehlo_reply",
    "greeting",
    "helo_reply",
    "queued",
    "unsupported_parameter",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply; `lines` beyond the first make it multi-line (EHLO, HELP)."""

    code: int
    enhanced: str | None
    text: str
    more: tuple[str, ...] = ()

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def lines(self) -> list[str]:
        """The text lines, the enhanced code prefixed to each (RFC 2034 §3)."""
        texts = [self.text, *self.more]
        if self.enhanced is None:
            return texts
        return [f"{self.enhanced} {t}" if t else self.enhanced for t in texts]

    def to_bytes(self) -> bytes:
        """Wire form: `250-first` … `250 last`, each line ending in CRLF (RFC 5321 §4.2.1)."""
        return _wire(self)

    def __str__(self) -> str:
        return " ".join([str(self.code), *self.lines()[:1]])


@functools.lru_cache(maxsize=1024)
def _wire(reply: Reply) -> bytes:
    # Cached: most replies are the same few values, sent several times per message.
    ls = reply.lines()
    out = []
    for i, line in enumerate(ls):
        sep = " " if i == len(ls) - 1 else "-"
        out.append(f"{reply.code}{sep}{line}\r\n")
    return "".join(out).encode("utf-8")


# --- Named replies ------------------------------------------------------------------------------
# One place for every reply the server core sends, so that tests and the shell compare values
# and the texts stay consistent. Texts say what the peer should do next.


def greeting(hostname: str) -> Reply:
    """The 220 banner. No enhanced code: RFC 2034 §3 exempts the greeting."""
    return Reply(220, None, f"{hostname} ESMTP mailcase")


def helo_reply(hostname: str) -> Reply:
    """Answer to HELO. No enhanced code: RFC 2034 §3 exempts HELO/EHLO responses."""
    return Reply(250, None, hostname)


def ehlo_reply(hostname: str, keywords: tuple[str, ...]) -> Reply:
    """Multi-line EHLO answer (RFC 5321 §4.1.1.1); no enhanced code (RFC 2034 §3)."""
    return Reply(250, None, hostname, keywords)


def chunk_received(octets: int) -> Reply:
    """Answer to a non-LAST BDAT chunk (RFC 3030 §2)."""
    return Reply(250, "2.0.0", f"{octets} octets received")


# Connection-level
SERVICE_NOT_AVAILABLE_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_IP = Reply(
    421, "4.7.0", "Too many connections from your address, try again later"
)
TIMEOUT = Reply(421, "4.4.2", "Timeout waiting for input, closing connection; try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection; try again later")
BYE = Reply(221, "2.0.0", "Bye")
PRE_GREETING_TRAFFIC = Reply(
    554, "5.5.0", "Protocol error: wait for the 220 greeting before sending commands"
)
IMPROPER_PIPELINING = Reply(
    554, "5.5.0", "Improper command pipelining: wait for the reply to EHLO/HELO (RFC 2920)"
)

# Generic outcomes
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
# RFC 2034 §3: enhanced codes exist for 2xx/4xx/5xx only, so 354 carries none.
START_DATA = Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
VRFY_CANNOT = Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(
    214,
    "2.0.0",
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
    ("See RFC 5321 for the syntax of each command",),
)
READY_STARTTLS = Reply(220, "2.0.0", "Ready to start TLS")

# Command syntax and sequence (RFC 5321 §4.2.2, §4.3.2)
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized; send HELP for the list")


def command_line_too_long(limit: int) -> Reply:
    """RFC 5321 §4.5.3.1.4 / §4.5.3.1.10: "500 Line too long", naming the actual limit."""
    return Reply(500, "5.5.2", f"Line too long; command lines are limited to {limit} octets")


BARE_LF_COMMAND = Reply(500, "5.5.2", "Bare LF in command line; end commands with CRLF")
CONTROL_CHARACTERS = Reply(501, "5.5.4", "Control characters are not allowed in commands")
BAD_UTF8_COMMAND = Reply(501, "5.5.4", "Command is not valid UTF-8")
EXPN_NOT_SUPPORTED = Reply(502, "5.5.1", "EXPN is not supported")
STARTTLS_NOT_AVAILABLE = Reply(502, "5.5.1", "STARTTLS is not available on this server")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS is already active; send EHLO")
SYNTAX_EHLO = Reply(501, "5.5.4", "Syntax: EHLO <hostname>")
SYNTAX_HELO = Reply(501, "5.5.4", "Syntax: HELO <hostname>")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
SYNTAX_DATA = Reply(501, "5.5.4", "Syntax: DATA (no arguments)")
SYNTAX_BDAT = Reply(501, "5.5.4", "Syntax: BDAT <octets> [LAST]")
SYNTAX_RSET = Reply(501, "5.5.4", "Syntax: RSET (no arguments)")
SYNTAX_STARTTLS = Reply(501, "5.5.4", "Syntax: STARTTLS (no arguments)")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY <address>")
NEED_HELO = Reply(503, "5.5.1", "Send EHLO or HELO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already given; send RSET to start over")
NEED_MAIL = Reply(503, "5.5.1", "Send MAIL FROM first")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA cannot follow BDAT in one transaction; send RSET")
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "RCPT cannot follow BDAT in one transaction; send RSET")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")

# MAIL/RCPT parameters (RFC 5321 §4.1.1.11: 555 for unrecognized or unadvertised parameters)


def unsupported_parameter(keyword: str) -> Reply:
    """RFC 5321 §4.1.1.11: 555 for a parameter we do not recognize or did not advertise."""
    return Reply(555, "5.5.4", f"Unsupported parameter {keyword}; remove it and retry")


BAD_SIZE_PARAMETER = Reply(501, "5.5.4", "SIZE must be a decimal number of octets")
UNSUPPORTED_BODY = Reply(555, "5.5.4", "BODY must be 7BIT or 8BITMIME")
DUPLICATE_PARAMETER = Reply(501, "5.5.4", "Parameter given more than once")
PARAMETER_VALUE_UNEXPECTED = Reply(501, "5.5.4", "Parameter takes no value")
REQUIRETLS_WITHOUT_TLS = Reply(
    555, "5.5.4", "REQUIRETLS is only offered over TLS; issue STARTTLS first"
)
SMTPUTF8_DISABLED = Reply(555, "5.5.4", "SMTPUTF8 is not supported by this server")
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")

# Limits (RFC 5321 §4.5.3.1.10; RFC 1870 for SIZE)
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = Reply(
    452, "4.5.3", "Too many recipients; send the rest in another transaction"
)

# DATA content refusals
BARE_NEWLINE = Reply(
    554,
    "5.5.2",
    "Bare CR or LF not allowed (SMTP smuggling protection); send CRLF line endings",
)
NUL_IN_DATA = Reply(554, "5.6.0", "NUL characters are not allowed in message content")


def data_line_too_long(limit: int) -> Reply:
    """RFC 5321 §4.5.3.1.6: a text line over the limit refuses the message."""
    return Reply(
        500, "5.5.2", f"Line too long; message lines are limited to {limit} octets including CRLF"
    )


# Answers the application gives (policy/storage), named here so texts stay consistent
STORAGE_FAILED = Reply(
    451, "4.3.0", "Temporary storage failure: message not accepted, please retry later"
)
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, please retry later")
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "Recipient address rejected: no such mailbox here")
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
MAILBOX_DISABLED = Reply(550, "5.2.1", "Mailbox disabled: this address does not accept mail")


def queued(queue_id: str) -> Reply:
    """The 250 after DATA, sent only once the message is durable."""
    return Reply(250, "2.0.0", f"OK: queued as {queue_id}")

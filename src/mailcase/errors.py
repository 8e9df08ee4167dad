"""The exception tree of mailcase.

    MailcaseError
    ├── ConfigError            bad configuration: names the key and the reason
    ├── StorageError           the database or spool could not do what was asked
    │   └── SpoolCommitError   a message could not be made durable (answer 451, never 250)
    ├── ProtocolError          SMTP protocol trouble
    │   └── LocalProtocolError   we misused the state machine (a bug in our shell)
    ├── TLSSetupError          certificate or key cannot be loaded or generated
    └── ProcessingError        a stored message could not be processed (it is quarantined)
    DeferMessage (Exception)   not an error: a destination asks the pipeline to retry later

Protocol errors split as h11 does, but only one side raises: a local error is a bug to fix;
a remote one (the peer broke the protocol) is input to answer, so the SMTP state machine
answers it with a reply and reports it as an event (`EnvelopeRejected`, `Close`), never as an
exception a shell could forget to catch.

`DeferMessage` lives here, below the pipeline and the features, because features raise it and
the pipeline catches it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeferMessage",
    "LocalProtocolError",
    "MailcaseError",
    "ProcessingError",
    "ProtocolError",
    "SpoolCommitError",
    "StorageError",
    "TLSSetupError",
]


class MailcaseError(Exception):
    """Base of every error mailcase raises on purpose."""


class ConfigError(MailcaseError):
    """Configuration is invalid; the message names the key and what to do."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class StorageError(MailcaseError):
    """The database refused or failed an operation."""


class SpoolCommitError(StorageError):
    """A message could not be committed durably; the sender must be told to retry (4xx).

    `refused`: the database refused this message's own row (a value or constraint), so a
    retry of the same message will fail again; False when the database could not commit at
    all (locked, full, gone), which a later retry may overcome."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class ProtocolError(MailcaseError):
    """SMTP protocol trouble."""


class LocalProtocolError(ProtocolError):
    """Our own code drove the SMTP state machine wrongly: a bug."""


class TLSSetupError(MailcaseError):
    """A certificate or key could not be loaded or generated."""


class ProcessingError(MailcaseError):
    """A stored message could not be processed; it stays in quarantine with this error."""


class DeferMessage(Exception):  # noqa: N818 - an instruction, not an error
    """Raised by a destination: this message cannot be processed now; try it again later
    (after `delay` seconds when given, else after the pipeline's back-off)."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay

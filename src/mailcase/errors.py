"""The exception tree of mailcase.

    MailcaseError
    ├── ConfigError            bad configuration: names the key and the reason
    ├── StorageError           the database or spool could not do what was asked
    │   └── SpoolCommitError   a message could not be made durable (answer 451, never 250)
    ├── ProtocolError          SMTP protocol trouble
    │   ├── LocalProtocolError   we misused the state machine (a bug in our shell)
    │   └── RemoteProtocolError  the peer misbehaved (answered with a reply, not a crash)
    ├── TLSSetupError          certificate or key cannot be loaded or generated
    └── ProcessingError        a stored message could not be processed (it is quarantined)
    DeferMessage (Exception)   not an error: a destination asks the pipeline to retry later

Why split protocol errors as h11 does: a local error is a bug to fix, a remote one is
input to answer. `DeferMessage` lives here, below the pipeline and the features, because
features raise it and the pipeline catches it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeferMessage",
    "LocalProtocolError",
    "MailcaseError",
    "ProcessingError",
    "ProtocolError",
    "RemoteProtocolError",
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
    """A message could not be committed durably; the sender must be told to retry (4xx)."""


class ProtocolError(MailcaseError):
    """SMTP protocol trouble."""


class LocalProtocolError(ProtocolError):
    """Our own code drove the SMTP state machine wrongly: a bug."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; it gets a reply, never a crash."""


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

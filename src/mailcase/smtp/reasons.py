"""Why a session refused something, as one value of a closed set.

The refusal's human text (`EnvelopeRejected.reason`) may quote what the client sent (a MAIL
parameter's name, a declared size); it goes to the SMTP reply, the maillog and the email log.
Metrics labels take this code instead: a label made of client text gave every distinct
parameter a time series of its own, and the growing metrics snapshot made an acceptor process
restart (issue 11). DESIGN.md: nothing a client sends becomes a metrics label.
"""

from __future__ import annotations

import enum

__all__ = ["RejectReason"]


class RejectReason(enum.StrEnum):
    """The `reason` label of `mailcase_smtp_rejections_total`; add a member for a new cause."""

    # MAIL
    TLS_REQUIRED = "tls_required"
    BAD_SENDER_SYNTAX = "bad_sender_syntax"
    BAD_MAIL_PARAMETER = "bad_mail_parameter"
    DECLARED_SIZE_TOO_BIG = "declared_size_too_big"
    # RCPT (the machine)
    BAD_RECIPIENT_SYNTAX = "bad_recipient_syntax"
    BAD_RCPT_PARAMETER = "bad_rcpt_parameter"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    # RCPT (recipient policy)
    UNKNOWN_RECIPIENT = "unknown_recipient"
    RELAY_DENIED = "relay_denied"
    ADDRESS_DISABLED = "address_disabled"
    ADDRESS_REQUIRES_TLS = "address_requires_tls"
    CASE_LIMIT_REACHED = "case_limit_reached"
    # DATA/BDAT
    NO_VALID_RECIPIENTS = "no_valid_recipients"
    MESSAGE_TOO_BIG = "message_too_big"
    BARE_NEWLINE = "bare_newline"
    NUL_IN_DATA = "nul_in_data"
    LINE_TOO_LONG = "line_too_long"
    # the session (inbound shell)
    TIMEOUT = "timeout"
    MINIMUM_DATA_RATE = "minimum_data_rate"
    STORAGE_FAILURE = "storage_failure"

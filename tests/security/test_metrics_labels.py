"""Issue 11 item 1(a): a metrics label never carries client text.

Every refusal the state machine or the recipient policy makes has a code from the closed
`RejectReason` set; the human reason (which may quote the client) stays out of labels.
"""

from __future__ import annotations

import secrets

import pytest
from prometheus_client import generate_latest

from mailcase.metrics import Metrics
from mailcase.policy import Reject, decide_recipient
from mailcase.smtp.reasons import RejectReason
from mailcase.smtp.server import EnvelopeRejected, ProtocolSettings, ServerConnection


def _rejections(lines: list[bytes], settings: ProtocolSettings | None = None) -> list[
    EnvelopeRejected
]:
    conn = ServerConnection(settings or ProtocolSettings(
        "mx.test", max_errors=10_000, soft_error_limit=10_000, hard_error_limit=10_000),
                            client_ip="192.0.2.1")
    conn.send_greeting()
    events: list[EnvelopeRejected] = []
    for line in lines:
        conn.receive_data(line)
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, EnvelopeRejected):
                events.append(ev)
            elif hasattr(ev, "recipient"):
                conn.accept_rcpt()
        conn.data_to_send()
    return events


def test_distinct_bad_parameters_share_one_code() -> None:
    keys = [f"X{secrets.token_hex(8)}" for _ in range(200)]
    events = _rejections(
        [b"EHLO c.test\r\n"]
        + [f"MAIL FROM:<a@x.test> {k}=1\r\n".encode() for k in keys]
        + [b"MAIL FROM:<a@x.test> SIZE=999999999999\r\n", b"MAIL FROM:<a@x.test>\r\n"]
        + [f"RCPT TO:<b@y.test> {k}=1\r\n".encode() for k in keys[:50]]
    )
    assert len(events) == 200 + 1 + 50
    assert {e.code for e in events} == {
        RejectReason.BAD_MAIL_PARAMETER, RejectReason.DECLARED_SIZE_TOO_BIG,
        RejectReason.BAD_RCPT_PARAMETER,
    }
    # The human reason still names what was refused (for the maillog and the email log).
    assert keys[0].upper() in events[0].reason


def test_recipient_policy_refusals_have_codes() -> None:
    verdicts = [
        decide_recipient(f"{secrets.token_hex(6)}@example.test", {},
                         frozenset({"example.test"}), tls_active=False),
        decide_recipient(f"{secrets.token_hex(6)}@elsewhere.test", {},
                         frozenset({"example.test"}), tls_active=False),
    ]
    assert all(isinstance(v, Reject) for v in verdicts)
    assert [v.code for v in verdicts if isinstance(v, Reject)] == [
        RejectReason.UNKNOWN_RECIPIENT, RejectReason.RELAY_DENIED,
    ]


def test_metrics_take_only_codes_of_the_closed_set() -> None:
    m = Metrics()
    for code in RejectReason:
        m.count_rejection(code)
    with pytest.raises(ValueError, match="not a valid RejectReason"):
        m.count_rejection("bad_MAIL_parameter_Xdeadbeef")  # type: ignore[arg-type]
    text = generate_latest(m.registry).decode()
    labels = [ln for ln in text.splitlines() if ln.startswith("mailcase_smtp_rejections_total{")]
    assert len(labels) == len(RejectReason)

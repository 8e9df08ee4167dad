"""The public surface of mailcase.smtp: exports, no I/O imports, and API misuse."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import mailcase.smtp
from mailcase.errors import LocalProtocolError
from mailcase.smtp import replies
from mailcase.smtp.replies import Reply
from mailcase.smtp.server import (
    ProtocolSettings,
    RcptRequest,
    ServerConnection,
    StartTLS,
    State,
    TLSFacts,
)

SMTP_DIR = pathlib.Path(mailcase.smtp.__file__).parent
MODULES = sorted(p.stem for p in SMTP_DIR.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_public_names_are_exactly_all(name):
    module = importlib.import_module(f"mailcase.smtp.{name}")
    tree = ast.parse((SMTP_DIR / f"{name}.py").read_text())
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    public = {n for n in defined if not n.startswith("_") and n != "__all__"}
    assert set(module.__all__) == public
    for exported in module.__all__:
        assert hasattr(module, exported)


@pytest.mark.parametrize("name", [*MODULES, "__init__"])
def test_no_io_imports(name):
    tree = ast.parse((SMTP_DIR / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "ssl", "socket", "selectors", "trio", "anyio"}


def test_reply_constants_are_well_formed():
    for name in replies.__all__:
        value = getattr(replies, name)
        if not isinstance(value, Reply):
            continue
        wire = value.to_bytes()
        assert wire.endswith(b"\r\n")
        for line in wire.split(b"\r\n")[:-1]:
            assert len(line) + 2 <= 512
            assert b"\r" not in line and b"\n" not in line
        if value.code != 354:  # RFC 2034 §3: no enhanced code on 3xx
            assert value.enhanced is not None and value.enhanced[0] == str(value.code)[0], name


def test_greeting_and_named_replies():
    assert replies.greeting("mx.test").to_bytes() == b"220 mx.test ESMTP mailcase\r\n"
    assert str(replies.SERVICE_NOT_AVAILABLE_CONNECTIONS) == (
        "421 4.7.0 Too many connections, try again later"
    )
    assert replies.MUST_STARTTLS == Reply(530, "5.7.0", "Must issue a STARTTLS command first")
    assert replies.STORAGE_FAILED.code == 451 and replies.STORAGE_FAILED.enhanced == "4.3.0"
    assert replies.UNKNOWN_RECIPIENT.enhanced == "5.1.1"
    assert replies.RELAY_DENIED == Reply(550, "5.7.1", "Relay access denied")
    assert replies.TIMEOUT.code == 421 and replies.TIMEOUT.enhanced == "4.4.2"
    assert replies.queued("ABC123").to_bytes() == b"250 2.0.0 OK: queued as ABC123\r\n"
    # Limit replies name the configured limit, not the RFC default.
    assert "2048 octets" in replies.command_line_too_long(2048).text
    assert "998 octets" in replies.data_line_too_long(998).text


def test_settings_validation():
    with pytest.raises(ValueError):
        ProtocolSettings("")
    with pytest.raises(ValueError):
        ProtocolSettings("mx test")
    with pytest.raises(ValueError):
        ProtocolSettings("mx.test", bare_newline="strip")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProtocolSettings("mx.test", max_recipients=0)
    with pytest.raises(ValueError):
        ProtocolSettings("mx.test", tls_required=True)  # nobody could ever send
    s = ProtocolSettings("mx.test")
    assert (s.max_message_size, s.max_recipients, s.max_command_line) == (36700160, 100, 512)
    assert (s.max_text_line, s.max_errors, s.bare_newline) == (0, 10, "reject")  # 0: no limit
    assert (s.tls_available, s.tls_required, s.smtputf8) == (False, False, True)


def _conn(**kw: object) -> ServerConnection:
    conn = ServerConnection(ProtocolSettings("mx.test", **kw), client_ip="192.0.2.1")  # type: ignore[arg-type]
    conn.send_greeting()
    return conn


def test_answers_without_a_question_are_local_errors():
    conn = _conn()
    with pytest.raises(LocalProtocolError):
        conn.accept_rcpt()
    with pytest.raises(LocalProtocolError):
        conn.reject_rcpt(Reply(550, "5.1.1", "No"))
    with pytest.raises(LocalProtocolError):
        conn.answer_message(Reply(250, "2.0.0", "OK"))
    with pytest.raises(LocalProtocolError):
        conn.tls_established(TLSFacts("TLSv1.3", "X", 256))
    with pytest.raises(LocalProtocolError):
        conn.send_greeting()


def test_reject_rcpt_needs_a_failure_reply():
    conn = _conn()
    conn.receive_data(b"HELO c.test\r\n")
    assert conn.next_event() is None
    conn.receive_data(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")
    assert isinstance(conn.next_event(), RcptRequest)
    with pytest.raises(LocalProtocolError):
        conn.reject_rcpt(Reply(250, "2.1.5", "OK"))


def test_answers_after_close_are_ignored():
    conn = _conn()
    conn.receive_data(b"HELO c.test\r\n")
    conn.next_event()
    conn.receive_data(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")
    assert isinstance(conn.next_event(), RcptRequest)
    conn.timeout()  # the application took too long
    conn.accept_rcpt()  # its late answer must not crash the shell
    assert conn.state is State.CLOSED
    assert conn.data_to_send().endswith(
        b"421 4.4.2 Timeout waiting for input, closing connection; try again later\r\n"
    )


def test_input_during_tls_handshake_is_dropped():
    conn = _conn(tls_available=True)
    conn.receive_data(b"EHLO c.test\r\n")
    assert conn.next_event() is None
    conn.receive_data(b"STARTTLS\r\n")
    assert conn.next_event() == StartTLS()
    conn.receive_data(b"MAIL FROM:<evil@x.test>\r\n")
    assert conn.next_event() is None
    conn.tls_established(TLSFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128))
    assert conn.state is State.COMMAND
    assert conn.next_event() is None
    out = conn.data_to_send()
    assert out.endswith(b"220 2.0.0 Ready to start TLS\r\n")
    assert conn.session.tls == TLSFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128)
    assert conn.session.helo is None


def test_timeout_during_handshake_sends_nothing():
    conn = _conn(tls_available=True)
    conn.receive_data(b"EHLO c.test\r\n")
    conn.next_event()
    conn.receive_data(b"STARTTLS\r\n")
    assert conn.next_event() == StartTLS()
    conn.data_to_send()
    conn.timeout()
    assert conn.data_to_send() == b""
    assert conn.state is State.CLOSED


def test_in_data_and_state():
    conn = _conn()
    assert conn.state is State.COMMAND
    conn.receive_data(b"HELO c.test\r\n")
    conn.next_event()
    conn.receive_data(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")
    conn.next_event()
    conn.accept_rcpt()
    conn.receive_data(b"DATA\r\n")
    assert conn.next_event() is None
    assert conn.in_data and conn.state is State.DATA
    conn.receive_data(b"x\r\n.\r\n")
    conn.next_event()
    assert conn.state is State.MESSAGE_PENDING and not conn.in_data

"""What the machine tells the shell's deadlines (issue 11 item 5): whether a command line has
begun (its deadline then stands) and whether message content is arriving (the data-rate rule
then covers a whole BDAT transfer, command lines between chunks included)."""

from __future__ import annotations

from mailcase.smtp.server import ProtocolSettings, RcptRequest, ServerConnection


def _conn() -> ServerConnection:
    conn = ServerConnection(ProtocolSettings("mx.test"), client_ip="192.0.2.1")
    conn.send_greeting()
    return conn


def _feed(conn: ServerConnection, data: bytes) -> None:
    conn.receive_data(data)
    while (ev := conn.next_event()) is not None:
        if isinstance(ev, RcptRequest):
            conn.accept_rcpt()


def test_a_partial_command_line_is_mid_line_until_its_end():
    conn = _conn()
    assert not conn.mid_line
    _feed(conn, b"EH")
    assert conn.mid_line
    _feed(conn, b"LO drip.test")
    assert conn.mid_line
    _feed(conn, b"\r\n")
    assert not conn.mid_line
    _feed(conn, b"NOOP\r\nNO")  # a pipelined whole command, then the start of the next
    assert conn.mid_line


def test_an_over_long_line_being_discarded_is_mid_line():
    conn = _conn()
    _feed(conn, b"x" * 600)  # over max_command_line: dropped, not buffered
    assert conn.mid_line


def test_a_bdat_transfer_is_in_message_between_its_chunks():
    conn = _conn()
    _feed(conn, b"EHLO c.test\r\n")
    _feed(conn, b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")
    assert not conn.in_message
    _feed(conn, b"BDAT 3\r\nab")
    assert conn.in_message and conn.in_data
    _feed(conn, b"c")
    assert conn.in_message and not conn.in_data  # between chunks: the rate clock keeps going
    _feed(conn, b"BDAT 2 LAST\r\nde")
    assert not conn.in_message  # the message is complete (answered by the application next)


def test_data_is_in_message_until_the_final_dot():
    conn = _conn()
    _feed(conn, b"EHLO c.test\r\n")
    _feed(conn, b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\n")
    _feed(conn, b"DATA\r\n")
    assert conn.in_message
    _feed(conn, b"Subject: x\r\n\r\nbody\r\n")
    assert conn.in_message and not conn.mid_line
    _feed(conn, b".\r\n")
    assert not conn.in_message

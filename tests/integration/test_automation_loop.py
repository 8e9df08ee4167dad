"""A real mail loop: mailcase's acknowledgements answered by a badly behaved auto-responder.

A real `mailcase serve` has a routing address and an auto-response rule (added over the API).
Its delivery engine delivers the acknowledgements over SMTP to a peer on loopback (found by
MX through the local DNS server). The peer answers every message it receives with a new
message to the routing address, WITHOUT `Auto-Submitted` and without In-Reply-To: the kind of
responder that makes loops. Two of its mailboxes misbehave differently:

- ooo@peer.test always answers "Out of office" with the same text: loop detection must stop
  case creation after `loop_threshold` identical messages;
- vary@peer.test numbers its answers (new subject and body each time): only the per-sender
  limit on auto-responses can stop it, after `auto_response_limit` acknowledgements.

With ``via="postfix"`` the acknowledgements take one more real hop: peer.test's MX is a
private Postfix instance on loopback that relays everything it receives to the peer.

Bounded in count (the peer answers at most MAX_REPLIES times) and time (DEADLINE seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import smtplib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import pytest

from mailcase.mime import parse_message
from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, free_port, running_platform
from tests.support.postfix import PostfixInstance, postfix_available

LOOP_THRESHOLD = 4
RESPONSE_LIMIT = 6
MAX_REPLIES = 40
DEADLINE = 150.0
QUIET = 2.0  # seconds without peer activity before looking for messages still on their way
ROUTING = "support@example.test"


@dataclass
class Peer:
    """A tiny SMTP receiver (the MX of peer.test) that answers what it receives."""

    mailcase: tuple[str, int]
    received: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: {"ooo": 0, "vary": 0})
    last_activity: float = field(default_factory=time.monotonic)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await reply("220 mx.peer.test ESMTP test peer")
        mail_from, rcpts = "", []
        try:
            while line := await asyncio.wait_for(reader.readline(), 30):
                cmd = line.decode("ascii", "replace").strip()
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    await reply("250 mx.peer.test")
                elif verb == "MAIL":
                    mail_from, rcpts = cmd.partition(":")[2].strip().split(" ")[0].strip("<>"), []
                    await reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpts.append(cmd.partition(":")[2].strip().split(" ")[0].strip("<>").lower())
                    await reply("250 2.1.5 ok")
                elif verb == "DATA":
                    await reply("354 go ahead")
                    data = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 30)
                    body = data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
                    self.received.append((mail_from, tuple(rcpts), body))
                    self.last_activity = time.monotonic()
                    for rcpt in rcpts:
                        t = asyncio.create_task(self.answer(rcpt))
                        self.tasks.add(t)
                        t.add_done_callback(self.tasks.discard)
                    await reply("250 2.0.0 queued")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                elif verb in ("RSET", "NOOP"):
                    await reply("250 ok")
                else:
                    await reply("502 5.5.2 not here")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, rcpt: str) -> None:
        """The badly behaved auto-reply: no Auto-Submitted, no In-Reply-To."""
        who = rcpt.partition("@")[0]
        if who not in self.sent or sum(self.sent.values()) >= MAX_REPLIES:
            return
        self.sent[who] += 1
        await self.send(who, self.sent[who])

    async def send(self, who: str, n: int) -> None:
        if who == "ooo":
            subject, text = "Out of office", "I am out of the office until Monday.\r\n"
        else:
            subject, text = f"Automatic reply {n}", f"Thanks for message number {n}.\r\n"
        msg = (
            f"From: {who} <{who}@peer.test>\r\nTo: {ROUTING}\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{uuid.uuid4()}@peer.test>\r\n"
            f"\r\n{text}"
        ).encode()
        host, port = self.mailcase
        await aiosmtplib.send(
            msg,
            sender=f"{who}@peer.test",
            recipients=[ROUTING],
            hostname=host,
            port=port,
            start_tls=False,
            timeout=30,
        )
        self.last_activity = time.monotonic()


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    zone = {
        "peer.test": {"MX": [(10, "mx.peer.test")]},
        "mx.peer.test": {"A": ["127.0.0.1"]},
    }
    with DNSServer(zone) as server:
        yield server


def _config(dns: DNSServer, peer_port: int) -> str:
    return f"""
[server]
hostname = "mailcase.test"
[dns]
nameservers = ["{dns.address}"]
timeout = 2.0
[pipeline]
poll_interval = 0.05
[inbound]
processes = 1
[delivery]
mx_port = {peer_port}
poll_interval = 0.05
connect_timeout = 5.0
command_timeout = 15.0
[automation]
loop_threshold = {LOOP_THRESHOLD}
loop_window = 600
auto_response_limit = {RESPONSE_LIMIT}
auto_response_period = 10800
"""


def _cases_by_sender(p: Platform) -> dict[str, int]:
    with p.api() as api:
        res = api.get("/api/v1/cases", params={"limit": 1000})
        res.raise_for_status()
        counts: dict[str, int] = {}
        for case in res.json():
            sender = case.get("supplied_email") or case.get("contact_email") or ""
            counts[sender] = counts.get(sender, 0) + 1
        return counts


async def _run_loop(p: Platform, peer: Peer, peer_port: int, pf: PostfixInstance | None) -> None:
    server = await asyncio.start_server(peer.handle, "127.0.0.1", peer_port)
    try:
        async with server:
            await peer.send("ooo", 0)  # the first "auto-reply" starts each loop
            await peer.send("vary", 0)
            start = time.monotonic()
            while time.monotonic() - start < DEADLINE:
                await asyncio.sleep(0.25)
                quiet = time.monotonic() - peer.last_activity
                if quiet > QUIET and not peer.tasks:
                    seen = len(peer.received)
                    settled = await asyncio.to_thread(_nothing_in_flight, p, pf)
                    if settled and not peer.tasks and len(peer.received) == seen:
                        return
            pytest.fail(f"the loop did not settle in {DEADLINE}s: {peer.sent}")
    finally:
        for t in list(peer.tasks):
            t.cancel()


def _nothing_in_flight(p: Platform, pf: PostfixInstance | None) -> bool:
    """No message anywhere on its way: every received message processed (an acknowledgement
    is queued in the same transaction), nothing queued for delivery (a message being sent
    stays queued until its result is written), nothing in Postfix's queue. With the peer
    idle, nothing can start the loop again."""
    with p.api() as api:
        res = api.get("/api/v1/outbound", params={"state": "queued", "limit": 1000})
        res.raise_for_status()
        if res.json():
            return False
    inbound = json.loads(p.cli("messages", "list", "--json", "--limit", "100000").stdout)
    if any(m["state"] == "received" for m in inbound):
        return False
    return pf is None or pf.queue_size() == 0


@pytest.mark.parametrize("via", ["direct", "postfix"])
def test_mail_loop_is_stopped(tmp_path: Path, dns: DNSServer, via: str) -> None:
    peer_port = free_port()
    with contextlib.ExitStack() as stack:
        mx_port = peer_port
        pf = None
        if via == "postfix":
            if (why := postfix_available()) is not None:
                pytest.skip(why)
            pf = stack.enter_context(
                PostfixInstance(tmp_path, relay_port=peer_port, smtp_tls_security_level="none")
            )
            mx_port = pf.smtpd_port
        p = stack.enter_context(running_platform(tmp_path, config=_config(dns, mx_port)))
        _loop(p, peer_port, via, pf)


def _loop(p: Platform, peer_port: int, via: str, pf: PostfixInstance | None) -> None:
    p.cli("routing", "add", ROUTING, "--name", "Support")
    with p.api() as api:
        res = api.post(
            "/api/v1/auto-response-rules",
            json={
                "name": "acknowledge",
                "subject_template": "Case {{ case_number }}: {{ subject }}",
                "text_template": "Hello {{ contact_name }}, we opened case {{ case_number }}.",
            },
        )
        assert res.status_code == 201, res.text
        bad = api.post(
            "/api/v1/auto-response-rules",
            json={"name": "escape", "text_template": "{{ ''.__class__.__mro__ }}"},
        )
        assert bad.status_code == 422 and "sandbox" in bad.text
        assert [r["name"] for r in api.get("/api/v1/auto-response-rules").json()] == ["acknowledge"]

    peer = Peer(mailcase=p.smtp)
    asyncio.run(_run_loop(p, peer, peer_port, pf))

    # What the peer received: only our acknowledgements, each marked as automatic,
    # from an empty return path (RFC 3834 §3.3), with the case number and thread token.
    acks: dict[str, int] = {}
    for mail_from, rcpts, content in peer.received:
        parsed = parse_message(content)
        assert mail_from == ""
        if via == "postfix":  # it really went through Postfix
            assert "postfix.test" in (parsed.header("Received") or "")
        assert parsed.header("Auto-Submitted") == "auto-replied"
        assert "thread::" in parsed.subject and "thread::" in parsed.text_body
        assert parsed.in_reply_to is not None and parsed.in_reply_to.endswith("@peer.test>")
        for r in rcpts:
            acks[r] = acks.get(r, 0) + 1

    # ooo: identical messages; case creation stops after the threshold, so do the acks.
    assert acks["ooo@peer.test"] == LOOP_THRESHOLD
    assert peer.sent["ooo"] == LOOP_THRESHOLD  # plus the first message: threshold + 1
    # vary: every message is new; the per-sender limit stops the acknowledgements.
    assert acks["vary@peer.test"] == RESPONSE_LIMIT
    assert peer.sent["vary"] == RESPONSE_LIMIT
    assert sum(peer.sent.values()) < MAX_REPLIES  # stopped by mailcase, not by the bound

    cases = _cases_by_sender(p)
    assert cases.get("ooo@peer.test") == LOOP_THRESHOLD
    assert cases.get("vary@peer.test") == RESPONSE_LIMIT + 1

    # The events are in the email log (CLI) and the maillog.
    log = p.cli("log", "--limit", "1000", "--json").stdout
    entries = json.loads(log)
    reasons = [e.get("reason") or "" for e in entries]
    loops = [r for r in reasons if r.startswith("mail loop")]
    assert len(loops) == 1 and "ooo@peer.test" in loops[0]
    limited = [r for r in reasons if "per-sender limit" in r]
    assert len(limited) == 1 and "vary@peer.test" in limited[0]
    text = p.cli("log", "--limit", "1000").stdout
    assert "mail loop" in text and "per-sender limit" in text
    # Issue 12.9: outcomes name the event; no placeholders for facts an event does not have.
    outcome = {r: e["outcome"] for r, e in zip(reasons, entries, strict=True)}
    assert outcome[loops[0]] == "discarded" and outcome[limited[0]] == "suppressed"
    assert "[None]" not in text and "None" not in text
    # One row per event: each inbound message has its accepted row and one more, never two.
    per_message: dict[str, list[str]] = {}
    for e in entries:
        if e["direction"] == "inbound":
            per_message.setdefault(e["queue_id"], []).append(e["outcome"])
    assert all(len(v) <= 2 and v.count("accepted") == 1 for v in per_message.values()), (
        per_message)
    # A reply to an acknowledgement threads by its Message-ID: no new case, no new ack.
    ack_ids = [parse_message(c).message_id for _, r, c in peer.received if "ooo@peer.test" in r]
    reply = (
        f"From: ooo <ooo@peer.test>\r\nTo: {ROUTING}\r\nSubject: something else\r\n"
        f"Message-ID: <threaded-reply@peer.test>\r\nIn-Reply-To: {ack_ids[0]}\r\n"
        "\r\nA reply to the acknowledgement.\r\n"
    )
    with smtplib.SMTP(*p.smtp, timeout=30) as smtp:
        smtp.sendmail("ooo@peer.test", [ROUTING], reply.encode())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = json.loads(p.cli("log", "--limit", "50", "--json").stdout)
        mine = [e for e in rows if e.get("message_id") == "<threaded-reply@peer.test>"]
        if any(e["outcome"] == "processed" for e in mine):
            break
        time.sleep(0.2)
    assert any("attached to case" in (e.get("reason") or "") for e in mine), mine
    assert _cases_by_sender(p) == cases

    maillog = p.log_text()
    assert "mailcase/automation" in maillog and "event=loop" in maillog
    assert "event=limit" in maillog
    assert maillog.count("event=auto-reply") == LOOP_THRESHOLD + RESPONSE_LIMIT

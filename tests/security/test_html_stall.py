"""Issue 11 item 2: one small HTML email stalled all Email-to-Case processing for minutes.

A 1 MB text/html body of "<div>" * 200000 held processing for 169 s (a message sent 3 s
later waited the whole time); 2.2 MB of closed nested divs: 175 s. Now the HTML is bounded in
size and nesting before it is sanitised, and a message whose parse runs out of time takes the
safe path (text only, HTML kept as body.html) instead of holding the others.

No timings are asserted: the attack and a normal message sent right after must both become
cases within a bound far below the attack's former cost, and the safe path must be visible.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.platform import Platform, running_platform

WAIT = 60.0  # seconds for all of a test's messages; each attack alone took ~170 s before
ROUTING = "support@example.test"


def _platform(tmp: Path, pipeline: str = "") -> Iterator[Platform]:
    config = (
        '[server]\nhostname = "mx.mailcase.test"\n'
        "[inbound]\nprocesses = 1\n"
        f"[pipeline]\npoll_interval = 0.2\n{pipeline}"
        "[cases]\nauthenticate = false\n"  # no DNS: the HTML is what is tested here
    )
    with running_platform(tmp, config=config) as p:
        p.cli("routing", "add", ROUTING, "--name", "Support")
        yield p


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from _platform(tmp_path_factory.mktemp("htmlstall"))


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """HTML bounds lifted and a short time limit: the sanitiser runs long, the watchdog acts."""
    yield from _platform(
        tmp_path_factory.mktemp("htmlslow"),
        "html_max_depth = 10000000\nhtml_max_chars = 100000000\nparse_time_limit = 0.5\n",
    )


def _html_mail(subject: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "attacker@client.test"
    msg["To"] = ROUTING
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{time.time_ns()}@client.test>"
    msg.set_content(html, subtype="html", cte="base64")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _send(p: Platform, raw: bytes) -> str:
    with smtplib.SMTP(*p.smtp, timeout=60) as s:
        s.ehlo("client.test")
        s.mail("attacker@client.test")
        assert s.rcpt(ROUTING)[0] == 250
        code, text = s.data(raw)
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def _cases(api: httpx.Client, queue_ids: list[str]) -> dict[str, str]:
    """queue id → case number, for all of them within WAIT seconds (from now), or fail."""
    deadline = time.monotonic() + WAIT
    found: dict[str, str] = {}
    while len(found) < len(queue_ids) and time.monotonic() < deadline:
        for qid in queue_ids:
            for e in api.get("/api/v1/email-log", params={"queue_id": qid}).json():
                m = re.match(r"case (\d{8}) created", e.get("reason") or "")
                if m:
                    found[qid] = m.group(1)
        time.sleep(0.2)
    missing = [q for q in queue_ids if q not in found]
    assert not missing, f"not cases within {WAIT}s (processing held up?): {missing}"
    return found


def _case(api: httpx.Client, number: str) -> tuple[dict[str, Any], dict[str, Any]]:
    case = api.get(f"/api/v1/cases/{number}").json()
    (email,) = api.get(f"/api/v1/cases/{number}/emails").json()
    return case, email


def test_attack_html_is_bounded_and_the_next_message_is_not_held(mc: Platform) -> None:
    open_divs = "<p>Attack one</p>" + "<div>" * 200_000 + "tail"  # 1 MB
    closed = "<p>Attack two</p>" + "<div>" * 200_000 + "x" + "</div>" * 200_000  # 2.2 MB
    attacks = [
        _send(mc, _html_mail("attack one", open_divs)),
        _send(mc, _html_mail("attack two", closed)),
    ]
    normal = _send(mc, _html_mail("printer broken", "<p>The printer on floor 3 is broken.</p>"))
    with mc.api() as api:
        numbers = _cases(api, [*attacks, normal])
        for qid, word in zip(attacks, ("one", "two"), strict=True):
            case, email = _case(api, numbers[qid])
            assert f"Attack {word}" in case["description"]
            assert f"<p>Attack {word}</p>" in email["html_body"]  # sanitised, not dropped
            assert len(email["html_body"]) <= 131_072 and email["html_truncated"] is True
        case, email = _case(api, numbers[normal])
        assert case["subject"] == "printer broken"
        assert email["html_body"] == "<p>The printer on floor 3 is broken.</p>"


def test_a_parse_over_the_time_limit_takes_the_safe_path(unbounded: Platform) -> None:
    # 50 000 nested divs: several seconds of sanitising when nothing bounds the depth.
    slow = _send(unbounded, _html_mail("slow", "<p>Hello &amp; welcome</p>" + "<div>" * 50_000))
    normal = _send(unbounded, _html_mail("normal", "<p>An ordinary message.</p>"))
    with unbounded.api() as api:
        numbers = _cases(api, [slow, normal])
        case, email = _case(api, numbers[slow])
        assert "Hello & welcome" in case["description"]
        assert email["html_body"] == ""
        (body,) = [a for a in email["attachments"] if a["filename"] == "body.html"]
        assert body["content_type"] == "text/html"
        assert re.search(rf"{slow}: action=slow-path", unbounded.log_text())
        case, email = _case(api, numbers[normal])
        assert email["html_body"] == "<p>An ordinary message.</p>"  # not the safe path

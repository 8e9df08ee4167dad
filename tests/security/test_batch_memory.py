"""Issue 11 item 3: memory grew with the number of big messages in a pipeline batch (24
concurrent 35 MB emails: 3.5 GB in the processing process, 1.66 GB still held when idle).

Many big messages from a few clients at once must cost processing memory bounded by the
batch's bytes (`pipeline.batch_bytes`), not by how many arrived together. The figure checked
is the processing process's peak resident memory (VmHWM), a memory figure, not a timing.
With two acceptor processes, the parent process runs the pipeline and receives no SMTP.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, running_platform

MESSAGES = 8
CLIENTS = 4
MESSAGE_BYTES = 8 * 1024 * 1024
WAIT = 240.0  # generous: seconds for all of them to become cases on a busy 2-core machine
ROUTING = "bulk@example.test"
BATCH_BYTES = 16 * 1024 * 1024  # pipeline.batch_bytes, the default
ZONE = {"client.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]}}


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # Sender authentication on (the default): the batch is then parsed by several threads at
    # once, which multiplied the memory by the number of messages in the batch.
    with DNSServer(ZONE) as dns, _platform(tmp_path_factory, dns) as p:
        yield p


@contextlib.contextmanager
def _platform(tmp_path_factory: pytest.TempPathFactory, dns: DNSServer) -> Iterator[Platform]:
    config = (
        '[server]\nhostname = "mx.mailcase.test"\n'
        "[inbound]\nprocesses = 2\n"
        "[pipeline]\npoll_interval = 0.2\n"
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
    )
    with running_platform(tmp_path_factory.mktemp("batchmem"), config=config) as p:
        p.cli("routing", "add", ROUTING, "--name", "Bulk")
        yield p


def _big_message(i: int) -> bytes:
    """About MESSAGE_BYTES on the wire: a text body and one base64 attachment."""
    msg = EmailMessage()
    msg["From"] = f"sender{i}@client.test"
    msg["To"] = ROUTING
    msg["Subject"] = f"big message {i}"
    msg["Message-ID"] = f"<big-{i}-{time.time_ns()}@client.test>"
    msg.set_content(f"Please see the attached file {i}.\n")
    payload = os.urandom(MESSAGE_BYTES * 3 // 4 - 4096)
    msg.add_attachment(payload, maintype="application", subtype="octet-stream",
                       filename=f"data-{i}.bin")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _send(p: Platform, raws: list[bytes]) -> list[str]:
    ids = []
    with smtplib.SMTP(*p.smtp, timeout=120) as s:
        s.ehlo("client.test")
        for raw in raws:
            s.mail("sender@client.test")
            assert s.rcpt(ROUTING)[0] == 250
            code, text = s.data(raw)
            assert code == 250, text
            ids.append(text.decode().rsplit(" ", 1)[-1])
    return ids


def _vm_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert m, status
    return int(m.group(1))


def _reset_hwm(pid: int) -> None:
    """Linux ≥ 4.0: writing 5 to clear_refs resets the peak to the current resident size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _wait_cases(api: httpx.Client, queue_ids: list[str]) -> None:
    deadline = time.monotonic() + WAIT
    left = set(queue_ids)
    while left and time.monotonic() < deadline:
        for qid in list(left):
            for e in api.get("/api/v1/email-log", params={"queue_id": qid}).json():
                if re.match(r"case \d{8} created", e.get("reason") or ""):
                    left.discard(qid)
        time.sleep(0.5)
    assert not left, f"not processed into cases within {WAIT}s: {sorted(left)}"


def test_concurrent_big_messages_cost_memory_bounded_by_batch_bytes(mc: Platform) -> None:
    assert mc.proc is not None
    pid = mc.proc.pid
    with mc.api() as api:
        _wait_cases(api, _send(mc, [_big_message(-1)]))  # warm up: code paths loaded once
        _reset_hwm(pid)
        before = _vm_hwm_kib(pid)
        raws = [_big_message(i) for i in range(MESSAGES)]
        per_client = [raws[i::CLIENTS] for i in range(CLIENTS)]
        # They all arrive while processing is busy (here: stopped), as in a burst: the
        # acceptor processes take them; then processing finds all of them waiting at once.
        os.kill(pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                ids = [qid for got in pool.map(lambda r: _send(mc, r), per_client) for qid in got]
        finally:
            os.kill(pid, signal.SIGCONT)
        _wait_cases(api, ids)
    grown = (_vm_hwm_kib(pid) - before) * 1024
    # Parsing and authenticating one message takes several times its size for now (the
    # < 3x target belongs to another issue); what must hold here is a bound set by the batch's bytes
    # (two of these messages), not by the eight that arrived together: 514 MiB before.
    assert grown < 20 * BATCH_BYTES, f"processing peak grew by {grown / 2**20:.0f} MiB"

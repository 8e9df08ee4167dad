"""The `mailcase` command's shared shapes, through the real CLI on a real SQLite database:
every listing has --json and --csv (one renderer, formula-safe), choices come from the model
constants, and read-only commands never migrate the database."""

from __future__ import annotations

import csv
import io
import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from mailcase.storage.db import current_revision, head_revision, make_engine, upgrade
from tests.support.platform import Platform, running_platform

# Every listing command, with the arguments it needs.
LISTINGS = [
    ("address", "list"),
    ("log",),
    ("messages", "list"),
    ("quarantine", "list"),
    ("token", "list"),
    ("routing", "list"),
    ("cases", "list"),
    ("autoresponse", "list"),
    ("tasks", "list"),
    ("outbound", "list"),
    ("relay", "list"),
    ("relay", "filter", "list"),
    ("dkim", "list"),
    ("bounces", "list"),
    ("bounces", "list", "--events"),
]

# Commands that only read: they must not upgrade an old schema.
READ_ONLY = [
    *LISTINGS,
    ("messages", "show", "Q1"),
    ("routing", "show", "help@example.test"),
    ("cases", "show", "1"),
    ("autoresponse", "show", "r1"),
    ("autoresponse", "notify"),
    ("outbound", "show", "Q1"),
]


@pytest.fixture
def mc(tmp_path: Path) -> Iterator[Platform]:
    with running_platform(tmp_path, start=False) as p:
        yield p


def _url(p: Platform) -> str:
    return f"sqlite:///{(p.data_dir / 'mailcase.db').resolve()}"


def _revision(p: Platform) -> str | None:
    engine = make_engine(_url(p))
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_every_listing_prints_json_and_csv_with_a_header(mc: Platform) -> None:
    mc.cli("init")
    for args in LISTINGS:
        assert json.loads(mc.cli(*args, "--json").stdout) == [], args
        out = mc.cli(*args, "--csv").stdout
        header = next(csv.reader(io.StringIO(out)))
        assert header and all(h and h == h.lower() for h in header), (args, out)
        both = mc.cli(*args, "--json", "--csv", check=False)
        assert both.returncode == 2 and "not both" in both.stderr, args


def test_csv_cells_are_escaped_and_formula_safe(mc: Platform) -> None:
    mc.cli("init")
    mc.cli("address", "add", "=cmd@example.test")
    mc.cli("routing", "add", "help@example.test", "--name", '=HYPERLINK("http://x.test"),"a"',
           "--owner", "+bob", "--origin", "@web", "--priority", "high")
    (row,) = csv.DictReader(io.StringIO(mc.cli("routing", "list", "--csv").stdout))
    assert row["address"] == "help@example.test"
    assert row["name"] == "'=HYPERLINK(\"http://x.test\"),\"a\""  # one cell, quotes kept
    assert row["owner"] == "'+bob" and row["origin"] == "'@web"
    assert row["priority"] == "High"  # the choice, spelled as the model spells it
    rows = list(csv.DictReader(io.StringIO(mc.cli("address", "list", "--csv").stdout)))
    assert "'=cmd@example.test" in {r["address"] for r in rows}
    # --json keeps the values as they are: it is data, not a spreadsheet
    listed = json.loads(mc.cli("routing", "list", "--json").stdout)
    assert listed[0]["name"] == '=HYPERLINK("http://x.test"),"a"'


def test_choices_come_from_the_model_constants(mc: Platform) -> None:
    mc.cli("init")
    for args, option in [
        (("cases", "list", "--status", "Pending"), "'--status'"),
        (("log", "--outcome", "lost"), "'--outcome'"),
        (("messages", "list", "--state", "gone"), "'--state'"),
        (("outbound", "list", "--state", "gone"), "'--state'"),
        (("routing", "add", "x@example.test", "--priority", "Critical"), "'--priority'"),
    ]:
        res = mc.cli(*args, check=False)
        assert res.returncode == 2 and option in res.stderr, (args, res.stderr)
    assert mc.cli("log", "--outcome", "delivered").stdout.strip() == "(no entries)"
    assert json.loads(mc.cli("cases", "list", "--status", "closed", "--json").stdout) == []


def test_read_only_commands_do_not_migrate(mc: Platform) -> None:
    # No instance: reading creates no database and says how to create one (issue 12 item 11).
    res = mc.cli("address", "list", check=False)
    assert res.returncode == 1 and "mailcase --data-dir DIR init" in res.stderr, res.stderr
    assert not (mc.data_dir / "mailcase.db").exists()
    # A database one release behind.
    mc.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(_url(mc))
    upgrade(engine, "0007")
    engine.dispose()
    for args in READ_ONLY:
        res = mc.cli(*args, check=False)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert "revision 0007" in res.stderr and "mailcase migrate" in res.stderr, args
        assert "Traceback" not in res.stderr
    assert _revision(mc) == "0007"
    assert "[inbound]" in mc.cli("config", "show").stdout  # needs no database at all
    # A writing command still upgrades; so does `mailcase migrate`.
    out = mc.cli("migrate").stdout
    assert head_revision() in out and _revision(mc) == head_revision()
    assert mc.cli("address", "list").stdout.strip() == "(none)"


def test_writing_commands_still_upgrade(mc: Platform) -> None:
    mc.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(_url(mc))
    upgrade(engine, "0007")
    engine.dispose()
    mc.cli("address", "add", "a@example.test")
    assert _revision(mc) == head_revision()
    assert "a@example.test" in mc.cli("address", "list").stdout


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_show_command_has_json() -> None:
    """Issue 12 item 17: `show` prints text for people, `--json` on request (config show:
    TOML, its own format)."""
    from mailcase.cli import cli

    shows = [(path, cmd) for path, cmd in _commands(cli) if path[-1] == "show"]
    assert len(shows) >= 10
    for path, cmd in shows:
        if path == ("config", "show"):
            continue
        assert "as_json" in {p.name for p in cmd.params}, path


def test_show_prints_text_by_default_and_json_on_request(tmp_path: Path) -> None:
    with running_platform(tmp_path) as p:
        p.cli("routing", "add", "help@example.test", "--name", "Help\x1b[2Jdesk")
        with smtplib.SMTP(*p.smtp, timeout=30) as s:
            s.sendmail("a@sender.test", ["help@example.test"],
                       b"Subject: hi\r\nMessage-ID: <m1@sender.test>\r\n\r\nbody\r\n")
        (listed,) = json.loads(p.cli("messages", "list", "--json").stdout)
        qid = listed["queue_id"]
        text = p.cli("messages", "show", qid).stdout
        assert "queue_id:" in text and qid in text and "mail_from:" in text, text
        assert "help@example.test" in text and "content" not in text, text
        assert json.loads(p.cli("messages", "show", qid, "--json").stdout)["queue_id"] == qid
        text = p.cli("routing", "show", "help@example.test").stdout
        assert "address:" in text and "help@example.test" in text, text
        assert "\x1b" not in text and "Help\\x1b[2Jdesk" in text, text  # escaped, one line
        shown = json.loads(p.cli("routing", "show", "help@example.test", "--json").stdout)
        assert shown["name"] == "Help\x1b[2Jdesk"

"""Email Relay storage and filter matching, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailcase.config import Settings
from mailcase.delivery import relays
from mailcase.delivery.relays import RelayError
from mailcase.outbound.models import relays as relays_table


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data_dir holds the server secret that encrypts relay passwords."""
    return Settings(data_dir=tmp_path)


def test_auth_forces_required_verify_and_the_password_is_never_listed(db_engine: Engine, settings: Settings) -> None:
    r = relays.add_relay(db_engine, settings, name="smart", host="Smtp.Example.COM", port=587,
                         tls_mode="off", auth_mechanism="login", username="u",
                         password="hunter2")
    assert r["tls_mode"] == "required_verify" and r["auth_mechanism"] == "LOGIN"
    assert r["host"] == "smtp.example.com" and "password" not in r
    assert "hunter2" not in repr(relays.list_relays(db_engine))
    assert "hunter2" not in repr(relays.get_relay(db_engine, "smart"))
    table = relays.load_table(db_engine, settings)
    assert "hunter2" not in repr(table)
    assert table.relays[r["id"]].password == "hunter2"  # kept for AUTH
    with db_engine.connect() as conn:  # the column holds ciphertext only (issue 11 item 4)
        stored = conn.execute(select(relays_table.c.password)).scalar_one()
    assert stored.startswith(relays.SEALED_PREFIX) and "hunter2" not in stored


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"host": "a b"}, "relay host"),
        ({"host": "mx:192.0.2.1"}, "mx: needs a domain"),
        ({"port": 0}, "port"),
        ({"tls_mode": "sometimes"}, "TLS mode"),
        ({"auth_mechanism": "CRAM-MD5", "username": "u", "password": "p"}, "PLAIN or LOGIN"),
        ({"auth_mechanism": "PLAIN"}, "username and a password"),
        ({"username": "u"}, "needs --auth"),
    ],
)
def test_bad_relays_are_refused(db_engine: Engine, settings: Settings, kw: dict[str, object], error: str) -> None:
    args: dict[str, object] = {"name": "r", "host": "relay.example.com"}
    args.update(kw)
    with pytest.raises(RelayError, match=error):
        relays.add_relay(db_engine, settings, **args)  # type: ignore[arg-type]
    assert relays.list_relays(db_engine) == []


def test_names_are_unique(db_engine: Engine, settings: Settings) -> None:
    relays.add_relay(db_engine, settings, name="r", host="a.example.com")
    with pytest.raises(RelayError, match="exists"):
        relays.add_relay(db_engine, settings, name="r", host="b.example.com")


def test_first_matching_filter_wins_by_priority(db_engine: Engine, settings: Settings) -> None:
    a = relays.add_relay(db_engine, settings, name="a", host="a.example.com")
    b = relays.add_relay(db_engine, settings, name="b", host="b.example.com", port=465)
    c = relays.add_relay(db_engine, settings, name="c", host="mx:relay.example.com")
    assert c["host_kind"] == "mx" and c["host"] == "relay.example.com"
    relays.add_filter(db_engine, relay="b", recipient="*", priority=50)
    relays.add_filter(db_engine, relay="a", sender="corp.example, *.corp.example",
                      recipient="*.partner.test", priority=10)
    relays.add_filter(db_engine, relay="c", recipient="special.test", priority=60)
    relays.add_filter(db_engine, relay="a", recipient="*", priority=1, active=False)
    t = relays.load_table(db_engine, settings)
    assert t.select("corp.example", "x.partner.test").id == a["id"]  # type: ignore[union-attr]
    assert t.select("eu.corp.example", "x.partner.test").id == a["id"]  # type: ignore[union-attr]
    assert t.select("corp.example", "partner.test").id == b["id"]  # type: ignore[union-attr]
    # the lower priority first
    assert t.select("other.example", "special.test").id == b["id"]  # type: ignore[union-attr]
    assert [f["relay"] for f in relays.list_filters(db_engine)] == ["a", "a", "b", "c"]


def test_a_taken_priority_is_refused(db_engine: Engine, settings: Settings) -> None:
    """Issue 12.6: two filters at one priority (which wins undefined) are refused, as
    Salesforce refuses them; an inactive filter holds its priority too."""
    relays.add_relay(db_engine, settings, name="a", host="a.example.com")
    relays.add_relay(db_engine, settings, name="b", host="b.example.com")
    first = relays.add_filter(db_engine, relay="a", recipient="x.test", priority=10,
                              active=False)
    with pytest.raises(RelayError, match=rf"priority 10 is taken by filter {first['id']} \(relay a\)"):
        relays.add_filter(db_engine, relay="b", recipient="y.test", priority=10)
    # Without a priority: after every existing filter.
    assert relays.add_filter(db_engine, relay="b", recipient="y.test")["priority"] == 20
    assert [f["priority"] for f in relays.list_filters(db_engine)] == [10, 20]


def test_no_filter_means_direct_delivery_and_removal_cascades(db_engine: Engine, settings: Settings) -> None:
    relays.add_relay(db_engine, settings, name="a", host="a.example.com")
    f = relays.add_filter(db_engine, relay="a", recipient="x.test")
    assert relays.load_table(db_engine, settings).select("s.test", "y.test") is None
    relays.set_relay_active(db_engine, "a", False)
    assert relays.load_table(db_engine, settings).select("s.test", "x.test") is None
    relays.remove_relay(db_engine, "a")
    assert relays.list_filters(db_engine) == []
    with pytest.raises(RelayError):
        relays.remove_filter(db_engine, f["id"])
    with pytest.raises(RelayError, match="domain pattern"):
        relays.parse_patterns("exa mple.com")
    assert relays.parse_patterns(" , ") == ("*",)

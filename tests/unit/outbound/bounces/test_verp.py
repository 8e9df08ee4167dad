"""VERP return paths and their key, against real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.features.recipients import FeatureRecipients
from mailcase.inbound.addressbook import AddressBook
from mailcase.outbound.bounces import verp
from mailcase.policy import Accept, AddressRule, Reject, decide_recipient
from mailcase.policy.recipients import AddressRules, verp_address, verp_queue_id
from mailcase.storage.db import begin_write
from tests.unit.outbound.bounces.helpers import KEY

# ---------------------------------------------------------------- VERP, pure


def test_verp_address_round_trips_case_insensitively() -> None:
    a = verp_address(KEY, "0AB12CD34EF5678901", "MX.Mailcase.TEST")
    assert a.startswith("bounce+0ab12cd34ef5678901.") and a.endswith("@mx.mailcase.test")
    assert verp_queue_id(KEY, a) == "0ab12cd34ef5678901"
    assert verp_queue_id(KEY, a.upper()) == "0ab12cd34ef5678901"


def test_forged_or_altered_verp_addresses_are_refused() -> None:
    a = verp_address(KEY, "0AB12CD34EF5678901", "mx.mailcase.test")
    local, _, domain = a.partition("@")
    mac = local.rpartition(".")[2]
    forged = [
        a.replace("0ab12cd34ef5678901", "0ab12cd34ef5678902"),  # another message
        f"{local}@other.test",  # another domain
        a.replace(mac, ("a" if mac[0] != "a" else "b") + mac[1:]),  # altered MAC
        f"bounce+0ab12cd34ef5678901@{domain}",  # no MAC
        f"bounce+.{mac}@{domain}",
        "bounce+@x",
        "support@example.test",
    ]
    for f in forged:
        assert verp_queue_id(KEY, f) is None, f
    assert verp_queue_id(b"another key" * 3, a) is None
    rules = AddressRules({"support@example.test": AddressRule("support@example.test")}, KEY)
    domains = frozenset({"example.test"})
    assert isinstance(decide_recipient(a, rules, domains, tls_active=False), Accept)
    for f in forged[:-1]:
        v = decide_recipient(f, rules, domains, tls_active=False)
        assert isinstance(v, Reject) and v.reply.code == 550, f
    # Without a key, no bounce address at all.
    v = decide_recipient(a, AddressRules({}, None), domains, tls_active=False)
    assert isinstance(v, Reject)
    with pytest.raises(ValueError):
        verp_address(KEY, "bad id!", "mx.mailcase.test")


def test_return_path_is_accepted_by_the_address_book(db_engine: Engine, settings: Settings) -> None:
    rp = verp.return_path_for(settings, "0AB12CD34EF5678901", "support@example.test")
    assert rp.startswith("bounce+0ab12cd34ef5678901.") and rp.endswith("@mx.mailcase.test")
    assert verp.return_path_for(settings, "0AB12CD34EF5678901", "") == ""
    off = settings.model_copy(deep=True)
    off.dkim.verp = False
    assert verp.return_path_for(off, "0AB12CD34EF5678901", "a@b.test") == "a@b.test"
    other = settings.model_copy(deep=True)
    other.dkim.bounce_domain = "Bounces.Example.TEST"
    assert verp.return_path_for(other, "0AB1", "a@b.test").endswith("@bounces.example.test")

    book = AddressBook(db_engine, policy=FeatureRecipients())
    book.reload()
    assert isinstance(decide_recipient(rp, book.rules, book.local_domains, tls_active=False),
                      Accept)
    bad = rp.replace("0ab12cd34ef5678901", "0ab12cd34ef5678900")
    assert isinstance(decide_recipient(bad, book.rules, book.local_domains, tls_active=False),
                      Reject)


@given(st.text(max_size=200))
@hsettings(max_examples=300, deadline=None)
def test_verp_check_never_raises_and_never_accepts_noise(text: str) -> None:
    assert verp_queue_id(KEY, text) is None
    assert verp_queue_id(KEY, "bounce+" + text) is None
    rules = AddressRules({}, KEY)
    assert rules.get(text.lower()) is None and ("bounce+" + text).lower() not in rules


def test_verp_key_is_made_once_when_missing(db_engine: Engine) -> None:
    from mailcase.outbound.bounces.models import verp_keys

    with begin_write(db_engine) as conn:
        made_by_migration = verp.load_verp_key(conn)
        assert made_by_migration is not None and len(made_by_migration) == 32
        conn.execute(verp_keys.delete())
    assert verp.load_verp_key(db_engine) is None
    with begin_write(db_engine) as conn:
        first = verp.ensure_verp_key(conn)
    with begin_write(db_engine) as conn:
        assert verp.ensure_verp_key(conn) == first != made_by_migration

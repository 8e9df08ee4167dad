"""Relay passwords in clear text: `relays.password` held the SMTP AUTH password as given, so a
database dump, a backup or a PostgreSQL replica gave the relay's credentials away. It must hold
ciphertext (AES-GCM, key from the server secret, as DKIM keys), be read back decrypted for
delivery only, and an existing database's plaintext passwords must be encrypted by migration.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update

from mailcase.config import Settings
from mailcase.delivery import relays
from mailcase.delivery.route import RouteFailure, resolve_relay
from mailcase.dns import Resolver
from mailcase.errors import StorageError
from mailcase.outbound.models import relays as relays_table
from mailcase.secrets import server_secret
from mailcase.storage.db import current_revision, head_revision, make_engine, upgrade
from tests.support.platform import running_platform

PASSWORD = "correct-horse-battery-staple"  # the secret the attack looks for


def _stored(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        value = conn.execute(
            select(relays_table.c.password).where(relays_table.c.name == name)
        ).scalar_one()
    assert isinstance(value, str)
    return value


def test_the_column_holds_ciphertext_read_back_decrypted(db_engine: Engine, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "a")
    r = relays.add_relay(db_engine, settings, name="smart", host="smtp.example.com", port=587,
                         auth_mechanism="PLAIN", username="u", password=PASSWORD)
    stored = _stored(db_engine, "smart")
    assert PASSWORD not in stored and stored.startswith("aesgcm1:")
    assert relays.load_table(db_engine, settings).relays[r["id"]].password == PASSWORD


def test_ciphertext_does_not_open_with_another_secret_or_on_another_relay(
    db_engine: Engine, tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "a")
    relays.add_relay(db_engine, settings, name="one", host="a.example.com",
                     auth_mechanism="LOGIN", username="u", password=PASSWORD)
    (other,) = relays.load_table(db_engine, Settings(data_dir=tmp_path / "b")).relays.values()
    assert other.password is None
    assert other.problem is not None and "cannot be decrypted with this server secret" in other.problem
    # Its mail is deferred with that reason (4xx), never sent without AUTH nor bounced.
    failure = asyncio.run(resolve_relay(Resolver([]), other))
    assert isinstance(failure, RouteFailure) and not failure.permanent
    assert failure.text.startswith("4.3.5 relay 'one': its password cannot be decrypted")
    relays.add_relay(db_engine, settings, name="two", host="b.example.com",
                     auth_mechanism="LOGIN", username="u", password="other")
    with db_engine.begin() as conn:  # the attacker moves one relay's ciphertext to another
        conn.execute(update(relays_table).where(relays_table.c.name == "two")
                     .values(password=_stored(db_engine, "one")))
    table = {r.name: r for r in relays.load_table(db_engine, settings).relays.values()}
    assert table["one"].password == PASSWORD and table["one"].problem is None
    assert table["two"].password is None and "relay 'two'" in (table["two"].problem or "")


def test_migration_encrypts_existing_plaintext_passwords(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0007")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO relays (name, host, host_kind, port, tls_mode, auth_mechanism, "
                "username, password, active, created_at) VALUES ('old', 'smtp.example.com', "
                "'host', 587, 'required_verify', 'PLAIN', 'u', :p, true, CURRENT_TIMESTAMP), "
                "('noauth', 'mx.example.com', 'host', 25, 'preferred', NULL, NULL, NULL, true, "
                "CURRENT_TIMESTAMP)"
            ), {"p": PASSWORD})
        # Without the server secret (alembic's own command line) it refuses, and changes nothing.
        with pytest.raises(StorageError, match="mailcase db upgrade"):
            upgrade(engine)
        assert current_revision(engine) == "0007"
        assert _stored(engine, "old") == PASSWORD
        upgrade(engine, server_secret=lambda: server_secret(settings))
        assert current_revision(engine) == head_revision()
        stored = _stored(engine, "old")
        assert PASSWORD not in stored and stored.startswith("aesgcm1:")
        table = relays.load_table(engine, settings)
        assert {r.name: r.password for r in table.relays.values()} == {
            "old": PASSWORD, "noauth": None}
        upgrade(engine, server_secret=lambda: server_secret(settings))  # a no-op at head
        assert _stored(engine, "old") == stored
    finally:
        engine.dispose()


def test_no_copy_of_the_password_in_any_data_file_cli_api_or_log(tmp_path: Path) -> None:
    log_file = tmp_path / "mail.log"
    with running_platform(tmp_path, config=f'[log]\nmaillog = "{log_file}"\n') as p:
        p.cli("relay", "add", "smart", "--host", "smtp.example.com", "--port", "587",
              "--auth", "PLAIN", "--username", "u", "--password-stdin", input=PASSWORD + "\n")
        shown = p.cli("relay", "list").stdout + p.cli("relay", "list", "--json").stdout
        with p.api() as api:
            shown += api.get("/api/v1/relays").text + api.get("/api/v1/relays/smart").text
            created = api.post("/api/v1/relays", json={
                "name": "api", "host": "smtp.example.org", "port": 587,
                "auth_mechanism": "LOGIN", "username": "u", "password": PASSWORD})
            assert created.status_code == 201, created.text
            shown += created.text
        assert "smart" in shown and PASSWORD not in shown
        p.stop()
        files = [f for f in p.data_dir.rglob("*") if f.is_file()] + [log_file, p.log_path]
        leaked = [str(f) for f in files if f.exists() and PASSWORD.encode() in f.read_bytes()]
        assert leaked == []

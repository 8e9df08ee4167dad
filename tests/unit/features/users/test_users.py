"""Users and queues on SQLite and PostgreSQL: argon2 passwords, the last admin kept, queues'
members, and the `mailcase user` / `queue` commands a newcomer runs first."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from mailcase.cli import cli
from mailcase.features.users import service
from mailcase.features.users.models import users


def test_password_is_argon2id_and_checked(db_engine: Engine) -> None:
    user = service.add_user(db_engine, "Alice@Example.TEST", name=" Alice  Smith ", password="correct horse")
    assert (user.email, user.name, user.role, user.can_log_in) == ("alice@example.test", "Alice Smith", "agent", True)
    with db_engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert service.check_password(db_engine, "ALICE@example.test", "correct horse") == user
    assert service.check_password(db_engine, "alice@example.test", "wrong horse!") is None
    assert service.check_password(db_engine, "nobody@example.test", "correct horse") is None
    assert "password" not in str(user.as_dict()).replace("can_log_in", "")


def test_inactive_or_passwordless_users_cannot_log_in(db_engine: Engine) -> None:
    service.add_user(db_engine, "admin@example.test", role="admin", password="x" * 12)
    service.add_user(db_engine, "bob@example.test", password="bobs password")
    service.add_user(db_engine, "owner@example.test")
    service.update_user(db_engine, "bob@example.test", active=False)
    assert service.check_password(db_engine, "bob@example.test", "bobs password") is None
    assert service.check_password(db_engine, "owner@example.test", "") is None
    assert not service.get_user(db_engine, "owner@example.test").can_log_in  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": "short"}, "at least 10"),
        ({"role": "root"}, "unknown role"),
        ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"time_zone": "../../etc/passwd"}, "unknown time zone"),
    ],
)
def test_bad_input_is_refused_with_what_to_do(db_engine: Engine, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(service.UserError, match=message):
        service.add_user(db_engine, "carol@example.test", **kwargs)
    assert service.list_users(db_engine) == []


def test_addresses_are_checked_and_unique(db_engine: Engine) -> None:
    for bad in ("not an address", "a@b@c", "<x@y.test>", "x@" + "d" * 300 + ".test"):
        with pytest.raises(service.UserError):
            service.add_user(db_engine, bad)
    service.add_user(db_engine, "dave@example.test")
    with pytest.raises(service.UserError, match="exists already"):
        service.add_user(db_engine, "DAVE@example.test")


def test_the_last_active_admin_stays(db_engine: Engine) -> None:
    service.add_user(db_engine, "root@example.test", role="admin")
    with pytest.raises(service.UserError, match="last active admin"):
        service.update_user(db_engine, "root@example.test", role="agent")
    with pytest.raises(service.UserError, match="last active admin"):
        service.update_user(db_engine, "root@example.test", active=False)
    service.add_user(db_engine, "second@example.test", role="admin")
    assert not service.update_user(db_engine, "root@example.test", active=False).active


def test_queue_members_are_the_active_users(db_engine: Engine) -> None:
    service.add_user(db_engine, "a@example.test")
    service.add_user(db_engine, "b@example.test")
    service.add_queue(db_engine, "Tier 1", email="tier1@example.test")
    service.add_member(db_engine, "Tier 1", "a@example.test")
    service.add_member(db_engine, "Tier 1", "B@example.test")
    service.add_member(db_engine, "Tier 1", "a@example.test")  # twice: no error, once
    assert service.get_queue(db_engine, "Tier 1").members == ("a@example.test", "b@example.test")  # type: ignore[union-attr]
    service.update_user(db_engine, "b@example.test", active=False)
    with db_engine.connect() as conn:
        assert service.queue_member_emails(conn, "Tier 1") == ["a@example.test"]
        assert service.queue_member_emails(conn, "No such") == []
    with pytest.raises(service.UserError, match="no user"):
        service.add_member(db_engine, "Tier 1", "ghost@example.test")
    assert service.remove_member(db_engine, "Tier 1", "a@example.test").members == ()


def test_cli_first_admin_from_stdin(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "inst")]
    assert runner.invoke(cli, [*base, "init"]).exit_code == 0
    done = runner.invoke(cli, [*base, "user", "add", "me@example.test", "--admin", "--password-stdin"],
                         input="a long password\n")
    assert done.exit_code == 0, done.output
    assert "me@example.test added (admin)" in done.output
    short = runner.invoke(cli, [*base, "user", "add", "x@example.test", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 10" in short.output
    listed = runner.invoke(cli, [*base, "user", "list", "--json"])
    assert '"role": "admin"' in listed.output and "argon2" not in listed.output
    assert runner.invoke(cli, [*base, "queue", "add", "Support"]).exit_code == 0
    member = runner.invoke(cli, [*base, "queue", "member", "add", "Support", "me@example.test"])
    assert member.exit_code == 0 and "me@example.test" in member.output
    shown = runner.invoke(cli, [*base, "user", "show", "ME@example.test"])
    assert shown.exit_code == 0 and "argon2" not in shown.output
    assert any(line.split() == ["role:", "admin"] for line in shown.output.splitlines())
    missing = runner.invoke(cli, [*base, "user", "show", "nobody@example.test"])
    assert missing.exit_code != 0 and "no user nobody@example.test" in missing.output


async def test_api_creates_users_without_ever_returning_the_hash(db_engine: Engine, tmp_path: Path) -> None:
    import httpx

    from mailcase.config import Settings
    from mailcase.metrics import Metrics
    from mailcase.storage import tokens
    from mailcase.web.app import create_app

    secret = tokens.create(db_engine, "admin")
    app = create_app(db_engine, Metrics(), settings=Settings(data_dir=tmp_path), enqueue_hooks=())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": f"Bearer {secret}"}) as http:
        made = await http.post("/api/v1/users", json={"email": "Eve@Example.test", "password": "long enough pw"})
        assert made.status_code == 201 and made.json()["email"] == "eve@example.test"
        assert "hash" not in made.text and "long enough" not in made.text
        again = await http.post("/api/v1/users", json={"email": "eve@example.test"})
        assert again.status_code == 422 and "exists already" in again.text
        weak = await http.post("/api/v1/users", json={"email": "f@example.test", "password": "x"})
        assert weak.status_code == 422
        named = await http.patch("/api/v1/users/eve@example.test", json={"name": "Eve"})
        assert named.json()["name"] == "Eve"
        assert (await http.post("/api/v1/queues", json={"name": "Billing"})).status_code == 201
        joined = await http.put("/api/v1/queues/Billing/members/eve@example.test")
        assert joined.json()["members"] == ["eve@example.test"]
        assert (await http.get("/api/v1/users/nobody@example.test")).status_code == 404
    assert service.check_password(db_engine, "eve@example.test", "long enough pw") is not None

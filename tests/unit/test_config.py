from pathlib import Path

import pytest

from mailcase.config import default_data_dir, load_settings, parse_hostport, settings_as_toml
from mailcase.errors import ConfigError


def test_defaults_are_the_embedded_platform() -> None:
    s = load_settings(environ={})
    assert s.inbound.listen == "127.0.0.1:2525"
    assert s.http.listen == "127.0.0.1:8025"
    assert s.database_url == f"sqlite:///{default_data_dir().resolve()}/mailcase.db"
    assert s.inbound.tls == "optional"


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[inbound]\ntls = "required"\nmax_recipients = 5\n[server]\nhostname = "mx.file"\n')
    s = load_settings(f, environ={"MAILCASE_INBOUND__MAX_RECIPIENTS": "7"},
                      overrides={"server": {"hostname": "mx.cli"}})
    assert s.inbound.tls == "required"
    assert s.inbound.max_recipients == 7
    assert s.server.hostname == "mx.cli"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"MAILCASE_INBOUND__NOPE": "1"}, "inbound.nope"),
        ({"MAILCASE_INBOUND__MAX_RECIPIENTS": "0"}, "inbound.max_recipients"),
        ({"MAILCASE_INBOUND__TLS": "maybe"}, "inbound.tls"),
        ({"MAILCASE_HTTP__LISTEN": "host:99999"}, "http.listen"),
        ({"MAILCASE_DATABASE__URL": "mysql://x"}, "database.url"),
        ({"MAILCASE_INBOUND__MAX_COMMAND_LINE": "100"}, "inbound.max_command_line"),
        ({"MAILCASE_INBOUND__MAX_TEXT_LINE": "500"}, "inbound.max_text_line"),
        ({"MAILCASE_INBOUND__HARD_ERROR_LIMIT": "0"}, "inbound.hard_error_limit"),
        ({"MAILCASE_INBOUND__ERROR_SLEEP_TIME": "-1"}, "inbound.error_sleep_time"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(environ=env)
    assert e.value.key == key


def test_long_lines_are_accepted_unless_a_limit_is_set() -> None:
    """Issue 10: 0 (the default) means any line length; a limit is 0 or RFC 5321's 1000+."""
    assert load_settings(environ={}).inbound.max_text_line == 0
    env = {"MAILCASE_INBOUND__MAX_TEXT_LINE": "1000"}
    assert load_settings(environ=env).inbound.max_text_line == 1000


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    f = tmp_path / "bad.toml"
    f.write_text("[inbound\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f, environ={})


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"MAILCASE_TLS__CERT_FILE": str(tmp_path / "c.pem")})
    assert e.value.key == "tls.key_file"


def test_config_show_round_trips_and_masks_password(tmp_path: Path) -> None:
    s = load_settings(environ={"MAILCASE_DATABASE__URL": "postgresql://mc:s3cret@db/mc"})
    text = settings_as_toml(s)
    assert "s3cret" not in text and "mc:***@db/mc" in text
    f = tmp_path / "shown.toml"
    f.write_text(settings_as_toml(load_settings(environ={})))
    assert load_settings(f, environ={}) == load_settings(environ={})


@pytest.mark.parametrize(("value", "expected"), [("127.0.0.1:25", ("127.0.0.1", 25)), ("[::1]:2525", ("::1", 2525)), ("8025", ("127.0.0.1", 8025))])
def test_parse_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected


# Issue 12 item 13: `config show` is TOML that loads back, whatever the values.
_TRICKY = 'say "hi" \\ C:\\path\nsecond line\ttab'
_EVERY_SECTION: dict[str, object] = {
    "server": {"hostname": "mx.example.test", "roles": ["smtp", "web"],
               "secret_file": "/etc/mailcase/secret key"},
    "inbound": {"listen": "[::1]:2525", "tls": "required", "max_text_line": 1000},
    "tls": {"cert_file": "/etc/ssl/a \"b\".pem", "key_file": "/etc/ssl/k.pem"},
    "database": {"url": "sqlite:////tmp/x y/mailcase.db"},
    "http": {"listen": "127.0.0.1:0"},
    "pipeline": {"batch_size": 7, "parse_time_limit": 2.5},
    "log": {"maillog": "/var/log/mail \"x\".log", "level": "DEBUG"},
    "dns": {"nameservers": ["127.0.0.1:53", "[::1]:5353"], "timeout": 1.5},
    "cases": {"internal_domains": ["a.test", "b.test"], "message_id_domain": _TRICKY},
    "automation": {"sender_address": _TRICKY, "over_limit_action": "discard"},
    "delivery": {"tls_domains": {"*.wild.test": "required", "example.com": "required_verify",
                                 "localhost": "off"},
                 "helo_name": _TRICKY, "ca_file": "/etc/ssl/ca.pem"},
    "dkim": {"compliance_bcc": ["archive@example.test"], "bounce_domain": "b.example.test"},
    "sources": {"ca_file": "/etc/ssl/imap-ca.pem", "idle": False},
}


def test_config_show_is_toml_that_loads_back_with_every_section_set(tmp_path: Path) -> None:
    import tomllib

    from pydantic import BaseModel

    from mailcase.config import Settings

    sections = {n for n, f in Settings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
    assert sections == set(_EVERY_SECTION), "a new section: set one of its keys here too"
    s = load_settings(environ={}, overrides={"data_dir": str(tmp_path / 'da"ta'),
                                             **_EVERY_SECTION})
    text = settings_as_toml(s)
    parsed = tomllib.loads(text)  # raises on invalid TOML (it did on "*.wild.test")
    assert parsed["delivery"]["tls_domains"]["*.wild.test"] == "required"
    assert parsed["automation"]["sender_address"] == _TRICKY
    f = tmp_path / "shown.toml"
    f.write_text(text)
    assert load_settings(f, environ={}) == s
    # Without the comments too, and the same for the defaults.
    f.write_text(settings_as_toml(s, with_descriptions=False))
    assert load_settings(f, environ={}) == s


def test_an_empty_data_dir_is_the_default_not_the_working_directory(tmp_path: Path) -> None:
    """Issue 12 item 11: `MAILCASE_DATA_DIR=` (empty) or `data_dir = ""` meant Path(""), the
    working directory."""
    f = tmp_path / "c.toml"
    f.write_text('data_dir = ""\n')
    assert load_settings(environ={"MAILCASE_DATA_DIR": ""}).data_dir == default_data_dir({})
    assert load_settings(f, environ={}).data_dir == default_data_dir({})

"""Issue 12 item 11: which instance a command acts on, found as Postfix finds its config
directory (--data-dir, MAILCASE_DATA_DIR, the config file, a per-user default), never from
the working directory; only `init` and `serve` create one."""

from __future__ import annotations

import os
from pathlib import Path

from mailcase.config import data_dir_origin, default_data_dir
from tests.support import forkserver
from tests.support.platform import running_platform


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    env.pop("XDG_DATA_HOME", None)
    env.update(extra)
    return env


def _run(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    res = forkserver.run(list(args), env=env, cwd=cwd, timeout=120)
    return res.returncode, res.stdout, res.stderr


def test_the_default_does_not_depend_on_the_working_directory() -> None:
    assert default_data_dir({}, euid=0) == Path("/var/lib/mailcase")
    assert default_data_dir({"HOME": "/home/ann"}, euid=1000) == Path(
        "/home/ann/.local/share/mailcase")
    assert default_data_dir({"HOME": "/home/ann", "XDG_DATA_HOME": "/data/ann"},
                            euid=1000) == Path("/data/ann/mailcase")
    # A relative XDG_DATA_HOME is ignored, as the XDG base directory spec says.
    assert default_data_dir({"HOME": "/home/ann", "XDG_DATA_HOME": "rel"},
                            euid=1000) == Path("/home/ann/.local/share/mailcase")


def test_a_command_in_the_wrong_directory_creates_nothing(tmp_path: Path) -> None:
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    default = default_data_dir(_env())
    existed = default.exists()
    for args in (("address", "list"), ("address", "add", "a@example.test"), ("migrate",),
                 ("log",), ("cases", "list")):
        rc, out, err = _run(*args, cwd=cwd, env=_env())
        if existed:  # this machine has a default instance: it is the one used, not ./var
            assert rc in (0, 1), (args, err)
        else:
            assert rc == 1, (args, out, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
            assert str(default) in err and "the default for this user" in err, err
            assert "mailcase --data-dir DIR init" in err, err
    assert list(cwd.iterdir()) == []  # no ./var where the command stood
    assert default.exists() == existed


def test_resolution_order_and_only_init_creates(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env_dir, opt_dir, cfg_dir = tmp_path / "env", tmp_path / "opt", tmp_path / "cfg"
    env = _env(MAILCASE_DATA_DIR=str(env_dir))
    # A writing command on a missing instance: refused, naming the path and the rule.
    rc, _, err = _run("address", "add", "a@example.test", cwd=cwd, env=env)
    assert rc == 1 and f"{env_dir} (from MAILCASE_DATA_DIR)" in err, err
    assert not env_dir.exists()
    rc, out, _ = _run("init", cwd=cwd, env=env)
    assert rc == 0 and f"created a mailcase instance at {env_dir}" in out, out
    rc, out, _ = _run("init", cwd=cwd, env=env)
    assert rc == 0 and "already exists" in out, out
    assert _run("address", "add", "env@example.test", cwd=cwd, env=env)[0] == 0
    # --data-dir wins over MAILCASE_DATA_DIR.
    rc, _, err = _run("--data-dir", str(opt_dir), "address", "list", cwd=cwd, env=env)
    assert rc == 1 and f"{opt_dir} (from --data-dir)" in err, err
    # MAILCASE_DATA_DIR wins over the config file; the config file over the default.
    cfg = tmp_path / "mailcase.toml"
    cfg.write_text(f'data_dir = "{cfg_dir}"\n')
    rc, out, _ = _run("--config", str(cfg), "address", "list", cwd=cwd, env=env)
    assert rc == 0 and "env@example.test" in out, out
    rc, _, err = _run("--config", str(cfg), "address", "list", cwd=cwd, env=_env())
    assert rc == 1 and f"{cfg_dir} (from data_dir in {cfg})" in err, err
    assert data_dir_origin(cfg, None, {}) == f"from data_dir in {cfg}"
    assert list(cwd.iterdir()) == []


def test_serve_says_when_it_creates_an_instance(tmp_path: Path) -> None:
    with running_platform(tmp_path) as p:
        p.stop()  # the notice comes with the ready line, after the ports answer: read it after
        assert f"created a new instance at {p.data_dir}" in p.log_text()
        p.start()
    assert p.log_text().count("created a new instance") == 1

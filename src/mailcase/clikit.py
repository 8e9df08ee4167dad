"""What every `mailcase` command module shares: the instance context and table/JSON output.

Kept apart from `cli.py` so that feature packages can define their command groups in their
own modules (`register(cli)`) without importing the entry point.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import Engine

from mailcase.config import Settings, load_settings
from mailcase.plain import to_plain

__all__ = ["Ctx", "cell", "echo_json", "rows", "table", "when"]


class Ctx:
    """The instance a command works on: `--config`, `--data-dir`, engine opened lazily.

    `enqueue_hooks` is the composition root's (`mailcase.platform.enqueue_hooks`), given by
    `mailcase.cli`: this module sits below the features and cannot build it itself."""

    def __init__(
        self,
        config: Path | None,
        data_dir: Path | None,
        *,
        enqueue_hooks: Callable[[Settings], Sequence[Any]] = lambda _s: (),
    ) -> None:
        self.config_file = config
        self.data_dir = data_dir
        self._engine: Engine | None = None
        self._enqueue_hooks = enqueue_hooks

    def enqueue_hooks(self) -> Sequence[Any]:
        """The hooks every enqueue of this process runs (compliance BCC, suppression list)."""
        return self._enqueue_hooks(self.settings())

    def settings(self, **overrides: Any) -> Settings:
        o: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        if self.data_dir is not None:
            o["data_dir"] = str(self.data_dir)
        return load_settings(self.config_file, overrides=o)

    def engine(self) -> Engine:
        if self._engine is None:
            from mailcase.filemodes import private_dir, tighten_data_dir
            from mailcase.secrets import server_secret
            from mailcase.storage.db import make_engine, upgrade

            settings = self.settings()
            private_dir(settings.data_dir)
            tighten_data_dir(settings.data_dir)
            self._engine = make_engine(settings.database_url)
            upgrade(self._engine, server_secret=lambda: server_secret(settings))
            _move_spooled(self._engine, settings)
        return self._engine


def _move_spooled(engine: Engine, settings: Settings) -> None:
    """Bring in what acceptor processes committed to their spool files (SQLite), so that a
    command sees every accepted message, also when the server is stopped after a crash."""
    if engine.dialect.name != "sqlite":
        return
    from mailcase.storage.spoolfiles import SpoolMover, spool_dir

    mover = SpoolMover(engine, spool_dir(settings.data_dir))
    try:
        mover.move_all()
    except Exception as e:  # noqa: BLE001 - the command still works on what is there
        click.echo(f"mailcase: warning: could not move spooled messages: {e}", err=True)
    finally:
        mover.close()


def cell(value: Any) -> str:
    """One table cell: `-` for None, plain text otherwise."""
    return "-" if value is None else str(to_plain(value))


def table(data: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned table with upper-case headings, or `(none)`."""
    if not data:
        click.echo("(none)")
        return
    cells = [[cell(r.get(c)) for c in columns] for r in data]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def rows(objs: Any) -> list[dict[str, Any]]:
    """Dataclasses / rows to plain dicts for `table` and JSON."""
    return [to_plain(o) for o in objs]


def echo_json(value: Any) -> None:
    """Print any value as indented JSON (datetimes as ISO text)."""
    click.echo(json.dumps(to_plain(value), indent=2, ensure_ascii=False))


def when(value: str | None) -> dt.datetime | None:
    """Parse an ISO time option; UTC when it has no zone."""
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO time like 2026-11-26T18:00") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

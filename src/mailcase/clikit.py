"""What every `mailcase` command module shares: the instance context and the output formats.

Kept apart from `cli.py` so that feature packages can define their command groups in their
own modules (`register(cli)`) without importing the entry point.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import Engine

from mailcase.applog import escape
from mailcase.config import Settings, data_dir_origin, load_settings
from mailcase.plain import to_csv, to_plain

__all__ = [
    "Ctx",
    "NoInstance",
    "describe_database",
    "Listing",
    "cell",
    "echo_json",
    "json_option",
    "listing",
    "rows",
    "show",
    "table",
    "when",
]


class NoInstance(click.ClickException):
    """The instance a command was pointed at does not exist (exit code 1, one line)."""


class Ctx:
    """The instance a command works on: `--config`, `--data-dir`, engine opened lazily.

    Only `mailcase init` and `mailcase serve` create an instance (`create`); every other
    command on a missing one fails naming the path it looked at (order: `mailcase.config`),
    so that a command run in the wrong place or with the wrong environment never silently
    works on a new, empty instance.

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
        self._migrated = False
        self._enqueue_hooks = enqueue_hooks

    def enqueue_hooks(self) -> Sequence[Any]:
        """The hooks every enqueue of this process runs (compliance BCC, suppression list)."""
        return self._enqueue_hooks(self.settings())

    def settings(self, **overrides: Any) -> Settings:
        o: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        if self.data_dir is not None:
            o["data_dir"] = str(self.data_dir)
        return load_settings(self.config_file, overrides=o)

    def describe(self, settings: Settings | None = None) -> str:
        """The instance in words: its data directory, how it was chosen, its database."""
        settings = settings or self.settings()
        origin = data_dir_origin(self.config_file, self.data_dir)
        where = f"{settings.data_dir.resolve()} ({origin})"
        if settings.database.url:
            where += f", database {describe_database(settings.database_url)}"
        return where

    def missing(self, settings: Settings) -> NoInstance:
        """The one-line error for a command pointed at no instance."""
        return NoInstance(
            f"no mailcase instance at {self.describe(settings)}: create one with "
            "`mailcase --data-dir DIR init` (or start `mailcase serve`), or point to an "
            "existing one with --data-dir, MAILCASE_DATA_DIR or --config"
        )

    def revision(self, settings: Settings) -> str | None:
        """The schema revision of the instance's database; None when there is no instance
        (no SQLite file, or a database without mailcase's tables). Creates nothing."""
        from mailcase.storage.db import current_revision, make_engine

        if _missing_sqlite_file(settings.database_url):
            return None
        engine = make_engine(settings.database_url)
        try:
            return current_revision(engine)
        finally:
            engine.dispose()

    def create(self) -> tuple[Engine, bool]:
        """`init` and `serve`: the instance's database, created and migrated if it is new.

        Returns the engine and whether the instance was created now."""
        from mailcase.secrets import server_secret
        from mailcase.storage.db import current_revision, upgrade

        settings = self.settings()
        engine = self._engine or self._open(settings)
        created = current_revision(engine) is None
        upgrade(engine, server_secret=lambda: server_secret(settings))
        if created:
            server_secret(settings)  # a complete instance: the secret exists from the start
        self._engine, self._migrated = engine, True
        return engine, created

    def engine(self) -> Engine:
        """The database for a command that writes: migrated to this version's schema first."""
        if self._engine is None or not self._migrated:
            from mailcase.secrets import server_secret
            from mailcase.storage.db import upgrade

            settings = self.settings()
            engine = self._engine or self._open_existing(settings)
            upgrade(engine, server_secret=lambda: server_secret(settings))
            self._migrated = True
            if self._engine is None:
                self._engine = engine
                _move_spooled(engine, settings)
        return self._engine

    def reader(self) -> Engine:
        """The database for a command that only reads (list, show, log): never migrated here.

        Upgrading a schema is the operator's step (`mailcase migrate`, or `mailcase serve` on
        start); a look at the mail log must not run it behind their back, nor create a database
        where none is. A schema behind this version is reported with what to run instead."""
        if self._engine is not None:
            return self._engine
        from mailcase.storage.db import current_revision, head_revision

        settings = self.settings()
        engine = self._open_existing(settings)
        current, head = current_revision(engine), head_revision()
        if current != head:
            engine.dispose()
            raise click.ClickException(
                f"the database at {describe_database(settings.database_url)} is at revision "
                f"{current}; this version of mailcase needs revision {head}: run "
                "`mailcase migrate` or start `mailcase serve`, then try again"
            )
        self._engine = engine
        _move_spooled(engine, settings)
        return engine

    def _open_existing(self, settings: Settings) -> Engine:
        """The instance's database, or `NoInstance` if there is none (nothing is created)."""
        from mailcase.filemodes import tighten_data_dir
        from mailcase.storage.db import current_revision, make_engine

        if _missing_sqlite_file(settings.database_url):
            raise self.missing(settings)
        tighten_data_dir(settings.data_dir)  # modes an older version left: no schema change
        engine = make_engine(settings.database_url)
        if current_revision(engine) is None:
            engine.dispose()
            raise self.missing(settings)
        return engine

    @staticmethod
    def _open(settings: Settings) -> Engine:
        from mailcase.filemodes import private_dir, tighten_data_dir
        from mailcase.storage.db import make_engine

        private_dir(settings.data_dir)
        tighten_data_dir(settings.data_dir)
        return make_engine(settings.database_url)


def describe_database(database_url: str) -> str:
    """The database named for a message: its file, or its URL without the password."""
    from mailcase.storage.db import describe_url

    return describe_url(database_url)


def _missing_sqlite_file(database_url: str) -> bool:
    """True when the URL names a SQLite file that does not exist (connecting would create it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        return False  # make_engine reports it
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return False
    if database.startswith("file:"):
        return False
    return not Path(database).expanduser().exists()


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
    """One table cell: `-` for None, a list comma-separated, plain text otherwise."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(to_plain(v)) for v in value)
    return str(to_plain(value))


def table(data: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
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


#: The one `--json` flag of commands that print a single record (show, add ...).
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def show(record: Any, as_json: bool, *, skip: Sequence[str] = ()) -> None:
    """Print one record as every `show` command does: `key: value` lines for people by
    default, JSON (every field) with --json.

    Values are often what a sender wrote (subjects, names): in text, unprintable characters
    are escaped (`applog.escape`) so that a value cannot forge lines or drive the terminal."""
    if as_json:
        echo_json(record)
        return
    plain = to_plain(record)
    items = [(k, v) for k, v in plain.items() if k not in skip]
    width = max((len(k) for k, _ in items), default=0) + 2
    for key, value in items:
        click.echo(f"{(key + ':').ljust(width)}{escape(cell(value))}".rstrip())


@dataclass(frozen=True)
class Listing:
    """What a listing command found, for `listing` to print in the format asked for.

    `records` are printed whole by --json; `rows` (default: the records as plain dicts) are
    the same records shaped for people, printed under `columns` as the table and as CSV.
    `lines`, when given, prints the rows instead of the table (`mailcase log`)."""

    records: Sequence[Any]
    columns: Sequence[str]
    rows: Sequence[Mapping[str, Any]] | None = None
    lines: Callable[[Sequence[Mapping[str, Any]]], Iterable[str]] | None = None
    empty: str = "(none)"


def listing(command: Callable[..., Listing]) -> Callable[..., None]:
    """Give a listing command `--json` and `--csv` and print what it returns.

    One definition of the options and one renderer for every listing, so that the formats
    cannot drift apart: JSON is every field of every record; CSV has a header row, cells
    quoted by the csv module and formula-looking text defused (`plain.to_csv`); the default
    is the aligned table. Put it between `@group.command()` and `@click.pass_obj`."""

    @click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (every field).")
    @functools.wraps(command)
    def run(*args: Any, as_json: bool, as_csv: bool, **kwargs: Any) -> None:
        if as_json and as_csv:
            raise click.UsageError("give --json or --csv, not both")
        found = command(*args, **kwargs)
        if as_json:
            echo_json(found.records)
            return
        shaped = rows(found.records) if found.rows is None else found.rows
        if as_csv:
            click.echo(to_csv(shaped, found.columns), nl=False)
        elif found.lines is not None:
            for line in found.lines(shaped):
                click.echo(line)
            if not shaped:
                click.echo(found.empty)
        elif not shaped:
            click.echo(found.empty)
        else:
            table(shaped, found.columns)

    return run


def when(value: str | None) -> dt.datetime | None:
    """Parse an ISO time option; UTC when it has no zone."""
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO time like 2026-11-26T18:00") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

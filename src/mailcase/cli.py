"""The `mailcase` command.

Every command works on the instance chosen by `--data-dir`, `MAILCASE_DATA_DIR`, the config
file's `data_dir` (and database URL), else a per-user default (`mailcase.config`),
also while `mailcase serve` runs (SQLite in WAL mode and PostgreSQL both allow that). Only
`init` and `serve` create an instance. Errors are printed as one line that says what to do,
with exit code 2 for bad configuration or usage and 1 for everything else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from mailcase import __version__
from mailcase.clikit import Ctx as _Ctx
from mailcase.clikit import Listing as _Listing
from mailcase.clikit import cell, json_option
from mailcase.clikit import listing as _listing
from mailcase.clikit import show as _show
from mailcase.clikit import when as _when
from mailcase.config import parse_hostport, settings_as_toml
from mailcase.errors import ConfigError, MailcaseError
from mailcase.storage._records import OUTCOMES
from mailcase.storage.models import MESSAGE_STATES

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="mailcase")
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    envvar="MAILCASE_CONFIG",
    help="TOML config file (default: none; MAILCASE_CONFIG).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Instance data directory (MAILCASE_DATA_DIR; see the order below).",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="MAILCASE_DEBUG",
    help="Show the full traceback of an error instead of one line (MAILCASE_DEBUG=1).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None, data_dir: Path | None, debug: bool) -> None:
    """mailcase: self-hosted email platform for support and CRM teams.

    \b
    The instance a command acts on is found, first match wins:
      1. --data-dir DIR
      2. MAILCASE_DATA_DIR
      3. data_dir in the config file (--config FILE or MAILCASE_CONFIG)
      4. /var/lib/mailcase as root, else $XDG_DATA_HOME/mailcase
         (~/.local/share/mailcase)
    never the working directory. Only `mailcase init` and `mailcase serve` create an
    instance; any other command on a missing one fails and says where it looked."""
    from mailcase.platform import enqueue_hooks

    state = ctx.obj if isinstance(ctx.obj, dict) else {}  # main()'s, to report errors
    ctx.obj = _Ctx(config, data_dir, enqueue_hooks=enqueue_hooks)
    state.update(debug=debug, ctx=ctx.obj)


# ---------------------------------------------------------------- serve / config / db
@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML config file (the same as `mailcase --config FILE serve`).",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="Instance data directory."
)
@click.option(
    "--smtp-listen",
    default=None,
    metavar="HOST:PORT",
    help="SMTP listen address (default 127.0.0.1:2525).",
)
@click.option(
    "--http-listen",
    default=None,
    metavar="HOST:PORT",
    help="HTTP listen address (default 127.0.0.1:8025).",
)
@click.option(
    "--roles",
    default=None,
    metavar="ROLE,...",
    help="What this process runs, from smtp,pipeline,delivery,web,fetch (default: all, or "
    "[server] roles). On PostgreSQL, nodes sharing one database can split them.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Application log on stderr: text lines, or one JSON object per line for log "
    "shippers (default: [log] format, text).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Lowest level logged (default: [log] level, INFO).",
)
@click.pass_obj
def serve(
    obj: _Ctx,
    config_file: Path | None,
    data_dir: Path | None,
    smtp_listen: str | None,
    http_listen: str | None,
    roles: str | None,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Start the platform: SMTP gateway, pipeline, delivery, HTTP API (or the --roles given)."""
    from mailcase.platform import parse_roles
    from mailcase.serve import run

    if config_file is not None:
        obj.config_file = config_file
    if data_dir is not None:
        obj.data_dir = data_dir
    overrides: dict[str, Any] = {}
    for section, value in (("inbound", smtp_listen), ("http", http_listen)):
        if value is not None:
            try:
                parse_hostport(value)
            except ValueError as e:
                raise ConfigError(f"{section}.listen", str(e)) from None
            overrides[section] = {"listen": value}
    if roles is not None:
        try:
            overrides["server"] = {"roles": list(parse_roles(roles))}
        except ValueError as e:
            raise ConfigError("--roles", str(e)) from None
    logging = {"format": log_format, "level": log_level and log_level.upper()}
    if any(logging.values()):
        overrides["log"] = {k: v for k, v in logging.items() if v}
    settings = obj.settings(**overrides)
    notice = None
    if obj.revision(settings) is None:
        notice = f"created a new instance at {obj.describe(settings)}"
    run(settings, notice=notice)


@cli.command("init")
@click.pass_obj
def init(obj: _Ctx) -> None:
    """Create an instance: data directory, database schema, server secret.

    Run it once before other commands (or start `mailcase serve`, which does the same);
    on an existing instance it changes nothing."""
    from mailcase.storage.db import current_revision

    settings = obj.settings()
    if obj.revision(settings) is not None:
        engine = obj.reader()
        click.echo(
            f"mailcase instance at {obj.describe(settings)} already exists "
            f"(database at revision {current_revision(engine)}); nothing to do"
        )
        return
    engine, _ = obj.create()
    click.echo(
        f"created a mailcase instance at {obj.describe(settings)} "
        f"(database at revision {current_revision(engine)})"
    )


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.pass_obj
def config_show(obj: _Ctx) -> None:
    """Print the effective configuration (defaults, file, environment) as TOML."""
    click.echo(settings_as_toml(obj.settings()), nl=False)


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: _Ctx) -> None:
    """Apply database migrations (the same as `mailcase migrate`)."""
    _migrate(obj)


@cli.command("migrate")
@click.pass_obj
def migrate(obj: _Ctx) -> None:
    """Upgrade the database to this version's schema (serve also does this on start).

    Commands that only read (list, show, log) never migrate: they ask for this instead."""
    _migrate(obj)


def _migrate(obj: _Ctx) -> None:
    from mailcase.storage.db import current_revision

    engine = obj.engine()
    click.echo(f"database at revision {current_revision(engine)}")


# ---------------------------------------------------------------- addresses
@cli.group()
def address() -> None:
    """Receiving addresses: the only recipients the SMTP gateway accepts."""


@address.command("add")
@click.argument("addr")
@click.option("--require-tls", is_flag=True, help="Refuse senders that did not issue STARTTLS.")
@click.pass_obj
def address_add(obj: _Ctx, addr: str, require_tls: bool) -> None:
    """Add a receiving address."""
    from mailcase.smtp.address import AddressError, parse_mailbox
    from mailcase.storage import addresses

    try:
        addr = parse_mailbox(addr.strip())
    except AddressError as e:
        raise click.BadParameter(str(e), param_hint="ADDR") from None
    addresses.add(obj.engine(), addr, require_tls=require_tls)
    click.echo(f"added {addr.lower()}" + (" (TLS required)" if require_tls else ""))


@address.command("list")
@_listing
@click.pass_obj
def address_list(obj: _Ctx) -> _Listing:
    """List receiving addresses."""
    from mailcase.storage import addresses

    return _Listing(
        addresses.list_addresses(obj.reader()), ["address", "require_tls", "enabled", "created_at"]
    )


@address.command("show")
@click.argument("addr")
@json_option
@click.pass_obj
def address_show(obj: _Ctx, addr: str, as_json: bool) -> None:
    """Show one receiving address (--json: as JSON)."""
    from mailcase.storage import addresses

    try:
        row = addresses.get(obj.reader(), addresses.normalize(addr))
    except ValueError as e:
        raise click.BadParameter(f"{e}; use the full address", param_hint="ADDR") from None
    if row is None:
        raise click.ClickException(f"no receiving address {addr!r}; see `mailcase address list`")
    _show(row, as_json)


@address.command("remove")
@click.argument("addr")
@click.pass_obj
def address_remove(obj: _Ctx, addr: str) -> None:
    """Remove a receiving address (mail to it is refused from then on)."""
    from mailcase.storage import addresses

    if not addresses.remove(obj.engine(), addr):
        raise click.ClickException(f"no receiving address {addr!r}; see `mailcase address list`")
    click.echo(f"removed {addr.lower()}")


@address.command("set")
@click.argument("addr")
@click.option("--require-tls/--no-require-tls", required=True)
@click.pass_obj
def address_set(obj: _Ctx, addr: str, require_tls: bool) -> None:
    """Change whether an address requires TLS."""
    from mailcase.storage import addresses

    if addresses.get(obj.engine(), addr) is None:
        raise click.ClickException(f"no receiving address {addr!r}; see `mailcase address list`")
    addresses.set_require_tls(obj.engine(), addr, require_tls)
    click.echo(f"{addr.lower()}: require_tls={require_tls}")


# ---------------------------------------------------------------- email log
@cli.command("log")
@_listing
@click.option("--since", default=None, help="ISO time (UTC if no zone).")
@click.option("--until", default=None, help="ISO time (UTC if no zone).")
@click.option("--address", default=None, help="Sender or recipient address.")
@click.option("--outcome", type=click.Choice(OUTCOMES), default=None,
              help="Only entries with this outcome (the event: accepted, rejected, ...).")
@click.option("--queue-id", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.pass_obj
def log_cmd(
    obj: _Ctx,
    since: str | None,
    until: str | None,
    address: str | None,
    outcome: str | None,
    queue_id: str | None,
    limit: int,
) -> _Listing:
    """Show the email log, newest first (one line per entry; --csv and --json: every column)."""
    from mailcase.storage import emaillog

    found = emaillog.query(
        obj.reader(),
        since=_when(since),
        until=_when(until),
        address=address,
        outcome=outcome,
        queue_id=queue_id,
        limit=limit,
    )
    return _Listing(found, emaillog.COLUMNS, rows=found, lines=_log_lines, empty="(no entries)")


def _log_lines(found: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Postfix-like lines: time, queue id, outcome, then the direction's own facts.

    Inbound: the client ([ip] and HELO's name is in --json), envelope, TLS, reply. Outbound:
    the remote host (host=name[ip]:port, relay=), envelope as sent (the VERP MAIL FROM), TLS
    with mode and how the certificate was checked, attempt, delay, stage, reply."""
    for r in found:
        version = r.get("tls_version")
        tls = f"{version}:{r.get('tls_cipher')}" if version else "plaintext"
        rc = ",".join(r.get("rcpt_to") or [])
        head = f"{cell(r.get('time'))}  {r.get('queue_id') or '-':16}  {r.get('outcome'):10}"
        envelope = f"from=<{r.get('mail_from') or ''}> to={rc}"
        if r.get("direction") != "outbound":
            # An event the pipeline or automation logged has no client: nothing printed for it.
            client = f"[{r['client_ip']}] " if r.get("client_ip") else ""
            tls_part = f"  {tls}" if r.get("client_ip") else ""
            yield (f"{head}  {client}{envelope}{tls_part}  "
                   f"{r.get('reply_code') or ''} {r.get('reason') or ''}").rstrip()
            continue
        parts = [head]
        if r.get("remote_host"):
            parts.append(f"host={r['remote_host']}[{r.get('remote_ip')}]:{r.get('remote_port')}")
        if r.get("relay"):
            parts.append(f"relay={r['relay']}")
        parts.append(envelope)
        if r.get("remote_host"):
            if r.get("tls_fallback"):
                tls = "plaintext-after-tls-failure"
            checked = f" verified={r.get('tls_basis')}" if r.get("tls_verified") else ""
            parts.append(f"tls={tls} mode={r.get('tls_mode')}{checked}")
        if r.get("attempt") is not None:
            parts.append(f"attempt={r['attempt']}")
        if r.get("delay") is not None:
            parts.append(f"delay={float(r['delay']):.1f}s")
        if r.get("stage"):
            parts.append(f"stage={r['stage']}")
        reply = f"{r.get('reply_code') or ''} {r.get('reply_text') or ''}".strip()
        if reply:
            parts.append(f"reply={reply}")
        if r.get("reason"):
            parts.append(r["reason"])
        yield "  ".join(parts)


# ---------------------------------------------------------------- messages / quarantine
@cli.group()
def messages() -> None:
    """Stored inbound messages."""


@messages.command("list")
@_listing
@click.option("--state", type=click.Choice(sorted(MESSAGE_STATES)), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.pass_obj
def messages_list(obj: _Ctx, state: str | None, limit: int) -> _Listing:
    """List stored inbound messages, newest first."""
    from mailcase.storage import messages as store

    return _Listing(
        store.list_messages(obj.reader(), state=state, limit=limit),
        ["queue_id", "received_at", "state", "mail_from", "rcpt_to", "size", "message_id"],
    )


@messages.command("show")
@click.argument("queue_id")
@click.option("--raw", is_flag=True, help="Print the stored message bytes (RFC 5322) only.")
@json_option
@click.pass_obj
def messages_show(obj: _Ctx, queue_id: str, raw: bool, as_json: bool) -> None:
    """Show one stored message: envelope, session facts, state (--json: as JSON); or, with
    --raw, its content."""
    from mailcase.storage import messages as store

    m = store.get_message(obj.reader(), queue_id)
    if m is None:
        raise click.ClickException(f"no message {queue_id!r}; see `mailcase messages list`")
    if raw:
        sys.stdout.buffer.write(m.content)
        sys.stdout.buffer.flush()
        return
    _show(m, as_json, skip=() if as_json else ("content",))


@cli.group()
def quarantine() -> None:
    """Messages that could not be processed: kept, visible, retryable."""


@quarantine.command("list")
@_listing
@click.pass_obj
def quarantine_list(obj: _Ctx) -> _Listing:
    """List quarantined messages with their error."""
    from mailcase.storage import messages as store

    return _Listing(
        store.list_quarantined(obj.reader()),
        ["queue_id", "received_at", "attempts", "mail_from", "error"],
    )


@quarantine.command("retry")
@click.argument("queue_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every quarantined message.")
@click.pass_obj
def quarantine_retry(obj: _Ctx, queue_id: str | None, retry_all: bool) -> None:
    """Put a quarantined message (or all) back for processing."""
    from mailcase.storage import messages as store

    if not queue_id and not retry_all:
        raise click.UsageError("give a QUEUE_ID or --all")
    n = store.retry_quarantined(obj.engine(), None if retry_all else queue_id)
    if n == 0 and queue_id:
        raise click.ClickException(
            f"no quarantined message {queue_id!r}; see `mailcase quarantine list`"
        )
    click.echo(f"{n} message(s) queued for processing again")


# ---------------------------------------------------------------- tokens
@cli.group()
def token() -> None:
    """API tokens for /api/v1 (stored hashed; shown once)."""


@token.command("create")
@click.argument("name")
@click.pass_obj
def token_create(obj: _Ctx, name: str) -> None:
    """Create a token and print it once."""
    from mailcase.storage import tokens

    click.echo(tokens.create(obj.engine(), name))


@token.command("list")
@_listing
@click.pass_obj
def token_list(obj: _Ctx) -> _Listing:
    """List token names (never the tokens)."""
    from mailcase.storage import tokens

    return _Listing(tokens.list_tokens(obj.reader()), ["name", "created_at", "last_used_at"])


@token.command("revoke")
@click.argument("name")
@click.pass_obj
def token_revoke(obj: _Ctx, name: str) -> None:
    """Revoke a token."""
    from mailcase.storage import tokens

    if not tokens.revoke(obj.engine(), name):
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"revoked {name}")


# ---------------------------------------------------------------- feature commands
def _register_feature_commands() -> None:
    """Each feature keeps its commands in its own module, with a `register(cli)` function
    (imported here, not named by strings: the layer contract sees what the CLI uses)."""
    from mailcase.delivery import commands as relay_commands
    from mailcase.features.cases import commands as case_commands
    from mailcase.features.cases.automation import commands as automation_commands
    from mailcase.features.tasks import commands as task_commands
    from mailcase.features.users import commands as user_commands
    from mailcase.outbound import commands as outbound_commands
    from mailcase.outbound import dkim_commands
    from mailcase.outbound.bounces import commands as bounce_commands
    from mailcase.sources import commands as source_commands

    for module in (case_commands, automation_commands, outbound_commands, relay_commands,
                   dkim_commands, bounce_commands, task_commands, source_commands, user_commands):
        module.register(cli)


_register_feature_commands()


def _debug(state: Mapping[str, Any]) -> bool:
    return bool(state.get("debug")) or os.environ.get("MAILCASE_DEBUG", "") in (
        "1", "true", "yes", "on")


def _database_url(state: Mapping[str, Any]) -> str:
    ctx = state.get("ctx")
    try:
        return ctx.settings().database_url if isinstance(ctx, _Ctx) else "(unknown)"
    except MailcaseError:
        return "(unknown)"


def main() -> None:
    """Console entry point: turns known errors into one clear line instead of a traceback
    (`--debug` or MAILCASE_DEBUG=1 lets them through with their traceback)."""
    from sqlalchemy.exc import DBAPIError

    from mailcase.storage.db import unreachable

    state: dict[str, Any] = {}
    try:
        cli.main(standalone_mode=False, obj=state)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except (ConfigError, MailcaseError, DBAPIError, OSError) as e:
        if _debug(state):
            raise
        if isinstance(e, ConfigError):
            click.echo(f"mailcase: configuration error: {e}", err=True)
            sys.exit(2)
        if isinstance(e, DBAPIError):
            message = unreachable(e, _database_url(state))
        elif isinstance(e, OSError):
            where = f": {e.filename}" if e.filename else ""
            message = (
                f"{e.strerror or e}{where}; check that the path exists and this user may "
                "write there (--data-dir, database.url, tls.cert_file ...); --debug shows where"
            )
        else:
            message = str(e)
        click.echo(f"mailcase: {message}", err=True)
        sys.exit(1)

"""`mailcase source ...`: mailbox sources (the Email-to-Case agent, issue 19).

Passwords and OAuth2 tokens are read from a prompt or stdin, never from the command line (it
would show in `ps` and shell history), and never printed. A plaintext source is shown as
PLAINTEXT everywhere it is listed.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mailcase.clikit import Ctx, echo_json, rows, table

__all__ = ["register"]

_LIST_COLUMNS = ["id", "name", "host", "port", "security", "username", "folders", "address",
                 "after", "state", "taken", "last_error", "next_attempt_at"]


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row as listed: plaintext spelt out, folders joined."""
    out = dict(row)
    if out.get("security") == "plaintext":
        out["security"] = "PLAINTEXT (unencrypted)"
    if isinstance(out.get("folders"), list):
        out["folders"] = ",".join(out["folders"])
    if isinstance(out.get("trusted_authserv_ids"), list):
        out["trusted_authserv_ids"] = ",".join(out["trusted_authserv_ids"])
    if out.get("paused"):
        out["state"] = "paused"
    return out


def _read_secret(from_stdin: bool, what: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt(what, hide_input=True))


@click.group("source")
def source() -> None:
    """Mailbox sources: IMAP mailboxes whose mail becomes inbound mail (Email-to-Case agent)."""


@source.command("add")
@click.argument("name")
@click.option("--host", required=True, help="IMAP server host name or IP address.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: 993 for --security tls, 143 otherwise.")
@click.option("--security", type=click.Choice(["tls", "starttls", "plaintext"]), default="tls",
              show_default=True,
              help="tls: implicit TLS; starttls; plaintext only with --allow-plaintext.")
@click.option("--allow-plaintext", is_flag=True,
              help="Confirm that the password may cross the network unencrypted.")
@click.option("--username", required=True)
@click.option("--auth", type=click.Choice(["password", "xoauth2"]), default="password",
              show_default=True, help="xoauth2: an OAuth2 bearer token instead of a password.")
@click.option("--secret-stdin", is_flag=True,
              help="Read the password (or token) from stdin (else it is prompted for).")
@click.option("--folder", "folders", multiple=True, default=["INBOX"], show_default=True,
              help="Folder to take mail from (repeat for several).")
@click.option("--address", required=True,
              help="Routing address the mail is treated as arriving at.")
@click.option("--after", type=click.Choice(["seen", "move", "delete"]), default="seen",
              show_default=True, help="What to do on the server once a message is stored.")
@click.option("--move-to", default=None, help="Folder for --after move.")
@click.option("--paused", is_flag=True, help="Store it paused.")
@click.option("--trust-authserv-id", "trusted", multiple=True,
              help="The mailbox server's authserv-id (first word of the Authentication-Results "
                   "it adds): its SPF/DKIM/DMARC verdicts (and ARC sets sealed by its domain) "
                   "count for require-authenticated-sender. Repeat for several.")
@click.option("--skip-to", default=None,
              help="Folder for messages that cannot be taken (over the size limit, refused); "
                   "default: left where they are. Either way they are listed by `source show`.")
@click.pass_obj
def source_add(obj: Ctx, name: str, host: str, port: int | None, security: str,
               allow_plaintext: bool, username: str, auth: str, secret_stdin: bool,
               folders: tuple[str, ...], address: str, after: str, move_to: str | None,
               paused: bool, trusted: tuple[str, ...], skip_to: str | None) -> None:
    """Add a mailbox source."""
    from mailcase.sources.imap import SourceError
    from mailcase.sources.store import add_source

    if security == "plaintext" and not allow_plaintext:
        raise click.ClickException(
            "--security plaintext sends the password unencrypted: add --allow-plaintext if "
            "you accept that, or use tls (port 993) or starttls")
    secret = _read_secret(secret_stdin, "Token" if auth == "xoauth2" else "Password")
    try:
        row = add_source(obj.engine(), obj.settings(), name=name, host=host,
                         port=port or (993 if security == "tls" else 143), security=security,
                         username=username, secret=secret, auth=auth, folders=list(folders),
                         address=address, after=after, move_to=move_to, paused=paused,
                         trusted_authserv_ids=list(trusted), skip_to=skip_to)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    warn = " (PLAINTEXT: unencrypted)" if security == "plaintext" else ""
    click.echo(f"source {row['name']} (id {row['id']}) added{warn}")


@source.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def source_list(obj: Ctx, as_json: bool) -> None:
    """Sources with their state and, when failing, the reason and the next attempt."""
    from mailcase.sources.store import list_sources

    data = [_shown(r) for r in list_sources(obj.engine())]
    if as_json:
        echo_json(data)
        return
    table(rows(data), _LIST_COLUMNS)


@source.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def source_show(obj: Ctx, name: str, as_json: bool) -> None:
    """One source in full (never its password)."""
    from mailcase.sources.imap import SourceError
    from mailcase.sources.store import folder_states, get_source, skipped

    try:
        row = _shown(get_source(obj.engine(), name))
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    row["folder_state"] = folder_states(obj.engine(), row["id"])
    row["skipped"] = skipped(obj.engine(), row["id"])
    if as_json:
        echo_json(row)
        return
    for key, value in rows([row])[0].items():
        if key not in ("folder_state", "skipped"):
            click.echo(f"{key}: {'-' if value is None else value}")
    for f in row["folder_state"]:
        click.echo(f"folder {f['folder']!r}: uidvalidity {f['uidvalidity']}, "
                   f"last uid taken {f['last_uid']}")
    for k in row["skipped"]:
        where = f"moved to {k['moved_to']!r}" if k["moved_to"] else "left on the server"
        click.echo(f"not taken: folder {k['folder']!r} uid {k['uid']} ({where}): {k['reason']}")


@source.command("trust")
@click.argument("name")
@click.argument("authserv_ids", nargs=-1)
@click.pass_obj
def source_trust(obj: Ctx, name: str, authserv_ids: tuple[str, ...]) -> None:
    """Set the authserv-ids whose verdicts count for NAME's mail (none given: trust none)."""
    from mailcase.sources.imap import SourceError
    from mailcase.sources.store import set_trusted

    try:
        row = set_trusted(obj.engine(), name, list(authserv_ids))
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    ids = ", ".join(row["trusted_authserv_ids"]) or "none"
    click.echo(f"source {name}: trusted authserv-ids: {ids}")


def _set_paused(obj: Ctx, name: str, paused: bool) -> None:
    from mailcase.sources.imap import SourceError
    from mailcase.sources.store import set_paused

    try:
        set_paused(obj.engine(), name, paused)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"source {name} {'paused' if paused else 'resumed'}")


@source.command("pause")
@click.argument("name")
@click.pass_obj
def source_pause(obj: Ctx, name: str) -> None:
    """Stop taking mail from a source (a running server stops within seconds)."""
    _set_paused(obj, name, True)


@source.command("resume")
@click.argument("name")
@click.pass_obj
def source_resume(obj: Ctx, name: str) -> None:
    """Take mail again, at once (any back-off is forgotten)."""
    _set_paused(obj, name, False)


@source.command("remove")
@click.argument("name")
@click.pass_obj
def source_remove(obj: Ctx, name: str) -> None:
    """Remove a source (mail already taken stays; nothing is changed on the server)."""
    from mailcase.sources.imap import SourceError
    from mailcase.sources.store import remove_source

    try:
        remove_source(obj.engine(), name)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"source {name} removed")


@source.command("set-secret")
@click.argument("name")
@click.option("--secret-stdin", is_flag=True, help="Read it from stdin (else prompted for).")
@click.pass_obj
def source_set_secret(obj: Ctx, name: str, secret_stdin: bool) -> None:
    """Replace a source's password (or token)."""
    from mailcase.sources.imap import SourceError
    from mailcase.sources.store import set_secret

    try:
        set_secret(obj.engine(), obj.settings(), name, _read_secret(secret_stdin, "Password"))
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"source {name}: secret replaced")


@source.command("test")
@click.argument("name")
@click.pass_obj
def source_test(obj: Ctx, name: str) -> None:
    """Connect, authenticate, count each folder's messages and say what would be done."""
    from mailcase.sources.probe import probe

    try:
        lines = probe(obj.engine(), obj.settings(), name)
    except Exception as e:  # noqa: BLE001 - SourceError and the like: the reason is the output
        raise click.ClickException(str(e)) from None
    for line in lines:
        click.echo(line)


def register(cli: click.Group) -> None:
    """Add `source` to the `mailcase` command."""
    cli.add_command(source)

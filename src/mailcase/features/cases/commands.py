"""`mailcase routing …` and `mailcase cases …`: routing addresses and cases from the shell.

Changes made here reach a running `mailcase serve` without a restart: the receiving address
behind a routing address bumps the settings generation the server polls, and the pipeline
reads the routing settings in every transaction.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from mailcase.clikit import Ctx, Listing, echo_json, json_option, listing, rows, show
from mailcase.features.cases.models import CASE_STATUSES, PRIORITIES

__all__ = ["register"]

_ROUTING_COLUMNS = [
    "address",
    "name",
    "origin",
    "priority",
    "owner",
    "queue",
    "accept_from",
    "require_tls",
    "require_authenticated_sender",
    "enabled",
]
_CASE_COLUMNS = ["number", "status", "priority", "subject", "contact", "owner", "created_at"]


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _routing_row(r: Any) -> dict[str, Any]:
    d: dict[str, Any] = rows([r])[0]
    d["accept_from"] = ",".join(r.accept_from) or "anyone"
    return d


def _case_row(c: Any) -> dict[str, Any]:
    d: dict[str, Any] = rows([c])[0]
    d["contact"] = c.contact_email or c.supplied_email
    d["owner"] = c.owner or (f"queue:{c.queue}" if c.queue else None)
    if len(d["subject"]) > 50:
        d["subject"] = d["subject"][:47] + "..."
    return d


@click.group("routing")
def routing_group() -> None:
    """Email-to-Case routing addresses: mail to them opens cases."""


@routing_group.command("add")
@click.argument("address")
@click.option("--name", default=None, help="Routing name (default: the address).")
@click.option("--origin", default="Email", show_default=True, help="Case origin.")
@click.option("--priority", type=click.Choice(sorted(PRIORITIES), case_sensitive=False),
              default="Medium", show_default=True)
@click.option("--owner", default=None, help="User who owns the new cases.")
@click.option("--queue", default=None, help="Queue that owns the new cases (instead of --owner).")
@click.option(
    "--accept-from",
    multiple=True,
    metavar="ADDRESS|DOMAIN",
    help="Accept email only from these (repeatable; *.domain for subdomains). Default: anyone.",
)
@click.option("--task-status", default=None, help="Create a task with this status for new cases.")
@click.option("--save-headers", is_flag=True, help="Keep the email headers on case emails.")
@click.option("--require-tls", is_flag=True, help="Refuse mail sent without STARTTLS.")
@click.option(
    "--require-authenticated-sender",
    is_flag=True,
    help="Only senders with DMARC pass, or an aligned SPF/DKIM pass.",
)
@json_option
@click.pass_obj
def routing_add(
    ctx: Ctx,
    address: str,
    name: str | None,
    origin: str,
    priority: str,
    owner: str | None,
    queue: str | None,
    accept_from: tuple[str, ...],
    task_status: str | None,
    save_headers: bool,
    require_tls: bool,
    require_authenticated_sender: bool,
    as_json: bool,
) -> None:
    """Add a routing address (also accepted by the SMTP server from now on)."""
    from mailcase.errors import StorageError
    from mailcase.features.cases.store import routing as routing_store

    try:
        r = routing_store.add_routing(
            ctx.engine(),
            address,
            name=name,
            origin=origin,
            priority=priority,
            owner=owner,
            queue=queue,
            accept_from=accept_from,
            task_status=task_status,
            save_headers=save_headers,
            require_tls=require_tls,
            require_authenticated_sender=require_authenticated_sender,
        )
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    except StorageError as e:
        _fail(f"{e} (see `mailcase routing list`)")
        return
    if as_json:
        echo_json(r)
    else:
        click.echo(f"added routing address {r.address}")


@routing_group.command("list")
@listing
@click.pass_obj
def routing_list(ctx: Ctx) -> Listing:
    """List routing addresses."""
    from mailcase.features.cases.store import routing as routing_store

    items = routing_store.list_routing(ctx.reader())
    return Listing(items, _ROUTING_COLUMNS, rows=[_routing_row(r) for r in items])


@routing_group.command("show")
@click.argument("address")
@json_option
@click.pass_obj
def routing_show(ctx: Ctx, address: str, as_json: bool) -> None:
    """Show one routing address (--json: as JSON)."""
    from mailcase.features.cases.store import routing as routing_store

    r = routing_store.get_routing(ctx.reader(), address)
    if r is None:
        _fail(f"no routing address {address} (see `mailcase routing list`)")
    show(r, as_json)


@routing_group.command("disable")
@click.argument("address")
@click.pass_obj
def routing_disable(ctx: Ctx, address: str) -> None:
    """Stop taking mail for a routing address (SMTP refuses it; its cases stay)."""
    from mailcase.features.cases.store import routing as routing_store

    if routing_store.update_routing(ctx.engine(), address, enabled=False) is None:
        _fail(f"no routing address {address} (see `mailcase routing list`)")
    click.echo(f"disabled routing address {address.strip().lower()}")


@routing_group.command("enable")
@click.argument("address")
@click.pass_obj
def routing_enable(ctx: Ctx, address: str) -> None:
    """Take mail for a disabled routing address again."""
    from mailcase.features.cases.store import routing as routing_store

    if routing_store.update_routing(ctx.engine(), address, enabled=True) is None:
        _fail(f"no routing address {address} (see `mailcase routing list`)")
    click.echo(f"enabled routing address {address.strip().lower()}")


@routing_group.command("set")
@click.argument("address")
@click.option("--name", default=None, help="Routing name.")
@click.option("--origin", default=None, help="Case origin.")
@click.option("--priority", type=click.Choice(sorted(PRIORITIES), case_sensitive=False),
              default=None)
@click.option("--owner", default=None, help="User who owns the new cases.")
@click.option("--queue", default=None, help="Queue that owns the new cases.")
@click.option("--accept-from", multiple=True, metavar="ADDRESS|DOMAIN",
              help="Accept email only from these (repeatable; replaces the list).")
@click.option("--accept-anyone", is_flag=True, help="Clear the accept-from list.")
@click.option("--task-status", default=None, help="Task status for new cases.")
@click.option("--save-headers/--no-save-headers", default=None)
@click.option("--require-tls/--no-require-tls", default=None)
@click.option("--require-authenticated-sender/--no-require-authenticated-sender", default=None)
@json_option
@click.pass_obj
def routing_set(
    ctx: Ctx,
    /,
    address: str,
    accept_from: tuple[str, ...],
    accept_anyone: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Change a routing address (what PATCH /api/v1/routing-addresses/ADDRESS does); options
    not given stay as they are."""
    from mailcase.features.cases.store import routing as routing_store

    changes = {k: v for k, v in options.items() if v is not None}
    if accept_from and accept_anyone:
        raise click.UsageError("give --accept-from or --accept-anyone, not both")
    if accept_from or accept_anyone:
        changes["accept_from"] = list(accept_from)
    if not changes:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    try:
        r = routing_store.update_routing(ctx.engine(), address, **changes)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if r is None:
        _fail(f"no routing address {address} (see `mailcase routing list`)")
        return
    if as_json:
        echo_json(r)
    else:
        click.echo(f"changed routing address {r.address}: {', '.join(sorted(changes))}")


@routing_group.command("remove")
@click.argument("address")
@click.pass_obj
def routing_remove(ctx: Ctx, address: str) -> None:
    """Remove a routing address and its receiving address (its cases stay)."""
    from mailcase.features.cases.store import routing as routing_store

    if not routing_store.delete_routing(ctx.engine(), address):
        _fail(f"no routing address {address} (see `mailcase routing list`)")
    click.echo(f"removed routing address {address.strip().lower()}")


@click.group("cases")
def cases_group() -> None:
    """Cases made from email."""


@cases_group.command("list")
@listing
@click.option("--status", multiple=True,
              type=click.Choice(sorted(CASE_STATUSES), case_sensitive=False),
              help="Only cases with this status (repeatable).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.pass_obj
def cases_list(ctx: Ctx, status: tuple[str, ...], limit: int) -> Listing:
    """List cases, newest first."""
    from mailcase.features.cases.store import cases as case_store

    try:
        items = case_store.list_cases(ctx.reader(), status, limit=limit)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--status") from None
    return Listing(items, _CASE_COLUMNS, rows=[_case_row(c) for c in items])


@cases_group.command("show")
@click.argument("number")
@json_option
@click.pass_obj
def cases_show(ctx: Ctx, number: str, as_json: bool) -> None:
    """Show a case and its emails."""
    from mailcase.features.cases.delivery_status import case_delivery, format_delivery
    from mailcase.features.cases.store import cases as case_store
    from mailcase.features.cases.store import emails as email_store
    from mailcase.plain import to_plain

    try:
        case = case_store.get_case(ctx.reader(), number)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="NUMBER") from None
    if case is None:
        _fail(f"no case {number} (see `mailcase cases list`)")
        return
    emails = email_store.list_emails(ctx.reader(), number) or []
    deliveries = case_delivery(ctx.reader(), number) or {}
    if as_json:
        plain = []
        for em in emails:
            item = to_plain(em)
            if em.direction == "outbound":
                item["delivery"] = deliveries.get(em.id)
            plain.append(item)
        echo_json({"case": case, "emails": plain})
        return
    contact = case.contact_email or f"{case.supplied_name} <{case.supplied_email}>"
    for label, value in [
        ("Case", case.number),
        ("Subject", case.subject),
        ("Status", case.status),
        ("Priority", case.priority),
        ("Origin", case.origin),
        ("Contact", contact),
        ("Owner", case.owner or (f"queue {case.queue}" if case.queue else "-")),
        ("Routing", case.routing_address or "-"),
        ("Parent", case.parent_number or "-"),
        ("Created", case.created_at.isoformat()),
        ("Updated", case.updated_at.isoformat()),
        ("Closed", case.closed_at.isoformat() if case.closed_at else "-"),
    ]:
        click.echo(f"{label + ':':<10} {value}")
    click.echo("")
    click.echo(case.description.rstrip())
    for em in emails:
        flags = []
        if em.sender_not_on_thread:
            flags.append("SENDER NOT ON THREAD")
        if em.text_truncated:
            flags.append("TRUNCATED")
        if em.authenticated is False:
            flags.append("NOT AUTHENTICATED")
        click.echo("")
        click.echo(
            f"--- {em.direction} #{em.id} {em.created_at.isoformat()} from {em.from_address}"
            + (f" [{', '.join(flags)}]" if flags else "")
        )
        click.echo(f"Subject: {em.subject}")
        if em.direction == "outbound":
            d = deliveries.get(em.id)
            for line in format_delivery(d) if d else ["Delivery: unknown (not in the queue)"]:
                click.echo(line)
        if em.authentication_results:
            click.echo(f"Authentication-Results: {em.authentication_results}")
        for a in em.attachments:
            click.echo(f"Attachment #{a.id}: {a.filename} ({a.content_type}, {a.size} bytes)")
        click.echo(em.text_body.rstrip())


@cases_group.command("reply")
@click.argument("number")
@click.option("--body", required=True, help="Text of the reply (the thread token is added).")
@click.option("--to", "to", multiple=True, help="Recipient (default: the last sender).")
@click.option("--cc", multiple=True, help="Cc recipient (repeatable).")
@click.option("--from", "from_address", default=None, help="Sender (default: routing address).")
@json_option
@click.pass_obj
def cases_reply(
    ctx: Ctx,
    number: str,
    body: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    from_address: str | None,
    as_json: bool,
) -> None:
    """Reply on a case: queued for delivery with the case's thread token."""
    from mailcase.features.cases.reply import ReplyError, send_reply

    try:
        result = send_reply(
            ctx.engine(), ctx.settings(), number, body=body, to=to, cc=cc,
            from_address=from_address, hooks=ctx.enqueue_hooks(),
        )
    except ReplyError as e:
        _fail(str(e))
        return
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="NUMBER") from None
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"queued {result.outbound_queue_id} to {', '.join(result.to)} "
            f"(case {result.case_number}, {result.message_id})"
        )


def _update_case(ctx: Ctx, number: str, as_json: bool, **changes: str | None) -> None:
    from mailcase.features.cases.store import cases as case_store

    try:
        case = case_store.update_case(ctx.engine(), number, **changes)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if case is None:
        _fail(f"no case {number} (see `mailcase cases list`)")
        return
    if as_json:
        echo_json(case)
    else:
        click.echo(f"case {case.number}: {case.status}, priority {case.priority}, owner "
                   f"{case.owner or (f'queue {case.queue}' if case.queue else '-')}")


@cases_group.command("set")
@click.argument("number")
@click.option("--status", type=click.Choice(sorted(CASE_STATUSES), case_sensitive=False),
              default=None)
@click.option("--priority", type=click.Choice(sorted(PRIORITIES), case_sensitive=False),
              default=None)
@click.option("--owner", default=None, help="User who owns the case.")
@click.option("--queue", default=None, help="Queue that owns the case.")
@json_option
@click.pass_obj
def cases_set(ctx: Ctx, number: str, status: str | None, priority: str | None,
              owner: str | None, queue: str | None, as_json: bool) -> None:
    """Change a case's status, priority or owner (what PATCH /api/v1/cases/NUMBER does)."""
    if status is None and priority is None and owner is None and queue is None:
        raise click.UsageError("nothing to change: give --status, --priority, --owner or --queue")
    _update_case(ctx, number, as_json, status=status, priority=priority, owner=owner,
                 queue=queue)


@cases_group.command("close")
@click.argument("number")
@json_option
@click.pass_obj
def cases_close(ctx: Ctx, number: str, as_json: bool) -> None:
    """Close a case (a later reply follows cases.closed_case_reply)."""
    _update_case(ctx, number, as_json, status="Closed")


@cases_group.command("attachment")
@click.argument("number")
@click.argument("attachment_id", metavar="ID", type=int)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (created 0600) instead of standard output.")
@click.pass_obj
def cases_attachment(ctx: Ctx, number: str, attachment_id: int, output: Path | None) -> None:
    """Write attachment ID of a case (see `cases show`) as stored, byte for byte."""
    from mailcase.features.cases.store import emails as email_store

    try:
        got = email_store.get_attachment(ctx.reader(), number, attachment_id)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="NUMBER") from None
    if got is None:
        _fail(f"no attachment {attachment_id} on case {number} (see `mailcase cases show`)")
        return
    _att, data = got
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    click.echo(f"wrote {len(data)} bytes to {output}", err=True)


@click.group("contacts")
def contacts_group() -> None:
    """Contacts: cases from their address are linked to them."""


@contacts_group.command("list")
@listing
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.pass_obj
def contacts_list(ctx: Ctx, limit: int) -> Listing:
    """List contacts by address."""
    from mailcase.features.cases.store import contacts as contact_store

    return Listing(contact_store.list_contacts(ctx.reader(), limit),
                   ["email", "name", "created_at"])


@contacts_group.command("add")
@click.argument("email")
@click.option("--name", default="", help="The contact's name.")
@json_option
@click.pass_obj
def contacts_add(ctx: Ctx, email: str, name: str, as_json: bool) -> None:
    """Add a contact."""
    from mailcase.errors import StorageError
    from mailcase.features.cases.store import contacts as contact_store

    try:
        c = contact_store.add_contact(ctx.engine(), email, name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="EMAIL") from None
    except StorageError as e:
        _fail(f"{e} (see `mailcase contacts list`)")
        return
    if as_json:
        echo_json(c)
    else:
        click.echo(f"added contact {c.email}")


def register(cli: click.Group) -> None:
    """Add this module's command groups to the `mailcase` command."""
    cli.add_command(routing_group)
    cli.add_command(cases_group)
    cli.add_command(contacts_group)

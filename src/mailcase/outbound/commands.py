"""`mailcase send` and `mailcase outbound list|show|retry` (`mailcase relay`: delivery).

The outbound queue lives in the database: these commands work whether or not `mailcase serve`
runs; a running server picks enqueued mail up on its next poll (``delivery.poll_interval``).
`send` applies the enqueue hooks of the composition root (compliance BCC, suppression list),
which `mailcase.cli` hands to every command through `Ctx.enqueue_hooks`.
"""

from __future__ import annotations

from pathlib import Path

import click

from mailcase.clikit import Ctx, Listing, cell, echo_json, json_option, listing, rows, table
from mailcase.outbound.models import CATEGORIES, MESSAGE_STATES

__all__ = ["register"]


def _build_message(
    mail_from: str, to: tuple[str, ...], subject: str, body: str
) -> bytes:
    from mailcase.outbound.compose import OutgoingEmail, compose

    return compose(OutgoingEmail(from_addr=mail_from, to=to, subject=subject, text=body))


@click.command("send")
@click.option("--from", "mail_from", required=True, help="Sender address (From and MAIL FROM).")
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable).")
@click.option("--subject", default="", help="Subject (ignored with --eml).")
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="UTF-8 text file with the body.")
@click.option("--eml", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A complete RFC 5322 message to send as it is; a missing "
              "From (the --from address), Date or Message-ID is added with a warning, as "
              "Postfix does for local mail.")
@click.option("--category", type=click.Choice(sorted(CATEGORIES)), default="user",
              show_default=True, help="Deliverability category.")
@click.pass_obj
def send_cmd(obj: Ctx, mail_from: str, to: tuple[str, ...], subject: str,
             body_file: Path | None, eml: Path | None, category: str) -> None:
    """Queue a message for delivery; prints its queue id.

    Refused: a file given to --eml that is no email (plain text: use --body-file), a From
    header without a usable address, a message with neither subject nor body. A recipient on
    the suppression list (it hard-bounced) is named on stderr and not sent to; when every
    recipient is suppressed the command exits with status 1.
    """
    from mailcase.outbound.minimum import MessageRefusedError, complete_message
    from mailcase.outbound.queue.enqueue import EnqueueError, enqueue, normalize_content
    from mailcase.storage.db import begin_write

    if eml is not None and body_file is not None:
        raise click.UsageError("use --body-file or --eml, not both")
    if eml is not None:
        try:
            done = complete_message(normalize_content(eml.read_bytes()),
                                    envelope_from=mail_from.strip())
        except MessageRefusedError as e:
            raise click.ClickException(f"{eml}: {e}") from None
        for warning in done.warnings:
            click.echo(f"mailcase: warning: {eml}: {warning}", err=True)
        content = done.content
    else:
        body = body_file.read_text(encoding="utf-8") if body_file is not None else ""
        try:
            content = _build_message(mail_from, to, subject, body)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        if not subject.strip() and not body.strip():
            raise click.UsageError(
                "nothing to send: give --subject or --body-file (or a whole message with --eml)"
            )
    try:
        with begin_write(obj.engine()) as conn:
            qid = enqueue(conn, mail_from=mail_from, rcpt_to=list(to), content=content,
                          category=category, source="cli", hooks=obj.enqueue_hooks())
    except EnqueueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(qid)
    _report_suppressed(obj, qid, to)


def _report_suppressed(obj: Ctx, queue_id: str, to: tuple[str, ...]) -> None:
    """Name each suppressed recipient; status 1 when none of `to` will get the message."""
    from mailcase.outbound.queue.views import show_message

    shown = show_message(obj.engine(), queue_id)
    states = {r["address"].lower(): r["state"] for r in (shown or {}).get("recipients", [])}
    gone = {a.strip().lower(): a.strip() for a in to
            if states.get(a.strip().lower()) == "suppressed"}
    for address in gone.values():
        click.echo(
            f"mailcase: {address}: not sent: on the suppression list (it hard-bounced); "
            f"see `mailcase bounces list`, `mailcase bounces clear {address}` to send to it "
            "again",
            err=True,
        )
    if gone and set(gone) == {a.strip().lower() for a in to}:
        raise click.ClickException(
            f"every recipient is suppressed: {queue_id} is sent to none of them"
        )


@click.group("outbound")
def outbound() -> None:
    """The outbound queue: what mailcase sends, each message's attempts and state."""


@outbound.command("list")
@listing
@click.option("--state", type=click.Choice(sorted(MESSAGE_STATES)), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.pass_obj
def outbound_list(obj: Ctx, state: str | None, limit: int) -> Listing:
    """Queued and sent messages, newest first."""
    from mailcase.outbound.queue.views import list_messages

    data = list_messages(obj.reader(), state=state, limit=limit)
    shaped = rows(data)
    for r in shaped:
        r["to"] = ",".join(f"{x['address']}({x['state']})" for x in r["recipients"])
    return Listing(data, ["queue_id", "created_at", "state", "category", "attempts",
                          "next_attempt_at", "mail_from", "to"], rows=shaped)


@outbound.command("show")
@click.argument("queue_id")
@json_option
@click.pass_obj
def outbound_show(obj: Ctx, queue_id: str, as_json: bool) -> None:
    """One message: envelope, recipients and every attempt with its TLS facts."""
    from mailcase.outbound.queue.views import show_message

    m = show_message(obj.reader(), queue_id)
    if m is None:
        raise click.ClickException(
            f"no outbound message {queue_id!r}; see `mailcase outbound list`"
        )
    if as_json:
        echo_json(m)
        return
    # `attempts` is the list of attempts here (the list view's count): printed once, below,
    # as a table, not also as a Python repr among the fields.
    for k in ("queue_id", "state", "category", "source", "mail_from", "message_id", "size",
              "created_at", "next_attempt_at", "finished_at"):
        click.echo(f"{k}: {cell(m[k])}")
    click.echo("recipients:")
    table(rows(m["recipients"]), ["address", "state", "attempts", "last_stage",
                                  "last_reply_code", "last_reply"])
    attempts = rows(m["attempts"])
    click.echo(f"attempts ({len(attempts)}):")
    for a in attempts:
        a["tls"] = (f"{a['tls_version']}:{a['tls_cipher']}" if a["tls_version"]
                    else ("plaintext" if a["remote_host"] else "-"))
        if a.get("tls_fallback"):
            a["tls"] = "plaintext-after-tls-failure"
        a["verified"] = (a["verified_by"] or "yes") if a["tls_verified"] else "no"
    table(attempts, ["attempt", "started_at", "recipient", "result", "relay",
                     "remote_host", "remote_ip", "tls", "verified", "stage",
                     "reply_code", "reply_text"])
    for a in attempts:
        if a.get("tls_fallback"):
            click.echo(f"attempt {a['attempt']} to {a['recipient']}: {a['tls_fallback']}")


@outbound.command("retry")
@click.argument("queue_id")
@click.pass_obj
def outbound_retry(obj: Ctx, queue_id: str) -> None:
    """Try a queued message again now (instead of at its next scheduled attempt)."""
    from mailcase.outbound.queue.views import retry_now

    if not retry_now(obj.engine(), queue_id):
        raise click.ClickException(
            f"no queued message {queue_id!r} (delivered, bounced and held mail is not retried)"
        )
    click.echo(f"{queue_id}: due now")


def register(cli: click.Group) -> None:
    """Add `send` and `outbound` to the `mailcase` command (`relay`: `mailcase.delivery`)."""
    cli.add_command(send_cmd)
    cli.add_command(outbound)

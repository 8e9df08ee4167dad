"""`mailcase autoresponse …`: auto-response rules and the per-address owner notification.

Limits (loop window, per-sender limit, daily case limit and the actions) are settings in the
`[automation]` section (`mailcase config show`); rules and per-address switches live in the
database because administrators change them while the server runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailcase.clikit import Ctx, Listing, echo_json, json_option, listing, table

__all__ = ["register"]

_TEMPLATE_HELP = (
    "Jinja2 (sandboxed); variables: case_number, subject, contact_name, contact_email, "
    "thread_token, routing_address, routing_name."
)


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}") from None


def _rule_row(rule: Any) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "position": rule.position,
        "enabled": rule.enabled,
        "routing_address": rule.routing_address,
        "sender_domain": rule.sender_domain,
        "subject_contains": rule.subject_contains,
        "from_name": rule.from_name,
        "subject_template": rule.subject_template,
        "text_template": rule.text_template,
        "html_template": rule.html_template,
    }


@click.group("autoresponse")
def autoresponse() -> None:
    """Auto-response rules: ordered entries, the first whose criteria match answers a new case."""


@autoresponse.command("add")
@click.argument("name")
@click.option("--position", type=int, default=None, help="Order (lower first); default: last.")
@click.option("--routing-address", default=None, help="Criterion: the routing address.")
@click.option("--sender-domain", default=None, help="Criterion: sender's domain (or below).")
@click.option("--subject-contains", default=None, help="Criterion: text in the subject.")
@click.option("--from-name", default="", help="Display name of the acknowledgement's From.")
@click.option(
    "--subject",
    "subject_template",
    default="Case {{ case_number }}: {{ subject }}",
    show_default=True,
    help="Subject template (the thread token is added).",
)
@click.option("--body", "text_template", default=None, help="Body template. " + _TEMPLATE_HELP)
@click.option(
    "--template-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the body template from this file.",
)
@click.option(
    "--html-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An HTML body template (autoescaped) from this file.",
)
@click.option("--disabled", is_flag=True, help="Add it switched off.")
@click.pass_obj
def add(
    obj: Ctx,
    name: str,
    position: int | None,
    routing_address: str | None,
    sender_domain: str | None,
    subject_contains: str | None,
    from_name: str,
    subject_template: str,
    text_template: str | None,
    template_file: Path | None,
    html_file: Path | None,
    disabled: bool,
) -> None:
    """Add a rule; its templates are checked in the sandbox before it is saved."""
    from mailcase.features.cases.automation import service as automation

    if (text_template is None) == (template_file is None):
        raise click.UsageError(
            "give the body template with exactly one of --body or --template-file"
        )
    body = text_template if text_template is not None else _read(template_file)
    try:
        rule = automation.add_rule(
            obj.engine(),
            name=name,
            position=position,
            enabled=not disabled,
            routing_address=routing_address,
            sender_domain=sender_domain,
            subject_contains=subject_contains,
            from_name=from_name,
            subject_template=subject_template,
            text_template=body or "",
            html_template=_read(html_file),
        )
    except automation.RuleError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"added rule {rule.name} (id {rule.id}, position {rule.position})")


@autoresponse.command("list")
@listing
@click.pass_obj
def list_cmd(obj: Ctx) -> Listing:
    """List rules in the order they are tried."""
    from mailcase.features.cases.automation import service as automation

    return Listing(
        [_rule_row(r) for r in automation.list_rules(obj.reader())],
        [
            "position",
            "id",
            "name",
            "enabled",
            "routing_address",
            "sender_domain",
            "subject_contains",
        ],
    )


@autoresponse.command("show")
@click.argument("rule")
@json_option
@click.pass_obj
def show(obj: Ctx, rule: str, as_json: bool) -> None:
    """Show one rule (by id or name) with its templates."""
    from mailcase.features.cases.automation import service as automation

    found = automation.get_rule(obj.reader(), rule)
    if found is None:
        raise click.ClickException(f"no rule {rule!r}; see `mailcase autoresponse list`")
    data = _rule_row(found)
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key.endswith("_template"):
            continue
        click.echo(f"{key + ':':18}{'-' if value in (None, '') else value}")
    for key in ("subject_template", "text_template", "html_template"):
        click.echo(f"--- {key}")
        click.echo(data[key] if data[key] is not None else "-")


@autoresponse.command("update")
@click.argument("rule")
@click.option("--name", default=None)
@click.option("--position", type=int, default=None)
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--routing-address", default=None, help="Empty string clears the criterion.")
@click.option("--sender-domain", default=None, help="Empty string clears the criterion.")
@click.option("--subject-contains", default=None, help="Empty string clears the criterion.")
@click.option("--from-name", default=None)
@click.option("--subject", "subject_template", default=None)
@click.option("--body", "text_template", default=None)
@click.option(
    "--template-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None
)
@click.option(
    "--html-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None
)
@click.option("--no-html", is_flag=True, help="Remove the HTML template.")
@click.pass_obj
def update(
    obj: Ctx,
    /,
    rule: str,
    template_file: Path | None,
    html_file: Path | None,
    no_html: bool,
    **changes: Any,
) -> None:
    """Change a rule (by id or name)."""
    from mailcase.features.cases.automation import service as automation

    values = {k: v for k, v in changes.items() if v is not None}
    if template_file is not None:
        values["text_template"] = _read(template_file)
    if html_file is not None:
        values["html_template"] = _read(html_file)
    if no_html:
        values["html_template"] = None
    try:
        found = automation.update_rule(obj.engine(), rule, **values)
    except automation.RuleError as e:
        raise click.ClickException(str(e)) from None
    if found is None:
        raise click.ClickException(f"no rule {rule!r}; see `mailcase autoresponse list`")
    click.echo(f"updated rule {found.name} (id {found.id})")


@autoresponse.command("remove")
@click.argument("rule")
@click.pass_obj
def remove(obj: Ctx, rule: str) -> None:
    """Delete a rule (by id or name)."""
    from mailcase.features.cases.automation import service as automation

    if not automation.remove_rule(obj.engine(), rule):
        raise click.ClickException(f"no rule {rule!r}; see `mailcase autoresponse list`")
    click.echo(f"removed rule {rule}")


@autoresponse.command("notify")
@click.argument("address", required=False)
@click.argument("value", required=False, type=click.Choice(["on", "off", "default"]))
@click.pass_obj
def notify(obj: Ctx, address: str | None, value: str | None) -> None:
    """Notify the case owner on new email for ADDRESS (a routing address): on, off or default
    (the global `automation.notify_owner`). Without arguments, list the per-address switches."""
    from mailcase.features.cases.automation import service as automation

    if address is None:
        settings = obj.settings()
        click.echo(f"global automation.notify_owner = {settings.automation.notify_owner}")
        table(
            [
                {"address": a, "notify_owner": v}
                for a, v in automation.address_settings(obj.reader())
            ],
            ["address", "notify_owner"],
        )
        return
    if value is None:
        raise click.UsageError("give on, off or default after the address")
    setting = {"on": True, "off": False, "default": None}[value]
    try:
        automation.set_notify_owner(obj.engine(), address, setting)
    except automation.RuleError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{address.lower()}: notify owner = {value}")


def register(cli: click.Group) -> None:
    """Add this module's command groups to the `mailcase` command."""
    cli.add_command(autoresponse)

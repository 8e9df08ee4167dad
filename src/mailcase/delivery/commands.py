"""`mailcase relay ...`: the Email Relays and their domain filters (tables of delivery).

Relay passwords are read from a prompt or stdin, never from the command line (it would show in
`ps` and shell history), and never printed.
"""

from __future__ import annotations

import sys

import click

from mailcase.clikit import Ctx, Listing, json_option, listing, show
from mailcase.config import OUTBOUND_TLS_MODES

__all__ = ["register"]



# ---------------------------------------------------------------- relays
@click.group("relay")
def relay() -> None:
    """Email Relay: smarthosts and the domain filters that route mail through them."""


def _relay_error(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


@relay.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Host name, IP address, or mx:DOMAIN.")
@click.option("--port", default=25, show_default=True, type=click.IntRange(1, 65535),
              help="25, 587, 465 (implicit TLS) or any.")
@click.option("--tls", "tls_mode", type=click.Choice(OUTBOUND_TLS_MODES), default="preferred",
              show_default=True, help="TLS mode (AUTH forces required_verify).")
@click.option("--auth", "auth", type=click.Choice(["PLAIN", "LOGIN"], case_sensitive=False),
              default=None, help="SMTP AUTH mechanism.")
@click.option("--username", default=None)
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin (else it is prompted for).")
@click.option("--inactive", is_flag=True, help="Store it switched off.")
@click.pass_obj
def relay_add(obj: Ctx, name: str, host: str, port: int, tls_mode: str, auth: str | None,
              username: str | None, password_stdin: bool, inactive: bool) -> None:
    """Add a relay."""
    from mailcase.delivery.relays import RelayError, add_relay

    password: str | None = None
    if auth:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True)
    try:
        r = add_relay(obj.engine(), obj.settings(), name=name, host=host, port=port,
                      tls_mode=tls_mode, auth_mechanism=auth, username=username, password=password,
                      active=not inactive)
    except RelayError as e:
        raise _relay_error(e) from None
    forced = auth and tls_mode != r["tls_mode"]
    note = " (AUTH: TLS mode forced to required_verify)" if forced else ""
    click.echo(f"relay {r['name']} (id {r['id']}) added{note}")


@relay.command("list")
@listing
@click.pass_obj
def relay_list(obj: Ctx) -> Listing:
    """Relays (passwords are never shown)."""
    from mailcase.delivery.relays import list_relays

    return Listing(list_relays(obj.reader()), ["id", "name", "host", "host_kind", "port",
                                               "tls_mode", "auth_mechanism", "username",
                                               "active"])


@relay.command("show")
@click.argument("name")
@json_option
@click.pass_obj
def relay_show(obj: Ctx, name: str, as_json: bool) -> None:
    """Show one relay, by name or id (passwords are never shown)."""
    from mailcase.delivery.relays import RelayError, get_relay

    try:
        r = get_relay(obj.reader(), name)
    except RelayError as e:
        raise _relay_error(e) from None
    show(r, as_json)


@relay.command("remove")
@click.argument("name")
@click.pass_obj
def relay_remove(obj: Ctx, name: str) -> None:
    """Remove a relay (by name or id) and its filters."""
    from mailcase.delivery.relays import RelayError, remove_relay

    try:
        remove_relay(obj.engine(), name)
    except RelayError as e:
        raise _relay_error(e) from None
    click.echo(f"relay {name} removed")


@relay.group("filter")
def relay_filter() -> None:
    """Email domain filters: which mail goes through which relay (first match wins)."""


@relay_filter.command("add")
@click.option("--relay", "relay_name", required=True, help="Relay name or id.")
@click.option("--sender", default="*", show_default=True,
              help="Sender domain patterns, comma-separated (example.com, *.example.com, *).")
@click.option("--recipient", default="*", show_default=True,
              help="Recipient domain patterns, comma-separated.")
@click.option("--priority", default=None, type=int,
              help="Lower is tried first; unique (a taken priority is refused). Default: "
              "after every existing filter (highest + 10; 100 for the first).")
@click.option("--inactive", is_flag=True)
@click.pass_obj
def filter_add(obj: Ctx, relay_name: str, sender: str, recipient: str, priority: int | None,
               inactive: bool) -> None:
    """Route mail matching both patterns through a relay."""
    from mailcase.delivery.relays import RelayError, add_filter

    try:
        f = add_filter(obj.engine(), relay=relay_name, sender=sender, recipient=recipient,
                       priority=priority, active=not inactive)
    except RelayError as e:
        raise _relay_error(e) from None
    click.echo(f"filter {f['id']} added: sender {f['sender_pattern']} recipient "
               f"{f['recipient_pattern']} -> {f['relay']} (priority {f['priority']})")


@relay_filter.command("list")
@listing
@click.pass_obj
def filter_list(obj: Ctx) -> Listing:
    """Filters in match order."""
    from mailcase.delivery.relays import list_filters

    return Listing(list_filters(obj.reader()), ["id", "priority", "sender_pattern",
                                                "recipient_pattern", "relay", "active"])


@relay_filter.command("remove")
@click.argument("filter_id", type=int)
@click.pass_obj
def filter_remove(obj: Ctx, filter_id: int) -> None:
    """Remove a filter by id."""
    from mailcase.delivery.relays import RelayError, remove_filter

    try:
        remove_filter(obj.engine(), filter_id)
    except RelayError as e:
        raise _relay_error(e) from None
    click.echo(f"filter {filter_id} removed")


def register(cli: click.Group) -> None:
    """Add `relay` to the `mailcase` command."""
    cli.add_command(relay)

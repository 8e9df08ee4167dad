"""`mailcase bounces …`: the suppression list and the bounces recorded."""

from __future__ import annotations

import click

from mailcase.clikit import Ctx, Listing, listing

__all__ = ["register"]


@click.group()
def bounces() -> None:
    """Addresses that hard-bounced: mail to them is not sent until cleared."""


@bounces.command("list")
@listing
@click.option("--events", is_flag=True, help="Every recorded bounce (hard and soft) instead.")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True)
@click.pass_obj
def bounces_list(obj: Ctx, events: bool, limit: int) -> Listing:
    """The suppression list (or, with --events, the bounces recorded)."""
    from mailcase.outbound.bounces import suppression as b

    if events:
        return Listing(b.list_events(obj.reader(), limit=limit),
                       ["time", "recipient", "kind", "status", "outbound_queue_id",
                        "remote_mta", "source"])
    return Listing(b.list_bounces(obj.reader(), limit=limit),
                   ["address", "status", "bounces", "last_bounced_at", "queue_id", "source",
                    "reason"])


@bounces.command("clear")
@click.argument("address")
@click.pass_obj
def bounces_clear(obj: Ctx, address: str) -> None:
    """Take ADDRESS off the suppression list: mail to it is sent again."""
    from mailcase.outbound.bounces import suppression as b

    if not b.clear(obj.engine(), address):
        raise click.ClickException(
            f"{address!r} is not on the suppression list; see `mailcase bounces list`"
        )
    click.echo(f"cleared {address.strip().lower()}")


def register(cli: click.Group) -> None:
    """Add `bounces` to the `mailcase` command."""
    cli.add_command(bounces)

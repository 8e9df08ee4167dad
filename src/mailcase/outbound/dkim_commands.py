"""`mailcase dkim …`: the DKIM keys of the sending domains."""

from __future__ import annotations

import click

from mailcase.clikit import Ctx, Listing, echo_json, json_option, listing, rows
from mailcase.outbound.dkim_models import DKIM_ALGORITHMS

__all__ = ["register"]

_KEY_COLUMNS = ["domain", "selector", "algorithm", "state", "created_at", "checked_at",
                "check_result"]


def _dkim_error(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


@click.group()
def dkim() -> None:
    """DKIM keys of the sending domains (signing starts once the DNS record is found)."""


@dkim.command("create")
@click.argument("domain")
@click.option("--selector", default=None, help="Selector (default: dkim.selector).")
@click.option("--algorithm", type=click.Choice(sorted(DKIM_ALGORITHMS)), default="rsa",
              show_default=True, help="RSA-2048 (understood everywhere) or Ed25519 (RFC 8463).")
@json_option
@click.pass_obj
def dkim_create(obj: Ctx, domain: str, selector: str | None, algorithm: str,
                as_json: bool) -> None:
    """Generate a key for DOMAIN and print the DNS TXT record to publish."""
    from mailcase.outbound import dkim as k

    try:
        info = k.create_key(obj.engine(), obj.settings(), domain, selector=selector,
                            algorithm=algorithm)
    except k.DKIMError as e:
        raise _dkim_error(e) from None
    if as_json:
        echo_json(info)
        return
    click.echo(f"created {info.algorithm} key {info.selector!r} for {info.domain} (pending)")
    click.echo("Publish this TXT record, then run `mailcase dkim check "
               f"{info.domain}`:")
    click.echo(k.zone_line(info))


@dkim.command("list")
@listing
@click.pass_obj
def dkim_list(obj: Ctx) -> Listing:
    """Keys with their state and the last DNS check."""
    from mailcase.outbound import dkim as k

    keys = k.list_keys(obj.reader())
    settings = obj.settings()
    data = rows(keys)
    for d, key in zip(data, keys, strict=True):
        if k.rotation_due(key, settings):
            d["state"] = f"{key.state} (rotation due)"
    return Listing(keys, _KEY_COLUMNS, rows=data)


@dkim.command("check")
@listing
@click.argument("domain", required=False)
@click.pass_obj
def dkim_check(obj: Ctx, domain: str | None) -> Listing:
    """Look up the DNS records of DOMAIN's keys (all domains without DOMAIN) and switch to
    the newest key whose record matches. Starts a due rotation (`dkim.rotate_days`).

    "active" means signing with that key now: a running server notices the change with its
    next message (the settings generation), not after a cache time."""
    from mailcase.outbound import dkim as k

    engine, settings = obj.engine(), obj.settings()
    domains = [domain] if domain else sorted({x.domain for x in k.list_keys(engine)})
    if not domains:
        raise click.ClickException("no DKIM keys; create one with `mailcase dkim create DOMAIN`")
    report: list[dict[str, object]] = []
    for d in domains:
        try:
            results, rotated = k.maintain(engine, settings, d)
            keys = k.list_keys(engine, d)
        except k.DKIMError as e:
            raise _dkim_error(e) from None
        for r in results:
            state = next((x.state for x in keys if x.selector == r.selector), "-")
            report.append({"domain": d, "selector": r.selector, "found": r.found,
                           "state": state, "detail": r.detail})
        if rotated is not None:
            report.append({"domain": d, "selector": rotated.selector, "found": False,
                           "state": "pending",
                           "detail": f"rotation due: publish {k.zone_line(rotated)}"})
    return Listing(report, ["domain", "selector", "found", "state", "detail"])


@dkim.command("rotate")
@click.argument("domain")
@click.option("--algorithm", type=click.Choice(sorted(DKIM_ALGORITHMS)), default=None,
              help="Algorithm of the new key (default: that of the current key).")
@json_option
@click.pass_obj
def dkim_rotate(obj: Ctx, domain: str, algorithm: str | None, as_json: bool) -> None:
    """New key on the alternate selector; signing switches once its record is found."""
    from mailcase.outbound import dkim as k

    try:
        info = k.rotate(obj.engine(), obj.settings(), domain, algorithm=algorithm)
    except k.DKIMError as e:
        raise _dkim_error(e) from None
    if as_json:
        echo_json(info)
        return
    click.echo(f"new {info.algorithm} key {info.selector!r} for {info.domain} (pending)")
    click.echo("Publish this TXT record (keep the old one for a few days), then run "
               f"`mailcase dkim check {info.domain}`:")
    click.echo(k.zone_line(info))


def register(cli: click.Group) -> None:
    """Add `dkim` to the `mailcase` command."""
    cli.add_command(dkim)

"""`mailcase user …` and `mailcase queue …`: accounts and queues from the shell.

Passwords are read from a prompt (hidden, asked twice) or, for scripts, from standard input
with `--password-stdin`; never from an argument, which `ps` and shell history would show.
"""

from __future__ import annotations

import sys

import click

from mailcase.clikit import Ctx, Listing, echo_json, json_option, listing, show

from .models import ROLES

__all__ = ["register"]

_USER_COLUMNS = ["email", "name", "role", "active", "can_log_in", "time_zone"]


def _read_password(from_stdin: bool, required: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not required and not sys.stdin.isatty():
        return None
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def _fail(e: ValueError) -> click.ClickException:
    return click.ClickException(str(e))


@click.group("user")
def user_group() -> None:
    """Users: admins set mail up, agents work cases; both log in to the console."""


@user_group.command("add")
@click.argument("email")
@click.option("--name", default="", help="Full name, shown as the case owner and in mail.")
@click.option("--admin", is_flag=True, help="Make an admin (same as --role admin).")
@click.option("--role", type=click.Choice(ROLES), default="agent", show_default=True)
@click.option("--time-zone", default="UTC", show_default=True, help="IANA name, for reports.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@click.option(
    "--no-password", is_flag=True, help="No login: the user only owns cases and gets mail."
)
@json_option
@click.pass_obj
def user_add(
    ctx: Ctx,
    email: str,
    name: str,
    admin: bool,
    role: str,
    time_zone: str,
    password_stdin: bool,
    no_password: bool,
    as_json: bool,
) -> None:
    """Add a user. The first admin: `mailcase user add you@example.com --admin`."""
    from mailcase.features.users import service

    password = None if no_password else _read_password(password_stdin, required=True)
    try:
        user = service.add_user(
            ctx.engine(),
            email,
            name=name,
            role="admin" if admin else role,
            password=password,
            time_zone=time_zone,
        )
    except ValueError as e:
        raise _fail(e) from None
    if as_json:
        echo_json(user.as_dict())
    else:
        click.echo(f"user {user.email} added ({user.role})")


@user_group.command("list")
@listing
@click.pass_obj
def user_list(ctx: Ctx) -> Listing:
    """List users."""
    from mailcase.features.users import service

    items = service.list_users(ctx.reader())
    return Listing([u.as_dict() for u in items], _USER_COLUMNS)


@user_group.command("show")
@click.argument("email")
@json_option
@click.pass_obj
def user_show(ctx: Ctx, email: str, as_json: bool) -> None:
    """Show one user."""
    from mailcase.features.users import service

    user = service.get_user(ctx.reader(), email)
    if user is None:
        raise click.ClickException(f"no user {email} (see `mailcase user list`)")
    show(user.as_dict(), as_json)


@user_group.command("set")
@click.argument("email")
@click.option("--name", default=None)
@click.option("--role", type=click.Choice(ROLES), default=None)
@click.option("--active/--inactive", default=None, help="Deactivate instead of deleting.")
@click.option("--time-zone", default=None)
@json_option
@click.pass_obj
def user_set(
    ctx: Ctx,
    email: str,
    name: str | None,
    role: str | None,
    active: bool | None,
    time_zone: str | None,
    as_json: bool,
) -> None:
    """Change a user's name, role, time zone or active flag."""
    from mailcase.features.users import service

    try:
        user = service.update_user(
            ctx.engine(), email, name=name, role=role, active=active, time_zone=time_zone
        )
    except ValueError as e:
        raise _fail(e) from None
    if as_json:
        echo_json(user.as_dict())
    else:
        state = "active" if user.active else "inactive"
        click.echo(f"user {user.email}: {user.role}, {state}")


@user_group.command("passwd")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--remove", is_flag=True, help="Remove the password: the user can no longer log in.")
@click.pass_obj
def user_passwd(ctx: Ctx, email: str, password_stdin: bool, remove: bool) -> None:
    """Set or remove a user's password."""
    from mailcase.features.users import service

    password = None if remove else _read_password(password_stdin, required=True)
    try:
        user = service.set_password(ctx.engine(), email, password)
    except ValueError as e:
        raise _fail(e) from None
    click.echo(f"user {user.email}: password {'removed' if remove else 'set'}")


@click.group("queue")
def queue_group() -> None:
    """Queues: groups of agents that routing addresses send cases to."""


@queue_group.command("add")
@click.argument("name")
@click.option("--email", default=None, help="Address that gets alerts sent to the whole queue.")
@click.pass_obj
def queue_add(ctx: Ctx, name: str, email: str | None) -> None:
    """Add a queue."""
    from mailcase.features.users import service

    try:
        queue = service.add_queue(ctx.engine(), name, email=email)
    except ValueError as e:
        raise _fail(e) from None
    click.echo(f"queue {queue.name!r} added")


@queue_group.command("list")
@listing
@click.pass_obj
def queue_list(ctx: Ctx) -> Listing:
    """List queues and their members."""
    from mailcase.features.users import service

    items = service.list_queues(ctx.reader())
    shaped = [{**q.as_dict(), "members": " ".join(q.members)} for q in items]
    return Listing([q.as_dict() for q in items], ["name", "email", "members"], rows=shaped)


@queue_group.command("member")
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.argument("queue")
@click.argument("email")
@click.pass_obj
def queue_member(ctx: Ctx, action: str, queue: str, email: str) -> None:
    """Add a user to a queue or take them out: `mailcase queue member add Support a@x.test`."""
    from mailcase.features.users import service

    change = service.add_member if action == "add" else service.remove_member
    try:
        found = change(ctx.engine(), queue, email)
    except ValueError as e:
        raise _fail(e) from None
    click.echo(f"queue {found.name!r}: {' '.join(found.members) or '(no members)'}")


def register(cli: click.Group) -> None:
    """Add `mailcase user` and `mailcase queue` to the `mailcase` command."""
    cli.add_command(user_group)
    cli.add_command(queue_group)

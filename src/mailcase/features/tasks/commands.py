"""`mailcase tasks …`: list tasks and change their status from the shell."""

from __future__ import annotations

from typing import Any

import click

from mailcase.clikit import Ctx, Listing, echo_json, json_option, listing, rows, show

__all__ = ["register"]

_COLUMNS = ["id", "status", "priority", "case_number", "owner", "subject", "created_at"]


def _row(t: Any) -> dict[str, Any]:
    d: dict[str, Any] = rows([t])[0]
    if len(d["subject"]) > 50:
        d["subject"] = d["subject"][:47] + "..."
    return d


@click.group("tasks")
def tasks_group() -> None:
    """Tasks (made for new cases when the routing address has --task-status)."""


@tasks_group.command("list")
@listing
@click.option("--status", default=None, help='Only tasks with this status (e.g. "Not Started").')
@click.option("--case", "case", default=None, metavar="NUMBER", help="Only tasks of this case.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.pass_obj
def tasks_list(ctx: Ctx, status: str | None, case: str | None, limit: int) -> Listing:
    """List tasks, newest first."""
    from mailcase.features.cases.store.cases import parse_number
    from mailcase.features.tasks import service

    number: int | None = None
    if case is not None:
        try:
            number = parse_number(case)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--case") from None
    items = service.list_tasks(ctx.reader(), status=status, case_number=number, limit=limit)
    return Listing([t.as_dict() for t in items], _COLUMNS, rows=[_row(t) for t in items])


@tasks_group.command("set-status")
@click.argument("task_id", metavar="ID", type=int)
@click.argument("status")
@json_option
@click.pass_obj
def tasks_set_status(ctx: Ctx, task_id: int, status: str, as_json: bool) -> None:
    """Change the status of task ID (free text, e.g. "Completed")."""
    from mailcase.features.tasks import service

    try:
        task = service.set_status(ctx.engine(), task_id, status)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="STATUS") from None
    if task is None:
        raise click.ClickException(f"no task {task_id} (see `mailcase tasks list`)")
    if as_json:
        echo_json(task.as_dict())
    else:
        click.echo(f"task {task.id}: {task.status}")


@tasks_group.command("show")
@click.argument("task_id", metavar="ID", type=int)
@json_option
@click.pass_obj
def tasks_show(ctx: Ctx, task_id: int, as_json: bool) -> None:
    """Show task ID (--json: as JSON)."""
    from mailcase.features.tasks import service

    task = service.get_task(ctx.reader(), task_id)
    if task is None:
        raise click.ClickException(f"no task {task_id} (see `mailcase tasks list`)")
    show(task.as_dict(), as_json)


def register(cli: click.Group) -> None:
    """Add `mailcase tasks` to the `mailcase` command."""
    cli.add_command(tasks_group)

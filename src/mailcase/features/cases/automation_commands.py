"""Command-line group(s) of this feature (placeholder until the feature lands)."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(cli: click.Group) -> None:
    """Add this module's command groups to the `mailcase` command."""

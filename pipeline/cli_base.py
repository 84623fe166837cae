"""The command classes of every `bilm` command (a leaf: click and pipeline.errors only, so that the serving
layer's commands use them too)."""
from __future__ import annotations

import click

from pipeline.errors import exit_on_user_error


class BilmCommand(click.Command):
    """The one exit path: a `BilmError` from the command is one line on stderr and exit code 2, also where the
    command is invoked on its own (tests, another click program)."""

    def invoke(self, ctx: click.Context):
        with exit_on_user_error():
            return super().invoke(ctx)


class BilmGroup(click.Group):
    """A group whose commands (and subgroups) are BilmCommands."""

    command_class = BilmCommand
    group_class = type  # subgroups are BilmGroups too

    def invoke(self, ctx: click.Context):
        with exit_on_user_error():
            return super().invoke(ctx)

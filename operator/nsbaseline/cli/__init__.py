"""The ``nsbaseline`` command: run the operator, preview offline, report from the cluster.

One module per command; what they share (options, input loading, one-line errors) is in
:mod:`nsbaseline.cli.common`.
"""

from __future__ import annotations

import click

from nsbaseline import __version__
from nsbaseline.cli.common import EXIT_BAD_INPUT, EXIT_RENDER_ERROR
from nsbaseline.cli.explain import explain
from nsbaseline.cli.lint import lint
from nsbaseline.cli.render import render
from nsbaseline.cli.run import run
from nsbaseline.cli.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsbaseline")
def main() -> None:
    """nsbaseline keeps a secure NetworkPolicy baseline in every opted-in namespace."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"nsbaseline {__version__}")


for command in (run, render, status, explain, lint):
    main.add_command(command)

__all__ = ["EXIT_BAD_INPUT", "EXIT_RENDER_ERROR", "main"]

"""What every `spa` command is: a name, a one-line help, its options and `run` (Polygraphy's `Tool`
idea). A command imports what it needs inside `run`, so `spa --help` and the light commands never
load an optional or heavy package (torch, transformers, optimum, tensorflow, jax, paddle)."""
from __future__ import annotations

import json

from spa.cli import args as cli_args


class Tool:
    name: str = ""
    help: str = ""

    def add_arguments(self, parser) -> None:
        """Add the command's options, through the shared groups in spa.cli.args where they repeat."""

    def run(self, args) -> int:
        """Carry out the command; failures raise SpaError (main prints them as one line)."""
        raise NotImplementedError

    def setup_parser(self, subparsers) -> None:
        parser = subparsers.add_parser(self.name, help=self.help)
        self.add_arguments(parser)
        cli_args.add_quiet(parser)  # every command takes -q, always listed last


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=max(100, Console().width))


def print_json(value) -> None:
    print(json.dumps(value, indent=1))

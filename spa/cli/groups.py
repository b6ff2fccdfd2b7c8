"""`spa groups`: one row per coupled channel group, optionally the dependency graph as DOT/PNG."""
from __future__ import annotations

from pathlib import Path

from spa.cli.args import ModelArgs
from spa.cli.tool import Tool, console, print_json


class Groups(Tool):
    name = "groups"
    help = "one row per coupled channel group"

    def add_arguments(self, parser) -> None:
        ModelArgs.add_to(parser)
        parser.add_argument("--dot", metavar="OUT.dot", help="also write the channel-dependency graph, groups coloured")
        parser.add_argument("--png", metavar="OUT.png", help="also render that graph to PNG (needs Graphviz's dot)")

    def run(self, args) -> int:
        from rich.table import Column, Table

        from spa.api import groups

        inputs = _graph_targets(args)  # checked before the analysis: no work for an unwritable target
        found = groups(args.model, **ModelArgs.load_options(args))
        rows = found.rows
        if args.dot or args.png:
            _write_graph(args, found.to_dot(), inputs)
        if args.json:
            print_json(rows)
            return 0
        # keys are what --protect and plans take: never cut short; a long one folds onto more lines
        widest = max((len(r["key"]) for r in rows), default=0)
        key_column = Column("group (key)", overflow="fold", min_width=min(widest, 48))
        table = Table("id", key_column, "kind", "width", "members", "sinks", "constraints", "status")
        for r in rows:
            table.add_row(str(r["id"]), r["key"], r["kind"], str(r["width"]),
                          f"{len(r['params'])} params / {len(r['members'])}", str(len(r["sinks"])),
                          "; ".join(r["constraints"]) or "-", "prunable" if r["prunable"] else f"[red]{r['reason']}[/]")
        con = console()
        con.print(table)
        for path in (args.dot, args.png):
            if path:
                con.print(f"[green]PASSED[/] wrote {path}")
        return 0


def _graph_targets(args) -> list:
    """Check --dot/--png against the model's files (by inode) and each other; returns the inputs."""
    from spa.core.output import check_distinct, check_target
    from spa.graph import io

    inputs = io.model_files(args.model)
    for path, what in ((args.dot, "--dot"), (args.png, "--png")):
        if path:
            check_target(path, inputs=inputs, what=what)
    if args.dot and args.png:
        check_distinct([(args.dot, "--dot"), (args.png, "--png")])
    return inputs


def _write_graph(args, dot_text: str, inputs) -> None:
    from spa.core.output import write_text
    from spa.report.dot import render_png

    if args.png:  # first: a missing Graphviz fails before anything is written
        render_png(dot_text, Path(args.png), inputs=inputs)
    if args.dot:
        write_text(args.dot, dot_text, inputs=inputs, what="--dot")


TOOL = Groups()

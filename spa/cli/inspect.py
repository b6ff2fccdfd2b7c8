"""`spa inspect`: a model at a glance (opset, I/O, op histogram, params, MACs, groups summary)."""
from __future__ import annotations

from spa.cli.args import ModelArgs
from spa.cli.tool import Tool, console, print_json


class Inspect(Tool):
    name = "inspect"
    help = "opset, I/O, op histogram, params, MACs, groups summary"

    def add_arguments(self, parser) -> None:
        ModelArgs.add_to(parser)

    def run(self, args) -> int:
        from rich.table import Table

        from spa.api import inspect
        from spa.analysis.metrics import sizes_text
        from spa.report.tables import human

        summary = inspect(args.model, **ModelArgs.load_options(args))
        if args.json:
            print_json(summary)
            return 0
        con = console()
        con.print(f"[bold]{args.model}[/]  opset {summary['opset']}  producer {summary['producer'] or '?'}")
        io_table = Table("", "name", "dtype", "shape", title="inputs and outputs")
        for kind in ("inputs", "outputs"):
            for v in summary[kind]:
                io_table.add_row(kind[:-1], v["name"], v["dtype"], str(v["shape"]))
        con.print(io_table)
        con.print(f"parameters {human(summary['params'])}   MACs {human(summary['macs'])}"
                  f"{sizes_text(summary.get('macs_at'))}   nodes {summary['nodes']}")
        con.print("ops: " + ", ".join(f"{k} {v}" for k, v in summary["ops"].items()))
        g = summary["groups"]
        con.print(f"groups: {g['total']} total, {g['prunable']} prunable ({g['prunable_channels']} channels)")
        for entry in g["unprunable"]:
            con.print(f"  not prunable ({entry['groups']}): {entry['reason']}")
        return 0


TOOL = Inspect()

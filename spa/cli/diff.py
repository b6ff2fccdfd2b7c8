"""`spa diff`: two models compared (ops, params, MACs, shapes, outputs); exit 0 when they match."""
from __future__ import annotations

from spa.cli import args as cli_args
from spa.cli.tool import Tool, console, print_json


class Diff(Tool):
    name = "diff"
    help = "compare two models: ops, params, MACs, shapes, outputs (exit 0 = match)"

    def add_arguments(self, parser) -> None:
        cli_args.add_model(parser, "a", "the first model (the reference)")
        cli_args.add_model(parser, "b", "the second model")
        parser.add_argument("--inputs", metavar="FILE.npz", help="input arrays (first axis = samples); default random")
        cli_args.add_samples(parser, 1, "inputs to compare on")
        cli_args.add_seed(parser)
        parser.add_argument("--atol", type=cli_args.finite(0.0, True), default=1e-5,
                            help="absolute tolerance (|a-b| <= atol + rtol*|a|)")
        parser.add_argument("--rtol", type=cli_args.finite(0.0, True), default=1e-5, help="relative tolerance")
        parser.add_argument("--no-outputs", action="store_true", help="compare structure only (exit 0)")
        cli_args.add_json(parser)

    def run(self, args) -> int:
        from spa.report.compare import EXIT_OUTPUTS_DIFFER, diff

        if args.inputs:
            from spa.graph.io import CALIB_MAX_BYTES, check_input_file

            check_input_file(args.inputs, "--inputs", limit=CALIB_MAX_BYTES)
        result = diff(args.a, args.b, inputs=args.inputs, samples=args.samples, seed=args.seed, atol=args.atol,
                      rtol=args.rtol, compare=not args.no_outputs)
        code = 0 if result.passed else EXIT_OUTPUTS_DIFFER
        if args.json:
            print_json(result.to_json())
            return code
        con = console()
        _print_structure(con, args, result.structure)
        if not result.compared:
            con.print("outputs not compared (--no-outputs)")
            return code
        _print_outputs(con, args, result)
        return code


def _print_structure(con, args, s: dict) -> None:
    from rich.table import Table

    from spa.report.tables import human, macs_label

    con.print(f"A: {args.a}\nB: {args.b}")
    table = Table("", "A", "B", "B - A")
    for key, label in (("params", "parameters"), ("macs", macs_label(s)), ("nodes", "nodes"), ("bytes", "file size")):
        table.add_row(label, human(s[key]["a"]), human(s[key]["b"]), f"{s[key]['delta']:+,d}")
    for op, n in s["ops"].items():
        table.add_row(f"{op} nodes", str(n["a"]), str(n["b"]), f"{n['b'] - n['a']:+d}")
    con.print(table)
    con.print(f"{len(s['shapes'])} tensors changed shape; weights only in A: {s['only_in_a']}, only in B: "
              f"{s['only_in_b']}")
    for change in s["shapes"][:10]:
        con.print(f"  {change['kind']} {change['name']}: {change['a']} → {change['b']}")
    if len(s["shapes"]) > 10:
        con.print(f"  … and {len(s['shapes']) - 10} more (--json lists all)")


def _print_outputs(con, args, result) -> None:
    from rich.table import Table

    from spa.report.tables import number

    out = Table("output", "shape A", "shape B", "max |diff|", "mean |diff|", "cosine", "")
    for o in result.outputs:
        out.add_row(o.name, str(o.shape_a), str(o.shape_b), number(o.max_abs), number(o.mean_abs),
                    number(o.cosine, ".6f"), "[green]match[/]" if o.passed else "[red]differ[/]")
    con.print(out)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    con.print(f"{verdict} outputs {'match' if result.passed else 'differ'} (atol {args.atol:g}, rtol {args.rtol:g})")


TOOL = Diff()

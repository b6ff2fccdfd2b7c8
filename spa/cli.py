"""The `spa` command: inspect, groups, prune. Every failure is one line on stderr and a non-zero
exit code; nothing is written unless the pruned model validated."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from spa.errors import SpaError

EXIT_ERROR = 2
EXIT_INTERNAL = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        raise SpaError(message)


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number, got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {text}")
    return value


def _input_shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
        if not sep or not name or any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape expects NAME=D1,D2,... got '{text}'") from None
    return name, shape


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=D1,D2,...",
                   help="fix an input's shape (for models with dynamic dims)")
    p.add_argument("--no-fuse-bn", action="store_true", help="keep BatchNormalization nodes")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spa", description="Structurally Prune Anything: smaller ONNX models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="opset, I/O, op histogram, params, MACs, groups summary")
    _model_args(p)
    p = sub.add_parser("groups", help="one row per coupled channel group")
    _model_args(p)
    p = sub.add_parser("prune", help="prune a model and write a smaller .onnx")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    p.add_argument("--ratio", type=_ratio, default=0.3, help="share of the target to remove, in [0, 1)")
    p.add_argument("--target", choices=["channels", "params", "macs"], default="channels")
    p.add_argument("--criterion", choices=["l1", "l2", "lp", "random", "obspa"], default="l2",
                   help="obspa: rank by Optimal-Brain-Surgeon cost and compensate the sinks (no data needed)")
    p.add_argument("--compensate", action="store_true", help="compensate the sinks (OBS) with any criterion")
    p.add_argument("--hessian", choices=["synthetic", "data"], default="synthetic",
                   help="where the sinks' input moments come from (data needs --calib)")
    p.add_argument("--calib", metavar="FILE.npz", help="calibration inputs: one array per model input")
    p.add_argument("--samples", type=int, default=32, help="inputs used to estimate the moments")
    p.add_argument("--p", type=float, default=2.0, help="the norm's exponent for --criterion lp")
    p.add_argument("--normalizer", choices=["mean", "max", "sum", "none"], default="mean",
                   help="scale each member's scores before combining (mean: relative to its group)")
    p.add_argument("--reduction", choices=["mean", "sum", "max"], default="mean",
                   help="how member scores combine into one score per channel")
    p.add_argument("--global", dest="global_rank", action="store_true", help="rank channels across groups")
    p.add_argument("--round-to", type=int, default=1, metavar="N", help="keep widths at multiples of N")
    p.add_argument("--min-width", type=int, default=1, metavar="N", help="keep at least N channels per group")
    p.add_argument("--protect", nargs="+", default=[], metavar="NAME", help="node or tensor names to leave whole")
    p.add_argument("--plan-out", metavar="PLAN.json", help="also write the plan")
    p.add_argument("--plan", metavar="PLAN.json", help="apply a saved plan instead of allocating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verify", action="store_true", help="check the oracle (sliced == masked) before writing")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SpaError as exc:
        print(f"spa: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("spa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `spa groups --json | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("SPA_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"spa: internal error: {type(exc).__name__}: {first[:300]} (set SPA_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _load(args):
    from spa.analysis import analyze
    from spa.pipeline import load_canonical

    model = load_canonical(args.model, input_shapes=dict(args.input_shape) or None,
                           fuse_batchnorm=not args.no_fuse_bn)
    return model, analyze(model)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=max(100, Console().width))


def cmd_inspect(args) -> int:
    from rich.table import Table

    from spa.report import human, inspect_summary

    model, analysis = _load(args)
    summary = inspect_summary(model, analysis)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    con = _console()
    con.print(f"[bold]{args.model}[/]  opset {summary['opset']}  producer {summary['producer'] or '?'}")
    io_table = Table("", "name", "dtype", "shape", title="inputs and outputs")
    for kind in ("inputs", "outputs"):
        for v in summary[kind]:
            io_table.add_row(kind[:-1], v["name"], v["dtype"], str(v["shape"]))
    con.print(io_table)
    con.print(f"parameters {human(summary['params'])}   MACs {human(summary['macs'])}   nodes {summary['nodes']}")
    con.print("ops: " + ", ".join(f"{k} {v}" for k, v in summary["ops"].items()))
    g = summary["groups"]
    con.print(f"groups: {g['total']} total, {g['prunable']} prunable ({g['prunable_channels']} channels)")
    for entry in g["unprunable"]:
        con.print(f"  not prunable ({entry['groups']}): {entry['reason']}")
    return 0


def cmd_groups(args) -> int:
    from rich.table import Table

    from spa.report import group_rows

    _, analysis = _load(args)
    rows = group_rows(analysis)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table("id", "group (key)", "width", "members", "sinks", "constraints", "status")
    for r in rows:
        table.add_row(str(r["id"]), r["key"], str(r["width"]), f"{len(r['params'])} params / {len(r['members'])}",
                      str(len(r["sinks"])), "; ".join(r["constraints"]) or "-",
                      "prunable" if r["prunable"] else f"[red]{r['reason']}[/]")
    _console().print(table)
    return 0


def cmd_prune(args) -> int:
    from spa import io
    from spa.allocate import Budget
    from spa.pipeline import prune
    from spa.plan import PruningPlan
    from spa.report import before_after, model_stats

    out = Path(args.output)
    if out.resolve() == Path(args.model).resolve():
        raise SpaError("the output path is the input model; choose another -o")
    if out.is_dir():
        raise SpaError(f"{out}: is a folder; give a file name for -o")
    if not out.parent.exists():
        raise SpaError(f"{out.parent}: output folder does not exist")
    if args.plan_out:
        plan_out = Path(args.plan_out)
        if plan_out.resolve() in (out.resolve(), Path(args.model).resolve()):
            raise SpaError("--plan-out must differ from the input model and from -o")
        if plan_out.is_dir():
            raise SpaError(f"{plan_out}: is a folder; give a file name for --plan-out")
        if not plan_out.parent.exists():
            raise SpaError(f"{plan_out.parent}: plan output folder does not exist")
    plan = PruningPlan.load(args.plan) if args.plan else None
    budget = Budget(ratio=args.ratio, target=args.target, global_rank=args.global_rank, round_to=args.round_to,
                    min_width=args.min_width, protect=list(args.protect))
    budget.check()
    compensation = None
    if args.criterion == "obspa" or args.compensate:
        from spa.pipeline import Compensation

        if args.hessian == "data" and not args.calib:
            raise SpaError("--hessian data needs --calib FILE.npz")
        if args.samples < 1:
            raise SpaError("--samples must be at least 1")
        compensation = Compensation(args.hessian, args.calib, args.samples, args.seed)
    result = prune(args.model, budget, criterion=args.criterion, plan=plan,
                   input_shapes=dict(args.input_shape) or None, fuse_batchnorm=not args.no_fuse_bn,
                   verify=args.verify, seed=args.seed, normalizer=args.normalizer, reduction=args.reduction, p=args.p,
                   compensation=compensation)
    if result.oracle is not None and not result.oracle.holds():
        raise SpaError(f"oracle failed: sliced and masked models differ by {result.oracle.error:.2e} (relative)")
    before, after = model_stats(result.original), model_stats(result.model)
    if args.plan_out:
        result.plan.save(args.plan_out)
    io.save(result.model, out)
    pruned_groups = sum(1 for v in result.plan.removed.values() if v)
    summary = {"input": args.model, "output": str(out), "before": before, "after": after,
               "groups_pruned": pruned_groups, "groups_prunable": len(result.analysis.prunable_groups()),
               "channels_removed": sum(len(v) for v in result.plan.removed.values()),
               "plan": result.plan.meta,
               "oracle_error": None if result.oracle is None else result.oracle.error}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    from rich.table import Table

    table = Table("", "before", "after", "after/before")
    for row in before_after(before, after):
        table.add_row(*row)
    con = _console()
    con.print(f"{args.model} → {out}")
    con.print(table)
    con.print(f"pruned {pruned_groups} of {summary['groups_prunable']} prunable groups, "
              f"{summary['channels_removed']} channels removed"
              + ("" if result.oracle is None else f"; oracle error {result.oracle.error:.1e}"))
    con.print(f"[green]PASSED[/] wrote {out}")
    return 0


COMMANDS = {"inspect": cmd_inspect, "groups": cmd_groups, "prune": cmd_prune}

if __name__ == "__main__":
    sys.exit(main())

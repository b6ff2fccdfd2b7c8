"""The `spa` command: inspect, groups, prune. Every failure is one line on stderr and a non-zero
exit code; nothing is written unless the pruned model validated."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from spa.core.errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, SpaError, UsageError,
                        ValidationError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        raise UsageError(message)


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number, got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got '{text}'") from None
    if not 0 <= value < 2**32:  # what numpy's generators accept
        raise argparse.ArgumentTypeError(f"--seed must be in [0, 2**32), got {text}")
    return value


def _finite(minimum: float, inclusive: bool):
    """A float type for argparse: finite (no nan/inf) and above `minimum`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if value != value or value in (float("inf"), float("-inf")) or value < minimum \
                or (value == minimum and not inclusive):
            bound = "non-negative" if inclusive and minimum == 0 else f"{'>=' if inclusive else '>'} {minimum:g}"
            raise argparse.ArgumentTypeError(f"expected a finite, {bound} number, got {text}")
        return value
    return parse


def _input_shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
        if not sep or not name or any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape expects NAME=D1,D2,... got '{text}'") from None
    return name, shape


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--round-to expects a number or auto, got '{text}'") from None


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file, or a Hugging Face folder holding model.onnx")
    p.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=D1,D2,...",
                   help="fix an input's shape (for models with dynamic dims)")
    p.add_argument("--no-fuse-bn", action="store_true", help="keep BatchNormalization nodes")
    p.add_argument("--scope", choices=["heads", "ffn", "hidden", "all"], default=None,
                   help="which groups to prune: attention heads, FFN/conv channels, the hidden width "
                        "(opt-in: norm statistics change), or all (default: heads and ffn)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spa", description="Structurally Prune Anything: smaller ONNX models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="opset, I/O, op histogram, params, MACs, groups summary")
    _model_args(p)
    p = sub.add_parser("groups", help="one row per coupled channel group")
    _model_args(p)
    p.add_argument("--dot", metavar="OUT.dot", help="also write the channel-dependency graph, groups coloured")
    p.add_argument("--png", metavar="OUT.png", help="also render that graph to PNG (needs Graphviz's dot)")
    p = sub.add_parser("export", help="export a framework model to ONNX (hf: a local Hugging Face folder)")
    p.add_argument("framework", choices=["hf", "tf", "jax", "paddle"],
                   help="hf: transformers model folder (config.json + weights); tf: Keras file, SavedModel folder "
                        "or module:function; jax: module:function returning a Flax module or function; paddle: "
                        "saved inference model prefix or module:function returning a Layer")
    p.add_argument("source", help="the model folder, file or module:function")
    p.add_argument("-o", "--output", required=True,
                   help="hf: the folder to write (model.onnx + config and tokenizer); tf/jax/paddle: the .onnx file")
    p.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=D1,D2,...",
                   help="tf/jax/paddle: an input's static shape; jax and a paddle Layer need one per input")
    p.add_argument("--task", help="optimum task (feature-extraction, text-generation, image-classification, "
                                  "…; default: inferred from the config)")
    p.add_argument("--exporter", choices=["optimum", "torch"], default="optimum",
                   help="optimum's exporter or torch.onnx (dynamo)")
    p.add_argument("--opset", type=int, default=None)
    p = sub.add_parser("prune", help="prune a model and write a smaller .onnx")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    p.add_argument("--ratio", type=_ratio, default=0.3, help="share of the target to remove, in [0, 1)")
    p.add_argument("--target", choices=["channels", "params", "macs", "latency"], default="channels",
                   help="what --ratio removes a share of (latency: ONNX Runtime time, measured per layer once)")
    p.add_argument("--criterion", choices=["l1", "l2", "lp", "random", "lamp", "fpgm", "bn_scale", "obspa", "wanda",
                                            "flap", "taylor", "snip", "grasp", "crop"],
                   default="l2", help="lamp: layer-adaptive magnitude; fpgm: distance to the geometric median; "
                   "bn_scale: |γ| of the group's norms (with --no-fuse-bn); obspa: rank by Optimal-Brain-Surgeon "
                   "cost and compensate the sinks (no data needed); wanda: input RMS × |weights|; flap: input variance × "
                   "weights², removed means folded into the biases; taylor/snip/grasp/crop: gradient saliencies "
                   "through a PyTorch copy of the graph (statistics and samples from --hessian)")
    p.add_argument("--compensate", action="store_true", help="compensate the sinks (OBS) with any criterion")
    p.add_argument("--hessian", choices=["auto", "synthetic", "bn", "weights", "data"], default="auto",
                   help="where the sinks' input moments come from: synthetic (made inputs: a language model's own "
                        "text, BatchNorm-matched images), bn (BatchNorm statistics), weights (producer weights), "
                        "data (needs --calib); auto: bn for the consumers BatchNorm statistics reach, synthetic for the rest")
    p.add_argument("--calib", metavar="FILE.npz|DIR", help="calibration inputs: one array per model input (first "
                   "axis = samples), or a folder of such .npz (or .npy) files")
    p.add_argument("--greedy", action="store_true",
                   help="pick each group's channels one at a time by OBS cost, downdating H⁻¹ after each")
    p.add_argument("--sequential", nargs="?", type=int, const=0, default=None, metavar="STAGES",
                   help="compensate sink by sink in topological order, re-measuring the pruned prefix "
                        "(STAGES: share one statistics pass among that many runs of sinks; default one per sink)")
    p.add_argument("--samples", type=int, default=None,
                   help="inputs used to estimate the moments (default 32; a language model writes enough "
                        "sequences for about 5 token rows per column of its widest layer, up to 256)")
    p.add_argument("--p", type=_finite(0.0, False), default=2.0, help="the norm's exponent for --criterion lp")
    p.add_argument("--normalizer", choices=["mean", "max", "sum", "none"], default=None,
                   help="scale each member's scores before combining (mean: relative to its group; default "
                        "mean, none for obspa ranked globally)")
    p.add_argument("--reduction", choices=["mean", "sum", "max"], default="mean",
                   help="how member scores combine into one score per channel")
    p.add_argument("--global", dest="global_rank", action="store_true", default=None,
                   help="rank channels across groups (obspa: by raw OBS cost, which shares one unit across groups)")
    p.add_argument("--round-to", type=_round_to, default=None, metavar="N|auto",
                   help="keep widths at multiples of N; auto (the default with --device): 8 on cuda (fp16 "
                        "tensor cores), ONNX Runtime's NCHWc block on cpu (16 with AVX-512, 8 with AVX2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="the runtime the pruned model is for: sets --round-to auto and where --target "
                        "latency measures (default: no rounding, CPU)")
    p.add_argument("--min-width", type=int, default=1, metavar="N", help="keep at least N channels per group")
    p.add_argument("--protect", nargs="+", default=[], metavar="NAME",
                   help="node, tensor or module names (as in the given model, also ones fused away) to leave whole")
    p.add_argument("--plan-out", metavar="PLAN.json", help="also write the plan")
    p.add_argument("--plan", metavar="PLAN.json", help="apply a saved plan instead of allocating")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--verify", action="store_true", help="check the oracle (sliced == masked) before writing")
    _report_and_diff_parsers(sub)
    _bench_parser(sub)
    _quiet_flag(sub)
    return parser


def _report_and_diff_parsers(sub) -> None:
    p = sub.add_parser("report", help="a pruned model's report: widths before→after, plots, plan (.html or .md)")
    p.add_argument("model", help="a model written by spa prune (any .onnx works, with less to say)")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html|.md", help="where to write the report")
    p.add_argument("--original", metavar="MODEL", help="the unpruned model: adds per-layer widths before→after")
    p.add_argument("--measure", action="store_true",
                   help="with --original: output fidelity on random inputs and CPU latency of both")
    p.add_argument("--samples", type=int, default=4, help="random inputs for --measure")
    p.add_argument("--rounds", type=int, default=50, help="timed runs per model for --measure")
    p.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=D1,D2,...",
                   help="fix an input's shape of --original (for models with dynamic dims)")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p = sub.add_parser("diff", help="compare two models: ops, params, MACs, shapes, outputs (exit 0 = match)")
    p.add_argument("a", help="first .onnx (the reference)")
    p.add_argument("b", help="second .onnx")
    p.add_argument("--inputs", metavar="FILE.npz", help="input arrays (first axis = samples); default random")
    p.add_argument("--samples", type=int, default=1, help="inputs to compare on")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--atol", type=_finite(0.0, True), default=1e-5, help="absolute tolerance (|a-b| <= atol + rtol*|a|)")
    p.add_argument("--rtol", type=_finite(0.0, True), default=1e-5, help="relative tolerance")
    p.add_argument("--no-outputs", action="store_true", help="compare structure only (exit 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="ONNX Runtime latency (p50/p90/p99) and throughput; with --against, "
                                     "dense and pruned alternated in one process")
    p.add_argument("model", help="an .onnx file (the dense model), or a Hugging Face folder")
    p.add_argument("--against", metavar="PRUNED", help="a pruned copy to time alongside it (speedup = dense/pruned)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="ONNX Runtime's execution provider")
    p.add_argument("--batch", default=None, metavar="B1,B2,...",
                   help="batch sizes (the first input dim; default: the model's own, or 1 when dynamic)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--opt-level", choices=["all", "extended", "basic", "disable"], default="all",
                   help="ONNX Runtime graph optimization level")
    p.add_argument("--rounds", type=int, default=50, help="timed runs per model and batch")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per model and batch first")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=D1,D2,...",
                   help="fix an input's shape (other dynamic dims: batch first, 128 after)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


class _QuietAction(argparse.Action):
    """`--quiet` silences progress bars as soon as it is parsed (they are also off when stderr is
    not a terminal)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from spa.core.progress import set_quiet

        set_quiet(True)
        setattr(namespace, self.dest, True)


def _quiet_flag(sub) -> None:
    from spa.core.progress import set_quiet

    set_quiet(False)  # a new parser, a new command: forget an earlier in-process --quiet
    for p in sub.choices.values():
        p.add_argument("-q", "--quiet", action=_QuietAction, nargs=0, default=False, help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    from spa.core.output import Terminated, private_tempdir, signals_raise

    # SIGTERM/SIGINT unwind through `finally`: temporaries are removed; every temporary file of the
    # run lies in one private folder in $TMPDIR, which the next run sweeps if this one is killed
    with signals_raise():
        try:
            with private_tempdir():
                return _main(argv)
        except KeyboardInterrupt:  # a signal while the private folder was made or removed
            print("spa: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Terminated as exc:
            print("spa: terminated", file=sys.stderr)
            return exc.code


def _main(argv: list[str] | None) -> int:
    from spa.core.output import Terminated

    # libraries (onnx-ir, onnxscript) log failures with tracebacks; ours are reported in one line
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SpaError as exc:
        print(f"spa: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("spa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print("spa: terminated", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `spa groups --json | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        from spa.core.output import signal_received

        if signal_received():  # the signal's exception came back wrapped (e.g. by a C extension)
            print("spa: interrupted" if signal_received() == 130 else "spa: terminated", file=sys.stderr)
            return signal_received()
        if os.environ.get("SPA_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"spa: internal error: {type(exc).__name__}: {first[:300]} (set SPA_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(text: str) -> str:
    """Messages may quote file names or library errors; the contract is one line on stderr."""
    return " ".join(text.split()) or "unknown error"


def _load_options(args) -> dict:
    return {"input_shapes": dict(args.input_shape) or None, "fuse_batchnorm": not args.no_fuse_bn,
            "scope": args.scope}


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=max(100, Console().width))


def cmd_inspect(args) -> int:
    from rich.table import Table

    from spa.api import inspect
    from spa.report.tables import human

    summary = inspect(args.model, **_load_options(args))
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

    from spa.api import groups

    inputs = _graph_targets(args)  # checked before the analysis: no work for an unwritable target
    found = groups(args.model, **_load_options(args))
    rows = found.rows
    if args.dot or args.png:
        _write_graph(args, found.to_dot(), inputs)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table("id", "group (key)", "kind", "width", "members", "sinks", "constraints", "status")
    for r in rows:
        table.add_row(str(r["id"]), r["key"], r["kind"], str(r["width"]), f"{len(r['params'])} params / {len(r['members'])}",
                      str(len(r["sinks"])), "; ".join(r["constraints"]) or "-",
                      "prunable" if r["prunable"] else f"[red]{r['reason']}[/]")
    con = _console()
    con.print(table)
    for path in (args.dot, args.png):
        if path:
            con.print(f"[green]PASSED[/] wrote {path}")
    return 0


_PLAN_SHAPERS = {"global_rank": ("--global", None), "target": ("--target", "channels"),
                 "round_to": ("--round-to", None), "min_width": ("--min-width", 1), "protect": ("--protect", []),
                 "device": ("--device", None)}


def _check_conflicts(args) -> None:
    """Options that would be silently ignored are refused: the user meant something else."""
    if args.plan:
        given = [flag for attr, (flag, default) in _PLAN_SHAPERS.items() if getattr(args, attr) != default]
        if given:
            raise UsageError(f"--plan applies a saved plan; {', '.join(given)} only shape a new plan")
    if args.calib and args.hessian != "data":
        raise UsageError("--calib is only read with --hessian data")


def cmd_prune(args) -> int:
    from spa.graph import io
    from spa.allocation.allocate import Budget
    from spa.api import prune, save
    from spa.allocation.plan import PruningPlan
    from spa.report.tables import before_after

    _check_conflicts(args)
    folder = Path(args.model) if Path(args.model).is_dir() else None
    if folder is not None:  # a Hugging Face folder in, a folder with an updated config.json out
        from spa.exporters.hf import check_output_folder, model_file

        args.model = str(model_file(folder))
        out = check_output_folder(args.output, folder)
    # before any work: no output may land on an input (by inode: the model, its data files, the
    # plan, the calibration files), a folder, a device or FIFO, or a missing/read-only folder
    from spa.core.output import check_distinct

    if args.calib:
        io.check_calibration(args.calib)
    inputs = io.model_files(args.model) + [f for f in (args.plan, args.calib) if f]
    if folder is None:
        out = io.check_output_path(args.output, inputs=inputs)
    if args.plan_out:
        io.check_output_path(args.plan_out, inputs=inputs, what="--plan-out")
        check_distinct([(out, "-o"), (str(out) + ".data", "-o's external data"), (args.plan_out, "--plan-out")])
    plan = PruningPlan.load(args.plan) if args.plan else None
    from spa.allocation.allocate import resolve_round_to

    budget = Budget(ratio=args.ratio, target=args.target, global_rank=args.global_rank,
                    round_to=resolve_round_to(args.round_to, args.device), min_width=args.min_width,
                    protect=list(args.protect), device=args.device or "cpu")
    budget.check()
    compensation = None
    from spa.flow.pipeline import GRADIENT_CRITERIA, STATISTICS_CRITERIA, Compensation

    if (args.criterion in STATISTICS_CRITERIA or args.criterion in GRADIENT_CRITERIA or args.compensate
            or args.greedy or args.sequential is not None):
        if args.samples is not None and args.samples < 1:
            raise SpaError("--samples must be at least 1")
        method = "obs" if args.compensate or args.greedy or args.sequential is not None \
            else STATISTICS_CRITERIA.get(args.criterion, "none")
        compensation = Compensation(args.hessian, args.calib, args.samples, args.seed, method, greedy=args.greedy,
                                    sequential=args.sequential is not None, stages=args.sequential or None)
    result = prune(args.model, budget=budget, criterion=args.criterion, scope=getattr(args, "scope", None),
                   plan=plan, input_shapes=dict(args.input_shape) or None, fuse_batchnorm=not args.no_fuse_bn,
                   verify=args.verify, seed=args.seed, normalizer=args.normalizer, reduction=args.reduction, p=args.p,
                   compensation=compensation)
    if result.oracle is not None and not result.oracle.holds():
        raise ValidationError(f"oracle failed: sliced and masked models differ by {result.oracle.error:.2e} "
                              "(relative)")
    before, after = result.report["before"], result.report["after"]
    if args.plan_out:
        result.plan.save(args.plan_out, inputs=inputs)
    if folder is not None:
        from spa.exporters.hf import write_pruned_folder

        write_pruned_folder(result, folder, out)
    else:
        save(result, out)  # with the plan, report and group annotations in its metadata (spa report reads them)
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
    if result.plan.meta.get("not_finite"):
        con.print(f"left whole: {len(result.plan.meta['not_finite'])} group(s) whose weights or statistics hold "
                  "NaN or Inf (their channels cannot be ranked)")
    con.print(f"[green]PASSED[/] wrote {out}")
    return 0


def _graph_targets(args) -> list:
    """Check --dot/--png against the model's files (by inode) and each other; returns the inputs."""
    from spa.graph import io
    from spa.core.output import check_distinct, check_target

    inputs = io.model_files(args.model)
    for path, what in ((args.dot, "--dot"), (args.png, "--png")):
        if path:
            check_target(path, inputs=inputs, what=what)
    if args.dot and args.png:
        check_distinct([(args.dot, "--dot"), (args.png, "--png")])
    return inputs


def _write_graph(args, dot_text: str, inputs) -> None:
    from spa.report.dot import render_png
    from spa.core.output import write_text

    if args.png:  # first: a missing Graphviz fails before anything is written
        render_png(dot_text, Path(args.png), inputs=inputs)
    if args.dot:
        write_text(args.dot, dot_text, inputs=inputs, what="--dot")


def cmd_report(args) -> int:
    from spa.api import pruning_report, write_report

    from spa.graph import io
    from spa.core.output import check_target

    inputs = [f for m in (args.model, args.original) if m for f in io.model_files(m)]
    check_target(args.output, inputs=inputs, what="the report")  # before any work
    rep = pruning_report(args.model, original=args.original, measure=args.measure, samples=args.samples,
                         rounds=args.rounds, input_shapes=dict(args.input_shape) or None)
    files = write_report(rep, args.output, inputs=inputs)
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    con = _console()
    if not rep["stored"]:
        con.print("[yellow]note[/]: the model carries no SPA report (not written by spa prune)")
    con.print(f"[green]PASSED[/] wrote {', '.join(str(f) for f in files)}")
    return 0


def cmd_diff(args) -> int:
    from rich.table import Table

    from spa.report.compare import EXIT_OUTPUTS_DIFFER, diff
    from spa.report.tables import human, number

    if args.inputs:
        from spa.graph.io import CALIB_MAX_BYTES, check_input_file

        check_input_file(args.inputs, "--inputs", limit=CALIB_MAX_BYTES)
    result = diff(args.a, args.b, inputs=args.inputs, samples=args.samples, seed=args.seed, atol=args.atol,
                  rtol=args.rtol, compare=not args.no_outputs)
    code = 0 if result.passed else EXIT_OUTPUTS_DIFFER
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
        return code
    s = result.structure
    con = _console()
    con.print(f"A: {args.a}\nB: {args.b}")
    table = Table("", "A", "B", "B - A")
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("nodes", "nodes"), ("bytes", "file size")):
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
    if not result.compared:
        con.print("outputs not compared (--no-outputs)")
        return code
    out = Table("output", "shape A", "shape B", "max |diff|", "mean |diff|", "cosine", "")
    for o in result.outputs:
        out.add_row(o.name, str(o.shape_a), str(o.shape_b), number(o.max_abs), number(o.mean_abs), number(o.cosine, ".6f"),
                    "[green]match[/]" if o.passed else "[red]differ[/]")
    con.print(out)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    con.print(f"{verdict} outputs {'match' if result.passed else 'differ'} (atol {args.atol:g}, rtol {args.rtol:g})")
    return code


def cmd_export(args) -> int:
    if args.framework != "hf":
        from spa.exporters.framework import export_framework

        path = export_framework(args.framework, args.source, args.output, opset=args.opset,
                                input_shapes=args.input_shape)
        print(json.dumps({"output": str(path)}) if getattr(args, "json", False) else f"PASSED wrote {path}")
        return 0
    from spa.exporters.hf import export

    if not Path(args.source).is_dir():
        raise SpaError(f"{args.source}: not a folder (spa export hf takes a local model folder)")
    path = export(args.source, args.output, task=args.task, exporter=args.exporter, opset=args.opset)
    print(json.dumps({"output": str(path)}) if getattr(args, "json", False) else f"PASSED wrote {path}")
    return 0


def cmd_bench(args) -> int:
    from rich.table import Table

    from spa.runtime.benchmark import bench, parse_batches

    result = bench(args.model, args.against, device=args.device,
                   batches=parse_batches(args.batch) if args.batch is not None else None, threads=args.threads,
                   opt_level=args.opt_level, rounds=args.rounds, warmup=args.warmup,
                   input_shapes=dict(args.input_shape) or None, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    rt = result["runtime"]
    table = Table("batch", "model", "p50 ms", "p90 ms", "p99 ms", "throughput /s", "speedup (p50)")
    for row in result["results"]:
        for role, s in row["models"].items():
            speedup = f"{row['speedup_p50']:.2f}×" if role == "pruned" else ""
            table.add_row(str(row["batch"]), f"{role}: {result['models'][role]['model']}", f"{s['p50_ms']:.3f}",
                          f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}", f"{s['throughput']:.1f}", speedup)
    con = _console()
    con.print(table)
    con.print(f"onnxruntime {rt['onnxruntime']} on {rt['device']} ({', '.join(rt['providers'])}), threads "
              f"{rt['threads'] or 'default'}, optimization {rt['opt_level']}, {result['rounds']} rounds after "
              f"{result['warmup']} warm-up runs" + (", alternated" if result["alternated"] else ""))
    return 0


COMMANDS = {"inspect": cmd_inspect, "groups": cmd_groups, "prune": cmd_prune, "report": cmd_report,
            "diff": cmd_diff, "export": cmd_export, "bench": cmd_bench}

if __name__ == "__main__":
    sys.exit(main())

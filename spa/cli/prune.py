"""`spa prune`: prune a model and write a smaller .onnx (or Hugging Face folder). Nothing is
written unless the pruned model validated; every output is checked before any work."""
from __future__ import annotations

from pathlib import Path

from spa.cli import args as cli_args
from spa.cli.args import BudgetArgs, CriterionArgs, ModelArgs
from spa.cli.finetune import add_training_options, check_result, check_training_paths, config_from, describe, \
    positive_int, training_data
from spa.cli.tool import Tool, console, print_json
from spa.core.errors import SpaError, UsageError, ValidationError


class Prune(Tool):
    name = "prune"
    help = "prune a model and write a smaller .onnx"

    def add_arguments(self, parser) -> None:
        # in this order: `spa prune --help` lists the options as it always has
        ModelArgs.add_to(parser)
        cli_args.add_output(parser, "where to write the pruned model")
        BudgetArgs.add_share(parser)
        CriterionArgs.add_to(parser)
        BudgetArgs.add_shape(parser)
        parser.add_argument("--plan-out", metavar="PLAN.json", help="also write the plan")
        parser.add_argument("--plan", metavar="PLAN.json", help="apply a saved plan instead of allocating")
        cli_args.add_seed(parser)
        parser.add_argument("--verify", action="store_true", help="check the oracle (sliced == masked) before writing")
        cli_args.add_min_fidelity(parser, "refuse to write (exit 9) when the pruned model keeps less than X of the "
                                          "original's behaviour on the fidelity check: top-1 / next-token agreement, "
                                          "else 1 - relative output error")
        parser.add_argument("--no-latency", dest="latency", action="store_false",
                            help="skip the dense vs pruned latency check after writing")
        parser.add_argument("--finetune", type=positive_int, default=None, metavar="STEPS",
                            help="fine-tune the pruned model by distillation from the original for STEPS steps "
                                 "before writing (as `spa finetune`; its options below)")
        add_training_options(parser.add_argument_group("fine-tuning (with --finetune)"), steps=False)

    def run(self, args) -> int:
        from spa.allocation.plan import PruningPlan
        from spa.api import prune, save

        _check_conflicts(args)
        folder, out, inputs = _check_paths(args)
        plan = PruningPlan.load(args.plan) if args.plan else None
        budget = BudgetArgs.budget(args)
        budget.check()
        result = prune(args.model, budget=budget, criterion=args.criterion, scope=getattr(args, "scope", None),
                       plan=plan, input_shapes=cli_args.input_shapes(args), fuse_batchnorm=not args.no_fuse_bn,
                       verify=args.verify, seed=args.seed, normalizer=args.normalizer, reduction=args.reduction,
                       p=args.p, compensation=_compensation(args))
        if result.oracle is not None and not result.oracle.holds():
            raise ValidationError(f"oracle failed: sliced and masked models differ by {result.oracle.error:.2e} "
                                  "(relative)")
        tuned = _finetune(args, result, folder) if args.finetune else None
        fidelity = _check_fidelity(args, result)
        if args.plan_out:
            result.plan.save(args.plan_out, inputs=inputs)
        if folder is not None:
            from spa.exporters.hf import write_pruned_folder

            write_pruned_folder(result, folder, out)
        else:
            save(result, out)  # with the plan, report and group annotations in its metadata (spa report reads them)
        latency = _measure_latency(args, result, out) if args.latency else None
        summary = _summary(args, result, out, fidelity, latency)
        summary["finetune"] = None if tuned is None else tuned.as_dict()
        if args.json:
            print_json(summary)
            return 0
        _print_summary(args, result, summary, fidelity, tuned)
        return 0


def _finetune(args, result, folder):
    """Distil the original into the pruned model in place (spa.training), before the fidelity check."""
    from spa.training.distill import finetune

    config = config_from(args)
    config.steps = args.finetune
    data = training_data(args, result.original, [folder])
    tuned = finetune(result.model, result.original, data, config)
    check_result(tuned, None)
    return tuned


def _check_conflicts(args) -> None:
    """Options that would be silently ignored are refused: the user meant something else."""
    if args.plan:
        given = BudgetArgs.plan_shapers_given(args)
        if given:
            raise UsageError(f"--plan applies a saved plan; {', '.join(given)} only shape a new plan")
    if args.calib and args.statistics != "data":
        raise UsageError("--calib is only read with --statistics data")


def _check_paths(args) -> tuple[Path | None, Path, list]:
    """Before any work: no output may land on an input (by inode: the model, its data files, the
    plan, the calibration files), a folder, a device or FIFO, or a missing/read-only folder.
    Returns the Hugging Face folder (or None), the output and the inputs; a folder's model file
    becomes args.model."""
    from spa.core.output import check_distinct
    from spa.graph import io

    folder = Path(args.model) if Path(args.model).is_dir() else None
    if folder is not None:  # a Hugging Face folder in, a folder with an updated config.json out
        from spa.exporters.hf import check_output_folder, model_file

        args.model = str(model_file(folder))
        out = check_output_folder(args.output, folder)
    if args.calib:
        io.check_calibration(args.calib)
    inputs = io.model_files(args.model) + [f for f in (args.plan, args.calib) if f]
    if folder is None:
        out = io.check_output_path(args.output, inputs=inputs)
    if args.plan_out:
        io.check_output_path(args.plan_out, inputs=inputs, what="--plan-out")
        check_distinct([(out, "-o"), (str(out) + ".data", "-o's external data"), (args.plan_out, "--plan-out")])
    if args.finetune:
        check_training_paths(args, inputs, out)
    return folder, out, inputs


def _compensation(args):
    """What the statistics-based criteria and compensation need (None for the weight-only criteria)."""
    from spa.flow.compensation import compensation_for

    compensation = compensation_for(args.criterion, obs=args.compensate, greedy=args.greedy,
                                    sequential=args.sequential, statistics=args.statistics, calib=args.calib,
                                    samples=args.samples, seed=args.seed, cache=_cache_folder(args))
    if compensation is not None and args.samples is not None and args.samples < 1:
        raise SpaError("--samples must be at least 1")
    return compensation


def _cache_folder(args) -> str | None:
    if args.statistics_cache is None:
        return None
    from spa.statistics.cache import check_folder

    return str(check_folder(args.statistics_cache))


def _check_fidelity(args, result):
    """How much of the original's behaviour the pruned model kept (spa.flow.fidelity); below
    --min-fidelity nothing is written."""
    from spa.core.errors import FidelityError
    from spa.flow.fidelity import measure_fidelity

    fidelity = measure_fidelity(result.original, result.model, seed=args.seed)
    if args.min_fidelity is not None and fidelity.score() < args.min_fidelity:
        raise FidelityError(f"fidelity {fidelity.score():.3f} is below --min-fidelity {args.min_fidelity:g} "
                            f"({fidelity.describe()}); nothing written. {REMEDY}")
    return fidelity


REMEDY = ("Try a smaller --ratio, --criterion obspa with --global (CNNs, encoders), calibration data "
          "(--statistics data --calib DIR), or fine-tuning the result.")


def _measure_latency(args, result, out) -> dict:
    """Dense vs pruned latency on the example inputs validation ran, alternated for about a second
    or two. The model is written by now: a failure here is reported, not raised."""
    from spa.runtime.benchmark import quick_speedup
    from spa.runtime.validate import REFERENCE

    model_file = out / "model.onnx" if Path(out).is_dir() else out
    reference = result.original.meta.get(REFERENCE)
    try:
        return quick_speedup(args.model, model_file, device=args.device or "cpu",
                             feeds=getattr(reference, "feeds", None), input_shapes=cli_args.input_shapes(args),
                             seed=args.seed)
    except Exception as exc:  # noqa: BLE001 (a measurement, after the output is in place)
        return {"error": str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}


def _summary(args, result, out, fidelity, latency) -> dict:
    return {"input": args.model, "output": str(out), "before": result.report["before"],
            "after": result.report["after"], "groups_pruned": sum(1 for v in result.plan.removed.values() if v),
            "groups_prunable": len(result.analysis.prunable_groups()),
            "channels_removed": sum(len(v) for v in result.plan.removed.values()),
            "head_groups_untouched": len(untouched_head_groups(result)),
            "seconds": {stage: round(s, 3) for stage, s in result.seconds.items()},
            "plan": result.plan.meta,
            "oracle_error": None if result.oracle is None else result.oracle.error,
            "oracle_unchecked": None if result.oracle is None else list(result.oracle.unchecked),
            "fidelity": None if fidelity is None else fidelity.as_dict(), "latency": latency}


def untouched_head_groups(result) -> list:
    """The prunable head groups the plan left whole while it pruned other groups (local allocation
    rounds a small share of a few whole heads down to none), for a note in the summary."""
    removed = result.plan.removed
    heads = [g for g in result.analysis.prunable_groups() if g.kind == "heads"]
    if not heads or not any(removed.values()) or any(removed.get(g.key) for g in heads):
        return []
    return heads


def _print_summary(args, result, summary: dict, fidelity, tuned=None) -> None:
    from rich.table import Table

    from spa.report.tables import before_after

    table = Table("", "before", "after", "after/before")
    for row in before_after(summary["before"], summary["after"]):
        table.add_row(*row)
    con = console()
    con.print(f"{args.model} → {summary['output']}")
    con.print(table)
    con.print(f"pruned {summary['groups_pruned']} of {summary['groups_prunable']} prunable groups, "
              f"{summary['channels_removed']} channels removed"
              + ("" if result.oracle is None else f"; oracle error {result.oracle.error:.1e}"))
    if result.oracle is not None and result.oracle.unchecked:
        con.print(f"[yellow]note:[/] the oracle could not check {len(result.oracle.unchecked)} hidden-width group(s) "
                  f"(a norm SPA cannot restrict to the kept channels): {', '.join(result.oracle.unchecked)}")
    untouched = untouched_head_groups(result)
    if untouched:
        con.print(f"[yellow]note:[/] no attention head removed ({len(untouched)} head groups of "
                  f"{min(g.width for g in untouched)}–{max(g.width for g in untouched)} heads; a head goes whole, and "
                  "this budget's share of each rounds to none): --global ranks heads against the other channels, "
                  "a larger --ratio reaches them, --scope ffn says it on purpose")
    if result.plan.meta.get("not_finite"):
        con.print(f"left whole: {len(result.plan.meta['not_finite'])} group(s) whose weights or statistics hold "
                  "NaN or Inf (their channels cannot be ranked)")
    default = result.plan.meta.get("default")
    if default:
        from spa.flow.defaults import DefaultConfig

        con.print(f"configuration: {DefaultConfig(**default).describe()}")
    latency = summary["latency"]
    if tuned is not None:
        for line in describe(tuned):
            con.print(f"fine-tuning: {line}")
    if fidelity is not None:
        con.print(f"fidelity: {fidelity.describe()}")
        if fidelity.collapsed():
            con.print(f"[yellow]warning:[/] the pruned model has collapsed ({fidelity.describe()}). {REMEDY}")
    if latency and latency.get("speedup"):
        con.print(f"latency ({latency['device']}, alternated, {latency['rounds']} rounds): dense "
                  f"{latency['dense_ms']:.2f} ms, pruned {latency['pruned_ms']:.2f} ms → {latency['speedup']:.2f}×")
        if latency["speedup"] < 1.0:
            con.print("[yellow]warning:[/] the pruned model is not faster here; try --target macs or latency, "
                      "--round-to 16 (or the block your runtime uses), or a larger --ratio")
    elif latency and latency.get("error"):
        con.print(f"latency not measured: {latency['error']}")
    from spa.core.timing import describe as describe_seconds

    stages = describe_seconds(summary["seconds"])
    if stages:
        con.print(f"time: {stages}")
    con.print(f"[green]PASSED[/] wrote {summary['output']}")


TOOL = Prune()

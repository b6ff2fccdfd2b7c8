"""`spa prune`: prune a model and write a smaller .onnx (or Hugging Face folder). Nothing is
written unless the pruned model validated; every output is checked before any work."""
from __future__ import annotations

from pathlib import Path

from spa.cli import args as cli_args
from spa.cli.args import BudgetArgs, CriterionArgs, ModelArgs
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
        if args.plan_out:
            result.plan.save(args.plan_out, inputs=inputs)
        if folder is not None:
            from spa.exporters.hf import write_pruned_folder

            write_pruned_folder(result, folder, out)
        else:
            save(result, out)  # with the plan, report and group annotations in its metadata (spa report reads them)
        summary = _summary(args, result, out)
        if args.json:
            print_json(summary)
            return 0
        _print_summary(args, result, summary)
        return 0


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
    return folder, out, inputs


def _compensation(args):
    """What the statistics-based criteria and compensation need (None for the weight-only criteria)."""
    from spa.flow.compensation import compensation_for

    compensation = compensation_for(args.criterion, obs=args.compensate, greedy=args.greedy,
                                    sequential=args.sequential, statistics=args.statistics, calib=args.calib,
                                    samples=args.samples, seed=args.seed)
    if compensation is not None and args.samples is not None and args.samples < 1:
        raise SpaError("--samples must be at least 1")
    return compensation


def _summary(args, result, out) -> dict:
    return {"input": args.model, "output": str(out), "before": result.report["before"],
            "after": result.report["after"], "groups_pruned": sum(1 for v in result.plan.removed.values() if v),
            "groups_prunable": len(result.analysis.prunable_groups()),
            "channels_removed": sum(len(v) for v in result.plan.removed.values()),
            "plan": result.plan.meta,
            "oracle_error": None if result.oracle is None else result.oracle.error}


def _print_summary(args, result, summary: dict) -> None:
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
    if result.plan.meta.get("not_finite"):
        con.print(f"left whole: {len(result.plan.meta['not_finite'])} group(s) whose weights or statistics hold "
                  "NaN or Inf (their channels cannot be ranked)")
    con.print(f"[green]PASSED[/] wrote {summary['output']}")


TOOL = Prune()

"""`spa report`: a pruned model's report (widths before→after, plots, plan) as .html or .md."""
from __future__ import annotations

from spa.cli import args as cli_args
from spa.cli.tool import Tool, console, print_json


class Report(Tool):
    name = "report"
    help = "a pruned model's report: widths before→after, plots, plan (.html or .md)"

    def add_arguments(self, parser) -> None:
        cli_args.add_model(parser, help="a model written by spa prune (any model works, with less to say)")
        cli_args.add_output(parser, "where to write the report", metavar="REPORT.html|.md")
        parser.add_argument("--original", metavar="MODEL",
                            help="the unpruned model (an .onnx file or a Hugging Face folder): adds per-layer "
                                 "widths before→after")
        parser.add_argument("--measure", action="store_true",
                            help="with --original: output fidelity on random inputs and CPU latency of both")
        cli_args.add_samples(parser, 4, "random inputs for --measure")
        cli_args.add_rounds(parser, "timed runs per model for --measure")
        cli_args.add_input_shape(parser, "fix an input's shape of --original (for models with dynamic dims)")
        cli_args.add_json(parser, "also print the report as JSON")

    def run(self, args) -> int:
        from spa.api import pruning_report, write_report
        from spa.core.output import check_target
        from spa.graph import io

        inputs = [f for m in (args.model, args.original) if m for f in io.model_files(m)]
        check_target(args.output, inputs=inputs, what="the report")  # before any work
        rep = pruning_report(args.model, original=args.original, measure=args.measure, samples=args.samples,
                             rounds=args.rounds, input_shapes=cli_args.input_shapes(args))
        files = write_report(rep, args.output, inputs=inputs)
        if args.json:
            print_json(rep)
            return 0
        con = console()
        if not rep["stored"]:
            con.print("[yellow]note[/]: the model carries no SPA report (not written by spa prune)")
        con.print(f"[green]PASSED[/] wrote {', '.join(str(f) for f in files)}")
        return 0


TOOL = Report()

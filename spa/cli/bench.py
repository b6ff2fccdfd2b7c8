"""`spa bench`: ONNX Runtime latency (p50/p90/p99) and throughput, dense and pruned alternated."""
from __future__ import annotations

from spa.cli import args as cli_args
from spa.cli.tool import Tool, console, print_json


class Bench(Tool):
    name = "bench"
    help = ("ONNX Runtime latency (p50/p90/p99) and throughput; with --against, dense and pruned alternated in "
            "one process")

    def add_arguments(self, parser) -> None:
        cli_args.add_model(parser, help="the dense model")
        parser.add_argument("--against", metavar="PRUNED",
                            help="a pruned copy to time alongside it (speedup = dense/pruned)")
        cli_args.add_device(parser, "cpu", "ONNX Runtime's execution provider")
        cli_args.add_batch(parser, "batch sizes (the first input dim; default: the model's own, or 1 when dynamic)",
                           metavar="B1,B2,...")
        parser.add_argument("--threads", type=int, default=None, metavar="N",
                            help="intra-op threads (default: ONNX Runtime's)")
        parser.add_argument("--opt-level", choices=["all", "extended", "basic", "disable"], default="all",
                            help="ONNX Runtime graph optimization level")
        cli_args.add_rounds(parser, "timed runs per model and batch")
        parser.add_argument("--warmup", type=int, default=5, help="untimed runs per model and batch first")
        cli_args.add_seed(parser)
        cli_args.add_input_shape(parser, "fix an input's shape (other dynamic dims: batch first, 128 after)")
        cli_args.add_json(parser, "print JSON instead of a table")

    def run(self, args) -> int:
        from rich.table import Table

        from spa.runtime.benchmark import bench, parse_batches

        result = bench(args.model, args.against, device=args.device,
                       batches=parse_batches(args.batch) if args.batch is not None else None, threads=args.threads,
                       opt_level=args.opt_level, rounds=args.rounds, warmup=args.warmup,
                       input_shapes=cli_args.input_shapes(args), seed=args.seed)
        if args.json:
            print_json(result)
            return 0
        rt = result["runtime"]
        table = Table("batch", "model", "p50 ms", "p90 ms", "p99 ms", "throughput /s", "speedup (p50)")
        for row in result["results"]:
            for role, s in row["models"].items():
                speedup = f"{row['speedup_p50']:.2f}×" if role == "pruned" else ""
                table.add_row(str(row["batch"]), f"{role}: {result['models'][role]['model']}", f"{s['p50_ms']:.3f}",
                              f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}", f"{s['throughput']:.1f}", speedup)
        con = console()
        con.print(table)
        con.print(f"onnxruntime {rt['onnxruntime']} on {rt['device']} ({', '.join(rt['providers'])}), threads "
                  f"{rt['threads'] or 'default'}, optimization {rt['opt_level']}, {result['rounds']} rounds after "
                  f"{result['warmup']} warm-up runs" + (", alternated" if result["alternated"] else ""))
        return 0


TOOL = Bench()

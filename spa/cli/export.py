"""`spa export`: a framework model to ONNX (hf: a local Hugging Face folder; tf, jax, paddle: the
optional extras). Each framework is imported only here, inside `run`, and only the one asked for."""
from __future__ import annotations

import json

from spa.cli import args as cli_args
from spa.cli.tool import Tool


class Export(Tool):
    name = "export"
    help = "export a framework model to ONNX (hf: a local Hugging Face folder)"

    def add_arguments(self, parser) -> None:
        parser.add_argument("framework", choices=cli_args.EXPORT_FRAMEWORKS,
                            help="hf: transformers model folder (config.json + weights); tf: Keras file, SavedModel "
                                 "folder or module:function; jax: module:function returning a Flax module or "
                                 "function; paddle: saved inference model prefix or module:function returning a Layer")
        parser.add_argument("source", help="the model folder, file or module:function")
        cli_args.add_output(parser, "hf: the folder to write (model.onnx + config and tokenizer); tf/jax/paddle: "
                                    "the .onnx file")
        cli_args.add_input_shape(parser, "tf/jax/paddle: an input's static shape; jax and a paddle Layer need one "
                                         "per input")
        parser.add_argument("--task", help="optimum task (feature-extraction, text-generation, "
                                           "image-classification, …; default: inferred from the config)")
        parser.add_argument("--exporter", choices=["optimum", "torch"], default="optimum",
                            help="optimum's exporter or torch.onnx (dynamo)")
        parser.add_argument("--opset", type=int, default=None)

    def run(self, args) -> int:
        from spa.exporters.registry import get_exporter

        exporter = get_exporter(args.framework)
        given = {"opset": args.opset, "input_shapes": args.input_shape, "task": args.task, "exporter": args.exporter}
        path = exporter.export(args.source, args.output, **{name: given[name] for name in exporter.options})
        print(json.dumps({"output": str(path)}) if getattr(args, "json", False) else f"PASSED wrote {path}")
        return 0


TOOL = Export()

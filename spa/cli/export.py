"""`spa export`: a framework model to ONNX (hf: a local Hugging Face folder; tf, jax, paddle: the
optional extras). Each framework is imported only here, inside `run`, and only the one asked for."""
from __future__ import annotations

import json
from pathlib import Path

from spa.cli import args as cli_args
from spa.cli.tool import Tool
from spa.core.errors import SpaError

# What `spa export hf` loads (dependencies of spa-prune, but a trimmed install may lack them).
HF_MODULES = ("torch", "transformers", "optimum")


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
        if args.framework != "hf":
            from spa.exporters.framework import export_framework  # checks the framework's extra first

            path = export_framework(args.framework, args.source, args.output, opset=args.opset,
                                    input_shapes=args.input_shape)
            print(json.dumps({"output": str(path)}) if getattr(args, "json", False) else f"PASSED wrote {path}")
            return 0
        if not Path(args.source).is_dir():
            raise SpaError(f"{args.source}: not a folder (spa export hf takes a local model folder)")
        _require_hf()
        from spa.exporters.hf import export

        path = export(args.source, args.output, task=args.task, exporter=args.exporter, opset=args.opset)
        print(json.dumps({"output": str(path)}) if getattr(args, "json", False) else f"PASSED wrote {path}")
        return 0


def _require_hf() -> None:
    """A missing package is one clear line, like the framework extras' (not an internal error).
    Looked up, not imported: the export imports them after its cheaper checks."""
    import importlib.util

    for name in HF_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError, AttributeError):  # a broken install, or an import blocked on purpose
            found = False
        if not found:
            raise SpaError(f"spa export hf needs {name}, which is not installed; pip install spa-prune installs it "
                           f"({', '.join(HF_MODULES)})")


TOOL = Export()

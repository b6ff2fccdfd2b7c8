"""`spa finetune`: win back what pruning cost, from the ONNX files alone — the pruned model learns
to reproduce the dense one's outputs (knowledge distillation through spa.runtime.to_torch), on
given data or on inputs made from the dense model itself, and the best weights on held-out inputs
are written into the same pruned graph. `spa prune --finetune STEPS` runs it after pruning."""
from __future__ import annotations

import argparse
from pathlib import Path

from spa.cli import args as cli_args
from spa.cli.tool import Tool, console, print_json
from spa.core.errors import FidelityError, SpaError, UsageError, ValidationError


def add_training_options(p, *, steps: bool) -> None:
    """The options of a fine-tuning run (finetune; prune --finetune)."""
    p.add_argument("--data", metavar="PATH",
                   help="training inputs: a folder of images, a text file or folder (tokenized with the model "
                        "folder's or --tokenizer's tokenizer), or an .npz of arrays named after the inputs; a share of "
                        "the files/documents is held out for choosing the best step. Without --data: inputs made "
                        "from the dense model (its own sampled text; BatchNorm-matched images; example inputs)")
    if steps:
        p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default: as many as "
                       "--max-minutes allows)")
    p.add_argument("--max-minutes", type=cli_args.finite(0.0, False), default=None, metavar="M",
                   help="wall-clock budget for the training (default 5 when no step count is given)")
    cli_args.add_batch(p, "samples per step (default 8)", default=8, type=positive_int)
    p.add_argument("--lr", type=cli_args.finite(0.0, False), default=None,
                   help="AdamW learning rate (default 2e-5 for language models, 1e-4 otherwise)")
    p.add_argument("--temperature", type=cli_args.finite(0.0, False), default=2.0,
                   help="softening of logits in the KL loss (default 2)")
    p.add_argument("--sequence", type=positive_int, default=128, help="tokens per text window (default 128)")
    p.add_argument("--pool", type=positive_int, default=None,
                   help="without --data: how many inputs to make (default 32 texts, 8 images)")
    p.add_argument("--mean", metavar="R,G,B", help="image normalisation mean on 0..1 pixels (default: the model's "
                   "metadata or preprocessor_config.json, else ImageNet's)")
    p.add_argument("--std", metavar="R,G,B", help="image normalisation std on 0..1 pixels")
    p.add_argument("--tokenizer", metavar="FOLDER", help="a Hugging Face folder with the tokenizer for text --data")
    flags = ["--device", "--train-device"] if steps else ["--train-device"]  # prune's --device is the target runtime
    p.add_argument(*flags, dest="train_device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where torch trains (default: cuda when torch sees one, else cpu)")
    p.add_argument("--checkpoint", metavar="FILE", help="save resumable training state here every 2 minutes")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint when it exists")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def check_training_paths(args, inputs: list, out) -> None:
    """--checkpoint may not be an input or the output; --resume needs it; --data must exist."""
    from spa.core.output import check_distinct, check_target

    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint FILE")
    if args.checkpoint:
        check_target(args.checkpoint, inputs=inputs, what="--checkpoint")
        check_distinct([(out, "-o"), (args.checkpoint, "--checkpoint")])
    if args.data and not Path(args.data).exists():
        raise SpaError(f"--data {args.data}: no such file or folder")


def training_data(args, teacher, folders: list):
    """The DistillData of --data, or made from the teacher without data."""
    from spa.training import data as data_sources
    from spa.training.data_free import data_free

    if not args.data:
        return data_free(teacher, seed=args.seed, sequence=args.sequence, pool=args.pool,
                         input_shapes=cli_args.input_shapes(args))
    mean = data_sources.parse_triple(args.mean, "--mean")
    std = data_sources.parse_triple(args.std, "--std")
    return data_sources.from_path(teacher, args.data, tokenizer=_tokenizer(args, folders), sequence=args.sequence,
                                  mean=mean, std=std, preprocessor=_preprocessor(folders),
                                  input_shapes=cli_args.input_shapes(args))


def _tokenizer(args, folders: list):
    candidates = [Path(args.tokenizer)] if args.tokenizer else folders
    for folder in candidates:
        if folder is not None and any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json",
                                                                       "vocab.txt")):
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoTokenizer

            try:
                return AutoTokenizer.from_pretrained(str(folder))
            except Exception as exc:  # noqa: BLE001 - transformers raises many types
                raise SpaError(f"{folder}: cannot load its tokenizer ({str(exc).splitlines()[0][:150]})") from None
    if args.tokenizer:
        raise SpaError(f"--tokenizer {args.tokenizer}: no tokenizer files there")
    return None


def _preprocessor(folders: list) -> dict | None:
    import json

    for folder in folders:
        path = folder / "preprocessor_config.json" if folder is not None else None
        if path is not None and path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                return None
    return None


def config_from(args):
    from spa.training.distill import FinetuneConfig

    return FinetuneConfig(steps=getattr(args, "steps", None), max_minutes=args.max_minutes, batch=args.batch,
                          lr=args.lr, temperature=args.temperature, device=args.train_device, seed=args.seed,
                          checkpoint=args.checkpoint, resume=args.resume)


def check_result(result, min_fidelity: float | None) -> None:
    """A fine-tuned model that computes NaN/Inf is not written; one below --min-fidelity neither."""
    import math

    if not math.isfinite(result.after.relative_error):
        raise ValidationError("the fine-tuned model's outputs are not finite on the held-out inputs; nothing written "
                              "(try a smaller --lr)")
    if min_fidelity is not None and result.after.score() < min_fidelity:
        raise FidelityError(f"fidelity {result.after.score():.3f} after fine-tuning is below --min-fidelity "
                            f"{min_fidelity:g} ({result.after.describe()}); nothing written")


def describe(result) -> list[str]:
    return [f"trained {result.steps} steps ({result.samples_seen} samples) in {result.seconds:.0f} s on {result.data}",
            f"before: {result.before.describe()}",
            f"after:  {result.after.describe()} (best step {result.best_step})"]


class Finetune(Tool):
    name = "finetune"
    help = "recover a pruned model's accuracy by distilling from the dense one"

    def add_arguments(self, parser) -> None:
        cli_args.add_model(parser, help="the pruned model")
        parser.add_argument("--teacher", required=True, metavar="DENSE",
                            help="the model it was pruned from (.onnx or folder)")
        cli_args.add_output(parser, "where to write the fine-tuned model (a folder when the model is one)")
        add_training_options(parser, steps=True)
        cli_args.add_min_fidelity(parser, "refuse to write (exit 9) below X held-out agreement (else 1 - relative "
                                          "error)")
        cli_args.add_input_shape(parser, "fix an input's shape for made-up inputs (models with dynamic dims)")
        cli_args.add_seed(parser)
        cli_args.add_json(parser)

    def run(self, args) -> int:
        from spa.exporters.hf_folder import check_output_folder
        from spa.graph import io
        from spa.graph.load import load, model_file
        from spa.training.distill import finetune

        folder = Path(args.model) if Path(args.model).is_dir() else None
        teacher_folder = Path(args.teacher) if Path(args.teacher).is_dir() else None
        student_path = model_file(folder) if folder else Path(args.model)
        teacher_path = model_file(teacher_folder) if teacher_folder else Path(args.teacher)
        inputs = io.model_files(student_path) + io.model_files(teacher_path)
        out = check_output_folder(args.output, folder) if folder else io.check_output_path(args.output, inputs=inputs)
        check_training_paths(args, inputs, out)
        student, teacher = load(student_path), load(teacher_path)
        data = training_data(args, teacher, [folder, teacher_folder])
        result = finetune(student, teacher, data, config_from(args))
        check_result(result, args.min_fidelity)
        if folder is not None:
            write_folder(result.model, folder, out)
        else:
            io.save(result.model, out)
        summary = {"input": str(student_path), "teacher": str(teacher_path), "output": str(out), **result.as_dict()}
        if args.json:
            print_json(summary)
            return 0
        con = console()
        con.print(f"{args.model} → {out} (teacher {args.teacher})")
        for line in describe(result):
            con.print(line)
        con.print(f"[green]PASSED[/] wrote {out}")
        return 0


def write_folder(model, source: Path, out: Path) -> None:
    """model.onnx and every side file of the source folder (config.json unchanged: the widths are the
    pruned folder's), assembled under a temporary name and moved into place."""
    from spa.core.errors import OutputError
    from spa.core.output import commit_folder, temp_dir
    from spa.exporters.hf_folder import copy_side_files
    from spa.graph import io

    try:
        with temp_dir(out.parent) as staging:
            io.save(model, staging / "model.onnx")
            copy_side_files(source, staging)
            commit_folder(staging, out)
    except OSError as exc:
        raise OutputError(f"{out}: could not write the folder ({exc.strerror or exc})") from None


TOOL = Finetune()

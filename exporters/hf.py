"""Hugging Face models to ONNX, through optimum or through torch.onnx (dynamo).

The source is a local model folder or a `transformers` model object; nothing is fetched from a hub
(HF_HUB_OFFLINE is set for the duration). The output folder holds `model.onnx` beside the model's
`config.json` and tokenizer or preprocessor files, so optimum's ORTModel classes load it as they
would an optimum export.

Decoders are exported without a KV cache (`text-generation`, not `-with-past`): a cache makes the
per-head key/value tensors graph inputs and outputs, whose widths pruning must not change.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from pathlib import Path

from spa.core.errors import InputError, SpaError
from spa.core.output import commit_folder, temp_dir, temp_name
from spa.core.progress import progress
from spa.graph.load import model_file  # noqa: F401 (the CLI and bench/ import it from here)

EXPORTERS = ("optimum", "torch")
# Files that travel with the ONNX model so ORTModel.from_pretrained and the tokenizer still load.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
              "spiece.model", "added_tokens.json", "preprocessor_config.json", "sentencepiece.bpe.model")


@contextlib.contextmanager
def _offline_and_quiet():
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    loggers = [logging.getLogger(n) for n in ("transformers", "optimum", "torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_model(folder: str | os.PathLike, task: str | None = None):
    """A transformers model from a local folder, for `task` (inferred from the config if None)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SpaError(f"{folder}: not a Hugging Face model folder (no config.json)")
    from optimum.exporters.tasks import TasksManager

    task = task or task_from_config(folder)
    with _offline_and_quiet():
        try:
            # library_name: a sentence-transformers folder (modules.json) is a transformers model too
            return TasksManager.get_model_from_task(task, str(folder), framework="pt", local_files_only=True,
                                                    library_name="transformers"), task
        except Exception as exc:
            raise SpaError(f"{folder}: could not load the model for task '{task}': "
                           f"{str(exc).splitlines()[0][:200]}") from None


# The head class named in config.json's "architectures" tells the task (offline: optimum's own
# inference asks the hub).
_TASK_BY_HEAD = (("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"),
                 ("ForMaskedLM", "fill-mask"), ("ForSequenceClassification", "text-classification"),
                 ("ForTokenClassification", "token-classification"), ("ForQuestionAnswering", "question-answering"),
                 ("ForImageClassification", "image-classification"), ("ForMultipleChoice", "multiple-choice"))


def task_from_config(folder: Path) -> str:
    architectures = (read_config(folder) or {}).get("architectures") or []
    if not isinstance(architectures, list):
        raise InputError(f"{folder / 'config.json'}: 'architectures' is not a list")
    for arch in architectures:
        if not isinstance(arch, str):
            continue
        for suffix, task in _TASK_BY_HEAD:
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


def export(source, output: str | os.PathLike, *, task: str | None = None, exporter: str = "optimum",
           opset: int | None = None) -> Path:
    """Export `source` (a folder or a transformers model) to `output`/model.onnx; returns its path.

    The folder is assembled under a temporary name and moved into place, so a failed export leaves
    nothing behind."""
    if exporter not in EXPORTERS:
        raise SpaError(f"unknown exporter '{exporter}' (choose from {', '.join(EXPORTERS)})")
    output = Path(output)
    if isinstance(source, (str, os.PathLike)):
        check_output_folder(output, source)
    else:
        check_output_folder(output, output.parent / temp_name())  # no source folder to compare with
    folder = None
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        model, task = load_model(folder, task)
    else:
        model = source
        task = task or _default_task(model)
    model.eval()
    with temp_dir(output.parent) as staging:  # removed on any failure or signal; swept after a kill
        try:
            write = _export_optimum if exporter == "optimum" else _export_torch
            steps = [(f"exporting with {exporter}", lambda: write(model, staging, task, opset)),
                     ("copying config and tokenizer", lambda: _copy_side_files(model, folder, staging))]
            for _, step in progress(steps, f"spa export ({exporter}, {task})"):
                with _offline_and_quiet():
                    step()
            commit_folder(staging, output)
        except SpaError:
            raise
        except Exception as exc:
            raise SpaError(f"{exporter} export failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    return output / "model.onnx"


def _default_task(model) -> str:
    from optimum.exporters.tasks import TasksManager

    return TasksManager.infer_task_from_model(model)


def _export_optimum(model, out: Path, task: str, opset: int | None) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(model, str(out), task=task, opset=opset, do_validation=False,
                           monolith=True, no_post_process=True)
    produced = sorted(out.glob("*.onnx"))
    if [p.name for p in produced] != ["model.onnx"]:
        raise SpaError(f"optimum wrote {[p.name for p in produced]} for task '{task}'; "
                       "SPA prunes single-file exports (choose a task without a KV cache)")
    _fix_image_dims(out / "model.onnx", model.config)


def _fix_image_dims(path: Path, config) -> None:
    """optimum leaves an image's channels and size dynamic; the weights fix them (a patch
    convolution takes exactly `num_channels`), and channel analysis needs them static."""
    import onnx

    size = getattr(config, "image_size", None)
    channels = getattr(config, "num_channels", None)
    if size is None or channels is None:
        return
    size = (size, size) if isinstance(size, int) else tuple(size)
    proto = onnx.load(str(path))
    changed = False
    for vi in proto.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "pixel_values" and len(dims) == 4:
            for dim, value in zip(dims[1:], (channels, *size)):
                dim.Clear()
                dim.dim_value = value
            changed = True
    if changed:
        onnx.save(proto, str(path))


def example_inputs(model, task: str, batch: int = 2, seq: int = 8) -> dict:
    """Small dummy inputs that fit the model's forward signature."""
    import torch

    config = model.config
    g = torch.Generator().manual_seed(0)
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, size, size, generator=g)}
    if main == "input_features":
        frames = 2 * config.max_source_positions
        return {"input_features": torch.randn(batch, config.num_mel_bins, frames, generator=g)}
    vocab = getattr(config, "vocab_size", 100)
    inputs = {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g),
              "attention_mask": torch.ones(batch, seq, dtype=torch.int64)}
    return inputs


def _export_torch(model, out: Path, task: str, opset: int | None) -> None:
    import torch

    inputs = example_inputs(model, task)
    names = list(inputs)
    kwargs = {"use_cache": False} if task.startswith("text-generation") else {}
    with torch.no_grad():
        sample = model(**inputs, **kwargs, return_dict=True)
    outputs = [k for k, v in sample.items() if isinstance(v, torch.Tensor)]
    wrapped = _Positional(model, names, outputs, kwargs).eval()
    # Dim.DYNAMIC, not named Dims with ranges: with those, torch 2.14 fails on HF decoders
    # ("name 'L' is not defined", pytorch/pytorch#172903).
    dyn = torch.export.Dim.DYNAMIC
    axes = {n: ({0: "batch_size"} if n in ("pixel_values", "input_features") else {0: "batch_size",
                                                                                  1: "sequence_length"})
            for n in names}
    dynamic = {n: {axis: dyn for axis in axes[n]} for n in names}
    program = torch.onnx.export(wrapped, (), kwargs=inputs, dynamo=True, input_names=names,
                                output_names=outputs, dynamic_shapes=dynamic, opset_version=opset or 18,
                                optimize=True)
    model_proto = program.model_proto
    _name_dims(model_proto, axes)
    import onnx

    onnx.save(model_proto, str(out / "model.onnx"))


def _name_dims(proto, axes: dict) -> None:
    """Give the exporter's dim symbols (s17, s43) the names optimum uses, everywhere they occur."""
    rename = {}
    for vi in proto.graph.input:
        for axis, name in axes.get(vi.name, {}).items():
            dim = vi.type.tensor_type.shape.dim[axis]
            if dim.dim_param:
                rename.setdefault(dim.dim_param, name)
    for vi in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


class _Positional:
    """Named tensors in, a tuple of tensors out: the calling convention torch.onnx exports."""

    def __new__(cls, model, names, outputs, kwargs):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, **inputs):
                result = self.inner(**inputs, **kwargs, return_dict=True)
                return tuple(result[k] for k in outputs)

        return Wrapper()


def _copy_side_files(model, folder: Path | None, out: Path) -> None:
    if folder is not None:
        for name in SIDE_FILES:
            copy_side_file(folder, name, out)
    if not (out / "config.json").exists():
        model.config.save_pretrained(str(out))


# A tokenizer or config file bigger than this is not one.
SIDE_FILE_MAX_BYTES = 1 << 30


def copy_side_file(folder: Path, name: str, out: Path) -> bool:
    """Copy `folder/name` into `out` if it exists. The file is found by SPA's containment rule
    (spa.graph.io.resolve_inside): a symlink leaving the folder is refused (UnsafePathError), except the
    hub cache's link from snapshots/<rev>/ into the same repository's blobs/. Returns whether copied."""
    from spa.graph.io import check_input_file, resolve_inside

    if not os.path.lexists(folder / name):
        return False
    source = resolve_inside(Path(os.path.realpath(folder)), name, f"{folder}: '{name}'")
    check_input_file(source, name, limit=SIDE_FILE_MAX_BYTES)
    shutil.copyfile(source, out / name, follow_symlinks=False)
    return True


def read_config(folder: Path) -> dict | None:
    """config.json of a model folder as a dict (None if absent); InputError when it is not one."""
    import json

    from spa.graph.io import read_bounded
    from spa.allocation.plan import check_json_depth

    path = folder / "config.json"
    if not os.path.lexists(path):
        return None
    from spa.graph.io import resolve_inside

    raw = read_bounded(resolve_inside(Path(os.path.realpath(folder)), "config.json", str(path)),
                       SIDE_FILE_MAX_BYTES >> 6, "config.json")
    check_json_depth(raw, 64, str(path), error=InputError)
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not readable JSON ({str(exc)[:200]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a JSON object")
    return config


def check_output_folder(out: str | os.PathLike, source: str | os.PathLike) -> Path:
    """The output folder of a Hugging Face folder run: not the source (or inside it), absent or an
    empty folder, in an existing writable folder (spa.core.output's policy; OutputError)."""
    from spa.core.errors import OutputError
    from spa.core.output import check_target, file_ids

    out = Path(out)
    real_out, real_source = Path(os.path.realpath(out)), Path(os.path.realpath(source))
    if real_out == real_source or real_source in real_out.parents:
        raise OutputError(f"{out}: the output folder is the input folder or inside it; choose another -o")
    if os.path.lexists(out):
        if file_ids([out]).keys() & file_ids([source]).keys():
            raise OutputError(f"{out}: the output folder is the input folder; choose another -o")
        if not out.is_dir() or out.is_symlink() or any(out.iterdir()):
            raise OutputError(f"{out}: exists and is not an empty folder")
    else:
        check_target(out, what="-o")  # parent exists, is a folder and writable
    return out


def write_pruned_folder(result, source: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """The pruned model as a Hugging Face folder: model.onnx, the source's tokenizer and
    preprocessor files, and config.json with the new widths. Assembled under a temporary name and
    moved into place. Returns notes on the config update."""
    import json

    from spa.api import save
    from spa.core.errors import OutputError
    from spa.exporters.hf_config import pruned_config

    source, out = Path(source), check_output_folder(out, source)
    config = read_config(source)  # before any work: a malformed config.json is refused, not half-written
    try:
        with temp_dir(out.parent) as staging:  # removed on any failure or signal; swept after a kill
            save(result, staging / "model.onnx")
            for name in SIDE_FILES:
                if name != "config.json":
                    copy_side_file(source, name, staging)
            notes = []
            if config is not None:
                try:
                    config, notes = pruned_config(config, result.analysis, result.plan)
                except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
                    raise InputError(f"{source / 'config.json'}: unexpected content ({type(exc).__name__}: "
                                     f"{str(exc)[:120]})") from None
                (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            commit_folder(staging, out)
    except OSError as exc:
        raise OutputError(f"{out}: could not write the folder ({exc.strerror or exc})") from None
    return notes

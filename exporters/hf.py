"""Hugging Face models to ONNX, through optimum or through torch.onnx (dynamo).

The source is a local model folder or a `transformers` model object; nothing is fetched from a hub
(HF_HUB_OFFLINE is set for the duration). The output folder holds `model.onnx` beside the model's
`config.json` and tokenizer or preprocessor files, so optimum's ORTModel classes load it as they
would an optimum export.

Decoders are exported without a KV cache (`text-generation`, not `-with-past`): a cache makes the
per-head key/value tensors graph inputs and outputs, whose widths pruning must not change.

The folder handling (side files, config.json, the output-folder policy, the pruned folder) is in
spa.exporters.hf_folder and the torch.onnx path in spa.exporters.hf_torch; their public names are
importable from here too.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

from spa.core.errors import InputError, SpaError
from spa.core.output import commit_folder, temp_dir, temp_name
from spa.core.progress import progress
from spa.exporters.hf_folder import (SIDE_FILE_MAX_BYTES, SIDE_FILES, check_output_folder,  # noqa: F401
                                     copy_side_file, copy_side_files, read_config, set_use_cache, task_for_architectures,
                                     write_pruned_folder)
from spa.exporters.hf_gguf import gguf_source
from spa.exporters.hf_gguf import load as load_gguf
from spa.exporters.hf_torch import example_inputs, export_torch  # noqa: F401
from spa.graph.load import model_file  # noqa: F401 (the CLI and bench/ import it from here)

EXPORTERS = ("optimum", "torch")


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


def task_from_config(folder: Path) -> str:
    architectures = (read_config(folder) or {}).get("architectures") or []
    if not isinstance(architectures, list):
        raise InputError(f"{folder / 'config.json'}: 'architectures' is not a list")
    return task_for_architectures(architectures)


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
    folder, tokenizer = None, None
    if isinstance(source, (str, os.PathLike)):
        gguf = gguf_source(source)
        if gguf is not None:  # de-quantized to float32; config and tokenizer come from the file
            with _offline_and_quiet():
                model, task, tokenizer = load_gguf(*gguf, task)
            folder = None  # nothing else of the GGUF file's folder belongs to the model
        else:
            folder = Path(source)
            model, task = load_model(folder, task)
    else:
        model = source
        task = task or _default_task(model)
    model.eval()
    with temp_dir(output.parent) as staging:  # removed on any failure or signal; swept after a kill
        try:
            write = _export_optimum if exporter == "optimum" else export_torch
            steps = [(f"exporting with {exporter}", lambda: write(model, staging, task, opset)),
                     ("copying config and tokenizer, adding a KV cache",
                      lambda: _copy_side_files(model, folder, staging, task, tokenizer))]
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


def _copy_side_files(model, folder: Path | None, out: Path, task: str, tokenizer=None) -> None:
    if folder is not None:
        copy_side_files(folder, out)
    if tokenizer is not None:  # read from a GGUF file's metadata
        tokenizer.save_pretrained(str(out))
    if not (out / "config.json").exists():
        model.config.save_pretrained(str(out))
    generation = getattr(model, "generation_config", None)
    if generation is not None and task == "text-generation" and not (out / "generation_config.json").exists():
        generation.save_pretrained(str(out))
    if task == "text-generation":  # loaders read it to decide whether to feed a KV cache
        set_use_cache(out / "config.json", _add_kv_cache(out / "model.onnx"))


def _add_kv_cache(path: Path) -> bool:
    """Give the exported decoder the KV cache optimum's generate() feeds by default (exported without
    one: SPA prunes the plain graph and gives the cache back on writing). Whether it has one now."""
    import shutil

    from spa.flow.kv_past import with_past
    from spa.graph import io as graph_io

    plain = path.parent / ".plain"  # the graph and its weight files, read from here while the new one is written
    plain.mkdir()
    for item in path.parent.glob(path.name + "*"):
        item.rename(plain / item.name)
    cached = with_past(graph_io.load(plain / path.name))
    if cached is None:
        for item in plain.iterdir():
            item.rename(path.parent / item.name)
    else:
        graph_io.save(cached, path)
    shutil.rmtree(plain)
    return cached is not None

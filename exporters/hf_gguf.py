"""GGUF checkpoints (how llama.cpp-style small LLMs ship) as a `spa export hf` source: a `.gguf` file or
a folder holding one. transformers' GGUF loader de-quantizes the weights to float32 and reads the
config and tokenizer from the file's metadata; it needs the `gguf` package (the `hf` extra).
"""
from __future__ import annotations

import os
from pathlib import Path

from spa.core.errors import InputError, SpaError
from spa.exporters.hf_folder import task_for_architectures

SUFFIX = ".gguf"
INSTALL = "pip install 'spa-prune[hf]' (gguf, accelerate)"


def gguf_source(source: str | os.PathLike) -> tuple[Path, str] | None:
    """(folder, file name) when `source` is a .gguf file or a folder whose model is one (no
    config.json, exactly one .gguf); None for an ordinary model folder."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() != SUFFIX:
            raise InputError(f"{source}: not a model folder or a {SUFFIX} file")
        return source.parent, source.name
    if not source.is_dir() or (source / "config.json").exists():
        return None
    found = sorted(p.name for p in source.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(found) > 1:
        raise InputError(f"{source}: holds {len(found)} {SUFFIX} files ({', '.join(found[:4])}); give the one to "
                         "export as the source")
    return (source, found[0]) if found else None


def check_installed() -> None:
    import importlib.util

    for name in ("gguf", "accelerate"):
        if importlib.util.find_spec(name) is None:
            raise SpaError(f"reading a {SUFFIX} checkpoint needs the {name} package: {INSTALL}")


def load(folder: Path, name: str, task: str | None):
    """(model in float32, task, tokenizer or None) from folder/name."""
    import torch
    from optimum.exporters.tasks import TasksManager
    from transformers import AutoConfig, AutoTokenizer

    check_installed()
    where = folder / name
    try:
        config = AutoConfig.from_pretrained(str(folder), gguf_file=name, local_files_only=True)
    except Exception as exc:
        raise InputError(f"{where}: not a readable GGUF checkpoint ({_first_line(exc)})") from None
    # GGUF metadata names no head class; a GGUF checkpoint is a llama.cpp language model
    task = task or (task_for_architectures(config.architectures) if config.architectures else "text-generation")
    try:
        model_class = TasksManager.get_model_class_for_task(task, framework="pt", model_type=config.model_type,
                                                            library="transformers")
        model = model_class.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32,
                                            local_files_only=True)
    except Exception as exc:
        raise SpaError(f"{where}: could not load the model for task '{task}': {_first_line(exc)}") from None
    if not model.config.architectures:  # so that the written config.json tells loaders the head
        model.config.architectures = [type(model).__name__]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=name, local_files_only=True)
    except Exception:  # a checkpoint without tokenizer metadata still exports; the summary says so
        tokenizer = None
    return model, task, tokenizer


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]

"""Hugging Face model folders: the tokenizer, preprocessor and config files that travel with
`model.onnx`, config.json read under SPA's bounded-read rules, the output folder's policy, and the
pruned model written as a folder (model.onnx, side files, config.json with the new widths).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from spa.core.errors import InputError
from spa.core.output import commit_folder, temp_dir

# Files that travel with the ONNX model so ORTModel.from_pretrained and the tokenizer still load.
# Any other file of the folder travels too (chat templates, model cards, sentence-transformers'
# configs), except the model's weights and graphs (WEIGHT_SUFFIXES): the output has its own.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
              "spiece.model", "added_tokens.json", "preprocessor_config.json", "sentencepiece.bpe.model",
              "chat_template.jinja", "chat_template.json", "modules.json", "sentence_bert_config.json",
              "config_sentence_transformers.json")
WEIGHT_SUFFIXES = (".onnx", ".onnx.data", ".onnx_data", ".data", ".safetensors", ".bin", ".pt", ".pth", ".ckpt",
                   ".h5", ".keras", ".msgpack", ".gguf", ".tflite", ".ot", ".pb", ".npz", ".index", ".lock",
                   ".index.json")  # a shard index names weight files the output does not have

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


def copy_side_files(folder: Path, out: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the folder's side files (less `skip`) into `out` under copy_side_file's rules: every
    top-level file that is not weights or a graph, and the module folders sentence-transformers'
    modules.json names (1_Pooling/, 2_Normalize/, …)."""
    for name in side_file_names(folder):
        if name not in skip:
            copy_side_file(folder, name, out)
    for sub in _module_folders(folder):
        if (folder / sub).is_dir() and not (folder / sub).is_symlink():
            (out / sub).mkdir(parents=True, exist_ok=True)
            for name in side_file_names(folder / sub):
                copy_side_file(folder / sub, name, out / sub)


def side_file_names(folder: Path) -> list[str]:
    """The files of `folder` that travel with a model written from it (sorted)."""
    names = set()
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(".") or name.lower().endswith(WEIGHT_SUFFIXES):
            continue
        # a link is followed only for the known names (a hub snapshot links every file into blobs/)
        if entry.is_file(follow_symlinks=False) or (name in SIDE_FILES and entry.is_symlink()):
            names.add(name)
    return sorted(names)


def _module_folders(folder: Path) -> list[str]:
    """The sub-folders sentence-transformers' modules.json lists (plain relative names only)."""
    import json

    from spa.graph.io import read_bounded

    path = folder / "modules.json"
    if not path.is_file():
        return []
    try:
        modules = json.loads(read_bounded(path, SIDE_FILE_MAX_BYTES >> 10, "modules.json"))
    except (ValueError, RecursionError):
        raise InputError(f"{path}: not readable JSON") from None
    found = []
    for module in modules if isinstance(modules, list) else []:
        sub = module.get("path") if isinstance(module, dict) else None
        if isinstance(sub, str) and sub and "/" not in sub and "\\" not in sub and not sub.startswith("."):
            found.append(sub)
    return found


def set_use_cache(path: Path, value: bool) -> None:
    """config.json's use_cache made to say whether the graph takes a KV cache (where it has the field)."""
    import json

    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if isinstance(config, dict) and config.get("use_cache", value) != value:
        config["use_cache"] = value
        path.write_text(json.dumps(config, indent=2) + "\n")


def read_config(folder: Path) -> dict | None:
    """config.json of a model folder as a dict (None if absent); InputError when it is not one."""
    import json

    from spa.allocation.plan import check_json_depth
    from spa.graph.io import read_bounded, resolve_inside

    path = folder / "config.json"
    if not os.path.lexists(path):
        return None
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


# The head class named in config.json's "architectures" tells the task (offline: optimum's own
# inference asks the hub).
_TASK_BY_HEAD = (("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"),
                 ("ForMaskedLM", "fill-mask"), ("ForSequenceClassification", "text-classification"),
                 ("ForTokenClassification", "token-classification"), ("ForQuestionAnswering", "question-answering"),
                 ("ForImageClassification", "image-classification"), ("ForMultipleChoice", "multiple-choice"))


def task_for_architectures(architectures: list) -> str:
    """The optimum task of a model whose config lists these architectures (feature-extraction if none says)."""
    for arch in architectures:
        if not isinstance(arch, str):
            continue
        for suffix, task in _TASK_BY_HEAD:
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


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

    from spa.core.errors import OutputError
    from spa.exporters.hf_config import pruned_config
    from spa.flow.kv_past import as_read, takes_kv_cache, with_past
    from spa.graph.io import save

    source, out = Path(source), check_output_folder(out, source)
    config = read_config(source)  # before any work: a malformed config.json is refused, not half-written
    model = as_read(result.model)
    if config is not None and task_for_architectures(config.get("architectures") or []) == "text-generation":
        model = with_past(model) or model  # what optimum's generate() feeds by default, where it can be made
    try:
        with temp_dir(out.parent) as staging:  # removed on any failure or signal; swept after a kill
            save(model, staging / "model.onnx")
            copy_side_files(source, staging, skip=("config.json",))  # config.json: rewritten below
            notes = []
            if config is not None:
                try:
                    config, notes = pruned_config(config, result.analysis, result.plan)
                except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
                    raise InputError(f"{source / 'config.json'}: unexpected content ({type(exc).__name__}: "
                                     f"{str(exc)[:120]})") from None
                if "use_cache" in config:  # loaders read it to decide whether to feed a KV cache
                    config["use_cache"] = takes_kv_cache(model)
                (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            commit_folder(staging, out)
    except OSError as exc:
        raise OutputError(f"{out}: could not write the folder ({exc.strerror or exc})") from None
    return notes

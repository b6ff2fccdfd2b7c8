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
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
              "spiece.model", "added_tokens.json", "preprocessor_config.json", "sentencepiece.bpe.model")

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
    """Copy each of SIDE_FILES (less `skip`) that `folder` has into `out` (copy_side_file's rules)."""
    for name in SIDE_FILES:
        if name not in skip:
            copy_side_file(folder, name, out)


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
            copy_side_files(source, staging, skip=("config.json",))  # config.json: rewritten below
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

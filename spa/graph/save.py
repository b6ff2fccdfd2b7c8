"""Save a model atomically: to a temporary folder beside the target, then renamed into place, with
its external data file committed so that no reader sees a model with another save's data.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import onnx
import onnx_ir as ir

from spa.core.errors import OutputError, SpaError
from spa.graph.external_data import SOURCE_FILES, files_read_by, proto_tensors
from spa.graph.load import first_line
from spa.graph.stream import weight_bytes, write_streamed


# Above this many bytes of weights a model is saved with its tensors in an external data file.
EXTERNAL_DATA_THRESHOLD = 1 << 30


# With external data, tensors of at least this many bytes go to the data file.
EXTERNAL_TENSOR_MIN_BYTES = 1024


# Tensors at least this big start on a 64 KiB boundary, so ONNX Runtime memory-maps them
# instead of copying them into its own buffers.
ALIGNMENT, ALIGN_THRESHOLD = 1 << 16, 1 << 20


# How many bytes of tensors a save may hold in memory at once (the rest is streamed).
SAVE_IN_FLIGHT_BYTES = 1 << 27


# model.meta key (set by canonicalization): names of the node outputs the input model annotated
# with a type or shape (its value_info); a save writes value_info for these only
EXPORTER_ANNOTATED = "spa.exporter_annotated"


def check_output_path(path: str | os.PathLike, *, inputs=(), what: str = "-o") -> Path:
    """Refuse an output path that would overwrite an input (by inode), is a folder or not a
    regular file, or lies in a folder that is missing or read-only (spa.core.output's policy)."""
    from spa.core.output import check_target

    return check_target(path, inputs=inputs, what=what)


def save(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write the model atomically: to a temporary folder beside the target, then renamed into place.

    With external_data None, weights go to a data file beside the model when they exceed
    EXTERNAL_DATA_THRESHOLD; tensors are streamed to that file one at a time, so memory stays near
    one tensor. Without external data they are streamed into the one protobuf file the same way
    (`write_streamed`).

    The model/data pair is committed so that a reader never sees a model with another save's data:
    the data goes under a name no existing file has (`<name>.data`, or `<name>.<hex>.data` while
    that one is taken), the model that points to it is renamed into place, and only then is the
    data file the replaced model used removed (if SPA named it and nothing read from it)."""
    from spa.core.output import check_target, deferred_signals, sweep_stale, temp_dir

    path = Path(path)
    reads = files_read_by(model) | set(model.meta.get(SOURCE_FILES, ()))
    check_target(path, inputs=reads)
    if external_data is None:
        external_data = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    folder = path.parent
    sweep_stale(folder)
    old_data = _spa_data_files_of(path)
    data_target = None
    try:
        with temp_dir(folder) as tmpdir:
            tmp_model = tmpdir / path.name
            with _exporter_annotations(model):
                if external_data:
                    data_name = _fresh_data_name(path)
                    save_with_external_data(model, tmp_model, data_name)
                else:
                    write_streamed(model, tmp_model)
            # the commit: a signal waits until the pair is in place (or was never started)
            with deferred_signals():
                if external_data:
                    data_target = _link_new(tmpdir / data_name, folder, path.name)
                    if data_target.name != data_name:  # the name was taken meanwhile: point to the new one
                        _relocate(tmp_model, data_name, data_target.name)
                os.replace(tmp_model, path)
                data_target = None  # committed: the data file belongs to the model now
                _remove_replaced_data(path, old_data, reads)
    except SpaError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: could not write the model ({exc.strerror or first_line(exc)})") from None
    except Exception as exc:
        raise OutputError(f"{path}: could not write the model ({first_line(exc)})") from None
    finally:
        if data_target is not None:  # failed or interrupted between the two renames
            with contextlib.suppress(OSError):
                os.unlink(data_target)
    return path


def _remove_replaced_data(path: Path, old_data: list[Path], reads: set) -> None:
    """Remove the data files of the model `path` replaced, unless something still reads them."""
    from spa.core.output import file_ids

    keep = file_ids(reads | set(_spa_data_files_of(path)))
    for stale in old_data:
        with contextlib.suppress(OSError):
            info = os.stat(stale)
            if (info.st_dev, info.st_ino) not in keep:
                os.unlink(stale)


# SPA names a model's data file <model name>.data or <model name>.<12 hex>.data
def _data_name_pattern(model_name: str):
    import re

    return re.compile(re.escape(model_name) + r"(\.[0-9a-f]{12})?\.data")


def _fresh_data_name(path: Path) -> str:
    import secrets

    plain = path.name + ".data"
    if not os.path.lexists(path.parent / plain):
        return plain
    return f"{path.name}.{secrets.token_hex(6)}.data"


def _link_new(tmp_data: Path, folder: Path, model_name: str) -> Path:
    """Put the data file in `folder` under its name without ever replacing an existing file (a
    hard link fails if the name is taken; then a fresh name). Returns the final path."""
    import secrets

    name = tmp_data.name
    for _ in range(20):
        target = folder / name
        try:
            os.link(tmp_data, target)
            os.unlink(tmp_data)  # one link again: loaders refuse data files with several
            return target
        except FileExistsError:
            name = f"{model_name}.{secrets.token_hex(6)}.data"
        except OSError:  # a filesystem without hard links
            if not os.path.lexists(target):
                os.rename(tmp_data, target)
                return target
            name = f"{model_name}.{secrets.token_hex(6)}.data"
    raise OutputError(f"{folder}: could not find a free name for the external data file")


def _relocate(model_file: Path, old: str, new: str) -> None:
    """Rewrite the external-data location in a saved (small, weights-outside) model file."""
    proto = onnx.load(model_file, load_external_data=False)
    for tensor in proto_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    onnx.save(proto, model_file)


def _spa_data_files_of(path: Path) -> list[Path]:
    """The data files the model now at `path` refers to that SPA named (see _data_name_pattern):
    candidates for removal once a new model replaces it. Never anything else the user keeps there."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > (64 << 20):  # weights inside: no data file
            return []
        proto = onnx.load(path, load_external_data=False)
    except Exception:  # no model there, or not one we can read: nothing of ours to remove
        return []
    pattern, found = _data_name_pattern(path.name), set()
    for tensor in proto_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and pattern.fullmatch(entry.value):
                found.add(path.parent / entry.value)
    return sorted(found)


@contextlib.contextmanager
def _exporter_annotations(model: ir.Model):
    """Serialize only the value annotations the input model had (model.meta[EXPORTER_ANNOTATED]).

    Canonicalization infers a type and shape for every intermediate value; written out as
    value_info, they change how ONNX Runtime optimizes the saved model against the exporter's own
    file: on BERT-base it fused every residual Add + LayerNormalization into SkipLayerNormalization
    (its fusion needs both Add inputs' rank-3 shapes, which its own inference loses after the
    dynamic Reshapes), a CPU kernel 10× slower than the plain ops here. The pruned model is written
    with the exporter's annotations (at their new widths), so it runs the way the exporter's model
    does. Models that never went through canonicalization are written as they are."""
    keep = model.meta.get(EXPORTER_ANNOTATED)
    cleared = []
    if keep is not None:
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            for value in node.outputs:
                if (value.type is not None or value.shape is not None) and value.name not in keep \
                        and not value.is_graph_output():
                    cleared.append((value, value.type, value.shape))
                    value.shape, value.type = None, None
    try:
        yield
    finally:
        for value, type_, shape in cleared:
            value.type, value.shape = type_, shape


def save_with_external_data(model: ir.Model, path: Path, data_name: str | None = None) -> None:
    """Model at `path`, tensors in `data_name` (default `<path>.data`) beside it (a plain file
    name: it cannot leave the folder), aligned for memory mapping and streamed with a bounded
    number of bytes in flight."""
    ir.save(model, path, external_data=data_name or path.name + ".data", size_threshold_bytes=EXTERNAL_TENSOR_MIN_BYTES,
            alignment=ALIGNMENT, align_threshold=ALIGN_THRESHOLD, max_in_flight_bytes=SAVE_IN_FLIGHT_BYTES,
            max_workers=1)

"""External data: which files a model reads its weights from, and whether it may.

External data is where untrusted paths enter: every tensor's `location` is resolved component by
component inside the model's folder *before* any byte is read, so `../`, absolute paths and
symlinks that leave the folder are refused without the outside file ever being opened or stat'ed.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path, PurePosixPath

import onnx
import onnx_ir as ir

from spa.core.errors import InputError, UnsafePathError


# model.meta key: the resolved paths of the files a loaded model was read from
SOURCE_FILES = "spa.source_files"


def external_tensors(model: ir.Model):
    """(owner name, ExternalTensor) for every tensor stored outside the model file: initializers
    and tensor attributes (Constant values), in subgraphs and functions too."""
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            yield value.name, value.const_value
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in ir.traversal.RecursiveGraphIterator(graph):
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.TENSOR:
                    tensors = [attr.value]
                elif attr.type == ir.AttributeType.TENSORS:
                    tensors = list(attr.value)
                else:
                    continue
                for tensor in tensors:
                    if isinstance(tensor, ir.ExternalTensor):
                        yield f"{node.op_type} '{node.name}'", tensor
        if graph is model.graph:
            for sub_init in _subgraph_initializers(graph):
                if isinstance(sub_init.const_value, ir.ExternalTensor):
                    yield sub_init.name, sub_init.const_value


def _subgraph_initializers(graph: ir.Graph):
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for attr in node.attributes.values():
            subs = [attr.value] if attr.type == ir.AttributeType.GRAPH else (
                list(attr.value) if attr.type == ir.AttributeType.GRAPHS else [])
            for sub in subs:
                yield from sub.initializers.values()


def check_external_data(model: ir.Model, model_path: Path) -> None:
    """Refuse external data that lies outside the model's folder, is missing or is too short —
    before anything reads it. Raises UnsafePathError or InputError."""
    folder = Path(os.path.realpath(model_path.parent))
    for owner, tensor in external_tensors(model):
        where = f"{model_path}: external data of '{owner}'"
        location = str(tensor.location)
        if "\0" in location:
            raise InputError(f"{where}: the location contains a NUL byte")
        try:
            data = resolve_inside(folder, location, where)
            info = os.lstat(data)
        except FileNotFoundError:
            raise InputError(f"{where}: file '{location}' is missing") from None
        except OSError as exc:  # a name too long, a path through a regular file, …
            raise InputError(f"{where}: '{location[:80]}' cannot be opened ({exc.strerror})") from None
        if data == Path(os.path.realpath(model_path)):
            raise InputError(f"{where}: the location names the model file itself")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{where}: '{tensor.location}' is not a regular file")
        if info.st_nlink > 1:
            # onnx-ir refuses these when reading: a hard link can bring in a file from anywhere
            raise UnsafePathError(f"{where}: '{tensor.location}' has {info.st_nlink} hard links; "
                                  "use a copy of the file")
        offset, need = tensor.offset or 0, tensor.nbytes
        if tensor.length is not None and tensor.length != need:
            raise InputError(f"{where}: length {tensor.length} does not match its shape "
                             f"{list(tensor.shape)} ({need} bytes)")
        if offset < 0 or offset + need > info.st_size:
            raise InputError(f"{where}: '{tensor.location}' is truncated ({info.st_size} bytes, "
                             f"the tensor needs bytes {offset}..{offset + need})")


def resolve_inside(folder: Path, location: str, where: str) -> Path:
    """The file `location` names, resolved inside `folder` (an already resolved path) one
    component at a time. Symlinks are followed only while they stay inside; nothing outside the
    folder is ever stat'ed, opened or read."""
    rel = PurePosixPath(location.replace("\\", "/"))
    if rel.is_absolute() or os.path.isabs(location) or (len(location) > 1 and location[1] == ":"):
        raise UnsafePathError(f"{where}: location '{location}' is an absolute path; it must be "
                              "relative to the model's folder")
    if ".." in rel.parts:
        raise UnsafePathError(f"{where}: location '{location}' climbs out of the model's folder ('..')")
    if not rel.parts:
        raise InputError(f"{where}: empty location")
    current, pending, hops = folder, list(rel.parts), 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":  # only from a symlink's target
            if current == folder:
                raise UnsafePathError(f"{where}: '{location}' is a symlink that leaves the model's folder")
            current = current.parent
            continue
        candidate = current / part
        if not candidate.is_symlink():  # lstat of a path inside the folder
            current = candidate
            continue
        hops += 1
        if hops > 40:
            raise UnsafePathError(f"{where}: '{location}' is a symlink loop")
        target = os.readlink(candidate)
        blob = _hub_blob(folder, current, target) if not pending else None
        if blob is not None:
            return blob
        if os.path.isabs(target):
            target_path = Path(os.path.normpath(target))
            if target_path != folder and folder not in target_path.parents:
                raise UnsafePathError(f"{where}: '{location}' is a symlink to '{target}', outside the "
                                      "model's folder")
            current, pending = folder, list(target_path.relative_to(folder).parts) + pending
        else:
            pending = list(PurePosixPath(target).parts) + pending
    return current


def _hub_blob(folder: Path, current: Path, target: str) -> Path | None:
    """The one symlink allowed to leave the model's folder: the Hugging Face hub cache layout,
    where <repo>/snapshots/<rev>/[sub/]name links to ../../[../]blobs/<hash> of the same <repo>.
    `current` (the link's folder) holds no symlinks, so its parents are the physical ones."""
    parts = PurePosixPath(target).parts
    ups = next((i for i, p in enumerate(parts) if p != ".."), len(parts))
    if os.path.isabs(target) or ups == 0 or parts[ups:-1] != ("blobs",) or len(parts) != ups + 2:
        return None
    snapshot = next((a for a in (current, *current.parents) if a.parent.name == "snapshots"), None)
    if snapshot is None or not (snapshot == folder or snapshot in folder.parents):
        return None
    base = current
    for _ in range(ups):
        base = base.parent
    if base != snapshot.parent.parent:  # not this repository's blobs folder
        return None
    return base / "blobs" / parts[-1]


def files_read_by(model: ir.Model) -> set[Path]:
    """Resolved paths of the external data files a loaded model still reads from."""
    return {Path(os.path.realpath(t.path)) for _, t in external_tensors(model) if t.base_dir}


def model_files(path) -> list[Path]:
    """The files a model path stands for: the model and the external data files it names (found
    inside its folder by SPA's rule; unreadable models give just themselves). Outputs are checked
    against these before any work, so no output lands on an input's weights."""
    path = Path(path)
    files = [path]
    with contextlib.suppress(Exception):
        if path.is_dir():  # a Hugging Face folder: every file directly in it
            return [path, *(p for p in path.iterdir() if p.is_file())]
        if os.stat(path).st_size <= (64 << 20) and stat.S_ISREG(os.stat(path).st_mode):
            proto = onnx.load(path, load_external_data=False)
            folder = Path(os.path.realpath(path.parent))
            for tensor in proto_tensors(proto):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        with contextlib.suppress(Exception):
                            files.append(resolve_inside(folder, entry.value, str(path)))
    return files


def proto_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)

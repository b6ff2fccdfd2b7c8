"""Load models from any accepted form into onnx-ir, and save them atomically.

External data is where untrusted paths enter: every tensor's `location` is resolved component by
component inside the model's folder *before* any byte is read, so `../`, absolute paths and
symlinks that leave the folder are refused without the outside file ever being opened or stat'ed.
"""
from __future__ import annotations

import contextlib

import os
import stat
from pathlib import Path, PurePosixPath

import numpy as np
import onnx
import onnx_ir as ir

from spa.core.errors import InputError, OutputError, SpaError, UnsafePathError

# Above this many bytes of weights a model is saved with its tensors in an external data file.
EXTERNAL_DATA_THRESHOLD = 1 << 30
# With external data, tensors of at least this many bytes go to the data file.
EXTERNAL_TENSOR_MIN_BYTES = 1024
# Tensors at least this big start on a 64 KiB boundary, so ONNX Runtime memory-maps them
# instead of copying them into its own buffers.
ALIGNMENT, ALIGN_THRESHOLD = 1 << 16, 1 << 20
# How many bytes of tensors a save may hold in memory at once (the rest is streamed).
SAVE_IN_FLIGHT_BYTES = 1 << 27
# model.meta key: the resolved paths of the files a loaded model was read from
SOURCE_FILES = "spa.source_files"
# model.meta key (set by canonicalization): names of the node outputs the input model annotated
# with a type or shape (its value_info); a save writes value_info for these only
EXPORTER_ANNOTATED = "spa.exporter_annotated"


def load(model) -> ir.Model:
    """Return an onnx-ir model from a path, an onnx.ModelProto, an onnx_ir.Model or a gs.Graph.

    Paths are read with onnx-ir, which memory-maps external data instead of copying it.
    """
    from spa.graph.support import check_supported, check_unique_names

    if isinstance(model, ir.Model):
        loaded = model
    elif isinstance(model, onnx.ModelProto):
        check_unique_names(model)
        loaded = _deserialize(model, "the ModelProto")
    elif isinstance(model, (str, os.PathLike)):
        loaded = _load_path(Path(model))
    elif type(model).__module__.startswith("onnx_graphsurgeon"):
        import onnx_graphsurgeon as gs

        loaded = _deserialize(gs.export_onnx(model), "the onnx-graphsurgeon graph")
    else:
        raise InputError(f"cannot load a model from an object of type {type(model).__name__}")
    check_supported(loaded)
    return loaded


def _deserialize(proto: onnx.ModelProto, what: str) -> ir.Model:
    try:
        return ir.serde.deserialize_model(proto)
    except Exception as exc:  # onnx-ir raises many types for malformed protos
        raise InputError(f"{what} is not a valid ONNX model ({_first_line(exc)})") from None


def _load_path(path: Path) -> ir.Model:
    from spa.graph.support import check_unique_names

    check_input_file(path, "model")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(path, load_external_data=False)  # the protobuf only; no external data read
    except Exception as exc:  # protobuf raises many types for corrupt input
        raise InputError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    check_unique_names(proto)
    check_tensor_payloads(proto, path)
    model = _deserialize(proto, str(path))
    del proto
    ir.external_data.set_base_dir(model.graph, path.parent)
    if len(model.graph) == 0 and not model.graph.outputs:
        raise InputError(f"{path}: not an ONNX model (the graph is empty)")
    check_external_data(model, path)
    map_on_demand(model)
    # every copy made from this model remembers which files it came from: saves never overwrite them
    model.meta[SOURCE_FILES] = {Path(os.path.realpath(path))} | files_read_by(model)
    return model


def check_tensor_payloads(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse, with the tensor's name, what would otherwise fail deep inside a later stage:
    sparse initializers, raw bytes that do not match the declared shape, and node inputs that
    nothing in the graph defines."""
    from spa.core.errors import UnsupportedError

    graph = proto.graph
    if graph.sparse_initializer:
        name = graph.sparse_initializer[0].values.name
        raise UnsupportedError(f"{path}: sparse initializer '{name}': SPA reads dense weights only")
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data"):
            continue
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except Exception:  # strings, sub-byte and unknown types: sized elsewhere
            continue
        if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            continue
        need = int(np.prod(t.dims, dtype=np.int64)) * itemsize
        if len(t.raw_data) != need:
            raise InputError(f"{path}: initializer '{t.name}' holds {len(t.raw_data)} bytes, its shape "
                             f"{list(t.dims)} needs {need}")
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        defined.update(node.output)
    for node in graph.node:
        for name in node.input:
            if name not in defined:
                raise InputError(f"{path}: node '{node.name or node.op_type}' reads '{name}', which no "
                                 "input, initializer or node defines")


# ---------------------------------------------------------------- bounded, typed reads


def check_input_file(path, what: str, *, limit: int | None = None, error=InputError,
                     folder_ok: bool = False) -> os.stat_result:
    """Refuse, before anything opens it, an input that is missing, not a regular file (a FIFO
    would block the read forever, /dev/zero never ends) or bigger than `limit` bytes."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file (the {what})") from None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: {what} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(info.st_mode) and folder_ok:
        return info
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise error(f"{path}: the {what} is {kind}")
    if limit is not None and info.st_size > limit:
        raise error(f"{path}: the {what} is {info.st_size} bytes, more than the {limit >> 20} MiB SPA reads")
    return info


# Calibration arrays SPA reads at most (all files together): statistics need far less.
CALIB_MAX_BYTES = 16 << 30


def check_calibration(path) -> None:
    """--calib: a regular .npz/.npy file, or a folder whose .npz/.npy entries are regular files,
    CALIB_MAX_BYTES at most in all; refused (InputError) before anything is opened."""
    info = check_input_file(path, "calibration", folder_ok=True)
    if not stat.S_ISDIR(info.st_mode):
        files = [Path(path)]
    else:
        files = [p for p in Path(path).iterdir() if p.suffix in (".npz", ".npy")]
    total = sum(check_input_file(f, "calibration").st_size for f in files)
    if total > CALIB_MAX_BYTES:
        raise InputError(f"{path}: {total} bytes of calibration data, more than the "
                         f"{CALIB_MAX_BYTES >> 30} GiB SPA reads")


def read_bounded(path, limit: int, what: str, *, error=InputError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking and checked
    again on the open descriptor, so a file swapped for a FIFO after the check cannot hang us."""
    check_input_file(path, what, limit=limit, error=error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{path}: {what} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: the {what} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: the {what} is more than the {limit >> 20} MiB SPA reads")
    return data


# ---------------------------------------------------------------- external data: paths and sizes


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


# ---------------------------------------------------------------- out of core


class MappedTensor(ir.ExternalTensor):
    """External weights mapped afresh on every read, with no mapping kept: once a caller drops
    the array, its pages leave the process. onnx-ir's ExternalTensor maps the whole file and keeps
    it, so reading every weight once (scoring, slicing) would leave the whole model resident."""

    def _check_path_containment(self) -> None:
        # SPA's containment rule (resolve_inside), which also admits the hub cache's blobs
        if self.base_dir:
            resolve_inside(Path(os.path.realpath(self.base_dir)), str(self.location),
                           f"external data of '{self.name}'")

    def numpy(self) -> np.ndarray:
        self._check_validity()
        self._check_path_containment()
        shape = tuple(self.shape.numpy())
        if self.size == 0 or self.dtype.bitwidth < 8:  # packed sub-byte types: onnx-ir unpacks them
            array = super().numpy().copy()
            self.release()
            return array
        dtype = np.dtype(self.dtype.numpy()).newbyteorder("<")
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self.offset or 0, shape=shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def tobytes(self) -> bytes:
        return self.numpy().tobytes()


def map_on_demand(model: ir.Model) -> None:
    """Swap the model's external initializers for MappedTensors (same file, offset and length)."""
    for value in model.graph.initializers.values():
        t = value.const_value
        if isinstance(t, ir.ExternalTensor) and not isinstance(t, MappedTensor):
            value.const_value = MappedTensor(t.location, t.offset, t.length, t.dtype, shape=t.shape, name=t.name,
                                             doc_string=t.doc_string, metadata_props=dict(t.metadata_props),
                                             base_dir=t.base_dir)


# Sliced tensors at least this big are computed when read (and dropped), not held in memory.
LAZY_SLICE_MIN_BYTES = 1 << 20


def take(tensor: ir.TensorProtocol, kept: dict[int, np.ndarray], name: str) -> ir.TensorProtocol:
    """`tensor` with only the `kept` indices along each axis. A big one becomes a LazyTensor that
    slices its (memory-mapped) source each time it is read, so slicing a model larger than memory
    holds one tensor at a time — while it is being written — instead of every sliced weight."""
    def compute() -> np.ndarray:
        data = tensor.numpy()
        for axis, idx in kept.items():
            data = np.take(data, idx, axis=axis)
        return np.ascontiguousarray(data)

    shape = list(tensor.shape)
    for axis, idx in kept.items():
        shape[axis] = len(idx)
    if not isinstance(tensor, ir.ExternalTensor) or tensor.nbytes < LAZY_SLICE_MIN_BYTES:
        return ir.tensor(compute(), name=name)  # in memory already: slicing once is cheaper
    return ir.LazyTensor(lambda: ir.tensor(compute(), name=name), dtype=tensor.dtype, shape=ir.Shape(shape),
                         name=name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


# ---------------------------------------------------------------- save


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
            for tensor in _proto_tensors(proto):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        with contextlib.suppress(Exception):
                            files.append(resolve_inside(folder, entry.value, str(path)))
    return files


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
        raise OutputError(f"{path}: could not write the model ({exc.strerror or _first_line(exc)})") from None
    except Exception as exc:
        raise OutputError(f"{path}: could not write the model ({_first_line(exc)})") from None
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
    for tensor in _proto_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    onnx.save(proto, model_file)


def _proto_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


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
    for tensor in _proto_tensors(proto):
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


def write_streamed(model: ir.Model, path: Path) -> None:
    """The model as one protobuf file (weights inside), written tensor by tensor.

    `ir.save` builds the whole ModelProto (a copy of every weight) and then serializes it (a
    second copy) before writing: on BERT-base twice 265 MB at peak, and the serialization alone
    is a third of the save. Here the protobuf is written in field order with the lengths computed
    up front: the graph without its weights is serialized once (small), and each initializer's
    bytes go from its array (or its memory-mapped external data: the saved file never refers to
    the input's data file) straight to the file. The file is the same protobuf `ir.save` writes."""
    graph = model.graph
    values = [v for v in graph.initializers.values() if v.const_value is not None]
    tensors = [v.const_value for v in values]
    try:
        for v, t in zip(values, tensors):  # placeholders: the skeleton carries names, types and dims only
            v.const_value = ir.ExternalTensor("-", 0, None, t.dtype, shape=t.shape, name=v.name,
                                              doc_string=t.doc_string, metadata_props=dict(t.metadata_props))
        skeleton = to_proto(model)
    finally:
        for v, t in zip(values, tensors):
            v.const_value = t
    headers = list(skeleton.graph.initializer)
    del skeleton.graph.initializer[:]
    parts = [_tensor_parts(header, t) for header, t in zip(headers, tensors)]
    graph_head, graph_tail = _split_fields(skeleton.graph, _GRAPH_INITIALIZER)
    skeleton.ClearField("graph")
    model_head, model_tail = _split_fields(skeleton, _MODEL_GRAPH)
    entries = [(_field(_GRAPH_INITIALIZER, size), size, part) for part, size in parts]
    graph_size = len(graph_head) + sum(len(key) + size for key, size, _ in entries) + len(graph_tail)
    with open(path, "wb") as f:
        f.write(model_head)
        f.write(_field(_MODEL_GRAPH, graph_size))
        f.write(graph_head)
        for key, size, part in entries:
            f.write(key)
            start = f.tell()
            part(f)
            if f.tell() - start != size:
                raise OutputError(f"{path}: tensor bytes of unexpected length ({f.tell() - start} != {size})")
        f.write(graph_tail)
        f.write(model_tail)


_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9  # field numbers in onnx.proto


def _tensor_parts(header: onnx.TensorProto, tensor: ir.TensorProtocol):
    """(writer, size) of one TensorProto: the header's fields around raw_data, the raw bytes written
    by the tensor itself; strings and sub-byte types (rare, small) are serialized whole."""
    header.ClearField("external_data")
    header.ClearField("data_location")
    if tensor.dtype == ir.DataType.STRING or tensor.dtype.bitwidth < 8:
        proto = ir.serde.serialize_tensor(tensor)
        proto.name = header.name
        data = proto.SerializeToString()
        return (lambda f: f.write(data)), len(data)
    head, tail = _split_fields(header, _TENSOR_RAW_DATA)
    raw = tensor.nbytes
    key = _field(_TENSOR_RAW_DATA, raw)

    def write(f):
        f.write(head)
        f.write(key)
        if hasattr(tensor, "tofile"):
            f.flush()
            tensor.tofile(f)
        else:
            f.write(tensor.tobytes())
        f.write(tail)

    return write, len(head) + len(key) + raw + len(tail)


def _split_fields(message, number: int) -> tuple[bytes, bytes]:
    """The message's serialized fields numbered below `number`, and those above it (the field
    itself must be unset): with them around that field, the bytes are what the message serializes to."""
    below, above = type(message)(), type(message)()
    below.CopyFrom(message)
    above.CopyFrom(message)
    for field in message.DESCRIPTOR.fields:
        (above if field.number < number else below).ClearField(field.name)
    return below.SerializeToString(), above.SerializeToString()


def _field(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field."""
    return _varint(number << 3 | 2) + _varint(length)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def save_with_external_data(model: ir.Model, path: Path, data_name: str | None = None) -> None:
    """Model at `path`, tensors in `data_name` (default `<path>.data`) beside it (a plain file
    name: it cannot leave the folder), aligned for memory mapping and streamed with a bounded
    number of bytes in flight."""
    ir.save(model, path, external_data=data_name or path.name + ".data", size_threshold_bytes=EXTERNAL_TENSOR_MIN_BYTES,
            alignment=ALIGNMENT, align_threshold=ALIGN_THRESHOLD, max_in_flight_bytes=SAVE_IN_FLIGHT_BYTES,
            max_workers=1)


def serialized_bytes(model: ir.Model) -> int:
    """The model's size as one protobuf (graph + every tensor), without materialising the weights
    of a big or memory-mapped model: those are counted by size, their bytes never read."""
    values = [v for v in model.graph.initializers.values() if v.const_value is not None]
    if weight_bytes(model) < (64 << 20) and not any(isinstance(v.const_value, ir.ExternalTensor) for v in values):
        return to_proto(model).ByteSize()
    saved = {v.name: v.const_value for v in values}
    try:
        for v in values:  # placeholders: serialize as a reference, read nothing
            v.const_value = ir.ExternalTensor("-", 0, None, saved[v.name].dtype, shape=saved[v.name].shape,
                                              name=v.name)
        return to_proto(model).ByteSize() + sum(t.nbytes for t in saved.values())
    finally:
        for v in values:
            v.const_value = saved[v.name]


def to_proto(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)


def to_graphsurgeon(model: ir.Model):
    """For users whose pipelines hold an onnx-graphsurgeon Graph."""
    import onnx_graphsurgeon as gs

    return gs.import_onnx(to_proto(model))

"""Out of core: external weights mapped per read, and slices of big weights computed when read."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx_ir as ir

from spa.graph.external_data import resolve_inside


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


def take(tensor: ir.TensorProtocol, kept: dict[int, np.ndarray], name: str, *,
         lazy_min_bytes: int | None = None) -> ir.TensorProtocol:
    """`tensor` with only the `kept` indices along each axis. A big one becomes a LazyTensor that
    slices its (memory-mapped) source each time it is read, so slicing a model larger than memory
    holds one tensor at a time — while it is being written — instead of every sliced weight.
    `lazy_min_bytes` (default LAZY_SLICE_MIN_BYTES): the size from which a slice is lazy."""
    def compute() -> np.ndarray:
        data = tensor.numpy()
        for axis, idx in kept.items():
            data = np.take(data, idx, axis=axis)
        return np.ascontiguousarray(data)

    shape = list(tensor.shape)
    for axis, idx in kept.items():
        shape[axis] = len(idx)
    limit = LAZY_SLICE_MIN_BYTES if lazy_min_bytes is None else lazy_min_bytes
    if not isinstance(tensor, ir.ExternalTensor) or tensor.nbytes < limit:
        return ir.tensor(compute(), name=name)  # in memory already: slicing once is cheaper
    return ir.LazyTensor(lambda: ir.tensor(compute(), name=name), dtype=tensor.dtype, shape=ir.Shape(shape),
                         name=name)

"""The model as one protobuf: serialized (`to_proto`), streamed to a file tensor by tensor
(`write_streamed`), or only measured (`serialized_bytes`).
"""
from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir

from spa.core.errors import OutputError


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


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


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

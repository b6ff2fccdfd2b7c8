"""`spa export hf --exporter torch`: a transformers model to ONNX through torch.onnx (dynamo), with
the input names and dynamic dims (batch_size, sequence_length) that optimum gives its exports.

spa.exporters.hf calls `export_torch` inside its staging folder, offline and quiet.
"""
from __future__ import annotations

from pathlib import Path


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


def export_torch(model, out: Path, task: str, opset: int | None) -> None:
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

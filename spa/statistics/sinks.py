"""A sink's weight seen as a matrix: rows are outputs, columns are the flattened inputs it reads
(for a Conv, the k_h·k_w taps of every input channel), plus where its bias lives. Which ops are
compensable sinks, and how they read their weight, their op rules say (`Rule.sink_layout`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.analysis.rules import standard_rule
from spa.analysis.rules.base import attr_ints, input_or_none
from spa.analysis.rules.linear import following_bias  # noqa: F401  (it lived here)


@dataclass
class SinkWeight:
    node: ir.Node
    weight: ir.Value
    bias: ir.Value | None
    kind: str          # "conv", "gemm" or "matmul"
    taps: int          # columns per input position (k_h·k_w for a Conv, else 1)
    transposed: bool   # Gemm/MatMul store (K, N): the matrix is its transpose

    def matrix(self) -> np.ndarray:
        w = self.weight.const_value.numpy()
        if self.kind == "conv":
            return w.reshape(w.shape[0], -1)
        return w.T if self.transposed else w

    def store(self, matrix: np.ndarray) -> None:
        old = self.weight.const_value.numpy()
        if self.kind == "conv":
            new = matrix.reshape(old.shape)
        else:
            new = matrix.T if self.transposed else matrix
        self.weight.const_value = ir.tensor(np.ascontiguousarray(new.astype(old.dtype)), name=self.weight.name)

    def columns(self, positions: np.ndarray) -> np.ndarray:
        return (positions[:, None] * self.taps + np.arange(self.taps)).reshape(-1)


def sink_weight(node: ir.Node, input_index: int) -> SinkWeight | None:
    """The weight matrix behind a sink, or None where SPA cannot compensate it (computed weights,
    grouped convolutions, batched MatMul weights, auto_pad convolutions)."""
    rule = standard_rule(node)
    index = None if rule is None or input_index != 0 else rule.weight_input(node)
    w = None if index is None else input_or_none(node, index)
    if w is None or not w.is_initializer() or w.const_value is None:
        return None
    layout = rule.sink_layout(node, w)
    return None if layout is None else SinkWeight(node, w, *layout)


def conv_geometry(node: ir.Node, spatial: int) -> dict:
    return {"kernel": list(node.inputs[1].const_value.shape)[2:],
            "strides": attr_ints(node, "strides", [1] * spatial),
            "dilations": attr_ints(node, "dilations", [1] * spatial),
            "pads": attr_ints(node, "pads", [0] * (2 * spatial))}


@dataclass
class SinkPlan:
    """A compensable sink of a group: its weight matrix and its input channel space."""
    sink: SinkWeight
    space: object      # the sink's input channel space (positions → classes)


#: A sink reading more columns than this gets no moments (its H̃ alone would take 12·n² bytes while
#: measured: 7.5 GB for a VGG classifier's 25088 flattened inputs); its groups rank by L2 instead.
MAX_COLUMNS = 8192


def compensable_sinks(model: ir.Model, groups) -> dict[str, SinkPlan]:
    """The groups' sinks whose weight reads their channel space as columns, by node name."""
    nodes = {n.name: n for n in model.graph}
    found = {}
    for group in groups:
        for s in group.sinks:
            if s.node not in nodes:  # inside an If/Loop body: not probed; ranked by L2, not compensated
                continue
            sw = sink_weight(nodes[s.node], s.input_index)
            if sw is not None and sw.matrix().shape[1] == s.space.size * sw.taps and sw.matrix().shape[1] <= MAX_COLUMNS:
                found[s.node] = SinkPlan(sw, s.space)
    return found

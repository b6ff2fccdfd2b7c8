"""SPA's own canonicalization rewrites (onnxscript rewriter rules), run with onnxscript's defaults.

Each rule turns one exporter's spelling of an operation into the spelling the op rules analyse.

- `unflatten_gemm`: jax2onnx (and other exporters) apply a Dense layer to [..., D] as
  Reshape → [prod(...), D] → Gemm → Reshape → [..., N]. Flattening merges every leading axis into
  the batch axis, so a channel axis among them (MLP-Mixer's token mixing runs Dense over tokens
  with the channels leading) would merge with the batch. MatMul + Add on the unflattened tensor
  computes the same and keeps each axis its own.
"""
from __future__ import annotations

import numpy as np
from onnxscript import ir
from onnxscript.rewriter._basics import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase, RewriteRuleSet


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None


class UnflattenGemm(RewriteRuleClassBase):
    """Reshape(x → [M, K]) → Gemm(·, W[, C]) → Reshape(→ [..., N]) with the leading dims of x
    restored ⇒ MatMul(x, W) (+ C)."""

    def pattern(self, op, x, shape_in, w, c, shape_out):
        flat = op.Reshape(x, shape_in, _allow_other_attributes=True)
        y = op.Gemm(flat, w, c, _allow_other_attributes=True, _outputs=["gemm"])
        return op.Reshape(y, shape_out, _allow_other_attributes=True)

    def check(self, context, x, shape_in, w, c, shape_out, gemm, **_) -> MatchResult:
        result = MatchResult()
        node = gemm.producer()
        attrs = node.attributes
        if attrs.get_int("transA", 0) or attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0:
            return result.fail("Gemm with transA, alpha or beta")
        if len(gemm.uses()) != 1 or len(node.inputs[0].uses()) != 1:
            return result.fail("the flattened values have other users")
        if x.shape is None or len(x.shape) < 3 or w.shape is None or len(w.shape) != 2:
            return result.fail("x of rank < 3 or W not a matrix")
        if c is not None and (c.shape is None or len(c.shape) > 1):
            return result.fail("a bias that is not a vector or scalar")
        out = context.output_values[0]
        if out.shape is None or len(out.shape) != len(x.shape):
            return result.fail("the output rank differs from x's")
        if any(not isinstance(d, int) for d in list(x.shape)[:-1]):
            # symbolic leading dims: they must be the same symbols in the output
            if [str(d) for d in list(x.shape)[:-1]] != [str(d) for d in list(out.shape)[:-1]]:
                return result.fail("the output does not restore x's leading dims")
        elif list(x.shape)[:-1] != list(out.shape)[:-1]:
            return result.fail("the output does not restore x's leading dims")
        flat = _const(shape_in)
        if flat is None or len(flat) != 2:
            return result.fail("the first Reshape's target is not a constant [M, K]")
        self._trans_b = attrs.get_int("transB", 0)
        return result

    def rewrite(self, op, x, shape_in, w, c, shape_out, gemm, **_):
        weight = op.Transpose(w, perm=[1, 0]) if self._trans_b else w
        y = op.MatMul(x, weight)
        return op.Add(y, c) if c is not None else y


class UnflattenGemmNoBias(UnflattenGemm):
    """The same without C (onnxscript drops an all-zero Gemm bias first)."""

    def pattern(self, op, x, shape_in, w, shape_out):
        flat = op.Reshape(x, shape_in, _allow_other_attributes=True)
        y = op.Gemm(flat, w, _allow_other_attributes=True, _outputs=["gemm"])
        return op.Reshape(y, shape_out, _allow_other_attributes=True)

    def check(self, context, x, shape_in, w, shape_out, gemm, **_) -> MatchResult:
        return super().check(context, x, shape_in, w, None, shape_out, gemm)

    def rewrite(self, op, x, shape_in, w, shape_out, gemm, **_):
        return super().rewrite(op, x, shape_in, w, None, shape_out, gemm)


RULES = [UnflattenGemm.rule(), UnflattenGemmNoBias.rule()]
rules = RewriteRuleSet(RULES)

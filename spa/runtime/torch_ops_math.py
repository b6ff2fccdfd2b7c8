"""to_torch op table: elementwise arithmetic, comparisons, activations, softmax and reductions."""
from __future__ import annotations

import numpy as np

from spa.runtime.torch_ops_common import axes_of, isinf, prod_over


def ops(torch, F) -> dict:
    """Op type → (module, node, attrs, args, values) → tensor or tuple."""
    def reduce(fn):
        def run(m, n, a, x, v):
            axes = axes_of(n, a, v, 1)
            keep = bool(a.get("keepdims", 1))
            if not axes:
                if a.get("noop_with_empty_axes", 0):
                    return x[0]
                axes = list(range(x[0].dim()))
            return fn(x[0], [int(i) for i in axes], keep)
        return run

    def clip(m, n, a, x, v):
        lo = a.get("min") if m.opset < 11 else (x[1] if len(x) > 1 and x[1] is not None else None)
        hi = a.get("max") if m.opset < 11 else (x[2] if len(x) > 2 and x[2] is not None else None)
        return torch.clamp(x[0], lo, hi)

    def softmax(fn):
        def run(m, n, a, x, v):
            axis = a.get("axis", -1 if m.opset >= 13 else 1)
            if m.opset < 13:
                shape = x[0].shape
                flat = x[0].reshape(int(np.prod(shape[:axis % x[0].dim()], dtype=np.int64)), -1)
                return fn(flat, -1).reshape(shape)
            return fn(x[0], axis)
        return run

    def gelu(m, n, a, x, v):
        approx = a.get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return F.gelu(x[0], approximate="tanh" if approx == "tanh" else "none")

    def binary(fn):
        return lambda m, n, a, x, v: fn(x[0], x[1])

    def unary(fn):
        return lambda m, n, a, x, v: fn(x[0])

    def variadic(fn):
        def run(m, n, a, x, v):
            y = x[0]
            for other in x[1:]:
                y = fn(y, other)
            return y
        return run

    def mean_of(m, n, a, x, v):
        return sum(x) / len(x)

    def arg(largest: bool):
        def run(m, n, a, x, v):
            axis = a.get("axis", 0) % x[0].dim()
            keep = bool(a.get("keepdims", 1))
            t = x[0]
            fn = torch.argmax if largest else torch.argmin
            if a.get("select_last_index", 0):
                flipped = fn(t.flip(axis), dim=axis, keepdim=keep)
                return t.shape[axis] - 1 - flipped
            return fn(t, dim=axis, keepdim=keep)
        return run

    return {
        "Add": binary(torch.add), "Sub": binary(torch.sub), "Mul": binary(torch.mul),
        "Div": lambda m, n, a, x, v: (torch.div(x[0], x[1], rounding_mode="trunc")
                                      if not x[0].is_floating_point() else x[0] / x[1]),
        "Pow": binary(torch.pow), "Max": variadic(torch.maximum), "Min": variadic(torch.minimum),
        "Sum": variadic(torch.add), "Mean": mean_of,
        "Equal": binary(torch.eq), "Less": binary(torch.lt), "Greater": binary(torch.gt),
        "LessOrEqual": binary(torch.le), "GreaterOrEqual": binary(torch.ge),
        "And": binary(torch.logical_and), "Or": binary(torch.logical_or), "Xor": binary(torch.logical_xor),
        "Not": unary(torch.logical_not), "IsNaN": unary(torch.isnan),
        "IsInf": lambda m, n, a, x, v: isinf(torch, x[0], a),
        "Range": lambda m, n, a, x, v: torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype),
        "Sin": unary(torch.sin), "Cos": unary(torch.cos), "Sign": unary(torch.sign),
        "Where": lambda m, n, a, x, v: torch.where(x[0].bool(), x[1], x[2]),
        "Relu": unary(F.relu), "Sigmoid": unary(torch.sigmoid), "Tanh": unary(torch.tanh),
        "Erf": unary(torch.erf), "Exp": unary(torch.exp), "Log": unary(torch.log), "Sqrt": unary(torch.sqrt),
        "Neg": unary(torch.neg), "Abs": unary(torch.abs), "Reciprocal": unary(torch.reciprocal),
        "Floor": unary(torch.floor), "Ceil": unary(torch.ceil), "Softplus": unary(F.softplus),
        "Identity": unary(lambda t: t), "Dropout": lambda m, n, a, x, v: x[0],
        "LeakyRelu": lambda m, n, a, x, v: F.leaky_relu(x[0], a.get("alpha", 0.01)),
        "Elu": lambda m, n, a, x, v: F.elu(x[0], a.get("alpha", 1.0)),
        "HardSigmoid": lambda m, n, a, x, v: torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0, 1),
        "HardSwish": unary(F.hardswish), "Clip": clip, "Gelu": gelu,
        "Softmax": softmax(torch.softmax), "LogSoftmax": softmax(torch.log_softmax),
        "ReduceMean": reduce(lambda t, ax, k: t.mean(dim=ax, keepdim=k)),
        "ReduceSum": reduce(lambda t, ax, k: t.sum(dim=ax, keepdim=k)),
        "ReduceMax": reduce(lambda t, ax, k: t.amax(dim=ax, keepdim=k)),
        "ReduceMin": reduce(lambda t, ax, k: t.amin(dim=ax, keepdim=k)),
        "ReduceProd": reduce(lambda t, ax, k: prod_over(t, ax, k)),
        "ReduceSumSquare": reduce(lambda t, ax, k: (t * t).sum(dim=ax, keepdim=k)),
        "ReduceL1": reduce(lambda t, ax, k: t.abs().sum(dim=ax, keepdim=k)),
        "ReduceL2": reduce(lambda t, ax, k: (t * t).sum(dim=ax, keepdim=k).sqrt()),
        "ReduceLogSum": reduce(lambda t, ax, k: t.sum(dim=ax, keepdim=k).log()),
        "ReduceLogSumExp": reduce(lambda t, ax, k: t.logsumexp(dim=ax, keepdim=k)),
        "ArgMax": arg(True), "ArgMin": arg(False),
    }

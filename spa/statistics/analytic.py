"""Calibration-free sink moments without running the model: H̃ = E[x̃x̃ᵀ] (x̃ = [x, 1]) of each
sink's input columns, derived from the network's own parameters.

Two sources (see shared/docs/OBSPA.md):

- "bn": a BatchNormalization output channel c is N(β_c, γ_c²) (its normalised input has zero mean
  and unit variance over the data the statistics came from), channels independent. The moments
  are pushed through the per-channel elementwise ops between the BN and the sink (Relu, Clip,
  x·Sigmoid(x), HardSwish, Gelu, affine constants …) by Gauss–Hermite quadrature.
- "weights": a *proxy* from the producer. A Conv/Gemm/MatMul output is W·u + b with its input u
  assumed white (zero mean, unit variance, uncorrelated): mean b, covariance W Wᵀ (W flattened
  over C_in·k_h·k_w; grouped convolutions block-diagonal). An unfused BatchNormalization after it
  is applied analytically; an activation by Monte Carlo (fixed seed) where channels correlate,
  by quadrature where they do not. Only the shape of the moments is meaningful, not their scale
  relative to the real activations.

Both: the sum of two branches (a residual Add) is taken as independent (means and covariances
add); GlobalAveragePool, Flatten/Reshape to [N, C] and Identity pass the moments through
(pooling is taken as perfectly correlated over positions, so it keeps the per-position spread);
for a Conv sink the k_h·k_w taps of a channel are positions taken as independent:
E[x_{c,t} x_{c',t'}] = S_cc' if t = t' else m_c m_c'. A sink whose input cannot be traced to such
a source is left out (the caller falls back to the weights-only score and no update)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from scipy import special
from spa.statistics.sinks import SinkWeight

from spa.core.errors import UsageError
from spa.analysis.rules.base import attr_int, input_or_none

QUADRATURE = 2001        # quadrature nodes per channel
DRAWS = 4096             # Monte Carlo draws where channels correlate
SEED = 0

#: Elementwise ops evaluated on samples: (arrays or per-channel constants, attributes) → array.
_EW = {
    "Identity": lambda x, n: x[0],
    "Dropout": lambda x, n: x[0],
    "Relu": lambda x, n: np.maximum(x[0], 0.0),
    "LeakyRelu": lambda x, n: np.where(x[0] >= 0, x[0], _f(n, "alpha", 0.01) * x[0]),
    "Elu": lambda x, n: np.where(x[0] >= 0, x[0], _f(n, "alpha", 1.0) * np.expm1(np.minimum(x[0], 0))),
    "Sigmoid": lambda x, n: special.expit(x[0]),
    "Tanh": lambda x, n: np.tanh(x[0]),
    "Erf": lambda x, n: special.erf(x[0]),
    "Softplus": lambda x, n: np.logaddexp(0.0, x[0]),
    "HardSigmoid": lambda x, n: np.clip(_f(n, "alpha", 0.2) * x[0] + _f(n, "beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda x, n: x[0] * np.clip(x[0] / 6.0 + 0.5, 0.0, 1.0),
    "Gelu": lambda x, n: _gelu(x[0], n),
    "Neg": lambda x, n: -x[0],
    "Abs": lambda x, n: np.abs(x[0]),
    "Exp": lambda x, n: np.exp(x[0]),
    "Sqrt": lambda x, n: np.sqrt(np.maximum(x[0], 0.0)),
    "Add": lambda x, n: x[0] + x[1],
    "Sub": lambda x, n: x[0] - x[1],
    "Mul": lambda x, n: x[0] * x[1],
    "Div": lambda x, n: x[0] / x[1],
    "Pow": lambda x, n: np.power(x[0], x[1]),
    "Max": lambda x, n: np.maximum(x[0], x[1]) if len(x) == 2 else x[0],
    "Min": lambda x, n: np.minimum(x[0], x[1]) if len(x) == 2 else x[0],
    "Clip": lambda x, n: _clip(x, n),
    "BatchNormalization": lambda x, n: (x[0] - x[3]) / np.sqrt(x[4] + _f(n, "epsilon", 1e-5)) * x[1] + x[2],
}
_AFFINE = {"Identity", "Dropout", "Add", "Sub", "Neg", "BatchNormalization", "Mul", "Div"}
_PASS = {"GlobalAveragePool", "Flatten", "Reshape", "Identity", "Dropout", "Squeeze"}


def _f(node: ir.Node, name: str, default: float) -> float:
    a = node.attributes.get(name)
    return default if a is None else float(a.as_float())


def _gelu(x, node):
    a = node.attributes.get("approximate")
    if a is not None and a.as_string() == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


def _clip(x, node):
    lo = x[1] if len(x) > 1 and x[1] is not None else -np.inf
    hi = x[2] if len(x) > 2 and x[2] is not None else np.inf
    if "min" in node.attributes:
        lo = _f(node, "min", -np.inf)
    if "max" in node.attributes:
        hi = _f(node, "max", np.inf)
    return np.clip(x[0], lo, hi)


class Gauss:
    """Channel moments: mean (C,), covariance diag(var) + L Lᵀ (L: (C, r) or None: independent)."""

    def __init__(self, mean, var=None, factor=None):
        self.mean = np.asarray(mean, np.float64).reshape(-1)
        self.var = np.zeros(len(self.mean)) if var is None else np.asarray(var, np.float64).reshape(-1)
        self.factor = factor

    @property
    def size(self) -> int:
        return len(self.mean)

    def cov(self) -> np.ndarray:
        c = np.diag(self.var)
        if self.factor is not None:
            c = c + self.factor @ self.factor.T
        return c

    def second_moment(self) -> np.ndarray:
        return self.cov() + np.outer(self.mean, self.mean)

    def __add__(self, other: Gauss) -> Gauss:
        factors = [f for f in (self.factor, other.factor) if f is not None]
        return Gauss(self.mean + other.mean, self.var + other.var,
                     np.concatenate(factors, axis=1) if factors else None)

    def scaled(self, scale: np.ndarray, shift: np.ndarray) -> Gauss:
        return Gauss(scale * self.mean + shift, scale ** 2 * self.var,
                     None if self.factor is None else scale[:, None] * self.factor)


def gauss_hermite(mean: np.ndarray, std: np.ndarray, fn, points: int = QUADRATURE) -> tuple[np.ndarray, np.ndarray]:
    """(E[f(y)], E[f(y)²]) per channel for y_c ~ N(mean_c, std_c²); fn maps a (points, C) array.
    Gauss–Hermite nodes where f is smooth; the activations that matter (ReLU, Clip, HardSwish)
    have kinks, where Gauss–Hermite converges slowly (64 nodes: 0.6% off a ReLU's mean), so the
    nodes are a fine uniform grid over ±10σ with Gaussian weights (trapezoid rule: the kink
    error falls with the squared spacing, < 1e-5 here)."""
    t = np.linspace(-10.0, 10.0, points)
    w = np.exp(-0.5 * t ** 2)
    w /= w.sum()
    y = mean[None, :] + np.abs(std)[None, :] * t[:, None]
    fy = fn(y)
    w = w[:, None]
    return (w * fy).sum(0), (w * fy ** 2).sum(0)


class Tracer:
    """Channel moments of the values of one model, from the source's base values."""

    def __init__(self, model: ir.Model, source: str):
        if source not in ("bn", "weights"):
            raise UsageError(f"unknown analytic statistics source '{source}'")
        self.source = source
        self.values: dict[str, ir.Value] = {v.name: v for v in model.graph.inputs}
        for node in model.graph:
            for v in node.outputs:
                self.values[v.name] = v
        self.memo: dict[str, Gauss | None] = {}
        self.leaves: dict[str, ir.Value] = {}
        self.rng = np.random.default_rng(SEED)

    # ---- the elementwise region between a value and the one non-constant value it is a function of
    def elementwise(self, node: ir.Node | None) -> bool:
        if node is None or node.op_type not in _EW or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            return False
        if node.op_type == "BatchNormalization":
            return self.source == "weights" and all(_const(i) is not None for i in node.inputs[1:5])
        return True

    def leaf(self, v: ir.Value) -> ir.Value:
        """The value `v` is an elementwise function of (v itself when it is not one, or when it
        joins two different values: a residual Add)."""
        if v.name in self.leaves:
            return self.leaves[v.name]
        node = v.producer()
        out = v
        if self.elementwise(node):
            inner = {self.leaf(i).name: self.leaf(i) for i in node.inputs if i is not None and _const(i) is None}
            if len(inner) == 1:
                out = next(iter(inner.values()))
        self.leaves[v.name] = out
        return out

    def moments(self, v: ir.Value, channels: int | None = None) -> Gauss | None:
        if v.name not in self.memo:
            self.memo[v.name] = None  # a cycle (never in a valid graph) ends as unknown
            try:
                self.memo[v.name] = self._moments(v)
            except (ValueError, np.linalg.LinAlgError, KeyError, TypeError, IndexError):
                self.memo[v.name] = None
        g = self.memo[v.name]
        return g if g is None or channels is None or g.size == channels else None

    def _moments(self, v: ir.Value) -> Gauss | None:
        leaf = self.leaf(v)
        if leaf is not v:
            base = self.moments(leaf)
            return None if base is None else self.through(v, leaf, base)
        return self.base(v)

    def base(self, v: ir.Value) -> Gauss | None:
        node = v.producer()
        if node is None:
            return None
        op = node.op_type
        if op in ("Add", "Sum", "Sub") and all(i is not None and _const(i) is None for i in node.inputs):
            parts = [self.moments(i) for i in node.inputs]
            if any(p is None for p in parts) or len({p.size for p in parts}) != 1:
                return None
            if op == "Sub":
                parts[1] = parts[1].scaled(-np.ones(parts[1].size), np.zeros(parts[1].size))
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            return total
        if op in _PASS:
            return self.moments(node.inputs[0])
        if op == "BatchNormalization" and self.source == "bn":
            gamma, beta = _const(node.inputs[1]), _const(node.inputs[2])
            if gamma is None or beta is None:
                return None
            return Gauss(beta.reshape(-1), gamma.reshape(-1) ** 2)
        if self.source == "weights" and op in ("Conv", "Gemm", "MatMul"):
            return producer_moments(node)
        return None

    def through(self, v: ir.Value, leaf: ir.Value, base: Gauss) -> Gauss | None:
        """Moments of v = f(leaf) for the elementwise region between them."""
        nodes = self.region(v, leaf)
        consts = {}
        for node in nodes:
            for i in node.inputs:
                if i is not None and _const(i) is not None:
                    c = _const(i)
                    if c.size == 1:
                        consts[i.name] = float(c.reshape(-1)[0])
                    elif c.size == base.size:
                        consts[i.name] = c.reshape(-1).astype(np.float64)
                    else:
                        return None

        def fn(y):
            env = {leaf.name: y, **consts}
            for node in nodes:
                args = [None if i is None else env[i.name] for i in node.inputs]
                env[node.outputs[0].name] = _EW[node.op_type](args, node)
            return env[v.name]

        if all(n.op_type in _AFFINE and (n.op_type not in ("Mul", "Div") or _const(n.inputs[1]) is not None
                                         or n.op_type == "Mul" and _const(n.inputs[0]) is not None) for n in nodes):
            shift = fn(np.zeros((1, base.size)))[0]
            scale = fn(np.ones((1, base.size)))[0] - shift
            return base.scaled(scale, shift)
        if base.factor is None:  # independent channels: exact per-channel quadrature
            m1, m2 = gauss_hermite(base.mean, np.sqrt(base.var), fn)
            return Gauss(m1, np.maximum(m2 - m1 ** 2, 0.0))
        draws = (base.mean[None, :] + self.rng.standard_normal((DRAWS, base.factor.shape[1])) @ base.factor.T
                 + self.rng.standard_normal((DRAWS, base.size)) * np.sqrt(base.var)[None, :])
        fy = fn(draws)
        mean = fy.mean(0)
        return Gauss(mean, None, ((fy - mean) / np.sqrt(DRAWS)).T)

    def region(self, v: ir.Value, leaf: ir.Value) -> list[ir.Node]:
        order, seen = [], set()

        def visit(x: ir.Value):
            if x is leaf or x.name in seen or _const(x) is not None:
                return
            seen.add(x.name)
            node = x.producer()
            for i in node.inputs:
                if i is not None:
                    visit(i)
            order.append(node)

        visit(v)
        return order


def producer_moments(node: ir.Node) -> Gauss | None:
    """The white-input proxy for a Conv/Gemm/MatMul output: mean = bias, covariance = W Wᵀ
    (block-diagonal over a grouped convolution's groups)."""
    w = _const(input_or_none(node, 1))
    if w is None:
        return None
    bias = _const(input_or_none(node, 2)) if node.op_type != "MatMul" else None
    if node.op_type == "Conv":
        groups = attr_int(node, "group", 1)
        rows = w.reshape(w.shape[0], -1).astype(np.float64)
        out = rows.shape[0]
        mean = np.zeros(out) if bias is None else bias.reshape(-1).astype(np.float64)
        if groups == out:  # depthwise: independent channels
            return Gauss(mean, (rows ** 2).sum(1))
        per = out // groups
        factor = np.zeros((out, groups * rows.shape[1]))
        for g in range(groups):
            factor[g * per:(g + 1) * per, g * rows.shape[1]:(g + 1) * rows.shape[1]] = rows[g * per:(g + 1) * per]
        return Gauss(mean, None, factor)
    if w.ndim != 2:
        return None
    if node.op_type == "Gemm":
        if attr_int(node, "transA", 0):
            return None
        alpha, beta = _f(node, "alpha", 1.0), _f(node, "beta", 1.0)
        mat = (w if attr_int(node, "transB", 0) else w.T).astype(np.float64) * alpha   # (out, in)
        mean = np.zeros(len(mat)) if bias is None else np.broadcast_to(bias.reshape(-1) * beta, (len(mat),)).copy()
        return Gauss(mean, None, mat)
    if node.inputs[1] is None or _const(node.inputs[0]) is not None:
        return None
    return Gauss(np.zeros(w.shape[1]), None, w.T.astype(np.float64))  # MatMul x·W: (out, in) = Wᵀ


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None or v.const_value is None:
        return None
    return v.const_value.numpy()


def columns_moments(g: Gauss, taps: int) -> np.ndarray:
    """H̃ over a sink's columns (channel-major, `taps` per channel) plus the constant column."""
    s = g.second_moment()
    if taps > 1:
        mm = np.outer(g.mean, g.mean)
        s = np.kron(s - mm, np.eye(taps)) + np.kron(mm, np.ones((taps, taps)))
    mean = np.repeat(g.mean, taps)
    n = len(mean)
    h = np.empty((n + 1, n + 1))
    h[:n, :n] = s
    h[:n, n] = h[n, :n] = mean
    h[n, n] = 1.0
    return h


def hessians(moments_model: ir.Model, model: ir.Model, sinks: dict[str, SinkWeight], source: str) -> dict[str, np.ndarray]:
    """H̃ for every sink of `model` (node name → SinkWeight) whose input moments `source` can
    derive from `moments_model` (the same network, possibly with its BatchNormalization nodes;
    a sink is matched through its input value's name and its channel count)."""
    tracer = Tracer(moments_model, source)
    out = {}
    for name, sink in sinks.items():
        value = tracer.values.get(sink.node.inputs[0].name)
        columns = sink.matrix().shape[1]
        if value is None or columns % sink.taps:
            continue
        g = tracer.moments(value, columns // sink.taps)
        if g is None or not np.all(np.isfinite(g.mean)):
            continue
        h = columns_moments(g, sink.taps)
        if np.all(np.isfinite(h)):
            out[name] = h
    return out

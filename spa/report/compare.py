"""What changed between two models: structure (op histogram, parameters, MACs, tensor shapes) and
outputs on the same inputs (max/mean absolute difference, cosine similarity).

Like Polygraphy's `compare`, outputs match when every element satisfies |a - b| <= atol + rtol·|a|;
`spa diff` exits 0 then and EXIT_OUTPUTS_DIFFER when they do not (errors exit through SpaError)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx_ir as ir

from spa.core.errors import SpaError
from spa.graph.load import model_label

# Distinct from every error code in spa.core.errors (1-8, 130): "ran fine, the outputs differ".
EXIT_OUTPUTS_DIFFER = 10
ATOL = 1e-5
RTOL = 1e-5


@dataclass
class OutputDiff:
    name: str
    shape_a: list
    shape_b: list
    max_abs: float | None = None    # None when the shapes differ and nothing can be compared
    mean_abs: float | None = None
    cosine: float | None = None
    passed: bool = False


@dataclass
class DiffResult:
    a: str
    b: str
    structure: dict
    outputs: list[OutputDiff] = field(default_factory=list)
    atol: float = ATOL
    rtol: float = RTOL
    compared: bool = True           # False when output comparison was skipped

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def identical_structure(self) -> bool:
        s = self.structure
        return not (s["ops"] or s["shapes"] or s["only_in_a"] or s["only_in_b"]) and all(
            s[k]["a"] == s[k]["b"] for k in ("params", "macs", "nodes"))

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "structure": self.structure, "compared": self.compared,
                "atol": self.atol, "rtol": self.rtol, "passed": self.passed,
                "outputs": [asdict(o) for o in self.outputs]}


def with_shapes(model: ir.Model) -> ir.Model:
    """Infer missing intermediate shapes (in place) so MACs can be counted; exports often omit them."""
    import onnx_ir.passes.common as common

    try:
        common.ShapeInferencePass(strict_mode=False)(model)
    except Exception:  # a model ONNX cannot infer still diffs; only its MACs may be undercounted
        pass
    return model


def structure(a: ir.Model, b: ir.Model) -> dict:
    """Parameter/MAC/node totals of both, changed op counts, and weights and values whose shapes differ."""
    from spa.report.tables import model_stats

    sa, sb = model_stats(a), model_stats(b)
    totals = {k: {"a": sa[k], "b": sb[k], "delta": sb[k] - sa[k]} for k in ("params", "macs", "nodes", "bytes")}
    ops = {op: {"a": sa["ops"].get(op, 0), "b": sb["ops"].get(op, 0)}
           for op in sorted(set(sa["ops"]) | set(sb["ops"])) if sa["ops"].get(op, 0) != sb["ops"].get(op, 0)}
    ta, tb = _shaped_values(a), _shaped_values(b)
    shapes = [{"name": name, "kind": ta[name][0], "a": ta[name][1], "b": tb[name][1]}
              for name in ta if name in tb and ta[name][1] != tb[name][1]]
    weights_a, weights_b = set(a.graph.initializers), set(b.graph.initializers)
    return {**totals, "macs_at": sa.get("macs_at") or sb.get("macs_at") or {},
            "ops": ops, "shapes": shapes, "ops_a": sa["ops"], "ops_b": sb["ops"],
            "only_in_a": len(weights_a - weights_b), "only_in_b": len(weights_b - weights_a)}


def _shaped_values(model: ir.Model) -> dict[str, tuple[str, list]]:
    """name -> (kind, shape) for graph inputs, outputs, weights and every value with a known shape."""
    def dims(v):
        return [d if isinstance(d, int) else str(d) for d in v.shape]

    table = {}
    for node in model.graph:
        for v in node.outputs:
            if v.shape is not None:
                table[v.name] = ("value", dims(v))
    for v in model.graph.initializers.values():
        if v.shape is not None:
            table[v.name] = ("weight", dims(v))
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for v in values:
            if v.shape is not None:
                table[v.name] = (kind, dims(v))
    return table


def compare_arrays(name: str, x: np.ndarray, y: np.ndarray, atol: float, rtol: float) -> OutputDiff:
    result = OutputDiff(name, list(x.shape), list(y.shape))
    if x.shape != y.shape:
        return result
    a, b = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    diff = np.abs(a - b)
    result.max_abs = float(diff.max()) if diff.size else 0.0
    result.mean_abs = float(diff.mean()) if diff.size else 0.0
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    result.cosine = float(a @ b / norms) if norms > 0 else float(np.array_equal(a, b))
    result.passed = bool(np.all(diff <= atol + rtol * np.abs(a)))
    return result


def compare_outputs(a: ir.Model, b: ir.Model, feeds_list: list[dict], atol: float = ATOL,
                    rtol: float = RTOL) -> list[OutputDiff]:
    """Run both models on every feed; one OutputDiff per output (compared by name), over all feeds."""
    from spa.core.progress import progress
    from spa.runtime.validate import run

    names_a = [v.name for v in a.graph.outputs]
    names_b = {v.name for v in b.graph.outputs}
    common = [n for n in names_a if n in names_b]
    if not common:
        raise SpaError("the two models share no output name; nothing to compare")
    outs_a: dict[str, list] = {n: [] for n in common}
    outs_b: dict[str, list] = {n: [] for n in common}
    index_b = [v.name for v in b.graph.outputs]
    for feeds in progress(feeds_list, "running both models"):
        ra, rb = run(a, feeds), run(b, feeds)
        for n in common:
            outs_a[n].append(ra[names_a.index(n)])
            outs_b[n].append(rb[index_b.index(n)])
    # an output of A that B lacks is a difference, not something to skip
    diffs = [OutputDiff(n, None, None) for n in names_a if n not in names_b]
    for n in common:
        if any(x.shape != y.shape for x, y in zip(outs_a[n], outs_b[n])):
            diffs.append(OutputDiff(n, list(outs_a[n][0].shape), list(outs_b[n][0].shape)))
        else:
            stats = compare_arrays(n, np.stack(outs_a[n]), np.stack(outs_b[n]), atol, rtol)
            stats.shape_a = stats.shape_b = list(outs_a[n][0].shape)  # one sample's, not the stack's
            diffs.append(stats)
    return diffs


def feeds_for(a: ir.Model, b: ir.Model, inputs: str | None = None, samples: int = 1,
              seed: int = 0) -> list[dict]:
    """Input feeds for both models: random (one per sample) or read from an .npz of arrays named
    after the inputs (first axis = samples)."""
    from spa.runtime.validate import random_inputs

    def names(m):
        return sorted(v.name for v in m.graph.inputs if v.name not in m.graph.initializers)

    if names(a) != names(b):
        raise SpaError(f"the models' inputs differ: {names(a)} vs {names(b)}")
    if inputs is None:
        return [random_inputs(a, seed + i) for i in range(samples)]
    try:
        with np.load(inputs) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SpaError(f"{inputs}: no such file") from None
    except Exception as exc:
        raise SpaError(f"{inputs}: not a readable .npz file ({str(exc).splitlines()[0][:200]})") from None
    missing = [n for n in names(a) if n not in arrays]
    if missing:
        raise SpaError(f"{inputs} has no array for input '{missing[0]}'")
    count = min(len(arrays[n]) for n in names(a))
    if count == 0:
        raise SpaError(f"{inputs}: the arrays are empty")
    dtypes = {v.name: v.dtype.numpy() for v in a.graph.inputs}
    return [{n: arrays[n][i: i + 1].astype(dtypes[n]) for n in names(a)} for i in range(min(count, samples))]


def diff(a, b, *, inputs: str | None = None, samples: int = 1, seed: int = 0, atol: float = ATOL,
         rtol: float = RTOL, compare: bool = True) -> DiffResult:
    """Compare two models (paths or anything spa.graph.io.load accepts); neither is modified."""
    from spa.graph import io
    from spa.runtime.validate import copy_model

    if atol < 0 or rtol < 0:
        raise SpaError("--atol and --rtol must be non-negative")
    if samples < 1:
        raise SpaError("--samples must be at least 1")
    models = [with_shapes(copy_model(io.load(m))) for m in (a, b)]
    result = DiffResult(model_label(a), model_label(b), structure(*models), atol=atol, rtol=rtol, compared=compare)
    if compare:
        result.outputs = compare_outputs(*models, feeds_for(*models, inputs, samples, seed), atol, rtol)
    return result

"""Property-based fuzzing: random graphs from the supported op set, pruned at random budgets.

The property: `prune(..., verify=True)` either returns a model that passed validation (checker,
ONNX Runtime, same interface — the pipeline checks that before returning) and whose oracle holds
(sliced == masked), or it refuses with a SpaError that is not a validation failure (SPA may refuse
what it cannot prove; it may never produce a broken model).

`make test` runs FAST_EXAMPLES deterministic examples; `pytest -m slow tests/flow/test_fuzz.py` runs
SLOW_EXAMPLES. Crashes found by the fuzzer are kept below as explicit regression cases.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from spa.allocation.allocate import Budget
from spa.core.errors import SpaError, ValidationError
from spa.flow.pipeline import prune

FAST_EXAMPLES = 40
SLOW_EXAMPLES = 1000
ORACLE_TOL = 1e-3


class RandomNet:
    """Builds a graph one random op at a time, tracking every tensor's static shape so each op is
    drawn only where it is valid. Image tensors are (1, C, H, W); feature tensors are (1, F)."""

    def __init__(self, draw, seed: int):
        self.draw = draw
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.n = 0
        c, hw = draw(st.integers(1, 6)), draw(st.sampled_from([4, 6, 8]))
        self.shapes["x"] = (1, c, hw, hw)
        self.inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])]

    # -- helpers
    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def weight(self, shape, positive: bool = False) -> str:
        data = self.rng.standard_normal(shape).astype(np.float32) * 0.5
        if positive:
            data = np.abs(data) + 0.5
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def ints(self, values) -> str:
        name = self.name("i")
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def op(self, op_type: str, inputs, shapes, **attrs):
        outs = [self.name(op_type.lower()) for _ in shapes]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        for out, shape in zip(outs, shapes):
            self.shapes[out] = tuple(shape)
        return outs if len(outs) > 1 else outs[0]

    def tensors(self, rank: int) -> list[str]:
        return [t for t, s in self.shapes.items() if len(s) == rank]

    def width(self) -> int:
        return self.draw(st.integers(2, 12))

    # -- image ops (1, C, H, W)
    def conv(self, x):
        _, c, h, w = self.shapes[x]
        k = self.draw(st.sampled_from([1, 3]))
        kind = self.draw(st.sampled_from(["plain", "plain", "depthwise", "grouped"]))
        group, c_out = 1, self.width()
        if kind == "depthwise":
            group = c_out = c
        elif kind == "grouped" and c % 2 == 0 and c >= 4:
            group, c_out = 2, 2 * self.draw(st.integers(1, 6))
        ins = [x, self.weight((c_out, c // group, k, k))]
        if self.draw(st.booleans()):
            ins.append(self.weight((c_out,)))
        return self.op("Conv", ins, [(1, c_out, h, w)], pads=[k // 2] * 4, group=group)

    def batchnorm(self, x):
        c = self.shapes[x][1]
        return self.op("BatchNormalization", [x, self.weight((c,), True), self.weight((c,)), self.weight((c,)),
                                              self.weight((c,), True)], [self.shapes[x]])

    def unary(self, x):
        op = self.draw(st.sampled_from(["Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish", "Elu", "Neg"]))
        return self.op(op, [x], [self.shapes[x]])

    def binary(self, x):
        same = [t for t in self.tensors(len(self.shapes[x])) if self.shapes[t] == self.shapes[x] and t != x]
        if not same:
            return self.unary(x)
        op = self.draw(st.sampled_from(["Add", "Add", "Mul", "Sub", "Max"]))
        return self.op(op, [x, self.draw(st.sampled_from(same))], [self.shapes[x]])

    def concat(self, x):
        _, c, h, w = self.shapes[x]
        same_hw = [t for t in self.tensors(4) if self.shapes[t][2:] == (h, w)]
        other = self.draw(st.sampled_from(same_hw))
        return self.op("Concat", [x, other], [(1, c + self.shapes[other][1], h, w)], axis=1)

    def split(self, x):
        _, c, h, w = self.shapes[x]
        if c < 2:
            return self.unary(x)
        first = self.draw(st.integers(1, c - 1))
        a, b = self.op("Split", [x, self.ints([first, c - first])], [(1, first, h, w), (1, c - first, h, w)], axis=1)
        return self.draw(st.sampled_from([a, b]))

    def slice(self, x):
        _, c, h, w = self.shapes[x]
        if c < 2:
            return self.unary(x)
        start = self.draw(st.integers(0, c - 1))
        end = self.draw(st.integers(start + 1, c))
        return self.op("Slice", [x, self.ints([start]), self.ints([end]), self.ints([1])], [(1, end - start, h, w)])

    def pool(self, x):
        _, c, h, w = self.shapes[x]
        kind = self.draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool"]))
        if kind == "GlobalAveragePool":
            return self.op(kind, [x], [(1, c, 1, 1)])
        if h < 2:
            return self.unary(x)
        return self.op(kind, [x], [(1, c, h // 2, w // 2)], kernel_shape=[2, 2], strides=[2, 2])

    def channels_last_linear(self, x):
        """Transpose to NHWC, MatMul over channels, transpose back."""
        _, c, h, w = self.shapes[x]
        c_out = self.width()
        t = self.op("Transpose", [x], [(1, h, w, c)], perm=[0, 2, 3, 1])
        m = self.op("MatMul", [t, self.weight((c, c_out))], [(1, h, w, c_out)])
        return self.op("Transpose", [m], [(1, c_out, h, w)], perm=[0, 3, 1, 2])

    def flatten(self, x):
        _, c, h, w = self.shapes[x]
        if self.draw(st.booleans()):
            return self.op("Flatten", [x], [(1, c * h * w)])
        return self.op("Reshape", [x, self.ints([1, c * h * w])], [(1, c * h * w)])

    # -- feature ops (1, F)
    def dense(self, x):
        f, f_out = self.shapes[x][1], self.width()
        if self.draw(st.booleans()):
            return self.op("Gemm", [x, self.weight((f_out, f)), self.weight((f_out,))], [(1, f_out)], transB=1)
        return self.op("MatMul", [x, self.weight((f, f_out))], [(1, f_out)])

    IMAGE_OPS = ("conv", "conv", "conv", "batchnorm", "unary", "binary", "concat", "split", "slice", "pool",
                 "channels_last_linear", "flatten")
    FEATURE_OPS = ("dense", "dense", "unary", "binary")

    def grow(self, steps: int) -> None:
        x = self.conv("x")  # start from weights, so there is something to prune
        for _ in range(steps):
            ops = self.IMAGE_OPS if len(self.shapes[x]) == 4 else self.FEATURE_OPS
            x = getattr(self, self.draw(st.sampled_from(ops)))(x)
        if self.draw(st.integers(0, 3)):  # usually end in a sink, so the last width is internal
            x = self.conv(x) if len(self.shapes[x]) == 4 else self.dense(x)
        self.outputs = [x]
        if self.draw(st.booleans()):  # sometimes a second output from the middle of the graph
            middle = self.draw(st.sampled_from(list(self.shapes)[1:]))
            if middle != x:
                self.outputs.append(middle)

    def proto(self) -> onnx.ModelProto:
        outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shapes[o])) for o in self.outputs]
        graph = helper.make_graph(self.nodes, "fuzz", self.inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        onnx.checker.check_model(model, full_check=True)  # the generator itself must be right
        return model


@st.composite
def random_net(draw) -> onnx.ModelProto:
    net = RandomNet(draw, draw(st.integers(0, 2**31 - 1)))
    net.grow(draw(st.integers(1, 12)))
    return net.proto()


budgets = st.builds(Budget, ratio=st.floats(0.0, 0.9), global_rank=st.booleans(),
                    round_to=st.sampled_from([1, 1, 2]), target=st.sampled_from(["channels", "channels", "params"]))


def check_property(model: onnx.ModelProto, budget: Budget, criterion: str) -> str:
    """Returns 'pruned', 'unchanged' or 'refused'; fails the test on anything else."""
    try:
        result = prune(model, budget, criterion=criterion, verify=True, seed=1)
    except ValidationError as exc:  # SPA wrote a broken model: a bug, never a refusal
        pytest.fail(f"pruned model failed validation: {exc}")
    except SpaError as exc:
        message = str(exc)
        assert message and "\n" not in message and not message.startswith("internal"), message
        return "refused"
    assert result.oracle is not None
    assert result.oracle.holds(ORACLE_TOL), f"oracle error {result.oracle.error:.2e}"
    return "pruned" if not result.plan.is_empty() else "unchanged"


# derandomized and without an example database: the same examples every run, no files written
_common = dict(deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(examples: int, budgets=budgets) -> Counter:
    """Run the property on `examples` generated cases; returns how many were pruned, left
    unchanged (nothing to remove at that budget) or refused."""
    outcomes: Counter = Counter()

    @settings(max_examples=examples, derandomize=True, **_common)
    @given(model=random_net(), budget=budgets, criterion=st.sampled_from(["l1", "l2", "random"]))
    def one(model, budget, criterion):
        outcomes[check_property(model, budget, criterion)] += 1

    one()
    return outcomes


def test_fuzz_prune_is_valid_or_refused():
    outcomes = fuzz(FAST_EXAMPLES)
    assert sum(outcomes.values()) == FAST_EXAMPLES
    assert outcomes["pruned"] >= FAST_EXAMPLES // 4, outcomes  # the fuzzer does reach pruning


@pytest.mark.slow
def test_fuzz_prune_is_valid_or_refused_slow():
    outcomes = fuzz(SLOW_EXAMPLES)
    print(f"\nfuzz: {sum(outcomes.values())} examples, {dict(outcomes)}")  # BENCHMARKS.md quotes this line
    assert sum(outcomes.values()) == SLOW_EXAMPLES


def test_fuzzer_reaches_pruning_at_half():
    """Guard against a fuzzer that only ever produces refusals or no-ops: at ratio 0.5 most prune."""
    outcomes = fuzz(15, budgets=st.builds(Budget, ratio=st.just(0.5)))
    assert outcomes["pruned"] >= 5, outcomes


# ---------------------------------------------------------------- crashes the fuzzer found, kept


def _conv_slice_one_channel(pool: str) -> onnx.ModelProto:
    """Found by the fuzzer: conv (3 channels) → Slice keeping channel 1 only → pool → channels-last
    MatMul. The slice's single channel is a member of the conv's 3-wide group; a plan removing it
    left the Slice empty and ONNX Runtime failed (ReorderOutput 'invalid channel count', or
    GlobalAveragePool on zero channels after a BatchNormalization)."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def ints(name, v):
        return numpy_helper.from_array(np.array(v, np.int64), name)

    inits = [w("w1", (2, 1, 3, 3)), w("b1", (2,)), w("w2", (3, 2, 3, 3)), ints("s", [1]), ints("e", [2]),
             ints("a", [1]), w("bn_s", (1,)), w("bn_b", (1,)), w("bn_m", (1,)),
             numpy_helper.from_array(np.ones(1, np.float32), "bn_v"), w("wl", (1, 12))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=2, pads=[1] * 4),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1] * 4),
             helper.make_node("Slice", ["c2", "s", "e", "a"], ["sl"]),
             helper.make_node("BatchNormalization", ["sl", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
             helper.make_node(pool, ["bn"], ["p"], **({} if pool.startswith("Global") else
                                                       {"kernel_shape": [2, 2], "strides": [2, 2]})),
             helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["t", "wl"], ["m"]),
             helper.make_node("Transpose", ["m"], ["y"], perm=[0, 3, 1, 2])]
    hw = 1 if pool.startswith("Global") else 2
    graph = helper.make_graph(nodes, "regression", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("pool", ["AveragePool", "GlobalAveragePool"])
@pytest.mark.parametrize("seed", range(6))
def test_regression_slice_of_one_channel_is_never_emptied(pool, seed):
    model = _conv_slice_one_channel(pool)
    budget = Budget(ratio=0.62, global_rank=True, round_to=2)
    try:
        result = prune(model, budget, criterion="random", verify=True, seed=seed)
    except ValidationError as exc:
        pytest.fail(f"pruned model failed validation: {exc}")
    assert result.oracle.holds(ORACLE_TOL)
    kept_in_slice = {tuple(v.const_value.numpy().shape) for v in result.model.graph.initializers.values()
                     if v.name.startswith("bn_")}
    assert kept_in_slice == {(1,)}  # the sliced channel survives
    assert sum(len(r) for r in result.plan.removed.values()) >= 1  # and the rest of the group is still pruned


def test_regression_split_part_is_never_emptied():
    """Found by the fuzzer as a refusal: plans removed every channel of one Split part."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((5, 3, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "parts"),
             numpy_helper.from_array(rng.standard_normal((2, 1, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Split", ["c1", "parts"], ["a", "b"], axis=1),
             helper.make_node("Conv", ["a", "w2"], ["y"]),
             helper.make_node("Conv", ["b", "w3"], ["z"])]
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for seed in range(8):
        result = prune(model, Budget(ratio=0.6), criterion="random", verify=True, seed=seed)
        weights = {k: v.const_value.numpy().shape for k, v in result.model.graph.initializers.items()}
        assert weights["w2"][1] == 1 and weights["w1"][0] == 5 - 3  # the one-channel part stays

"""Wanda-sp and FLAP: activation-aware scores from the sinks' input moments, and FLAP's bias
compensation — checked against facts about the inputs that do not depend on the code."""
import numpy as np

from spa.allocation.allocate import Budget
from spa.flow.pipeline import prune
from spa.runtime.validate import random_inputs, run
from tests.graphs import GraphBuilder


def conv_relu_conv(dead=None, constant=None):
    """Conv(3→6) → ReLU → Conv(6→4). `dead`: a channel whose ReLU output is always 0; `constant`: a
    channel whose ReLU output is always 1 (zero filter, bias -1 or +1)."""
    b = GraphBuilder(seed=5)
    x = b.input("x", (1, 3, 8, 8))
    w = b.rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    bias = b.rng.standard_normal(6).astype(np.float32) * 0.1
    for channel, value in ((dead, -1.0), (constant, 1.0)):
        if channel is not None:
            w[channel] = 0
            bias[channel] = value
    h = b.op("Relu", [b.op("Conv", [x, b.weight(None, "w1", w), b.weight(None, "b1", bias)], pads=[1, 1, 1, 1])])
    w2 = b.rng.standard_normal((4, 6, 1, 1)).astype(np.float32)
    w2[:, [dead, constant][dead is None]] *= 5  # large weights: magnitude alone would keep it
    b.output(b.op("Conv", [h, b.weight(None, "w2", w2), b.weight((4,), "b2")]))
    return b.model()


def removed(result):
    return [c for v in result.plan.removed.values() for c in v]


def test_wanda_removes_a_channel_that_never_fires_even_with_large_weights():
    model = conv_relu_conv(dead=2)
    wanda = prune(model, Budget(ratio=1 / 6 + 1e-6), criterion="wanda")
    assert removed(wanda) == [2]
    assert removed(prune(model, Budget(ratio=1 / 6 + 1e-6), criterion="l2")) != [2]


def test_flap_removes_a_constant_channel_and_folds_it_into_the_bias():
    model = conv_relu_conv(constant=4)
    result = prune(model, Budget(ratio=1 / 6 + 1e-6), criterion="flap")
    assert removed(result) == [4]
    assert result.plan.meta["update"] == "flap"
    feeds = random_inputs(model, seed=3)
    np.testing.assert_allclose(run(result.model, feeds)[0], run(model, feeds)[0], rtol=1e-4, atol=1e-4)
    plain = prune(model, plan=result.plan)  # the same channel removed without the bias fold
    assert np.abs(run(plain.model, feeds)[0] - run(model, feeds)[0]).max() > 0.1

"""Calibration-free sink moments from BatchNorm statistics ("bn") and producer weights ("weights")
against the moments measured on inputs drawn to fit each source's assumption."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from spa.statistics import analytic
from spa.statistics.hessian import Moments, collect, columns_of
from spa.statistics.sinks import sink_weight

from tests.graphs import GraphBuilder


@pytest.mark.parametrize("beta,gamma", [(0.0, 1.0), (0.7, 0.5), (-1.2, 2.0), (0.3, -0.8)])
def test_gauss_hermite_relu_matches_the_rectified_gaussian(beta, gamma):
    m1, m2 = analytic.gauss_hermite(np.array([beta]), np.array([gamma]), lambda y: np.maximum(y, 0))
    s = abs(gamma)
    a = beta / s
    mean = beta * norm.cdf(a) + s * norm.pdf(a)
    second = (beta ** 2 + s ** 2) * norm.cdf(a) + beta * s * norm.pdf(a)
    assert m1[0] == pytest.approx(mean, rel=1e-3, abs=1e-4)
    assert m2[0] == pytest.approx(second, rel=2e-3, abs=1e-4)  # the kink costs quadrature some accuracy


def bn_model(act: str):
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 12, 12])
    c = 5
    y = b.conv(x, 3, c, k=3)
    gamma = np.array([1.0, 0.5, 2.0, -0.8, 1.5], np.float32)
    beta = np.array([0.0, 0.7, -1.0, 0.3, 2.5], np.float32)
    y = b.batchnorm(y, gamma, beta, np.full(c, 0.2), np.full(c, 3.0), epsilon=1e-3)
    if act == "relu":
        y = b.op("Relu", [y])
    elif act == "relu6":
        y = b.op("Clip", [y, b.weight(None, data=np.float32(0)), b.weight(None, data=np.float32(6))])
    elif act == "silu":
        y = b.op("Mul", [y, b.op("Sigmoid", [y])])
    elif act == "hardswish":
        y = b.op("HardSwish", [y])
    w = b.weight((4, c, 3, 3))
    out = b.op("Conv", [y, w, b.weight((4,))], pads=[0, 0, 0, 0])  # no padding: every tap is an activation
    b.output(out)
    return b.model(), gamma, beta


def act_fn(act):
    return {"relu": lambda y: np.maximum(y, 0), "relu6": lambda y: np.clip(y, 0, 6),
            "silu": lambda y: y / (1 + np.exp(-y)),
            "hardswish": lambda y: y * np.clip(y / 6 + 0.5, 0, 1)}[act]


@pytest.mark.parametrize("act", ["relu", "relu6", "silu", "hardswish"])
def test_bn_source_matches_sampled_bn_outputs(act):
    model, gamma, beta = bn_model(act)
    sink_node = list(model.graph)[-1]
    sink = sink_weight(sink_node, 0)
    h = analytic.hessians(model, model, {sink_node.name: sink}, "bn")[sink_node.name]
    assert h.shape == (5 * 9 + 1, 5 * 9 + 1)
    # the BN output the assumption describes: its normalised input is N(0, 1), independent everywhere
    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 5, 12, 12))
    x = act_fn(act)(gamma[None, :, None, None] * z + beta[None, :, None, None])
    moments = Moments(45)
    moments.add(columns_of(sink, x))
    empirical = moments.hessian()
    scale = np.abs(empirical).max()
    assert np.abs(h - empirical).max() < 0.02 * scale
    assert h[-1, -1] == 1.0 and np.allclose(h, h.T)


def test_bn_source_pushes_through_a_residual_add_and_pooling():
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 4, 8, 8])

    def bn(v, seed):
        r = np.random.default_rng(seed)
        return b.batchnorm(v, r.uniform(0.5, 2, 4), r.normal(size=4), np.zeros(4), np.ones(4))

    a = bn(b.conv(x, 4, 4, k=1), 1)
    c = b.op("Relu", [bn(b.conv(a, 4, 4, k=1), 2)])
    s = b.op("Add", [a, c])
    p = b.op("Flatten", [b.op("GlobalAveragePool", [s])])
    out = b.op("Gemm", [p, b.weight((3, 4)), b.weight((3,))], transB=1)
    b.output(out)
    model = b.model()
    gemm = next(n for n in model.graph if n.op_type == "Gemm")
    h = analytic.hessians(model, model, {gemm.name: sink_weight(gemm, 0)}, "bn")[gemm.name]
    bns = [n for n in model.graph if n.op_type == "BatchNormalization"]
    g1, b1 = (bns[0].inputs[i].const_value.numpy() for i in (1, 2))
    g2, b2 = (bns[1].inputs[i].const_value.numpy() for i in (1, 2))
    m2, s2 = analytic.gauss_hermite(b2.astype(float), g2.astype(float), lambda y: np.maximum(y, 0))
    assert np.allclose(h[:-1, -1], b1 + m2, atol=1e-5)                         # means add
    assert np.allclose(np.diag(h)[:-1] - h[:-1, -1] ** 2, g1 ** 2 + s2 - m2 ** 2, atol=1e-5)  # variances add


def test_unreachable_sinks_are_left_out():
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 4, k=1)])  # no BatchNormalization
    out = b.conv(y, 4, 2, k=1)
    b.output(out)
    model = b.model()
    sink = list(model.graph)[-1]
    assert analytic.hessians(model, model, {sink.name: sink_weight(sink, 0)}, "bn") == {}
    assert sink.name in analytic.hessians(model, model, {sink.name: sink_weight(sink, 0)}, "weights")


@pytest.mark.parametrize("act", ["Relu", "Tanh"])
def test_weights_source_matches_white_inputs_through_the_producer(act):
    b = GraphBuilder(seed=4)
    x = b.input("x", [256, 6])
    h1 = b.op("Gemm", [x, b.weight((10, 6)), b.weight((10,))], transB=1)
    h1 = b.op(act, [h1])
    out = b.op("Gemm", [h1, b.weight((3, 10)), b.weight((3,))], transB=1)
    b.output(out)
    model = b.model()
    sink_node = list(model.graph)[-1]
    sinks = {sink_node.name: sink_weight(sink_node, 0)}
    h = analytic.hessians(model, model, sinks, "weights")[sink_node.name]
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((256, 6)).astype(np.float32)} for _ in range(40)]
    empirical = collect(model, sinks, feeds)[sink_node.name]
    assert np.abs(h - empirical).max() < 0.05 * np.abs(empirical).max()


def test_weights_source_depthwise_and_grouped_producers_are_block_diagonal():
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 4, 8, 8])
    d = b.conv(x, 4, 4, k=3, group=4)
    g = b.conv(x, 4, 4, k=1, group=2)
    s1 = b.conv(d, 4, 2, k=1)
    s2 = b.conv(g, 4, 2, k=1)
    b.output(s1)
    b.output(s2)
    model = b.model()
    nodes = list(model.graph)
    sinks = {n.name: sink_weight(n, 0) for n in nodes[2:]}
    hs = analytic.hessians(model, model, sinks, "weights")
    wd = nodes[0].inputs[1].const_value.numpy().reshape(4, -1)
    cov = hs[nodes[2].name][:-1, :-1] - np.outer(hs[nodes[2].name][:-1, -1], hs[nodes[2].name][:-1, -1])
    assert np.allclose(cov, np.diag((wd.astype(float) ** 2).sum(1)), atol=1e-5)
    cov = hs[nodes[3].name][:-1, :-1] - np.outer(hs[nodes[3].name][:-1, -1], hs[nodes[3].name][:-1, -1])
    assert np.allclose(cov[:2, 2:], 0) and not np.allclose(cov[:2, :2], np.diag(np.diag(cov[:2, :2])))

"""spa/importance/gradient.py: Taylor, SNIP, GraSP and CroP channel scores through the PyTorch copy of the
ONNX graph, checked against autograd on the source torch module (an independent oracle)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from spa.core.errors import SpaError
from spa.importance.gradient import gradient_scores
from spa.importance.registry import criterion_names
from spa.flow.pipeline import analyze_scope, load_canonical
from tests.graphs import GraphBuilder


class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(6, 8), torch.nn.Linear(8, 7), torch.nn.Linear(7, 5)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    torch.manual_seed(0)
    net = _MLP().eval()
    path = tmp_path_factory.mktemp("grad") / "mlp.onnx"
    torch.onnx.export(net, (torch.randn(2, 6),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    model = load_canonical(str(path))
    analysis = analyze_scope(model, None)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 6)).astype(np.float32)} for i in range(8)]
    return net, model, analysis, feeds


def _members(net):
    """The torch parameter slices of each hidden width: (param, channel axis) per member."""
    return {8: [(net.fc1.weight, 0), (net.fc1.bias, 0), (net.fc2.weight, 1)],
            7: [(net.fc2.weight, 0), (net.fc2.bias, 0), (net.fc3.weight, 1)]}


def _grads(net, x, create_graph=False):
    logits = net(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(logits, logits.detach().argmax(-1))
    params = list(net.parameters())
    return dict(zip(params, torch.autograd.grad(loss, params, create_graph=create_graph)))


def _per_channel(tensor, axis):
    return tensor.detach().double().movedim(axis, 0).reshape(tensor.shape[axis], -1).sum(1).numpy()


def _by_width(analysis, scores):
    return {g.width: scores[g.key] for g in analysis.prunable_groups()}


def test_taylor_and_snip_match_autograd_on_the_source_module(mlp):
    net, model, analysis, feeds = mlp
    assert sorted(g.width for g in analysis.prunable_groups()) == [7, 8]
    xs = np.concatenate([f["x"] for f in feeds])
    batches = [xs[:4], xs[4:]]
    per_batch = [_grads(net, b) for b in batches]
    mean_grad = {p: (per_batch[0][p] + per_batch[1][p]) / 2 for p in per_batch[0]}

    taylor = _by_width(analysis, gradient_scores(model, analysis, "taylor", feeds, normalizer="none", batch=4))
    snip = _by_width(analysis, gradient_scores(model, analysis, "snip", feeds, normalizer="none",
                                               reduction="sum", batch=4))
    for width, members in _members(net).items():
        want_taylor = np.mean([sum(_per_channel(p * g[p], ax) for p, ax in members) ** 2 for g in per_batch], axis=0)
        want_snip = sum(_per_channel((p * mean_grad[p]).abs(), ax) for p, ax in members)
        np.testing.assert_allclose(taylor[width], want_taylor, rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(snip[width], want_snip, rtol=1e-4, atol=1e-12)
        assert len(set(np.round(snip[width], 6))) > width // 2  # not a constant


def test_grasp_and_crop_match_double_backprop_on_the_source_module(mlp):
    net, model, analysis, feeds = mlp
    xs = np.concatenate([f["x"] for f in feeds])
    params = list(net.parameters())
    g = _grads(net, xs)  # one batch of 8: the full-data gradient
    gs = _grads(net, xs, create_graph=True)
    hg = dict(zip(params, torch.autograd.grad(sum((gs[p] * g[p].detach()).sum() for p in params), params)))
    grasp = _by_width(analysis, gradient_scores(model, analysis, "grasp", feeds, normalizer="none",
                                                reduction="sum", batch=8))
    crop = _by_width(analysis, gradient_scores(model, analysis, "crop", feeds, normalizer="none",
                                               reduction="sum", batch=8))
    for width, members in _members(net).items():
        want_grasp = sum(_per_channel(p * hg[p], ax) for p, ax in members)
        want_crop = sum(_per_channel((p * hg[p]).abs(), ax) for p, ax in members)
        scale = np.abs(want_grasp).max()
        assert scale > 0
        np.testing.assert_allclose(grasp[width], want_grasp, rtol=1e-3, atol=1e-5 * scale)
        np.testing.assert_allclose(crop[width], want_crop, rtol=1e-3, atol=1e-5 * scale)
    assert any((v < 0).any() for v in grasp.values())  # signed, as documented


def _cnn(dead: int | None = None):
    """Conv(3→6)-ReLU-Conv(6→5)-ReLU-pool-Gemm(5→7)-ReLU-Gemm(7→4); channel `dead` of the first
    conv has a large negative bias, so ReLU zeroes it on any input while its weights stay large."""
    b = GraphBuilder(seed=1)
    x = b.input("x", ["n", 3, 8, 8])
    bias = b.rng.standard_normal(6).astype(np.float32) * 0.1
    if dead is not None:
        bias[dead] = -1e4
    h = b.op("Conv", [x, b.weight((6, 3, 3, 3)), b.weight((6,), data=bias)], pads=[1] * 4)
    h = b.op("Relu", [h])
    h = b.op("Relu", [b.conv(h, 6, 5)])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    h = b.op("Relu", [b.op("Gemm", [h, b.weight((5, 7)), b.weight((7,))])])
    y = b.op("Gemm", [h, b.weight((7, 4)), b.weight((4,))])
    b.outputs.append(onnx.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, None))
    model = load_canonical(b.model())
    return model, analyze_scope(model, None)


def _image_feeds(count=6):
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("criterion", criterion_names("gradient"))
def test_every_group_gets_one_finite_score_per_channel(criterion):
    model, analysis = _cnn()
    groups = list(analysis.prunable_groups())
    assert len(groups) == 3
    scores = gradient_scores(model, analysis, criterion, _image_feeds(), batch=4)
    assert set(scores) == {g.key for g in groups}
    for g in groups:
        s = scores[g.key]
        assert s.shape == (g.width,) and np.isfinite(s).all()
        assert np.ptp(s) > 0
        if criterion != "grasp":
            assert (s >= 0).all()
            assert s.mean() == pytest.approx(1.0)  # mean normaliser per member; one member mean for taylor


def test_a_channel_that_relu_kills_scores_zero_despite_large_weights():
    dead = 3
    model, analysis = _cnn(dead)
    group = next(g for g in analysis.prunable_groups() if g.width == 6)
    for criterion in criterion_names("gradient"):
        s = gradient_scores(model, analysis, criterion, _image_feeds(), normalizer="none")[group.key]
        assert s[dead] == 0.0, criterion
        assert np.delete(np.abs(s), dead).min() > 0, criterion
    weights = model.graph.initializers[group.params[0].value].const_value.numpy()
    assert np.abs(weights[dead]).sum() > 1  # magnitude criteria would keep it


def test_batching_does_not_change_snip(mlp):
    _, model, analysis, feeds = mlp
    one = gradient_scores(model, analysis, "snip", feeds, batch=1)
    eight = gradient_scores(model, analysis, "snip", feeds, batch=8)
    for key in one:
        np.testing.assert_allclose(one[key], eight[key], rtol=1e-4)


def test_language_model_loss_is_next_token_cross_entropy():
    from spa.importance.gradient import _loss

    b = GraphBuilder(seed=2)
    ids = b.inputs.append(onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n", "s"])) or "ids"
    h = b.op("Gather", [b.weight((11, 6)), ids])
    h = b.op("Relu", [b.op("MatMul", [h, b.weight((6, 9))])])
    y = b.op("MatMul", [h, b.weight((9, 11))])
    b.outputs.append(onnx.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, ["n", "s", 11]))
    model = load_canonical(b.model())
    analysis = analyze_scope(model, None)
    feeds = [{"ids": np.random.default_rng(i).integers(0, 11, (1, 5))} for i in range(4)]
    from spa.runtime.to_torch import to_torch

    module = to_torch(model)
    logits = torch.randn(2, 5, 11)
    tokens = torch.randint(0, 11, (2, 5))
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))
    got = _loss(model, module)([logits], {"ids": tokens})
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    for criterion in criterion_names("gradient"):
        scores = gradient_scores(model, analysis, criterion, feeds, batch=2)
        assert all(np.isfinite(s).all() and s.shape == (g.width,)
                   for g in analysis.prunable_groups() for s in [scores[g.key]])


def test_bad_requests_are_one_line_errors(mlp):
    _, model, analysis, feeds = mlp
    with pytest.raises(SpaError, match="unknown gradient criterion"):
        gradient_scores(model, analysis, "hessian", feeds)
    with pytest.raises(SpaError, match="reduction"):
        gradient_scores(model, analysis, "snip", feeds, reduction="median")
    with pytest.raises(SpaError, match="at least one input"):
        gradient_scores(model, analysis, "snip", [])
    with pytest.raises(SpaError, match="no array for input 'x'"):
        gradient_scores(model, analysis, "snip", [{"y": np.zeros((1, 6), np.float32)}])
    with pytest.raises(SpaError, match="PyTorch copy"):
        gradient_scores(model, analysis, "snip", [{"x": np.zeros((1, 4), np.float32)}])

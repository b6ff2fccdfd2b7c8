"""exporters/to_torch.py: a pruned ONNX model becomes a trainable torch module whose parameters
carry the ONNX initializer names; before training it reproduces ONNX Runtime within 1e-4, and
after training `export` writes the new weights into the same graph."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from spa.allocate import Budget
from spa.errors import UnsupportedError
from spa.exporters.to_torch import export, to_torch
from spa.pipeline import prune
from tests.test_frameworks import keras_like_cnn, mlp_with_functions

TOL = 1e-4


def _feeds(session, seed=0):
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 3 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()}


def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _torch_cnn_onnx(path):
    """A small PyTorch CNN (BatchNorm, residual, pooling, Linear) through torch.onnx."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
            self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.pool = torch.nn.MaxPool2d(2)
            self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 5)

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            h = self.pool(h + torch.nn.functional.hardswish(self.c2(h)))
            h = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1)
            return self.fc2(torch.nn.functional.gelu(self.fc1(h)))

    net = Net().eval()
    with torch.no_grad():
        net.b1.running_mean.uniform_(-0.2, 0.2)
        net.b1.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(net, (torch.randn(2, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      do_constant_folding=False,  # keeps BatchNorm (eval mode would fold it into the Conv)
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return path


CASES = {
    "keras-like-opset9": lambda tmp: _save(keras_like_cnn(9), tmp / "k9.onnx"),
    "keras-like-bn-opset17": lambda tmp: _save(keras_like_cnn(17, constants=False, unfolded_bn=False),
                                               tmp / "k17.onnx"),
    "functions": lambda tmp: _save(mlp_with_functions(18), tmp / "f.onnx"),
    "torch-cnn": lambda tmp: _torch_cnn_onnx(tmp / "t.onnx"),
}


def _save(proto, path):
    onnx.save(proto, path)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_round_trip_reproduces_onnx_before_training(tmp_path, case, pruned):
    path = CASES[case](tmp_path)
    if pruned:
        result = prune(path, Budget(ratio=0.3))
        assert result.after["params"] < result.before["params"]
        proto = ir.to_proto(result.model)
    else:
        proto = onnx.load(path)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(session)
    module = to_torch(proto).eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(feeds[n]) for n in module.input_names])
    assert _relative(out.numpy(), session.run(None, feeds)[0]) <= TOL
    float_inits = {t.name for t in proto.graph.initializer if onnx.numpy_helper.to_array(t).dtype.kind == "f"}
    assert set(module.onnx_names.values()) >= float_inits  # every weight, by its ONNX name (+ lifted Constants)
    assert len(list(module.parameters())) > 0


def test_fine_tune_then_export_writes_weights_into_the_same_graph(tmp_path):
    result = prune(_torch_cnn_onnx(tmp_path / "t.onnx"), Budget(ratio=0.3))
    proto = ir.to_proto(result.model)
    module = to_torch(proto)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(module(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    out = export(module, tmp_path / "tuned.onnx")
    tuned = onnx.load(out)
    assert [n.op_type for n in tuned.graph.node] == [n.op_type for n in proto.graph.node]
    assert [i.name for i in tuned.graph.input] == [i.name for i in proto.graph.input]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module.eval()(x).numpy()
    assert _relative(session.run(None, {"x": x.numpy()})[0], expected) <= TOL
    name = next(iter(module.onnx_names.values()))
    assert torch.equal(module.parameter(name).detach(), torch.from_numpy(module.onnx_state()[name]))


def test_unsupported_op_is_refused():
    from onnx import TensorProto, helper

    node = helper.make_node("NonMaxSuppression", ["b", "s"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4, 4]),
                                            helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    with pytest.raises(UnsupportedError, match="NonMaxSuppression"):
        to_torch(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_batchnorm_trains_with_batch_statistics(tmp_path):
    """Kept BatchNorm (pruned before training, --no-fuse-bn): train() uses batch statistics and
    updates the running ones, which `export` writes back; eval() matches ONNX Runtime."""
    result = prune(_torch_cnn_onnx(tmp_path / "t.onnx"), Budget(ratio=0.3), fuse_batchnorm=False)
    proto = ir.to_proto(result.model)
    assert any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    module = to_torch(proto)
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    before = module.onnx_state()[bn.input[3]].copy()
    module.train()(torch.randn(4, 3, 16, 16) * 3 + 1)
    after = module.onnx_state()[bn.input[3]]
    assert not np.allclose(before, after)
    out = export(module, tmp_path / "bn.onnx")
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    np.testing.assert_array_equal(stored[bn.input[3]], after)

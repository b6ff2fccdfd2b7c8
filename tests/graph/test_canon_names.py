"""Canonicalization keeps the exporter's node names where a node survives: folding and rewriting
re-create nodes (onnx-ir keeps their outputs' names, not the node's), and a fusion takes the name
of its main node (Conv + BatchNormalization → the Conv's name)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from spa.graph import io
from spa.graph.canon import canonicalize


def _conv_bn(conv_name="/conv1/Conv", bn_name="/bn1/BatchNormalization") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv1.weight")]
    for name, data in (("bn1.weight", rng.random(4) + 0.5), ("bn1.bias", rng.standard_normal(4)),
                       ("bn1.running_mean", rng.standard_normal(4)), ("bn1.running_var", rng.random(4) + 0.5)):
        inits.append(numpy_helper.from_array(np.asarray(data, np.float32), name))
    nodes = [helper.make_node("Conv", ["x", "conv1.weight"], ["c"], name=conv_name, pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                     "bn1.running_var"], ["b"], name=bn_name),
             helper.make_node("Relu", ["b"], ["y"], name="/relu/Relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fused_conv_keeps_the_conv_name():
    model = canonicalize(io.load(_conv_bn()))
    assert [(n.op_type, n.name) for n in model.graph] == [("Conv", "/conv1/Conv"), ("Relu", "/relu/Relu")]


def test_unfused_names_stay():
    model = canonicalize(io.load(_conv_bn()), fuse_batchnorm=False)
    assert [n.name for n in model.graph] == ["/conv1/Conv", "/bn1/BatchNormalization", "/relu/Relu"]


def test_a_name_in_use_is_not_taken_twice():
    """Another node already holds the Conv's name: the fused Conv is not given it again."""
    proto = _conv_bn()
    proto.graph.node[2].name = "/conv1/Conv"  # the Relu (an exporter may repeat names)
    model = canonicalize(io.load(proto))
    assert [(n.op_type, n.name) for n in model.graph][1] == ("Relu", "/conv1/Conv")
    assert model.graph.node(0).name != "/conv1/Conv"


def test_torch_export_keeps_scoped_names(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)

        def forward(self, x):
            return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.layer1 = nn.Sequential(Block(), Block())
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
            return self.fc(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(path), dynamo=False)
    given = {n.name for n in onnx.load(path).graph.node if n.op_type == "Conv"}
    assert "/layer1/layer1.0/conv1/Conv" in given
    convs = [n.name for n in canonicalize(io.load(path)).graph if n.op_type == "Conv"]
    assert sorted(convs) == sorted(given)  # not node_Conv_0, node_Conv_1, …

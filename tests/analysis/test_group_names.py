"""Readable group keys: the module path of the layers that write a group's channels, taken from
the exporter's scoped node names or weight names; unique, stable, and the old member key where a
model has no usable names. Old keys still work in plans and --protect."""
from __future__ import annotations

import json

import onnx
import pytest

import spa
from spa.allocation.allocate import Budget
from spa.allocation.plan import PruningPlan
from spa.analysis.groups import analyze
from spa.core.errors import PlanError
from spa.flow.pipeline import make_plan
from spa.graph import io
from spa.graph.canon import canonicalize
from tests.graphs import GraphBuilder, conv_relu_conv

torch = pytest.importorskip("torch")
nn = torch.nn


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = _MLP()

    def forward(self, x):
        return x + self.mlp(x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.proj = nn.Linear(12, 16)
        self.layers = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x))).mean(dim=(2, 3))
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("names") / "net.onnx"
    torch.onnx.export(_Net().eval(), torch.randn(1, 3, 8, 8), str(path), dynamo=False)
    return path


def _analysis(path):
    return analyze(canonicalize(io.load(path)))


def test_torch_export_keys_are_module_paths(torch_model):
    analysis = _analysis(torch_model)
    keys = {g.key for g in analysis.groups}
    prunable = {g.key for g in analysis.prunable_groups()}
    # each MLP's hidden width is written by its fc1; the first conv's channels by conv1
    assert {"layers.0.mlp.fc1", "layers.1.mlp.fc1", "conv1"} <= prunable, keys
    assert not any("onnx::" in k for k in prunable), keys
    assert len(keys) == len(analysis.groups)  # unique
    # the old member keys are kept beside them
    assert all(g.old_key and ":" in g.old_key for g in analysis.groups if g.key != g.old_key)


def test_keys_are_stable(torch_model):
    first = [(g.key, g.old_key) for g in _analysis(torch_model).groups]
    assert first == [(g.key, g.old_key) for g in _analysis(torch_model).groups]


def test_unnamed_model_keeps_member_keys():
    analysis = analyze(canonicalize(io.load(conv_relu_conv())))
    assert all(g.key == g.old_key for g in analysis.groups)
    assert all(":" in g.key for g in analysis.groups)


def test_shared_path_gets_a_suffix():
    """Two layers in one scope write two groups: the second key is made unique with #2."""
    b = GraphBuilder(seed=1)
    x = b.input("x", (1, 8))
    h1 = b.op("Relu", [b.op("MatMul", [x, b.weight((8, 6))])])
    h2 = b.op("Relu", [b.op("MatMul", [x, b.weight((8, 5))])])
    y = b.op("Add", [b.op("MatMul", [h1, b.weight((6, 4))]), b.op("MatMul", [h2, b.weight((5, 4))])])
    b.output(y)
    proto = b.proto()
    scoped = iter(["/blk/MatMul", "/blk/Relu", "/blk/MatMul_1", "/blk/Relu_1"])
    for node in proto.graph.node[:4]:
        node.name = next(scoped)
    analysis = analyze(canonicalize(io.load(proto)))
    assert sorted(g.key for g in analysis.prunable_groups()) == ["blk", "blk#2"]


def test_llama_keys():
    from models import hf_zoo

    folder = hf_zoo.cached_export("llama", "optimum")
    analysis = _analysis(folder / "model.onnx")
    by_key = {g.key: g for g in analysis.groups}
    assert by_key["layers.0.mlp"].kind == "channels" and by_key["layers.1.mlp"].kind == "channels"
    assert by_key["layers.0.self_attn"].kind == "heads" and by_key["layers.1.self_attn"].kind == "heads"
    # `layers.0.mlp` names no node, tensor or module of the model (the weights are `model.layers.0…`
    # or anonymous): --protect finds it as a group key
    plan = make_plan(analysis, Budget(ratio=0.5, protect=["layers.0.mlp", "layers.1.self_attn"]))
    assert not plan.removed.get("layers.0.mlp") and not plan.removed.get("layers.1.self_attn")
    assert plan.removed.get("layers.1.mlp") and plan.removed.get("layers.0.self_attn")


def test_plan_with_old_keys_still_applies(torch_model):
    analysis = _analysis(torch_model)
    group = next(g for g in analysis.prunable_groups() if g.key == "layers.0.mlp.fc1")
    old = PruningPlan(removed={group.old_key: [0, 3]}, widths={group.old_key: group.width})
    old = PruningPlan.from_json(old.to_json())  # as a plan file saved by an older SPA
    old.check_against(analysis)
    assert old.removed == {"layers.0.mlp.fc1": [0, 3]} and old.widths == {"layers.0.mlp.fc1": group.width}
    result = spa.prune(torch_model, plan=old)
    assert result.plan.removed == {"layers.0.mlp.fc1": [0, 3]}
    both = PruningPlan(removed={group.old_key: [0], group.key: [1]})
    with pytest.raises(PlanError, match="twice"):
        both.check_against(analysis)


@pytest.mark.parametrize("style", ["readable", "old"])
def test_protect_takes_a_printed_group_key(torch_model, style):
    analysis = _analysis(torch_model)
    group = next(g for g in analysis.prunable_groups() if g.key == "layers.1.mlp.fc1")
    name = group.key if style == "readable" else group.old_key
    assert name in {r["key"] for r in spa.groups(torch_model).rows} or style == "old"
    plan = make_plan(analysis, Budget(ratio=0.5, protect=[name]))
    assert not plan.removed.get(group.key)
    assert plan.removed.get("layers.0.mlp.fc1")  # the others are still pruned
    result = spa.prune(torch_model, budget=Budget(ratio=0.5, protect=[name]))
    widths = {n: v.const_value.numpy().shape for n, v in result.model.graph.initializers.items()}
    fc1 = {n: s for n, s in widths.items() if n in {m.value for m in group.params}}
    assert fc1 and all(group.width in s for s in fc1.values()), fc1


def test_protect_refuses_an_unknown_key(torch_model):
    analysis = _analysis(torch_model)
    with pytest.raises(Exception, match="spa groups"):
        make_plan(analysis, Budget(ratio=0.5, protect=["layers.7.mlp"]))


def test_groups_table_shows_whole_keys(tmp_path, capsys):
    """`spa groups` prints each key whole (it was cut to a few columns with an ellipsis)."""
    from spa.cli import main

    b = GraphBuilder(seed=2)
    x = b.input("x", (1, 8))
    h = b.op("Relu", [b.op("MatMul", [x, b.weight((8, 6))])])
    b.output(b.op("MatMul", [h, b.weight((6, 4))]))
    proto = b.proto()
    proto.graph.node[0].name = "/encoder_stack/layers.0/feed_forward_network/MatMul"
    onnx.save(proto, tmp_path / "long.onnx")
    assert main(["groups", str(tmp_path / "long.onnx")]) == 0
    assert "encoder_stack.layers.0.feed_forward_network" in capsys.readouterr().out
    assert main(["groups", str(tmp_path / "long.onnx"), "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["prunable"]]
    # the key older plans and --protect lists used is listed too
    assert [(r["key"], r["old_key"]) for r in rows] == [("encoder_stack.layers.0.feed_forward_network",
                                                         rows[0]["old_key"])]
    assert ":" in rows[0]["old_key"]


def test_group_named_finds_both():
    analysis = analyze(canonicalize(io.load(conv_relu_conv())))
    g = analysis.prunable_groups()[0]
    assert analysis.group_named(g.key) is g and analysis.group_named(g.old_key) is g
    assert analysis.group_named("nosuch") is None

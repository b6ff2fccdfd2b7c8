"""Per-rule tests on tiny graphs: the coupling each rule builds (widths, index maps) and the
oracle (sliced == masked) for every prunable group."""
import numpy as np
import pytest

from spa.analysis.groups import analyze
from spa.graph.canon import canonicalize
from tests.graphs import GraphBuilder


def groups_by_param(analysis):
    """Map every weight name to the group holding its output axis (axis 0)."""
    out = {}
    for g in analysis.groups:
        for m in g.members:
            if m.kind == "param":
                out.setdefault(m.value, {})[m.axes] = g
    return out


def member(group, value, axes):
    return next(m for m in group.members if m.value == value and m.axes == axes)


def analyzed(b):
    return analyze(canonicalize(b.model(), fuse_batchnorm=False))


def test_plain_chain_couples_conv_output_bias_and_next_input(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    c1 = b.conv(x, 3, 8)
    y = b.conv(b.op("Relu", [c1]), 8, 4)
    b.output(y)
    a = check(b.model())
    prunable = a.prunable_groups()
    assert len(prunable) == 1 and prunable[0].width == 8
    keys = {m.key for m in prunable[0].members if m.kind == "param"}
    # producer weight rows, its bias, consumer's input columns
    assert keys == {f"{b.weight_of[c1]}:0", f"{b.weight_of[y]}:1", "w2:0"}
    reasons = sorted(g.reason for g in a.groups if not g.prunable)
    assert any("graph input" in r for r in reasons) and any("graph output" in r for r in reasons)


def test_residual_add_merges_both_branches(check):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 8, 8))
    c1 = b.conv(x, 4, 8)
    h1 = b.op("Relu", [c1])
    h2 = b.conv(h1, 8, 8)
    s = b.op("Add", [h1, h2])
    b.output(b.conv(s, 8, 2))
    a = check(b.model())
    [g] = a.prunable_groups()
    # both convs' output rows live in one group of width 8 (the residual couples them)
    assert {f"{b.weight_of[c1]}:0", f"{b.weight_of[h2]}:0"} <= {m.key for m in g.params}
    assert g.width == 8


def test_concat_offsets_map_each_input_to_its_slice(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    a1 = b.conv(x, 3, 5)
    a2 = b.conv(x, 3, 7)
    cat = b.op("Concat", [a1, a2], axis=1)
    b.output(b.conv(cat, 12, 2))
    a = check(b.model())
    [g] = a.prunable_groups()
    assert g.width == 12
    out_space = member(g, cat, (1,))
    first = member(g, a1, (1,))
    second = member(g, a2, (1,))
    # a channel of the second input sits at offset 5 in the concat output
    np.testing.assert_array_equal(out_space.pos2class[:5], first.pos2class)
    np.testing.assert_array_equal(out_space.pos2class[5:], second.pos2class)


def test_flatten_to_gemm_maps_one_channel_to_a_block_of_features(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h = b.op("Relu", [b.conv(x, 3, 6)])
    f = b.op("Flatten", [h], axis=1)
    w = b.weight((10, 96))
    b.output(b.op("Gemm", [f, w], transB=1))
    a = check(b.model())
    [g] = a.prunable_groups()
    assert g.width == 6
    gemm_cols = member(g, w, (1,))
    # feature p of the flattened tensor belongs to channel p // 16
    np.testing.assert_array_equal(gemm_cols.pos2class, member(g, h, (1,)).pos2class[np.arange(96) // 16])


def test_gemm_without_transpose_and_matmul_weights(check):
    b = GraphBuilder()
    x = b.input("x", (2, 5))
    w1 = b.weight((5, 9))
    h = b.op("Relu", [b.op("Gemm", [x, w1, b.weight((9,))])])
    w2 = b.weight((9, 6))
    m = b.op("MatMul", [h, w2])
    w3 = b.weight((6, 3))
    b.output(b.op("MatMul", [b.op("Tanh", [m]), w3]))
    a = check(b.model())
    widths = sorted(g.width for g in a.prunable_groups())
    assert widths == [6, 9]
    gp = groups_by_param(a)
    assert gp[w1][(1,)] is gp[w2][(0,)]   # Gemm output columns ↔ next weight rows
    assert gp[w2][(1,)] is gp[w3][(0,)]


def test_depthwise_conv_ties_input_and_output_channels(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 8, k=1)])
    d = b.op("Relu", [b.conv(h, 8, 8, group=8)])
    b.output(b.conv(d, 8, 4, k=1))
    a = check(b.model())
    [g] = a.prunable_groups()
    assert g.width == 8
    np.testing.assert_array_equal(member(g, h, (1,)).pos2class, member(g, d, (1,)).pos2class)


def test_depthwise_multiplier_keeps_each_input_channels_outputs_together(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.conv(x, 3, 4, k=1)
    d = b.conv(h, 4, 8, group=4)  # multiplier 2
    b.output(b.conv(d, 8, 2, k=1))
    a = check(b.model())
    [g] = a.prunable_groups()
    assert g.width == 4
    np.testing.assert_array_equal(member(g, d, (1,)).pos2class, np.repeat(member(g, h, (1,)).pos2class, 2))


def test_grouped_conv_removes_whole_groups_and_rewrites_group_attribute(check):
    from spa.allocation.allocate import Budget, allocate
    from spa.importance.criteria import score_groups
    from spa.passes.slice import slice_model

    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.conv(x, 3, 12, k=1)
    gconv = b.conv(h, 12, 8, group=4)
    b.output(b.conv(b.op("Relu", [gconv]), 8, 2, k=1))
    a = check(b.model(), ratio=0.5)
    [g] = a.prunable_groups()
    assert g.width == 4  # a root channel is one group: 3 inputs + 2 outputs
    assert set(g.class_sizes().tolist()) == {3}
    model = canonicalize(b.model())
    a = analyze(model)
    plan = allocate(a, score_groups(a), Budget(ratio=0.5))
    slice_model(model, a, plan)
    node = next(n for n in model.graph if n.op_type == "Conv" and n.attributes.get("group") is not None
                and n.attributes["group"].as_int() > 1)
    assert node.attributes["group"].as_int() == 2
    assert tuple(node.inputs[1].shape) == (4, 3, 3, 3)


def test_channel_shuffle_keeps_groups_and_prunes_inner_channels(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 6))
    h = b.op("Relu", [b.conv(x, 3, 8, k=1)])
    r = b.op("Reshape", [h, b.ints([1, 2, 4, 6, 6])])
    t = b.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    s = b.op("Reshape", [t, b.ints([1, 8, 6, 6])])
    b.output(b.conv(s, 8, 2, k=1))
    a = check(b.model(), ratio=0.5)
    [g] = a.prunable_groups()
    # the shuffle (2 groups x 4) is kept whole: a unit is channel j of each of the 2 groups
    assert g.width == 4 and set(g.class_sizes().tolist()) == {2}
    shuffled = member(g, s, (1,)).pos2class
    produced = member(g, h, (1,)).pos2class
    # output channel c of the shuffle reads input channel (c % 2) * 4 + c // 2
    np.testing.assert_array_equal(shuffled, produced[(np.arange(8) % 2) * 4 + np.arange(8) // 2])


def test_split_and_slice_on_channel_axis_rewrite_sizes_and_bounds(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 6))
    h = b.op("Relu", [b.conv(x, 3, 10, k=1)])
    p1, p2 = b.op("Split", [h, b.ints([4, 6])], n_out=2, axis=1)
    s = b.op("Slice", [h, b.ints([2]), b.ints([7]), b.ints([1])])
    out = b.op("Concat", [b.conv(p1, 4, 3, k=1), b.conv(p2, 6, 3, k=1), b.conv(s, 5, 3, k=1)], axis=1)
    b.output(b.conv(out, 9, 2, k=1))
    a = check(b.model(), ratio=0.4)
    g = next(g for g in a.prunable_groups() if g.width == 10)
    np.testing.assert_array_equal(member(g, p2, (1,)).pos2class, member(g, h, (1,)).pos2class[4:])
    np.testing.assert_array_equal(member(g, s, (1,)).pos2class, member(g, h, (1,)).pos2class[2:7])


def test_squeeze_excite_gate_couples_expand_conv_with_trunk(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    c1 = b.conv(x, 3, 8)
    h = b.op("Relu", [c1])
    pooled = b.op("GlobalAveragePool", [h])
    squeeze = b.op("Relu", [b.conv(pooled, 8, 2, k=1)])
    expand = b.conv(squeeze, 2, 8, k=1)
    gate = b.op("Sigmoid", [expand])
    y = b.op("Mul", [h, gate])
    b.output(b.conv(y, 8, 4, k=1))
    a = check(b.model())
    gp = groups_by_param(a)
    trunk = gp[b.weight_of[c1]][(0,)]
    assert gp[b.weight_of[expand]][(0,)] is trunk  # the gate's expand conv rows join the trunk group
    assert trunk.width == 8


def test_per_channel_constants_and_norms_are_sliced_with_their_channels(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.conv(x, 3, 6)
    bn = b.op("BatchNormalization", [h, b.weight((6,)), b.weight((6,)), b.weight((6,)),
                                     b.weight((6,), data=np.full(6, 1.5, np.float32))])
    inorm = b.op("InstanceNormalization", [bn, b.weight((6,)), b.weight((6,))])
    scaled = b.op("Mul", [inorm, b.weight((1, 6, 1, 1))])
    pr = b.op("PRelu", [scaled, b.weight((6, 1, 1))])
    b.output(b.conv(pr, 6, 2))
    [g] = analyzed(b).prunable_groups()  # BatchNorm kept: its 4 vectors are members
    assert g.width == 6 and len(g.params) == 11  # conv w,b + 4 BN + 2 IN + scale + slope + sink
    [g] = check(b.model()).prunable_groups()  # BatchNorm fused into the conv
    assert g.width == 6 and len(g.params) == 7


def test_group_norm_removes_whole_groups(check):
    b = GraphBuilder(opset=21)
    x = b.input("x", (1, 3, 4, 4))
    h = b.conv(x, 3, 8, k=1)
    gn = b.op("GroupNormalization", [h, b.weight((8,)), b.weight((8,))], num_groups=2)
    b.hint(gn, (1, 8, 4, 4))
    b.output(b.conv(b.op("Relu", [gn]), 8, 2, k=1))
    a = check(b.model(), ratio=0.5)
    [g] = a.prunable_groups()
    assert g.width == 2 and set(g.class_sizes().tolist()) == {4}


def test_layernorm_over_non_channel_axis_passes_and_over_channel_blocks():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h = b.conv(x, 3, 8, k=1)
    ln = b.op("LayerNormalization", [h, b.weight((4,)), b.weight((4,))], axis=-1)
    b.output(b.conv(ln, 8, 2, k=1))
    assert [g.width for g in analyzed(b).prunable_groups()] == [8]

    b = GraphBuilder()
    x = b.input("x", (1, 6, 8))
    w = b.weight((8, 8))
    h = b.op("MatMul", [x, w])
    ln = b.op("LayerNormalization", [h, b.weight((8,)), b.weight((8,))], axis=-1)
    b.output(b.op("MatMul", [ln, b.weight((8, 4))]))
    a = analyzed(b)
    assert not a.prunable_groups()
    assert [g.kind for g in a.groups if "--scope hidden" in (g.reason or "")] == ["hidden"]


def test_hidden_scope_prunes_a_normalised_width_with_its_scale_and_bias():
    """With hidden=True a LayerNorm/RMSNorm-normalised width is one group holding the norm's scale
    and bias; the outputs change (the norms' statistics), so beyond validity and finite outputs the
    oracle compares with a masked copy whose norms count the kept channels only."""
    from spa.allocation.allocate import Budget, allocate
    from spa.importance.criteria import score_groups
    from spa.passes.slice import slice_model
    from spa.runtime.validate import copy_model, random_inputs, run, validate

    b = GraphBuilder()
    x = b.input("x", (1, 6, 8))
    h = b.op("MatMul", [x, b.weight((8, 8))])
    ln = b.op("LayerNormalization", [h, b.weight((8,)), b.weight((8,))], axis=-1)
    r = b.op("Add", [ln, b.op("MatMul", [ln, b.weight((8, 8))])])
    # RMSNorm written as primitives
    ms = b.op("ReduceMean", [b.op("Mul", [r, r]), b.ints([-1])], keepdims=1)
    rms = b.op("Mul", [b.op("Div", [r, b.op("Sqrt", [ms])]), b.weight((8,))])
    b.output(b.op("MatMul", [rms, b.weight((8, 4))]))
    model = canonicalize(b.model(), fuse_batchnorm=False)
    a = analyze(model, hidden=True)
    [group] = a.prunable_groups()
    assert group.kind == "hidden" and group.width == 8
    # first projection out, LN scale and bias, the inner projection in and out, RMS scale, head in
    assert len(group.params) == 7 and len({m.value for m in group.params}) == 6
    plan = allocate(a, score_groups(a), Budget(ratio=0.5))
    pruned = copy_model(model)
    slice_model(pruned, a, plan)
    validate(model, pruned)
    out = run(pruned, random_inputs(model))[0]
    assert out.shape == (1, 6, 4) and np.isfinite(out).all()
    from spa.flow.oracle import oracle

    checked = oracle(model, a, plan)
    assert checked.unchecked == () and checked.holds()


def test_pooling_resize_pad_and_spatial_reduce_pass_channels(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 6)])
    p = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    p = b.op("AveragePool", [p], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    p = b.op("Pad", [p, b.ints([0, 0, 1, 1, 0, 0, 1, 1])])
    p = b.op("Resize", [p, "", b.weight(None, data=np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    p = b.op("Clip", [p, b.weight(None, data=np.array(0, np.float32)), b.weight(None, data=np.array(6, np.float32))])
    p = b.op("Dropout", [b.op("Identity", [b.op("Cast", [p], to=1)])])
    r = b.op("ReduceMean", [p, b.ints([2, 3])], keepdims=0)
    b.output(b.op("Gemm", [r, b.weight((5, 6))], transB=1))
    a = check(b.model())
    assert [g.width for g in a.prunable_groups()] == [6]


def test_channel_reduce_and_unknown_ops_block_with_reasons():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.conv(x, 3, 6)
    r = b.op("ReduceMean", [h, b.ints([1])], keepdims=1)
    h2 = b.conv(x, 3, 5)
    u = b.op("Hardmax", [h2], axis=1)
    h3 = b.conv(x, 3, 4)
    unknown = b.op("DepthToSpace", [h3], blocksize=2)
    b.output(r)
    b.output(u)
    b.output(unknown)
    a = analyzed(b)
    assert not a.prunable_groups()
    reasons = " | ".join(g.reason for g in a.groups)
    assert "ReduceMean reduces over a channel axis" in reasons
    assert "Hardmax mixes values along a channel axis" in reasons
    assert "DepthToSpace" in reasons and "no channel rule" in reasons


def test_transpose_then_matmul_follows_the_moved_channel_axis(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h = b.op("Relu", [b.conv(x, 3, 6, k=1)])
    t = b.op("Transpose", [h], perm=[0, 2, 3, 1])  # NCHW -> NHWC, channels last
    b.output(b.op("MatMul", [t, b.weight((6, 5))]))
    a = check(b.model())
    [g] = a.prunable_groups()
    assert g.width == 6 and member(g, t, (3,)) is not None


def test_conv_transpose_and_unsqueeze_squeeze(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h = b.op("Relu", [b.conv(x, 3, 6, k=1)])
    up = b.op("ConvTranspose", [h, b.weight((6, 5, 2, 2)), b.weight((5,))], strides=[2, 2])
    u = b.op("Unsqueeze", [b.op("Relu", [up]), b.ints([0])])
    s = b.op("Squeeze", [u, b.ints([0])])
    b.output(b.conv(s, 5, 2, k=1))
    a = check(b.model())
    assert sorted(g.width for g in a.prunable_groups()) == [5, 6]


def test_expand_rewrites_its_shape_constant(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h = b.conv(x, 3, 6, k=1)
    pooled = b.op("GlobalAveragePool", [h])
    e = b.op("Expand", [pooled, b.ints([1, 6, 4, 4])])
    b.output(b.conv(b.op("Add", [e, h]), 6, 2, k=1))
    check(b.model())


def test_initializer_shared_by_two_ops_is_one_member(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h1 = b.conv(x, 3, 6, k=1)
    h2 = b.conv(x, 3, 6, k=1)
    scale = b.weight((1, 6, 1, 1))
    y = b.op("Add", [b.op("Mul", [h1, scale]), b.op("Mul", [h2, scale])])
    b.output(b.conv(y, 6, 2, k=1))
    a = check(b.model())
    [g] = a.prunable_groups()
    assert sum(1 for m in g.members if m.value == scale) == 1


@pytest.mark.parametrize("op", ["Sigmoid", "HardSwish", "Tanh", "LeakyRelu", "Gelu", "Erf", "Abs", "Softplus"])
def test_unary_ops_pass_channels(check, op):
    b = GraphBuilder(opset=20)
    x = b.input("x", (1, 3, 4, 4))
    h = b.op(op, [b.conv(x, 3, 6, k=1)])
    b.output(b.conv(h, 6, 2, k=1))
    assert [g.width for g in check(b.model()).prunable_groups()] == [6]


def test_gather_with_constant_indices_on_channel_axis_is_renumbered(check):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    h = b.op("Relu", [b.conv(x, 3, 6, k=1)])
    g = b.op("Gather", [h, b.ints([5, 0, 3, 1, 4, 2])], axis=1)  # a channel permutation
    b.output(b.conv(g, 6, 2, k=1))
    a = check(b.model(), ratio=0.5)
    [grp] = a.prunable_groups()
    np.testing.assert_array_equal(member(grp, g, (1,)).pos2class, member(grp, h, (1,)).pos2class[[5, 0, 3, 1, 4, 2]])


def test_einsum_carries_contracts_and_creates_channels(check):
    b = GraphBuilder()
    x = b.input("x", (2, 5, 4))
    w1 = b.weight((4, 8))
    h = b.op("Relu", [b.op("Einsum", [x, w1], equation="bnd,de->bne")])  # fresh channels e (8)
    w2 = b.weight((8, 3))
    b.output(b.op("Einsum", [h, w2], equation="bne,ef->bnf"))  # contracts e: a sink
    a = check(b.model())
    [g] = a.prunable_groups()
    assert g.width == 8
    assert {m.key for m in g.params} == {f"{w1}:1", f"{w2}:0"}


def test_dynamic_batch_view_keeps_the_flatten_group_prunable(check, tmp_path):
    """`x.view(x.size(0), -1)` with a dynamic batch leaves Shape → Gather → Concat → Reshape."""
    import onnxruntime as ort
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.fc(h.view(h.size(0), -1))

    path = tmp_path / "dyn.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(2, 3, 6, 6),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    from spa.graph import io
    from spa.allocation.allocate import Budget
    from spa.flow.pipeline import prune

    a = check(io.load(path))
    [g] = a.prunable_groups()
    assert g.width == 8
    result = prune(path, Budget(ratio=0.5))
    out = tmp_path / "small.onnx"
    result.save(out)
    sess = ort.InferenceSession(str(out))
    assert sess.run(None, {"x": np.random.randn(3, 3, 6, 6).astype(np.float32)})[0].shape == (3, 5)


def _attention(b, x, hidden, heads, kv_heads, size, transpose_detour=False):
    """Multi-head attention as exporters write it: Q/K/V projections, Reshape to heads, Transpose,
    Q·Kᵀ, Softmax, ·V, back to the hidden width, output projection (GQA repeats K/V heads)."""
    q = b.op("MatMul", [x, b.weight((hidden, heads * size))])
    k = b.op("MatMul", [x, b.weight((hidden, kv_heads * size))])
    v = b.op("MatMul", [x, b.weight((hidden, kv_heads * size))])

    def split(t, n):
        return b.op("Transpose", [b.op("Reshape", [t, b.ints([1, 6, n, size])])], perm=[0, 2, 1, 3])

    def repeat(t):  # [1, kv, 6, size] → [1, heads, 6, size], as repeat_kv writes it
        if kv_heads == heads:
            return t
        t = b.op("Unsqueeze", [t, b.ints([2])])
        t = b.op("Expand", [t, b.ints([1, kv_heads, heads // kv_heads, 6, size])])
        return b.op("Reshape", [t, b.ints([1, heads, 6, size])])

    qh, kh, vh = split(q, heads), repeat(split(k, kv_heads)), repeat(split(v, kv_heads))
    if transpose_detour:  # torch.onnx's kᵀ: merge batch·heads, transpose, split back
        merged = b.op("Reshape", [kh, b.ints([heads, 6, size])])
        kt = b.op("Reshape", [b.op("Transpose", [merged], perm=[0, 2, 1]), b.ints([1, heads, size, 6])])
    else:
        kt = b.op("Transpose", [kh], perm=[0, 1, 3, 2])
    p = b.op("Softmax", [b.op("MatMul", [qh, kt])], axis=-1)
    o = b.op("Transpose", [b.op("MatMul", [p, vh])], perm=[0, 2, 1, 3])
    o = b.op("Reshape", [o, b.ints([1, 6, heads * size])])
    return b.op("MatMul", [o, b.weight((heads * size, hidden))])


@pytest.mark.parametrize("kv_heads,detour", [(4, False), (2, False), (4, True)])
def test_attention_heads_are_one_group_of_whole_heads(check, kv_heads, detour):
    b = GraphBuilder()
    x = b.input("x", (1, 6, 16))
    b.output(_attention(b, x, 16, 4, kv_heads, 8, transpose_detour=detour))
    a = check(b.model())
    [group] = [g for g in a.prunable_groups()]
    assert group.kind == "heads"
    assert group.width == kv_heads  # a root channel is one key/value head with its query heads
    assert set(group.class_sizes().tolist()) == {8 * 4 // kv_heads}  # head size × query heads per kv head


def test_single_key_value_head_is_not_prunable():
    """Multi-query attention: removing the only key/value head would remove every head."""
    b = GraphBuilder()
    x = b.input("x", (1, 6, 16))
    b.output(_attention(b, x, 16, 4, 1, 8))
    a = analyzed(b)
    heads = [g for g in a.groups if g.kind == "heads"]
    assert heads and not any(g.prunable for g in heads)
    assert any("single channel" in (g.reason or "") for g in heads)


def test_uniform_constants_shared_by_layers_are_unshared():
    """torch.onnx deduplicates equal initializers: one all-zero bias read by two layers must not
    couple their groups, while a real shared weight stays shared."""
    from spa.graph.canon import unshare_uniform_constants

    b = GraphBuilder()
    x = b.input("x", (1, 6, 8))
    zero = b.weight(None, "zero_bias", np.zeros(8, np.float32))
    h1 = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.weight((8, 8))]), zero])])
    h2 = b.op("Relu", [b.op("Add", [b.op("MatMul", [h1, b.weight((8, 8))]), zero])])
    b.output(b.op("MatMul", [h2, b.weight((8, 4))]))
    model = b.model()
    assert unshare_uniform_constants(model) == 1
    a = analyze(canonicalize(model, fuse_batchnorm=False))
    assert [g.width for g in a.prunable_groups()] == [8, 8]


def _fused_attention(b, x, op, heads, kv_heads, size, **attrs):
    q = b.op("MatMul", [x, b.weight((16, heads * size))])
    k = b.op("MatMul", [x, b.weight((16, kv_heads * size))])
    v = b.op("MatMul", [x, b.weight((16, kv_heads * size))])
    o = b.op(op, [q, k, v], **attrs)
    return b.op("MatMul", [o, b.weight((heads * size, 16))])


def test_ort_multi_head_attention_prunes_whole_heads_and_rewrites_num_heads(check):
    b = GraphBuilder()
    x = b.input("x", (1, 6, 16))
    b.output(_fused_attention(b, x, "MultiHeadAttention", 4, 4, 8, domain="com.microsoft", num_heads=4))
    a = check(b.model())
    [group] = a.prunable_groups()
    assert group.kind == "heads" and group.width == 4 and set(group.class_sizes().tolist()) == {8}


def test_onnx_attention_with_grouped_key_value_heads(check):
    b = GraphBuilder(opset=23)
    x = b.input("x", (1, 6, 16))
    b.output(_fused_attention(b, x, "Attention", 4, 2, 8, q_num_heads=4, kv_num_heads=2))
    a = check(b.model())
    [group] = a.prunable_groups()
    assert group.kind == "heads" and group.width == 2  # key/value heads, each with 2 query heads


def test_fused_ops_that_hide_their_layout_refuse_with_a_reason():
    b = GraphBuilder()
    x = b.input("x", (1, 6, 16))
    qkv = b.op("MatMul", [x, b.weight((16, 96))])
    o = b.op("Attention", [x, b.weight((16, 96)), b.weight((96,))], domain="com.microsoft", num_heads=4)
    b.hint(o, (1, 6, 32))
    b.output(b.op("MatMul", [o, b.weight((32, 16))]))
    b.output(qkv)
    a = analyzed(b)
    assert any("packs the Q/K/V projections" in (g.reason or "") for g in a.groups)


def test_packed_qkv_picked_by_scalar_gather_prunes_whole_heads(check):
    """torch's nn.MultiheadAttention: one in-projection to [seq, 3, E], q/k/v picked by scalar
    Gathers; the heads of all three stay one group, cut at whole heads."""
    b = GraphBuilder()
    x = b.input("x", (6, 16))
    packed = b.op("Reshape", [b.op("MatMul", [x, b.weight((16, 48))]), b.ints([6, 3, 16])])
    q, k, v = (b.op("Transpose", [b.op("Reshape", [b.op("Gather", [packed, b.ints(i)], axis=1), b.ints([6, 4, 4])])],
                    perm=[1, 0, 2]) for i in (0, 1, 2))
    p = b.op("Softmax", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])])], axis=-1)
    o = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [p, v])], perm=[1, 0, 2]), b.ints([6, 16])])
    b.output(b.op("MatMul", [o, b.weight((16, 16))]))
    a = check(b.model())
    [group] = a.prunable_groups()
    assert group.kind == "heads" and group.width == 4

"""Example inputs (spa/runtime/examples.py) and validation against the original's actual outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from spa.runtime import examples

from spa.graph import io
from spa.cli import main
from spa.core.errors import UnsupportedError, ValidationError
from spa.runtime.validate import Reference, compare_to_reference, reference_run
from tests.graphs import GraphBuilder


def _save(proto: onnx.ModelProto, path) -> str:
    onnx.save(proto, str(path))
    return str(path)


def stride_32_detector() -> onnx.ModelProto:
    """An FPN-like join: a stride-32 branch upsampled ×32 and concatenated with the full-size
    features. It runs only where height and width divide by 32 (not on a side of 7)."""
    b = GraphBuilder(seed=1)
    x = b.input("images", [1, 3, "height", "width"])
    feat = b.op("Relu", [b.conv(x, 3, 8)])
    down = b.op("Conv", [feat, b.weight((8, 8, 32, 32))], strides=[32, 32])
    up = b.op("Resize", [down, "", b.weight(None, data=np.array([1, 1, 32, 32], np.float32))], mode="nearest")
    joined = b.op("Concat", [feat, up], axis=1)
    head = b.conv(b.op("Relu", [b.conv(joined, 16, 12)]), 12, 2)
    b.nodes.append(helper.make_node("Identity", [head], ["scores"]))
    b.output("scores")
    return b.proto()


def test_an_image_input_gets_a_stride_friendly_size_the_original_runs_on(tmp_path, capsys):
    src = _save(stride_32_detector(), tmp_path / "det.onnx")
    model = io.load(src)
    reference = reference_run(model, src)
    shape = reference.feeds["images"].shape
    assert shape[2] % 32 == 0 and shape[3] % 32 == 0
    # the shape choice is the subject here, not the criterion: the quick weight-only one
    assert main(["prune", src, "-o", str(tmp_path / "out.onnx"), "--ratio", "0.3", "-q", "--criterion", "l2",
                 "--no-latency"]) == 0


def test_a_model_that_runs_on_no_made_up_input_is_refused_up_front(tmp_path, capsys):
    b = GraphBuilder()
    x = b.input("x", [1, 3, "h", "w"])
    y = b.conv(b.op("Relu", [b.conv(x, 3, 8)]), 8, 8)
    # a Reshape to a fixed size no candidate side gives
    flat = b.op("Reshape", [y, b.ints([1, 8 * 37 * 41])])
    b.nodes.append(helper.make_node("Identity", [flat], ["out"]))
    b.output("out")
    src = _save(b.proto(), tmp_path / "m.onnx")
    code = main(["prune", src, "-o", str(tmp_path / "out.onnx"), "-q"])
    err = capsys.readouterr().err
    assert code == UnsupportedError.exit_code
    assert "does not run on made-up inputs" in err and "--input-shape" in err
    assert not (tmp_path / "out.onnx").exists()
    # with the shape a person would give, it prunes
    assert main(["prune", src, "-o", str(tmp_path / "out.onnx"), "-q", "--input-shape", "x=1,3,37,41"]) == 0


def _roles_model() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
             helper.make_node("Identity", ["state"], ["state_out"]),
             helper.make_node("Identity", ["sr"], ["sr_out"])]
    graph = helper.make_graph(nodes, "roles", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "b", 128]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         (("emb", TensorProto.FLOAT), ("state_out", TensorProto.FLOAT), ("sr_out", TensorProto.INT64))],
        [table])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_roles_decide_values_ids_in_the_vocabulary_state_batch_sample_rate():
    model = io.load(_roles_model())
    roles = {s.name: s.role for s in examples.input_specs(model)}
    assert roles == {"input_ids": "ids", "state": "state", "sr": "sample-rate", "attention_mask": "mask"}
    feeds = examples.random_feeds(model, seed=0, sequence=64)
    ids = feeds["input_ids"]
    assert ids.shape == (1, 64) and ids.max() < 50 and len(np.unique(ids)) > 2  # not just {0, 1}
    assert feeds["state"].shape == (2, 1, 128)  # its open dim is the batch
    assert int(feeds["sr"]) == examples.SAMPLE_RATE
    assert (feeds["attention_mask"] == 1).all()


@pytest.mark.parametrize("dims", [[-1, 3, "?", "?"], ["p2o.DynamicDimension.0", 3, "floor(h/2.0)", 32]])
def test_paddle_minus_one_and_expression_dims_are_open(dims):
    spec_dims = [d for d in dims]
    assert [examples.dim_value(d) for d in spec_dims][1] == 3
    assert examples.dim_value(spec_dims[0]) is None and examples.dim_value(spec_dims[2]) is None


def wrong_declared_output() -> onnx.ModelProto:
    """A CRNN-like tail: features [1, 8, 1, T] → Squeeze → Transpose → [T, 1, 8] computed with a
    Reshape whose target comes from Shape, while the file declares the output as [1, 'seqlen']
    (rank 2): the declaration is wrong, the computation is what users decode."""
    b = GraphBuilder(seed=2)
    x = b.input("image", [1, 3, 4, "width"])
    feat = b.op("Relu", [b.conv(b.op("Relu", [b.conv(x, 3, 6)]), 6, 8)])
    pooled = b.op("ReduceMean", [feat, b.ints([2])], keepdims=1)  # [1, 8, 1, W]
    t = b.op("Transpose", [pooled], perm=[3, 2, 1, 0])               # [W, 1, 8, 1]
    shape = b.op("Shape", [t])
    first3 = b.op("Slice", [shape, b.ints([0]), b.ints([3])])
    b.nodes.append(helper.make_node("Reshape", [t, first3], ["logits"]))  # [W, 1, 8]
    proto = b.proto()
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seqlen"]))
    return proto


def test_a_wrong_declared_output_shape_does_not_change_what_the_model_computes(tmp_path):
    import onnxruntime as ort

    src = _save(wrong_declared_output(), tmp_path / "crnn.onnx")
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 3, 4, 20)).astype(np.float32)}
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)[0]
    assert want.shape == (20, 1, 8)
    for ratio in ("0", "0.3"):
        out = tmp_path / f"out{ratio}.onnx"
        assert main(["prune", src, "-o", str(out), "--ratio", ratio, "-q"]) == 0
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert got.shape == want.shape
        if ratio == "0":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_validation_refuses_an_output_of_another_shape_or_dtype_or_values_at_ratio_zero():
    ref = Reference({}, {"y": np.ones((4, 1, 8), np.float32)}, {})
    compare_to_reference(ref, {"y": np.ones((4, 1, 8), np.float32)}, values=True)
    with pytest.raises(ValidationError, match="shape"):
        compare_to_reference(ref, {"y": np.ones((1, 32), np.float32)}, values=False)
    with pytest.raises(ValidationError, match="float64"):
        compare_to_reference(ref, {"y": np.ones((4, 1, 8), np.float64)}, values=False)
    with pytest.raises(ValidationError, match="nothing was pruned"):
        compare_to_reference(ref, {"y": np.full((4, 1, 8), 1.1, np.float32)}, values=True)
    # an axis whose size depends on the values (a detector's box count) may change
    varying = Reference({}, {"boxes": np.ones((5, 4), np.float32)}, {"boxes": {0}})
    compare_to_reference(varying, {"boxes": np.ones((2, 4), np.float32)}, values=False)


def test_value_dependent_output_axes_are_found_by_running_twice(tmp_path):
    b = GraphBuilder()
    x = b.input("x", [1, 4, 6, 6])
    y = b.conv(x, 4, 4)
    nz = b.op("NonZero", [b.op("Greater", [y, b.weight(None, data=np.array(0.5, np.float32))])])
    b.nodes.append(helper.make_node("Identity", [nz], ["where"]))
    proto = b.proto()
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("where", TensorProto.INT64, [4, "n"]))
    src = _save(proto, tmp_path / "nz.onnx")
    reference = reference_run(io.load(src), src)
    assert reference.varying == {"where": {1}}


def test_an_ir3_model_with_weights_listed_as_inputs_keeps_its_interface(tmp_path):
    b = GraphBuilder(opset=8)
    x = b.input("x", [1, 3, 16, 16])
    y = b.conv(b.op("Relu", [b.conv(x, 3, 8)]), 8, 4)
    b.nodes.append(helper.make_node("Identity", [y], ["out"]))
    b.output("out")
    proto = b.proto()
    proto.ir_version = 3
    for t in proto.graph.initializer:
        proto.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    src = _save(proto, tmp_path / "ir3.onnx")
    out = tmp_path / "out.onnx"
    assert main(["prune", src, "-o", str(out), "--ratio", "0.3", "--verify", "-q"]) == 0
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)  # IR 3: every initializer is a graph input
    assert written.ir_version == 3
    assert [i.name for i in written.graph.input] == [i.name for i in proto.graph.input]
    assert sum(numpy_helper.to_array(t).size for t in written.graph.initializer) < \
        sum(numpy_helper.to_array(t).size for t in proto.graph.initializer)

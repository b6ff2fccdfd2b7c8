"""spa.runtime.sessions.open_session: the one builder of ONNX Runtime sessions."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from spa.core.errors import InputError, ValidationError
from spa.runtime.sessions import open_session, quiet_options


def _add_model(with_weight: bool = True) -> bytes:
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.ones(2, np.float32), "w")] if with_weight else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_session_from_bytes_or_a_path(tmp_path):
    x = np.array([1, 2], np.float32)
    assert open_session(_add_model()).run(None, {"x": x})[0].tolist() == [2, 3]
    path = tmp_path / "m.onnx"
    path.write_bytes(_add_model())
    for source in (path, str(path)):
        sess = open_session(source, quiet_options())
        assert sess.get_providers() == ["CPUExecutionProvider"]
        assert sess.run(None, {"x": x})[0].tolist() == [2, 3]


def test_weights_given_from_memory(tmp_path):
    from onnx import external_data_helper, load_model_from_string, save_model

    model = load_model_from_string(_add_model())
    external_data_helper.convert_model_to_external_data(model, location="w.bin", size_threshold=0)
    save_model(model, tmp_path / "m.onnx")
    (tmp_path / "w.bin").unlink()  # ONNX Runtime must take the weight from memory
    sess = open_session(tmp_path / "m.onnx", initializers={"w": np.full(2, 5, np.float32)})
    assert sess.run(None, {"x": np.zeros(2, np.float32)})[0].tolist() == [5, 5]


def test_a_refused_model_is_one_line_of_the_callers_error_type():
    with pytest.raises(ValidationError, match=r"^ONNX Runtime cannot load the model: ") as caught:
        open_session(b"not a model")
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match=r"^ONNX Runtime cannot load model B: "):
        open_session(b"not a model", what="model B", error=InputError)
    with pytest.raises(Exception) as raw:
        open_session(b"not a model", error=None)
    assert not isinstance(raw.value, ValidationError)


def test_a_model_in_memory_hands_its_weights_over_and_computes_the_same(monkeypatch):
    """spa.runtime.validate.session serializes only the graph of an in-memory model; the weights
    go to ONNX Runtime as arrays, kept alive with the session."""
    import onnx_ir as ir

    from spa.graph import io
    from spa.runtime import validate

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)  # over the hand-over size
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 32])],
                              [numpy_helper.from_array(weight, "w")])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    serialized = []
    real_to_proto = validate.to_proto
    monkeypatch.setattr(validate, "to_proto", lambda m: serialized.append(
        [(i.name, len(i.raw_data)) for i in real_to_proto(m).graph.initializer]) or real_to_proto(m))
    sess = validate.session(model)
    assert serialized and all(size == 0 for _, size in serialized[0])  # no weight bytes in the graph
    assert len(sess.spa_weights) == 1
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ weight, rtol=1e-5, atol=1e-5)
    assert io.weight_bytes(model) == weight.nbytes  # the model keeps its weights

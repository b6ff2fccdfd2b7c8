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

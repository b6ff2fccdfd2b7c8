"""Models from TensorFlow/Keras, JAX/Flax and PaddlePaddle prune like PyTorch ones.

Two halves: graphs written by hand in the shapes those exporters produce (NHWC convolutions framed
by Transposes, Dense as MatMul + Add, weights in Constant nodes, ONNX functions, unfolded
BatchNorm, opsets 9 to 20), which run everywhere; and the framework zoo (models/keras_zoo.py,
flax_zoo.py, paddle_zoo.py) exported by the real exporters in child processes, which skips with
the reason when a framework's extra is not installed."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import framework_zoo
from models.zoo_check import failures
from spa.core.errors import SpaError, UsageError

RATIO = 0.3


# ---- exporter-shaped graphs, no framework needed --------------------------------------------------

class Builder:
    """Weights as Constant nodes (tf2onnx and jax2onnx often write them so) or initializers."""

    def __init__(self, opset: int, constants: bool = True, seed: int = 0):
        self.opset, self.constants = opset, constants
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def tensor(self, array, base="w"):
        name = self.name(base)
        array = np.asarray(array)
        if self.constants:
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
        else:
            self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, *shape):
        return self.tensor((self.rng.standard_normal(shape) * 0.5).astype(np.float32))

    def op(self, op_type, inputs, domain="", **attrs):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(op_type), domain=domain,
                                           **attrs))
        return out

    def reduce_mean(self, x, axes):
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.tensor(np.array(axes, np.int64), "axes")], keepdims=0)
        return self.op("ReduceMean", [x], axes=axes, keepdims=0)

    def nhwc_conv(self, x, c_in, c_out, k=3):
        """tf2onnx without its transpose optimizer: NHWC → NCHW, Conv, back, bias on the last axis."""
        t = self.op("Transpose", [x], perm=[0, 3, 1, 2])
        y = self.op("Conv", [t, self.weight(c_out, c_in, k, k)], pads=[k // 2] * 4)
        y = self.op("Transpose", [y], perm=[0, 2, 3, 1])
        return self.op("Add", [y, self.weight(c_out)])

    def nhwc_batchnorm(self, x, c, unfolded: bool):
        """Keras BatchNorm in inference: a BatchNormalization between Transposes, or Mul + Add."""
        if unfolded:
            scale = self.tensor(self.rng.uniform(0.5, 1.5, c).astype(np.float32))
            return self.op("Add", [self.op("Mul", [x, scale]), self.weight(c)])
        t = self.op("Transpose", [x], perm=[0, 3, 1, 2])
        stats = [self.tensor(self.rng.uniform(0.5, 1.5, c).astype(np.float32)), self.weight(c), self.weight(c),
                 self.tensor(self.rng.uniform(0.5, 1.5, c).astype(np.float32))]
        y = self.op("BatchNormalization", [t] + stats, epsilon=1e-3)
        return self.op("Transpose", [y], perm=[0, 2, 3, 1])

    def dense(self, x, c_in, c_out):
        return self.op("Add", [self.op("MatMul", [x, self.weight(c_in, c_out)]), self.weight(c_out)])

    def model(self, inputs, outputs, functions=(), extra_imports=()):
        graph = helper.make_graph(self.nodes, "exported", inputs, outputs, self.inits)
        imports = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in extra_imports]
        ir_version = 4 if self.opset <= 9 else 8 if self.opset <= 17 else 9 if self.opset <= 20 else 10
        proto = helper.make_model(graph, opset_imports=imports, ir_version=ir_version, functions=list(functions))
        onnx.checker.check_model(proto, full_check=True)
        return proto


def keras_like_cnn(opset: int, constants: bool = True, unfolded_bn: bool = True) -> onnx.ModelProto:
    """A residual NHWC CNN as tf2onnx writes it unoptimised, with a Dense head."""
    b = Builder(opset, constants)
    x = "image"
    h = b.op("Relu", [b.nhwc_batchnorm(b.nhwc_conv(x, 3, 16), 16, unfolded_bn)])
    y = b.op("Relu", [b.nhwc_batchnorm(b.nhwc_conv(h, 16, 16), 16, unfolded_bn)])
    y = b.nhwc_batchnorm(b.nhwc_conv(y, 16, 16), 16, unfolded_bn)
    h = b.op("Relu", [b.op("Add", [h, y])])
    pooled = b.reduce_mean(h, [1, 2])
    feat = b.op("Relu", [b.dense(pooled, 16, 32)])
    b.nodes.append(helper.make_node("Identity", [b.dense(feat, 32, 10)], ["logits"]))
    return b.model([helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 12, 12, 3])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])])


def mlp_with_functions(opset: int) -> onnx.ModelProto:
    """An MLP whose layers are calls of an ONNX local function (as jax2onnx writes nnx modules)."""
    body = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Relu", ["y"], ["out"])]
    fn = helper.make_function("spa.test", "DenseRelu", ["x", "w", "b"], ["out"], body,
                              [helper.make_opsetid("", opset)])
    b = Builder(opset, constants=False)
    h = b.op("DenseRelu", ["x", b.weight(8, 24), b.weight(24)], domain="spa.test")
    h = b.op("DenseRelu", [h, b.weight(24, 24), b.weight(24)], domain="spa.test")
    b.nodes.append(helper.make_node("MatMul", [h, b.weight(24, 4)], ["y"]))
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], functions=[fn],
                   extra_imports=["spa.test"])


def mixer_like(opset: int) -> onnx.ModelProto:
    """jax2onnx's Dense on [batch, a, b]: Reshape → [batch·a, b] → Gemm → Reshape back. Token mixing
    runs it with the channel axis leading (after a Transpose), so flattening would merge channels
    into the batch axis; canonicalization unflattens it to MatMul + Add."""
    b = Builder(opset, constants=False)

    def dense(x, lead, c_in, c_out):
        flat = b.op("Reshape", [x, b.tensor(np.array([-1, c_in], np.int64), "x2d")])
        y = b.op("Gemm", [flat, b.weight(c_in, c_out), b.weight(c_out)])
        return b.op("Reshape", [y, b.tensor(np.array([2, lead, c_out], np.int64), "shape")])

    tokens, dim = 8, 12
    x = dense("x", tokens, 4, dim)  # patch embedding: the residual width is a channel space
    t = b.op("Transpose", [x], perm=[0, 2, 1])
    t = dense(b.op("Relu", [dense(t, dim, tokens, 16)]), dim, 16, tokens)
    h = b.op("Add", [x, b.op("Transpose", [t], perm=[0, 2, 1])])
    h = b.op("Add", [h, dense(b.op("Relu", [dense(h, tokens, dim, 24)]), tokens, 24, dim)])
    b.nodes.append(helper.make_node("Identity", [dense(h, tokens, dim, 3)], ["y"]))
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, tokens, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, tokens, 3])])


def _check(tmp_path, proto, name="model.onnx", **kwargs):
    path = tmp_path / name
    onnx.save(proto, path)
    result = framework_zoo.check_file(path, **kwargs)
    assert not failures(result), result
    assert len(result["errors"]) == result["prunable"] + 1  # every group alone, and all together
    return result


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 18, 20])
def test_nhwc_transposes_dense_and_constant_weights_prune(tmp_path, opset):
    result = _check(tmp_path, keras_like_cnn(opset))
    # conv1/residual, the inner conv, the Dense hidden layer: the input and logits groups stay
    assert result["prunable"] == 3, result
    assert result["params_after"] < 0.8


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_batchnorm_between_transposes(tmp_path, fuse):
    result = _check(tmp_path, keras_like_cnn(13, constants=False, unfolded_bn=False), fuse_batchnorm=fuse)
    assert result["prunable"] == 3, result


def test_onnx_functions_are_inlined_and_prune(tmp_path):
    result = _check(tmp_path, mlp_with_functions(18))
    assert result["prunable"] == 2, result


def test_flattened_dense_token_mixing_prunes(tmp_path):
    # the residual width (12) and both hidden widths: token mixing (16) and channel mixing (24)
    result = _check(tmp_path, mixer_like(18))
    assert result["prunable"] == 3, result


# ---- the framework zoo, through the real exporters ------------------------------------------------

@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("framework_zoo")


# Every group alone too, on one or two models per framework in `make test`; the others go through the
# same exporter and whole-model check in the `spa export` tests below, and here with -m slow.
ZOO_SLOW = {("tf", "mobilenetv2"), ("jax", "cnn"), ("paddle", "resnet")}


@pytest.mark.parametrize("framework,name", [pytest.param(f, n, id=f"{f}-{n}",
                                                         marks=[pytest.mark.slow] if (f, n) in ZOO_SLOW else [])
                                            for f, n in framework_zoo.cases()])
def test_framework_zoo(zoo_dir, framework, name):
    why = framework_zoo.extra_available(framework)
    if why:
        pytest.skip(why)
    path = framework_zoo.export_in_child(framework, name, zoo_dir / f"{framework}_{name}.onnx")
    result = framework_zoo.check_file(path)
    assert not failures(result), result
    assert len(result["errors"]) == result["prunable"] + 1
    assert result["params_after"] < 1.0
    if (framework, name) == ("jax", "mixer"):
        assert result["prunable"] >= 4, result  # token- and channel-mixing hidden widths of both blocks


# tf mobilenetv2 at opset 13 and jax cnn at opset 20 are what the `spa export` tests below write
# and check: here with -m slow only
@pytest.mark.parametrize("framework,name,opset", [("tf", "resnet", 9), ("paddle", "lcnet", 11),
                                                  pytest.param("tf", "mobilenetv2", 13, marks=pytest.mark.slow),
                                                  pytest.param("jax", "cnn", 20, marks=pytest.mark.slow)])
def test_framework_opsets(zoo_dir, framework, name, opset):
    why = framework_zoo.extra_available(framework)
    if why:
        pytest.skip(why)
    path = framework_zoo.export_in_child(framework, name, zoo_dir / f"{framework}_{name}_{opset}.onnx", opset=opset)
    assert onnx.load(path).opset_import[0].version == opset
    result = framework_zoo.check_file(path, per_group=False)
    assert not failures(result), result


# ---- spa export on each kind of source --------------------------------------------------------

def _spa(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(framework_zoo.ROOT))
    return subprocess.run([sys.executable, "-m", "spa.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _python(code, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(framework_zoo.ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _exported(done, path, opset=None):
    assert done.returncode == 0 and "PASSED wrote" in done.stdout, (done.stdout + done.stderr)[-2000:]
    if opset is not None:
        assert onnx.load(path).opset_import[0].version == opset
    assert not failures(framework_zoo.check_file(path, per_group=False))


def test_cli_export_tf_keras_file_and_saved_model(tmp_path):
    why = framework_zoo.extra_available("tf")
    if why:
        pytest.skip(why)
    _python("from models.keras_zoo import build; m = build('mobilenetv2'); m.save('m.keras'); "
            "m.export('saved', verbose=False)", tmp_path)
    _exported(_spa("export", "tf", "m.keras", "-o", "k.onnx", cwd=tmp_path), tmp_path / "k.onnx")
    _exported(_spa("export", "tf", "saved", "-o", "s.onnx", "--opset", "13", cwd=tmp_path), tmp_path / "s.onnx", 13)


def test_cli_export_paddle_layer_and_inference_model(tmp_path):
    why = framework_zoo.extra_available("paddle")
    if why:
        pytest.skip(why)
    _exported(_spa("export", "paddle", "models.paddle_zoo:lcnet", "-o", "l.onnx", "--input-shape",
                   "image=1,3,32,32", cwd=tmp_path), tmp_path / "l.onnx")
    _python("import paddle; from models.paddle_zoo import build; paddle.jit.save(build('resnet'), 'inf/model', "
            "input_spec=[paddle.static.InputSpec([None, 3, 32, 32], 'float32', 'image')])", tmp_path)
    _exported(_spa("export", "paddle", "inf/model", "-o", "r.onnx", cwd=tmp_path), tmp_path / "r.onnx")
    done = _spa("export", "paddle", "models.paddle_zoo:lcnet", "-o", "x.onnx", cwd=tmp_path)  # no shapes
    assert done.returncode == 2 and "--input-shape" in done.stderr and not (tmp_path / "x.onnx").exists()


def test_cli_export_jax_factory(tmp_path):
    why = framework_zoo.extra_available("jax")
    if why:
        pytest.skip(why)
    _exported(_spa("export", "jax", "models.flax_zoo:cnn", "-o", "c.onnx", "--input-shape", "image=2,32,32,3",
                   "--opset", "20", cwd=tmp_path), tmp_path / "c.onnx", 20)
    done = _spa("export", "jax", "models.flax_zoo:cnn", "-o", "y.onnx", "--input-shape", "image=2,32,32,3",
                "--opset", "13", cwd=tmp_path)
    assert done.returncode == 2 and "opset 18" in done.stderr


# ---- errors ---------------------------------------------------------------------------------------

def test_missing_extra_is_one_line_error(monkeypatch):
    from spa.exporters import framework

    monkeypatch.setitem(framework.EXTRAS, "tf", (("spa_no_such_module",), "pip install 'spa-prune[tf]'"))
    with pytest.raises(SpaError) as info:
        framework.require("tf")
    message = str(info.value)
    assert "\n" not in message and "'tf' extra" in message and "pip install" in message
    assert info.value.exit_code == 2


def test_cli_missing_extra_exit_code(tmp_path):
    # A child whose import of tensorflow fails: the CLI prints one line and exits 2.
    code = ("import sys; sys.modules['tensorflow'] = None; from spa.cli import main; "
            f"sys.exit(main(['export', 'tf', 'x.keras', '-o', r'{tmp_path / 'o.onnx'}']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'tf' extra" in lines[0] and not (tmp_path / "o.onnx").exists()


def test_registry_owns_names_extras_and_export_functions():
    import importlib.util

    from spa.exporters import exporter_names, get_exporter
    from spa.exporters.framework import EXTRAS

    assert exporter_names() == ["hf", "tf", "jax", "paddle"]
    assert [get_exporter(n).name for n in exporter_names()] == exporter_names()
    assert get_exporter("hf").extra is None and get_exporter("hf").missing() is None  # core dependencies
    extras = {get_exporter(n).extra for n in exporter_names()} - {None}
    assert extras == set(EXTRAS) == {"tf", "jax", "paddle"}  # framework.EXTRAS is the registry's
    for name in exporter_names():
        exporter = get_exporter(name)
        # the module exists and is not imported by the registry (no framework loads for a name lookup)
        assert importlib.util.find_spec(f"spa.exporters.{exporter.module}") is not None
        assert exporter.summary and (exporter.extra is None or exporter.install.startswith("pip install"))
    assert callable(get_exporter("hf").export_function())


def test_unknown_exporter_names_the_choices():
    from spa.exporters import get_exporter

    with pytest.raises(UsageError, match="unknown exporter 'onnx2'.*hf, tf, jax, paddle"):
        get_exporter("onnx2")


def test_registry_export_checks_the_extra_first(monkeypatch, tmp_path):
    from spa.exporters import framework, get_exporter

    monkeypatch.setitem(framework.EXTRAS, "jax", (("spa_no_such_module",), "pip install 'spa-prune[jax]'"))
    assert "'jax' extra" in get_exporter("jax").missing()
    with pytest.raises(SpaError, match="'jax' extra"):
        get_exporter("jax").export("models.flax_zoo:cnn", tmp_path / "o.onnx", input_shapes={"x": [1, 2]})
    with pytest.raises(SpaError, match="'jax' extra"):
        framework.export_framework("jax", "models.flax_zoo:cnn", tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_opset_out_of_range():
    from spa.exporters.framework import check_opset

    assert check_opset(None) == 17
    with pytest.raises(UsageError):
        check_opset(8)
    with pytest.raises(UsageError):
        check_opset(21)

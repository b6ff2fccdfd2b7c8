"""`spa diff A B`: structural deltas and output comparison, checked against the files read with
onnx and ONNX Runtime directly; exit codes like Polygraphy's compare (0 match, 10 differ)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models import torchvision_zoo as zoo
from tests.cli.test_cli import build_cnn, float_params, inits, my_macs, run_cli

EXIT_OUTPUTS_DIFFER = 10  # documented in README; written here, not imported


@pytest.fixture(scope="module")
def resnet_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diff")
    original = zoo.cached_export("resnet18", "torchscript")
    pruned = tmp / "pruned.onnx"
    # the quick weight-only prune: diff's subject is the pair, not how it was pruned
    assert run_cli("prune", original, "-o", pruned, "--ratio", "0.3", "--quiet", "--criterion", "l2",
                   "--no-latency").returncode == 0
    return original, pruned


def diff_json(*args):
    done = run_cli("diff", *args, "--json")
    assert not done.stderr.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_model_against_itself_is_unchanged(resnet_pair):
    original, _ = resnet_pair
    code, result = diff_json(original, original, "--samples", "2")
    assert code == 0 and result["passed"]
    s = result["structure"]
    assert all(s[k]["delta"] == 0 for k in ("params", "macs", "nodes", "bytes"))
    assert s["ops"] == {} and s["shapes"] == [] and s["only_in_a"] == s["only_in_b"] == 0
    (out,) = result["outputs"]
    assert out["max_abs"] == 0 and out["mean_abs"] == 0 and out["cosine"] == pytest.approx(1.0)
    done = run_cli("diff", original, original)
    assert done.returncode == 0 and "PASSED outputs match" in done.stdout


def test_a_pruned_pair_reports_the_expected_deltas(resnet_pair):
    original, pruned = resnet_pair
    code, result = diff_json(original, pruned)
    assert code == EXIT_OUTPUTS_DIFFER and not result["passed"]
    s = result["structure"]
    assert (s["params"]["a"], s["params"]["b"]) == (float_params(original), float_params(pruned))
    assert s["params"]["delta"] == float_params(pruned) - float_params(original) < 0
    assert (s["macs"]["a"], s["macs"]["b"]) == (my_macs(original), my_macs(pruned))
    # the weights whose shapes changed are exactly those that differ between the files
    a, b = inits(original), inits(pruned)
    changed = {n for n in a if n in b and a[n].shape != b[n].shape}
    assert changed and {c["name"] for c in s["shapes"] if c["kind"] == "weight"} == changed
    for c in s["shapes"]:
        if c["kind"] == "weight":
            assert (tuple(c["a"]), tuple(c["b"])) == (a[c["name"]].shape, b[c["name"]].shape)
    # the output comparison, recomputed with ONNX Runtime on the same (seed 0) input
    from spa.graph import io
    from spa.runtime.validate import random_inputs

    feeds = random_inputs(io.load(original), 0)
    ya = ort.InferenceSession(str(original)).run(None, feeds)[0].astype(np.float64).ravel()
    yb = ort.InferenceSession(str(pruned)).run(None, feeds)[0].astype(np.float64).ravel()
    (out,) = result["outputs"]
    assert out["max_abs"] == pytest.approx(np.abs(ya - yb).max(), rel=1e-6)
    assert out["mean_abs"] == pytest.approx(np.abs(ya - yb).mean(), rel=1e-6)
    assert out["cosine"] == pytest.approx(ya @ yb / np.linalg.norm(ya) / np.linalg.norm(yb), rel=1e-6)
    done = run_cli("diff", original, pruned)
    assert done.returncode == EXIT_OUTPUTS_DIFFER and "FAILED outputs differ" in done.stdout


def test_tolerances_decide_the_exit_code(resnet_pair):
    original, pruned = resnet_pair
    code, result = diff_json(original, pruned)
    worst = result["outputs"][0]["max_abs"]
    assert diff_json(original, pruned, "--atol", str(worst * 1.01))[0] == 0
    assert diff_json(original, pruned, "--atol", str(worst * 0.5))[0] == EXIT_OUTPUTS_DIFFER
    assert diff_json(original, pruned, "--no-outputs")[0] == 0


def test_given_inputs_are_used(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(build_cnn(seed=1), a)
    onnx.save(build_cnn(seed=2), b)  # same graph, other weights
    x = np.random.default_rng(7).standard_normal((3, 1, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x[:, 0])
    code, result = diff_json(a, b, "--inputs", tmp_path / "in.npz", "--samples", "3")
    assert code == EXIT_OUTPUTS_DIFFER
    sa, sb = ort.InferenceSession(str(a)), ort.InferenceSession(str(b))
    ya = np.stack([sa.run(None, {"x": xi})[0] for xi in x])
    yb = np.stack([sb.run(None, {"x": xi})[0] for xi in x])
    assert result["outputs"][0]["max_abs"] == pytest.approx(float(np.abs(ya - yb).max()), rel=1e-6)
    assert result["structure"]["params"]["delta"] == 0 and result["structure"]["shapes"] == []


@pytest.mark.parametrize("make_args, message", [
    (lambda t: [t / "missing.onnx", t / "a.onnx"], "no such file"),
    (lambda t: [t / "a.onnx", t / "a.onnx", "--inputs", t / "none.npz"], "no such file"),
    (lambda t: [t / "a.onnx", t / "a.onnx", "--atol", "-1"], "non-negative"),
    (lambda t: [t / "a.onnx", t / "other_input.onnx"], "inputs differ"),
])
def test_bad_requests_are_one_line_errors(tmp_path, make_args, message):
    onnx.save(build_cnn(), tmp_path / "a.onnx")
    other = build_cnn()
    other.graph.input[0].name = "y"
    for node in other.graph.node:
        node.input[:] = ["y" if i == "x" else i for i in node.input]
    onnx.save(other, tmp_path / "other_input.onnx")
    done = run_cli("diff", *make_args(tmp_path))
    assert done.returncode not in (0, 1, EXIT_OUTPUTS_DIFFER)  # an error, not a bug and not a verdict
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr

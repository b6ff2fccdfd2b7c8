"""The `spa` command, run for real as a subprocess (`python -m spa.cli` and the installed script).

Every claim is checked against facts measured here: ONNX initializers, onnx.checker, ONNX Runtime
outputs, file bytes and hashes — never against numbers the CLI itself prints."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.graphs import GraphBuilder

SPA_SCRIPT = Path(sys.executable).parent / "spa"
ROOT = Path(__file__).resolve().parents[2]

# The test CNN: x(1,3,16,16) → c1(16) → relu → c2(24) → relu → c3(12) → relu → GAP → Flatten → fc(10).
# Three prunable groups (the outputs of c1, c2, c3); c-named weights keep their names through SPA.
CONVS = [("c1", 3, 16), ("c2", 16, 24), ("c3", 24, 12)]


def build_cnn(widths=(16, 24, 12), seed: int = 1, batch=1, bn: bool = False) -> onnx.ModelProto:
    b = GraphBuilder(seed=seed)
    h = b.input("x", (batch, 3, 16, 16))
    c_in = 3
    for i, c_out in enumerate(widths, start=1):
        w = b.weight((c_out, c_in, 3, 3), name=f"c{i}.w")
        bias = b.weight((c_out,), name=f"c{i}.b")
        b.nodes.append(onnx.helper.make_node("Conv", [h, w, bias], [f"c{i}.out"], name=f"C{i}", pads=[1] * 4))
        h = f"c{i}.out"
        if bn and i == 1:
            scale = b.weight(None, name="bn.s", data=(np.abs(b.rng.standard_normal(c_out)) + 0.5).astype(np.float32))
            shift = b.weight((c_out,), name="bn.b")
            mean = b.weight((c_out,), name="bn.m")
            var = b.weight(None, name="bn.v", data=(np.abs(b.rng.standard_normal(c_out)) + 0.5).astype(np.float32))
            b.nodes.append(onnx.helper.make_node("BatchNormalization", [h, scale, shift, mean, var], ["bn.out"],
                                                 name="BN1"))
            h = "bn.out"
        b.nodes.append(onnx.helper.make_node("Relu", [h], [f"r{i}.out"], name=f"R{i}"))
        h = f"r{i}.out"
        c_in = c_out
    h = b.op("GlobalAveragePool", [h])
    h = b.op("Flatten", [h])
    y = b.op("Gemm", [h, b.weight((10, c_in), name="fc.w"), b.weight((10,), name="fc.b")], transB=1)
    b.output(y)
    return b.proto()


# ---------------------------------------------------------------- helpers measured independently


def run_cli(*args, script: bool = False, cwd=None, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [str(SPA_SCRIPT)] if script else [sys.executable, "-m", "spa.cli"]
    env = dict(os.environ)
    env.pop("SPA_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env=env)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under root, with the hash of each file."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = sha(p) if p.is_file() else "<dir>"
    return out


def inits(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def float_params(path) -> int:
    return sum(a.size for a in inits(path).values() if np.issubdtype(a.dtype, np.floating))


def my_macs(path) -> int:
    """Conv and Gemm MACs from ONNX shape inference (the only MAC ops of the test models)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = weights[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            w = weights[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]])) * w[1]  # transB=1: w is (N, K)
    return macs


def ort_run(path_or_proto, feeds):
    data = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess, sess.run(None, feeds)


def feeds_for(batch=1, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def kept_rows(original_bias: np.ndarray, pruned_bias: np.ndarray) -> np.ndarray:
    """Which original channels survive, found by matching the (random, distinct) bias values."""
    idx = [int(np.flatnonzero(original_bias == v)[0]) for v in pruned_bias]
    assert len(set(idx)) == len(idx)
    return np.asarray(idx)


def check_pruned_model(original: Path, pruned: Path):
    """A pruned chain CNN must be exactly the original with some channels cut out: every weight a
    sub-array of the original's, and its outputs equal to the original with those channels masked
    (zeroed where the next layer reads them). Returns the kept indices per conv."""
    model = onnx.load(str(pruned))
    onnx.checker.check_model(model, full_check=True)
    a, b = inits(original), inits(pruned)
    kept, prev = {}, np.arange(3)
    for name, _, _ in CONVS:
        k = kept_rows(a[f"{name}.b"], b[f"{name}.b"])
        np.testing.assert_array_equal(b[f"{name}.w"], a[f"{name}.w"][k][:, prev])
        kept[name], prev = k, k
    np.testing.assert_array_equal(b["fc.w"], a["fc.w"][:, prev])
    np.testing.assert_array_equal(b["fc.b"], a["fc.b"])
    # the masked original: zero the input columns of removed channels in each consumer
    masked = onnx.load(str(original))
    consumers = {"c1": "c2.w", "c2": "c3.w", "c3": "fc.w"}
    for t in masked.graph.initializer:
        for conv, consumer in consumers.items():
            if t.name == consumer:
                arr = numpy_helper.to_array(t).copy()
                drop = np.setdiff1d(np.arange(arr.shape[1]), kept[conv])
                arr[:, drop] = 0
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
    feeds = feeds_for()
    s_orig, _ = ort_run(original, feeds)
    s_pruned, got = ort_run(pruned, feeds)
    _, want = ort_run(masked, feeds)
    assert [i.name for i in s_pruned.get_inputs()] == [i.name for i in s_orig.get_inputs()]
    assert [o.name for o in s_pruned.get_outputs()] == [o.name for o in s_orig.get_outputs()]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))
    return kept


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    onnx.save(build_cnn(), str(path))
    return path


@pytest.fixture
def model(tmp_path, cnn_file) -> Path:
    """A private copy of the CNN in its own folder."""
    path = tmp_path / "in" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(cnn_file.read_bytes())
    return path


# ---------------------------------------------------------------- inspect / groups


def test_inspect_json(cnn_file):
    r = run_cli("inspect", cnn_file, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {"opset", "inputs", "outputs", "params", "macs", "ops", "groups"} <= set(data)
    proto = onnx.load(str(cnn_file))
    assert data["opset"] == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert [v["name"] for v in data["inputs"]] == [v.name for v in proto.graph.input]
    assert [v["name"] for v in data["outputs"]] == [v.name for v in proto.graph.output]
    assert data["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert data["params"] == float_params(cnn_file)
    assert data["macs"] == my_macs(cnn_file)
    assert data["ops"]["Conv"] == 3 and data["ops"]["Gemm"] == 1
    assert data["groups"]["prunable"] == 3
    assert data["groups"]["prunable_channels"] == 16 + 24 + 12


def test_inspect_table_via_installed_script(cnn_file):
    assert SPA_SCRIPT.exists()
    r = run_cli("inspect", cnn_file, script=True)
    assert r.returncode == 0, r.stderr
    assert "Conv 3" in r.stdout and str(cnn_file.name) in r.stdout
    assert r.stderr == ""


def test_groups_json(cnn_file):
    r = run_cli("groups", cnn_file, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert {"key", "width", "prunable", "reason"} <= set(row)
        assert (row["reason"] is None) == row["prunable"]
        if not row["prunable"]:
            assert isinstance(row["reason"], str) and row["reason"]
    assert sorted(r["width"] for r in rows if r["prunable"]) == [12, 16, 24]
    # the group holding c2's output rows has c2's width
    by_param = {p: row for row in rows for p in row.get("params", [])}
    assert by_param["c2.w:0"]["width"] == 24 and by_param["c2.w:0"]["prunable"]


# ---------------------------------------------------------------- prune


# The weight-only, unrounded configuration: check_pruned_model finds the kept channels by their
# untouched biases, which compensation (the default's obspa) changes and rounding moves.
PLAIN_L2 = ("--criterion", "l2", "--round-to", "1")


def test_prune_json_verify_plan_and_reapply(model, tmp_path):
    before = sha(model)
    out, plan = tmp_path / "out.onnx", tmp_path / "plan.json"
    r = run_cli("prune", model, "-o", out, "--json", "--verify", "--plan-out", plan, *PLAIN_L2)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {"before", "after", "groups_pruned", "output"} <= set(data)
    assert Path(data["output"]) == out and out.is_file()
    assert data["oracle_error"] is not None and data["oracle_error"] < 1e-4
    assert sha(model) == before, "the input model was modified"
    assert float_params(out) < float_params(model)
    assert data["before"]["params"] == float_params(model) and data["after"]["params"] == float_params(out)
    kept = check_pruned_model(model, out)
    assert data["groups_pruned"] == sum(len(k) < w for (_, _, w), k in zip(CONVS, kept.values())) == 3
    # l2, unrounded: local 30% of every group's channels
    assert [len(k) for k in kept.values()] == [w - int(0.3 * w) for _, _, w in CONVS]

    # re-apply the saved plan to a fresh copy
    plan_json = json.loads(plan.read_text())
    assert plan_json["spa_plan"] == 1 and plan_json["groups"]
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(model.read_bytes())
    out2 = tmp_path / "out2.onnx"
    r = run_cli("prune", copy, "-o", out2, "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    a, b = inits(out), inits(out2)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_ratio_zero_keeps_the_function(model, tmp_path):
    out = tmp_path / "same.onnx"
    r = run_cli("prune", model, "-o", out, "--ratio", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups_pruned"] == 0
    assert float_params(out) == float_params(model)
    feeds = feeds_for(seed=3)
    _, want = ort_run(model, feeds)
    _, got = ort_run(out, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["params", "macs"])
def test_target_reaches_reduction(model, tmp_path, target):
    out = tmp_path / "t.onnx"
    r = run_cli("prune", model, "-o", out, "--target", target, "--ratio", "0.3", "--json", *PLAIN_L2)
    assert r.returncode == 0, r.stderr
    if target == "params":
        reduction = 1 - float_params(out) / float_params(model)
    else:
        inspected = run_cli("inspect", out, "--json")
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["macs"] == my_macs(out)
        reduction = 1 - my_macs(out) / my_macs(model)
    assert 0.3 <= reduction < 0.5, reduction
    check_pruned_model(model, out)


def test_round_to_8_with_table_output(model, tmp_path):
    out = tmp_path / "out" / "r.onnx"
    out.parent.mkdir()
    r = run_cli("prune", model, "-o", out, "--ratio", "0.5", "--round-to", "8")
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stdout and "PASSED" in r.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.onnx"]  # no temp files left
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.onnx"]
    a, b = inits(model), inits(out)
    pruned = 0
    for name, _, width in CONVS:
        kept = b[f"{name}.w"].shape[0]
        if kept != width:
            pruned += 1
            assert width < 8 or kept % 8 == 0, (name, width, kept)
    assert pruned == 3  # 16 → 8, 24 → 16, 12 → 8
    assert b["c1.w"].shape[0] == 8 and b["c3.w"].shape[0] == 8
    assert a["c2.w"].shape[0] == 24


@pytest.mark.parametrize("name", ["c2.out", "C2"], ids=["tensor", "node"])
def test_protect_keeps_that_conv_whole(model, tmp_path, name):
    out = tmp_path / "p.onnx"
    r = run_cli("prune", model, "-o", out, "--ratio", "0.5", "--protect", name, *PLAIN_L2)
    assert r.returncode == 0, r.stderr
    b = inits(out)
    assert b["c2.w"].shape[0] == 24
    assert b["c3.w"].shape[0] < 12  # the rest is still pruned
    check_pruned_model(model, out)


def test_protect_conv_followed_by_batchnorm(tmp_path):
    path = tmp_path / "bn.onnx"
    onnx.save(build_cnn(bn=True), str(path))
    out = tmp_path / "p.onnx"
    r = run_cli("prune", path, "-o", out, "--ratio", "0.5", "--protect", "C1")
    assert r.returncode == 0, r.stderr
    assert inits(out)["c1.w"].shape[0] == 16


def test_input_shape_fixes_dynamic_batch(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(build_cnn(batch="N"), str(path))
    out = tmp_path / "o.onnx"
    r = run_cli("prune", path, "-o", out, "--input-shape", "x=2,3,16,16", "--json", "--round-to", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups_pruned"] == 3
    sess, (y,) = ort_run(out, feeds_for(batch=2))
    assert y.shape == (2, 10)


# ---------------------------------------------------------------- failures
# Every failure case gets its own folder holding a copy of the CNN (model.onnx). The cases run
# two at a time (tests/cli_runner.py) and each test then checks its own result.


def assert_one_line_error(r: subprocess.CompletedProcess):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spa: error:"), r.stderr


def _bad_file(write):
    def setup(d: Path):
        write(d / "bad.onnx")
        return ["prune", d / "bad.onnx", "-o", d / "out.onnx"]
    return setup


def _garbage(p: Path):
    p.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _truncated(p: Path):
    full = build_cnn().SerializeToString()
    p.write_bytes(full[: len(full) // 2])


def _prune(*extra):
    return lambda d: ["prune", d / "model.onnx", "-o", d / "out.onnx", *extra]


def _plan_file(text):
    def setup(d: Path):
        (d / "plan.json").write_text(text)
        return ["prune", d / "model.onnx", "-o", d / "out.onnx", "--plan", d / "plan.json"]
    return setup


def _calib_of_wrong_shape(d: Path):
    np.savez(d / "calib.npz", x=np.zeros((2, 3, 5, 5), np.float32))
    return ["prune", d / "model.onnx", "-o", d / "out.onnx", "--criterion", "obspa", "--hessian", "data",
            "--calib", d / "calib.npz"]


def _plan_of_other_model(d: Path):
    from spa.flow.pipeline import prune

    # the same architecture with c1 20 wide: the plan's group keys exist, their widths do not fit
    prune(build_cnn(widths=(20, 24, 12))).plan.save(d / "plan.json")
    return ["prune", d / "model.onnx", "-o", d / "out.onnx", "--plan", d / "plan.json"]


def _plan_out_folder(d: Path):
    (d / "plans").mkdir()
    return ["prune", d / "model.onnx", "-o", d / "out.onnx", "--plan-out", d / "plans"]


def _external_without_data(d: Path):
    from spa.graph import io

    io.save(io.load(build_cnn()), d / "ext.onnx", external_data=True)
    (d / "ext.onnx.data").unlink()
    return ["prune", "ext.onnx", "-o", "out.onnx"], d  # run from the model's folder


# (setup(folder) -> args or (args, cwd), substring the error must contain, marks)
FAILURES = {
    "missing-file": (lambda d: ["prune", d / "nope.onnx", "-o", d / "out.onnx"], "nope.onnx", ()),
    "directory": (_bad_file(lambda p: p.mkdir()), "", ()),
    "garbage-bytes": (_bad_file(_garbage), "", ()),
    "empty-file": (_bad_file(lambda p: p.write_bytes(b"")), "", ()),
    "truncated-model": (_bad_file(_truncated), "", ()),
    "text-file": (_bad_file(lambda p: p.write_text("ir_version: 8\ngraph { name: 'text' }\n")), "", ()),
    "groups-truncated": (lambda d: (_truncated(d / "bad.onnx"), ["groups", d / "bad.onnx"])[1], "", ()),
    "inspect-garbage": (lambda d: (_garbage(d / "bad.onnx"), ["inspect", d / "bad.onnx", "--json"])[1], "", ()),
    "ratio-1.0": (_prune("--ratio", "1.0"), "ratio", ()),
    "ratio-negative": (_prune("--ratio", "-0.1"), "ratio", ()),
    "ratio-abc": (_prune("--ratio", "abc"), "ratio", ()),
    "input-shape-syntax": (_prune("--input-shape", "x=1,3,a"), "input-shape", ()),
    "input-shape-no-name": (_prune("--input-shape", "1,3,16,16"), "input-shape", ()),
    "input-shape-unknown-input": (_prune("--input-shape", "y=1,3,16,16"), "'y'", ()),
    "input-shape-wrong-rank": (_prune("--input-shape", "x=1,3,16"), "rank", ()),
    "round-to-0": (_prune("--round-to", "0"), "round-to", ()),
    "output-is-input": (lambda d: ["prune", d / "model.onnx", "-o", d / ".." / d.name / "model.onnx"], "input", ()),
    "output-folder-missing": (lambda d: ["prune", d / "model.onnx", "-o", d / "nope" / "out.onnx"], "nope", ()),
    "protect-unknown": (_prune("--protect", "nosuchname"), "nosuchname", ()),
    "plan-not-json": (_plan_file("{not json"), "plan", ()),
    "plan-not-a-plan": (_plan_file('{"groups": []}'), "plan", ()),
    "plan-of-other-model": (_plan_of_other_model, "width", ()),
    "plan-width-not-a-number": (
        _plan_file('{"spa_plan": 1, "groups": [{"key": "c1.b:0", "width": "x", "remove": [0]}]}'), "",
        ()),
    "plan-groups-not-a-list": (
        _plan_file('{"spa_plan": 1, "groups": 5}'), "", ()),
    "plan-out-is-the-input": (
        lambda d: ["prune", d / "model.onnx", "-o", d / "out.onnx", "--plan-out", d / "model.onnx"], "",
        ()),
    "plan-out-is-a-folder": (
        _plan_out_folder, "", ()),
    "external-data-missing": (
        _external_without_data, "",
        ()),
    "hessian-data-without-calib": (_prune("--criterion", "obspa", "--hessian", "data"), "--calib", ()),
    "calib-missing-file": (_prune("--compensate", "--hessian", "data", "--calib", "nope.npz"), "nope.npz", ()),
    "calib-wrong-shape": (_calib_of_wrong_shape, "calibration inputs", ()),
    "unknown-subcommand": (lambda d: ["frobnicate", d / "model.onnx"], "frobnicate", ()),
    "missing-output": (lambda d: ["prune", d / "model.onnx"], "-o", ()),
}


@pytest.fixture(scope="module")
def failure_runs(tmp_path_factory, cnn_file):
    """Run every failure case and record (result, tree before, tree after). The cases need no
    process of their own (no environment, stdin or signal of their own): they run through
    `python -m spa.cli`'s entry point in two long-lived interpreters (tests/cli_runner.py), each
    with its own working folder, stdout, stderr and exit code; run_cli's real subprocesses are
    checked by the tests above."""
    from tests.cli_runner import run_many

    prepared = {}
    for name, (setup, _, _) in FAILURES.items():
        d = tmp_path_factory.mktemp(name)
        (d / "model.onnx").write_bytes(cnn_file.read_bytes())
        spec = setup(d)
        args, cwd = spec if isinstance(spec, tuple) else (spec, None)
        prepared[name] = (d, args, cwd, tree(d))
    runs = run_many([(args, cwd) for _, args, cwd, _ in prepared.values()], workers=2, timeout=120)
    return {name: (r, before, tree(d)) for (name, (d, _, _, before)), r in zip(prepared.items(), runs)}


@pytest.mark.parametrize("case", [pytest.param(name, marks=marks) for name, (_, _, marks) in FAILURES.items()])
def test_failure_is_one_line_and_writes_nothing(failure_runs, case):
    r, before, after = failure_runs[case]
    # nothing written (no output, no temp files, no plan), the input model and every other file untouched
    assert after == before
    assert_one_line_error(r)
    assert FAILURES[case][1] in r.stderr


def test_prune_external_data_model(tmp_path):
    from spa.graph import io

    path = tmp_path / "ext.onnx"
    io.save(io.load(build_cnn()), path, external_data=True)
    out = tmp_path / "out.onnx"
    r = run_cli("prune", path, "-o", out, "--ratio", "0.5")  # cwd: the repository, not tmp_path
    assert r.returncode == 0, r.stderr
    assert float_params(out) < float_params(path)

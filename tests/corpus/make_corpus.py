"""The bad-input corpus: every way a model, its external data, a plan or the options can be wrong.

    .venv/bin/python -m tests.corpus.make_corpus OUT_DIR    # write the cases and OUT_DIR/cases.json

Each case is a folder holding what it needs (a small model, data files, plans, symlinks) and the
`spa` arguments that must fail, with the exit code and a word the one-line error must contain.
Files are tiny (a few KB) and written fresh for every test run, so symlinks, permissions and
hard links are real. tests/cli/test_corpus.py runs every case through the CLI.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from spa.core.errors import InputError, OutputError, PlanError, UnsafePathError, UnsupportedError, UsageError

USAGE, INPUT, UNSAFE, UNSUPPORTED, OUTPUT, PLAN = (e.exit_code for e in (
    UsageError, InputError, UnsafePathError, UnsupportedError, OutputError, PlanError))


@dataclass
class Case:
    name: str
    args: list[str]      # `spa` arguments, relative to the case folder (the command runs there)
    exit_code: int
    contains: str        # a word the error line must contain (case-insensitive)


# ---------------------------------------------------------------- small models


def cnn(opset: int = 18, seed: int = 0, widths=(8, 6, 4), side: int = 8, bias: bool = True) -> onnx.ModelProto:
    """x(1,3,side,side) → conv 8 → relu → conv 6 → relu → conv 4 (y): two prunable groups."""
    rng = np.random.default_rng(seed)
    inits, nodes, h, c_in = [], [], "x", 3
    for i, c_out in enumerate(widths, start=1):
        inits.append(numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32), f"w{i}"))
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [h, f"w{i}"] + ([f"b{i}"] if bias else []), [f"c{i}"], name=f"conv{i}",
                                      pads=[1] * 4))
        h, c_in = f"c{i}", c_out
        if i < len(widths):
            nodes.append(helper.make_node("Relu", [h], [f"r{i}"], name=f"relu{i}"))
            h = f"r{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, widths[-1], side, side])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def external(model: onnx.ModelProto, name: str, location: str, data_file: Path | None,
             offset: int = 0, length: int | None = None) -> onnx.ModelProto:
    """Move initializer `name` out to `location`; write its bytes to data_file (if given)."""
    for t in model.graph.initializer:
        if t.name == name:
            raw = numpy_helper.to_array(t).tobytes()
            if data_file is not None:
                data_file.write_bytes(b"\0" * offset + raw)
            t.ClearField("float_data")
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            entries = {"location": location, "offset": str(offset), "length": str(length or len(raw))}
            for key, value in entries.items():
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            return model
    raise KeyError(name)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _prune(*extra: str) -> list[str]:
    return ["prune", "model.onnx", "-o", "out.onnx", *extra]


# ---------------------------------------------------------------- the cases


def _bad_model_files(d: Path, name: str) -> Case | None:
    full = cnn().SerializeToString()
    writers = {
        "empty-file": lambda p: p.write_bytes(b""),
        "garbage-bytes": lambda p: p.write_bytes(np.random.default_rng(7).integers(0, 256, 2048, np.uint8).tobytes()),
        "truncated-half": lambda p: p.write_bytes(full[: len(full) // 2]),
        "truncated-header": lambda p: p.write_bytes(full[:9]),
        "text-not-protobuf": lambda p: p.write_text("ir_version: 8\ngraph { name: 'text' }\n"),
        "json-file": lambda p: p.write_text('{"graph": {}}'),
        "empty-graph": lambda p: save(helper.make_model(helper.make_graph([], "g", [], [])), p),
    }
    if name not in writers:
        return None
    writers[name](d / "model.onnx")
    return Case(name, _prune(), INPUT, "onnx" if name != "empty-file" else "empty")


BAD_FILES = ["empty-file", "garbage-bytes", "truncated-half", "truncated-header", "text-not-protobuf", "json-file",
             "empty-graph"]


def _external_cases(d: Path) -> dict[str, Case]:
    """Each builder writes into its own folder `d/<name>` (the model) and `d/outside` (a sentinel)."""
    out = {}

    def case(name, exit_code, contains, location, *, data=None, offset=0, length=None, prepare=None):
        folder = d / name
        folder.mkdir()
        if prepare:
            prepare(folder)
        save(external(cnn(), "w2", location, data(folder) if data else None, offset, length), folder / "model.onnx")
        out[name] = Case(name, [*_prune()], exit_code, contains)

    sentinel = lambda f: f.parent / "outside" / "secret.bin"  # noqa: E731
    case("external-missing", INPUT, "missing", "model.data")
    case("external-truncated", INPUT, "truncated", "model.data", data=lambda f: f / "model.data")
    # truncate after writing: keep the first half of the tensor's bytes
    p = d / "external-truncated" / "model.data"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    case("external-length-mismatch", INPUT, "length", "model.data", data=lambda f: f / "model.data", length=12)
    case("external-is-a-folder", INPUT, "regular file", "weights", prepare=lambda f: (f / "weights").mkdir())
    case("external-dotdot", UNSAFE, "..", "../outside/secret.bin", data=sentinel)
    case("external-nested-dotdot", UNSAFE, "..", "sub/../../outside/secret.bin", data=sentinel,
         prepare=lambda f: (f / "sub").mkdir())
    case("external-absolute", UNSAFE, "absolute", str((d / "outside" / "secret.bin").resolve()), data=sentinel)
    case("external-symlink-file", UNSAFE, "symlink", "model.data", data=sentinel,
         prepare=lambda f: (f / "model.data").symlink_to(f.parent / "outside" / "secret.bin"))
    case("external-symlink-folder", UNSAFE, "symlink", "weights/secret.bin", data=sentinel,
         prepare=lambda f: (f / "weights").symlink_to(f.parent / "outside", target_is_directory=True))
    case("external-symlink-relative", UNSAFE, "symlink", "model.data", data=sentinel,
         prepare=lambda f: (f / "model.data").symlink_to("../outside/secret.bin"))

    case("external-hardlink", UNSAFE, "hard link", "model.data", data=sentinel)
    os.link(d / "outside" / "secret.bin", d / "external-hardlink" / "model.data")
    # a Constant node's value stored outside the folder (not an initializer)
    folder = d / "external-constant-node"
    folder.mkdir()
    model = cnn()
    tensor = numpy_helper.from_array(np.ones((1, 8, 1, 1), np.float32), "k")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../outside/secret.bin"), ("offset", "0"), ("length", "32")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    model.graph.node.insert(0, helper.make_node("Constant", [], ["k"], name="const_k", value=tensor))
    model.graph.node[2].input[0] = "r1_scaled"  # relu1 now reads r1_scaled = c1 * k
    model.graph.node.insert(2, helper.make_node("Mul", ["c1", "k"], ["r1_scaled"], name="scale"))
    save(model, folder / "model.onnx")
    out["external-constant-node"] = Case("external-constant-node", _prune(), UNSAFE, "..")
    return out


def _model_cases(d: Path) -> dict[str, Case]:
    """Well-formed models SPA refuses (or that are invalid ONNX)."""
    cases: dict[str, tuple[onnx.ModelProto, int, str]] = {}

    m = cnn(opset=99)
    cases["opset-too-new"] = (m, UNSUPPORTED, "opset 99")
    cases["opset-too-old"] = (cnn(opset=3), UNSUPPORTED, "opset 3")
    m = cnn()
    m.ir_version = 99
    cases["ir-version-too-new"] = (m, UNSUPPORTED, "IR version 99")
    m = cnn()
    m.ir_version = 2
    cases["ir-version-too-old"] = (m, UNSUPPORTED, "IR version 2")
    m = cnn()
    m.graph.node[1].op_type, m.graph.node[1].domain = "FancyAct", "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    cases["custom-domain-op"] = (m, UNSUPPORTED, "com.example")
    m = cnn()
    m.graph.node[1].op_type = "NoSuchOp"
    cases["unknown-standard-op"] = (m, INPUT, "NoSuchOp")
    m = cnn(opset=11)
    m.graph.node[1].op_type = "Gelu"  # an ONNX op, but only from opset 20
    cases["op-newer-than-opset"] = (m, INPUT, "Gelu")
    for op in ("If", "Loop", "Scan"):
        cases[f"control-flow-{op.lower()}"] = (_control_flow(op), UNSUPPORTED, "nothing to prune")
    cases["dynamic-channels"] = (_weights_as_inputs(), UNSUPPORTED, "nothing to prune")
    m = cnn()
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros((0, 3, 3, 3), np.float32), "w1"))
    cases["zero-sized-weight"] = (m, UNSUPPORTED, "zero-sized")
    m = cnn()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    cases["zero-sized-input"] = (m, UNSUPPORTED, "zero-sized")
    m = cnn()
    m.graph.node[1].output[0] = "c1"  # relu1 writes c1, which conv1 already produced
    m.graph.node[2].input[0] = "c1"
    cases["duplicate-tensor-names"] = (m, INPUT, "more than once")
    m = cnn()
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(8, np.float32), "b1"))
    cases["duplicate-initializers"] = (m, INPUT, "b1")
    out = {}
    for name, (model, code, contains) in cases.items():
        (d / name).mkdir()
        save(model, d / name / "model.onnx")
        out[name] = Case(name, _prune(), code, contains)
    return out


def _control_flow(op: str) -> onnx.ModelProto:
    """conv1 → <op> (its body reads conv1's output directly) → conv2 → y: every channel path
    passes through control flow."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    out_info = helper.make_tensor_value_info("body_out", TensorProto.FLOAT, [1, 8, 8, 8])
    inits = [w1, w2]
    if op == "If":
        branch = helper.make_graph([helper.make_node("Relu", ["c1"], ["body_out"])], "branch", [], [out_info])
        cf = helper.make_node("If", ["cond"], ["h"], then_branch=branch, else_branch=branch, name="if")
    elif op == "Loop":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Relu", ["c1"], ["body_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), out_info])
        cf = helper.make_node("Loop", ["trip", "cond"], ["h_scan"], body=body, name="loop")
        inits += [numpy_helper.from_array(np.array(1, np.int64), "trip"),
                  numpy_helper.from_array(np.array(True), "cond")]
    else:  # Scan over the batch axis; the body also reads the outer (squeezed) conv1 output
        body = helper.make_graph(
            [helper.make_node("Add", ["s_in", "c1s"], ["body_out"])], "body",
            [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [8, 8, 8])],
            [helper.make_tensor_value_info("body_out", TensorProto.FLOAT, [8, 8, 8])])
        cf = helper.make_node("Scan", ["c1"], ["h"], body=body, num_scan_inputs=1, name="scan")
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4), cf]
    if op == "Scan":
        nodes.insert(1, helper.make_node("Squeeze", ["c1", "axis0"], ["c1s"], name="squeeze"))
    if op == "Loop":  # Loop stacks its scan output: (1, 1, 8, 8, 8) → back to (1, 8, 8, 8)
        inits.append(numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["h_scan", "shape"], ["h"], name="reshape"))
    nodes.append(helper.make_node("Conv", ["h", "w2"], ["y"], name="conv2", pads=[1] * 4))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if op == "If":  # a run-time condition, so the optimizer cannot fold the control flow away
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    graph = helper.make_graph(nodes, "cf", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _weights_as_inputs() -> onnx.ModelProto:
    """Weights fed at run time with symbolic shapes: no channel width is known."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    w1 = helper.make_tensor_value_info("w1", TensorProto.FLOAT, ["C1", 3, 3, 3])
    w2 = helper.make_tensor_value_info("w2", TensorProto.FLOAT, [4, "C1", 3, 3])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1] * 4)]
    graph = helper.make_graph(nodes, "dyn", [x, w1, w2], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _option_cases(d: Path) -> dict[str, Case]:
    """The model is fine; the request is not."""
    specs = {
        "ratio-one": (_prune("--ratio", "1.0"), USAGE, "ratio"),
        "ratio-negative": (_prune("--ratio", "-0.2"), USAGE, "ratio"),
        "ratio-nan": (_prune("--ratio", "nan"), USAGE, "ratio"),
        "ratio-not-a-number": (_prune("--ratio", "lots"), USAGE, "ratio"),
        "min-width-zero": (_prune("--min-width", "0"), USAGE, "min-width"),
        "unknown-option": (_prune("--frobnicate"), USAGE, "frobnicate"),
        "conflict-plan-and-global": (_prune("--plan", "plan.json", "--global"), USAGE, "--global"),
        "conflict-calib-without-data-hessian": (_prune("--calib", "calib.npz"), USAGE, "--calib"),
        "hessian-data-without-calib": (_prune("--criterion", "obspa", "--hessian", "data"), USAGE, "--calib"),
        "missing-model": (["prune", "nope.onnx", "-o", "out.onnx"], INPUT, "nope.onnx"),
        "model-is-a-folder": (["prune", "folder.onnx", "-o", "out.onnx"], INPUT, "onnx model"),
        "output-is-the-input": (["prune", "model.onnx", "-o", "./model.onnx"], OUTPUT, "input"),
        "output-is-the-input-via-symlink": (["prune", "model.onnx", "-o", "link.onnx"], OUTPUT, "input"),
        "output-folder-missing": (["prune", "model.onnx", "-o", "nope/out.onnx"], OUTPUT, "does not exist"),
        "output-folder-read-only": (["prune", "model.onnx", "-o", "locked/out.onnx"], OUTPUT, "read-only"),
        "output-is-a-folder": (["prune", "model.onnx", "-o", "folder.onnx"], OUTPUT, "folder"),
        "plan-out-is-the-input": (_prune("--plan-out", "model.onnx"), OUTPUT, "input"),
        "plan-out-is-the-output": (_prune("--plan-out", "out.onnx"), OUTPUT, "overwrite"),
        "plan-missing": (_prune("--plan", "nope.json"), PLAN, "nope.json"),
        "plan-not-json": (_prune("--plan", "bad.json"), PLAN, "json"),
        "plan-not-a-plan": (_prune("--plan", "notaplan.json"), PLAN, "plan"),
        "plan-of-another-model": (_prune("--plan", "other.json"), PLAN, "width"),
        "plan-unknown-group": (_prune("--plan", "unknown.json"), PLAN, "group"),
        "plan-index-out-of-range": (_prune("--plan", "range.json"), PLAN, "outside"),
        "plan-removes-every-channel": (_prune("--plan", "all.json"), PLAN, "every channel"),
    }
    out = {}
    for name, (args, code, contains) in specs.items():
        folder = d / name
        folder.mkdir()
        save(cnn(), folder / "model.onnx")
        (folder / "folder.onnx").mkdir()
        (folder / "link.onnx").symlink_to("model.onnx")
        (folder / "locked").mkdir()
        (folder / "locked").chmod(0o555)
        _write_plans(folder)
        out[name] = Case(name, args, code, contains)
    return out


def _write_plans(folder: Path) -> None:
    def plan(groups):
        return json.dumps({"spa_plan": 1, "meta": {}, "groups": groups})

    (folder / "bad.json").write_text("{not json")
    (folder / "notaplan.json").write_text('{"groups": []}')
    (folder / "plan.json").write_text(plan([{"key": "b1:0", "width": 8, "remove": [0]}]))
    (folder / "other.json").write_text(plan([{"key": "b1:0", "width": 16, "remove": [0]}]))
    (folder / "unknown.json").write_text(plan([{"key": "nosuch:0", "width": 8, "remove": [0]}]))
    (folder / "range.json").write_text(plan([{"key": "b1:0", "width": 8, "remove": [8]}]))
    (folder / "all.json").write_text(plan([{"key": "b1:0", "width": 8, "remove": list(range(8))}]))


# ---------------------------------------------------------------- hardening: paths, reads, signals' neighbours


def _external_model(folder: Path) -> None:
    """model.onnx with w2 in model.data beside it (an input with two files)."""
    save(external(cnn(), "w2", "model.data", folder / "model.data"), folder / "model.onnx")


def _hardening_setup(folder: Path) -> None:
    _external_model(folder)
    _write_plans(folder)
    (folder / "folder").mkdir()
    os.mkfifo(folder / "fifo")
    os.link(folder / "model.onnx", folder / "hardlink.onnx")
    (folder / "symlink.onnx").symlink_to("model.onnx")
    np.savez(folder / "calib.npz", x=np.zeros((2, 1, 3, 8, 8), np.float32))
    (folder / "calibdir").mkdir()
    os.mkfifo(folder / "calibdir" / "a.npy")
    (folder / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (folder / "deep-meta.json").write_text('{"spa_plan": 1, "meta": ' + '{"a": ' * 40 + "1" + "}" * 40 +
                                           ', "groups": []}')
    with open(folder / "huge.json", "wb") as f:  # sparse: no disk, but past the 64 MiB cap
        f.truncate((64 << 20) + 1)
    (folder / "twice.json").write_text(json.dumps({"spa_plan": 1, "meta": {}, "groups": [
        {"key": "b1:0", "width": 8, "remove": [0]}, {"key": "b1:0", "width": 8, "remove": [1]}]}))


def _hardening_cases(d: Path) -> dict[str, Case]:
    obs_calib = ["--criterion", "obspa", "--hessian", "data", "--calib"]
    specs = {
        # one output policy for every command that writes
        "dot-is-the-model": (["groups", "model.onnx", "--dot", "model.onnx"], OUTPUT, "input"),
        "dot-is-the-models-data": (["groups", "model.onnx", "--dot", "model.data"], OUTPUT, "input"),
        "dot-is-a-hard-link-to-the-model": (["groups", "model.onnx", "--dot", "hardlink.onnx"], OUTPUT, "input"),
        "dot-is-a-symlink-to-the-model": (["groups", "model.onnx", "--dot", "symlink.onnx"], OUTPUT, "input"),
        "png-is-the-model": (["groups", "model.onnx", "--png", "model.onnx"], OUTPUT, "input"),
        "png-is-the-models-data": (["groups", "model.onnx", "--png", "model.data"], OUTPUT, "input"),
        "dot-and-png-same-file": (["groups", "model.onnx", "--dot", "g.out", "--png", "g.out"], OUTPUT, "overwrite"),
        "dot-is-a-fifo": (["groups", "model.onnx", "--dot", "fifo"], OUTPUT, "regular file"),
        "dot-is-dev-null": (["groups", "model.onnx", "--dot", "/dev/null"], OUTPUT, "regular file"),
        "dot-is-a-folder": (["groups", "model.onnx", "--dot", "folder"], OUTPUT, "folder"),
        "dot-folder-missing": (["groups", "model.onnx", "--dot", "nope/g.dot"], OUTPUT, "does not exist"),
        "output-is-the-models-data": (_prune()[:3] + ["model.data"], OUTPUT, "input"),
        "output-is-a-hard-link-to-the-model": (["prune", "model.onnx", "-o", "hardlink.onnx"], OUTPUT, "input"),
        "output-is-dev-null": (["prune", "model.onnx", "-o", "/dev/null"], OUTPUT, "regular file"),
        "output-is-a-fifo": (["prune", "model.onnx", "-o", "fifo"], OUTPUT, "regular file"),
        "output-is-the-plan": (_prune("--plan", "plan.json")[:3] + ["plan.json", "--plan", "plan.json"], OUTPUT,
                               "input"),
        "output-is-the-calibration": (["prune", "model.onnx", "-o", "calib.npz", *obs_calib, "calib.npz"], OUTPUT,
                                      "input"),
        "output-folder-odd-name": (["prune", "model.onnx", "-o", "out\x01.onnx/x"], OUTPUT, "does not exist"),
        "plan-out-is-the-models-data": (_prune("--plan-out", "model.data"), OUTPUT, "input"),
        "plan-out-is-the-plan": (_prune("--plan", "plan.json", "--plan-out", "plan.json"), OUTPUT, "input"),
        "plan-out-is-the-calibration": (_prune(*obs_calib, "calib.npz", "--plan-out", "calib.npz"), OUTPUT, "input"),
        "plan-out-is-dev-null": (_prune("--plan-out", "/dev/null"), OUTPUT, "regular file"),
        "plan-out-is-a-fifo": (_prune("--plan-out", "fifo"), OUTPUT, "regular file"),
        "plan-out-is-the-outputs-data": (_prune("--plan-out", "out.onnx.data"), OUTPUT, "overwrite"),
        "report-is-the-model": (["report", "model.onnx", "-o", "model.onnx"], OUTPUT, "input"),
        "report-is-the-models-data": (["report", "model.onnx", "-o", "model.data"], OUTPUT, "input"),
        "report-is-the-original": (["report", "model.onnx", "--original", "hardlink.onnx", "-o", "symlink.onnx"],
                                   OUTPUT, "input"),
        "report-is-dev-null": (["report", "model.onnx", "-o", "/dev/null"], OUTPUT, "regular file"),
        "report-is-a-fifo": (["report", "model.onnx", "-o", "fifo"], OUTPUT, "regular file"),
        "report-folder-missing": (["report", "model.onnx", "-o", "nope/r.html"], OUTPUT, "does not exist"),
        "report-is-a-folder": (["report", "model.onnx", "-o", "folder"], OUTPUT, "folder"),
        "report-wrong-suffix": (["report", "model.onnx", "-o", "r.txt"], OUTPUT, ".html"),
        # reads: typed and bounded, refused before they are opened
        "model-is-a-fifo": (["prune", "fifo", "-o", "out.onnx"], INPUT, "regular file"),
        "model-is-dev-zero": (["inspect", "/dev/zero"], INPUT, "regular file"),
        "plan-is-a-fifo": (_prune("--plan", "fifo"), PLAN, "regular file"),
        "plan-is-dev-zero": (_prune("--plan", "/dev/zero"), PLAN, "regular file"),
        "plan-is-a-folder": (_prune("--plan", "folder"), PLAN, "folder"),
        "plan-nested-deeply": (_prune("--plan", "deep.json"), PLAN, "nested"),
        "plan-meta-nested-deeply": (_prune("--plan", "deep-meta.json"), PLAN, "nested"),
        "plan-over-the-size-cap": (_prune("--plan", "huge.json"), PLAN, "MiB"),
        "plan-lists-a-group-twice": (_prune("--plan", "twice.json"), PLAN, "twice"),
        "calib-is-a-fifo": (_prune(*obs_calib, "fifo"), INPUT, "regular file"),
        "calib-is-dev-zero": (_prune(*obs_calib, "/dev/zero"), INPUT, "regular file"),
        "calib-folder-holds-a-fifo": (_prune(*obs_calib, "calibdir"), INPUT, "regular file"),
        "calib-missing": (_prune(*obs_calib, "nope.npz"), INPUT, "no such"),
        "diff-inputs-is-a-fifo": (["diff", "model.onnx", "hardlink.onnx", "--inputs", "fifo"], INPUT, "regular file"),
        # options: numbers that make no sense are usage errors
        "seed-negative": (_prune("--seed", "-1"), USAGE, "seed"),
        "seed-too-big": (_prune("--seed", str(2**32)), USAGE, "seed"),
        "seed-not-a-number": (_prune("--seed", "x"), USAGE, "seed"),
        "p-nan": (_prune("--criterion", "lp", "--p", "nan"), USAGE, "--p"),
        "p-inf": (_prune("--criterion", "lp", "--p", "inf"), USAGE, "--p"),
        "p-zero": (_prune("--criterion", "lp", "--p", "0"), USAGE, "--p"),
        "diff-atol-nan": (["diff", "model.onnx", "hardlink.onnx", "--atol", "nan"], USAGE, "--atol"),
        "diff-atol-negative": (["diff", "model.onnx", "hardlink.onnx", "--atol", "-1"], USAGE, "--atol"),
        "diff-rtol-inf": (["diff", "model.onnx", "hardlink.onnx", "--rtol", "inf"], USAGE, "--rtol"),
        "diff-seed-negative": (["diff", "model.onnx", "hardlink.onnx", "--seed", "-1"], USAGE, "seed"),
        "bench-seed-negative": (["bench", "model.onnx", "--seed", "-1"], USAGE, "seed"),
    }
    out = {}
    for name, (args, code, contains) in specs.items():
        folder = d / name
        folder.mkdir()
        _hardening_setup(folder)
        out[name] = Case(name, args, code, contains)
    return out


def _malformed_model_cases(d: Path) -> dict[str, Case]:
    """Files that used to end in an internal error: each is now refused with its reason."""
    cases: dict[str, tuple[onnx.ModelProto, int, str, list[str]]] = {}
    m = cnn()
    t = m.graph.initializer.pop(2)
    arr = numpy_helper.to_array(t)
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(arr.ravel()[:5].copy(), "w2"), numpy_helper.from_array(np.arange(5, dtype=np.int64),
                                                                                        "w2_idx"), list(arr.shape)))
    cases["sparse-initializer"] = (m, UNSUPPORTED, "sparse", _prune())
    m = cnn()
    m.graph.node[2].input[0] = "nowhere"
    cases["undefined-tensor-reference"] = (m, INPUT, "nowhere", _prune())
    m = cnn()
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:-8]
    cases["raw-data-too-short"] = (m, INPUT, "bytes", _prune())
    m = cnn()
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data + b"\0" * 8
    cases["raw-data-too-long"] = (m, INPUT, "bytes", ["inspect", "model.onnx"])
    cases["external-location-has-nul"] = (external(cnn(), "w2", "model\0.data", None), INPUT, "NUL", _prune())
    cases["external-location-300-chars"] = (external(cnn(), "w2", "a" * 300, None), INPUT, "too long", _prune())
    cases["external-location-through-a-file"] = (external(cnn(), "w2", "side.txt/model.data", None), INPUT,
                                                 "not a directory", _prune())
    cases["external-location-is-the-model"] = (external(cnn(), "w2", "model.onnx", None), INPUT, "model file itself",
                                               _prune())
    m = cnn()
    m.metadata_props.add(key="spa.report.tables", value='{"spa_report": 1, "layers": 5, "scores": {"edges": 3}}')
    cases["report-metadata-crafted"] = (m, INPUT, "malformed", ["report", "model.onnx", "-o", "r.html"])
    m = cnn()
    m.metadata_props.add(key="spa.report.tables", value="[" * 100000)
    cases["report-metadata-nested-deeply"] = (m, INPUT, "not JSON", ["report", "model.onnx", "-o", "r.md"])
    m = cnn()
    m.metadata_props.add(key="spa.allocation.plan", value="{not json")
    cases["report-plan-metadata-not-json"] = (m, INPUT, "not JSON", ["report", "model.onnx", "-o", "r.md"])
    # the original cannot be run as asked: a refusal up front (5), not a validation failure (7)
    cases["original-onnx-runtime-cannot-run"] = (_bf16_mlp(), UNSUPPORTED, "original", _prune())
    cases["input-shape-contradicts-the-weights"] = (cnn(), UNSUPPORTED, "--input-shape",
                                                    _prune("--input-shape", "x=1,4,8,8"))
    cases["input-shape-contradicts-the-weights-obspa"] = (cnn(), UNSUPPORTED, "--input-shape",
                                                          _prune("--input-shape", "x=1,5,8,8", "--criterion", "obspa"))
    out = {}
    for name, (model, code, contains, args) in cases.items():
        (d / name).mkdir()
        (d / name / "side.txt").write_text("a regular file")
        save(model, d / name / "model.onnx")
        out[name] = Case(name, args, code, contains)
    return out


def _bf16_mlp() -> onnx.ModelProto:
    """x(1,16) → MatMul 32 → Relu → MatMul 8, all bfloat16: valid ONNX that ONNX Runtime's CPU
    provider has no MatMul kernel for."""
    rng = np.random.default_rng(3)

    def bf16(name, shape):
        bits = (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return helper.make_tensor(name, TensorProto.BFLOAT16, shape, vals=bits.tobytes(), raw=True)

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "bf16", [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 8])],
                              [bf16("w1", [16, 32]), bf16("w2", [32, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _hf_folder_cases(d: Path) -> dict[str, Case]:
    """A Hugging Face folder (model.onnx + config.json + tokenizer) in, a folder out."""
    def hf(folder: Path, config: str = '{"hidden_size": 8}') -> None:
        (folder / "src").mkdir(parents=True)
        save(cnn(), folder / "src" / "model.onnx")
        (folder / "src" / "config.json").write_text(config)
        (folder / "src" / "vocab.txt").write_text("a\nb\n")
        (folder / "file.txt").write_text("not a folder")
        (folder / "full").mkdir()
        (folder / "full" / "keep.txt").write_text("user file")

    def escape(name):
        return lambda f: (f / "src" / name).unlink(missing_ok=True) or (f / "src" / name).symlink_to(
            f.parent / "outside" / "secret.bin")

    def blob_of_another_repo(f):
        (f / "other" / "blobs").mkdir(parents=True)
        (f / "other" / "blobs" / "h1").write_bytes(b"x")
        (f / "src" / "tokenizer.json").symlink_to("../other/blobs/h1")

    specs = {
        "hf-output-is-the-input-folder": (["prune", "src", "-o", "src"], OUTPUT, "input folder", None),
        "hf-output-inside-the-input-folder": (["prune", "src", "-o", "src/out"], OUTPUT, "input folder", None),
        "hf-output-is-a-file": (["prune", "src", "-o", "file.txt"], OUTPUT, "not an empty folder", None),
        "hf-output-not-empty": (["prune", "src", "-o", "full"], OUTPUT, "not an empty folder", None),
        "hf-output-parent-missing": (["prune", "src", "-o", "nope/out"], OUTPUT, "does not exist", None),
        "hf-config-not-json": (["prune", "src", "-o", "out"], INPUT, "config.json", '{"hidden_size": '),
        "hf-config-a-list": (["prune", "src", "-o", "out"], INPUT, "JSON object", "[1, 2]"),
        "hf-config-nested-deeply": (["prune", "src", "-o", "out"], INPUT, "nested", "[" * 5000 + "]" * 5000),
        "hf-side-file-symlink-leaves": (["prune", "src", "-o", "out"], UNSAFE, "symlink", escape("vocab.txt")),
        "hf-config-symlink-leaves": (["prune", "src", "-o", "out"], UNSAFE, "symlink", escape("config.json")),
        "hf-side-file-link-to-another-blobs": (["prune", "src", "-o", "out"], UNSAFE, "symlink", blob_of_another_repo),
    }
    out = {}
    for name, (args, code, contains, extra) in specs.items():
        folder = d / name
        folder.mkdir()
        hf(folder, extra if isinstance(extra, str) else '{"hidden_size": 8}')
        if callable(extra):
            extra(folder)
        out[name] = Case(name, args, code, contains)
    return out

def make_corpus(root: Path) -> list[Case]:
    """Write every case under `root` (which must be empty or missing); return the cases."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "outside").mkdir()
    (root / "outside" / "secret.bin").write_bytes(b"\x42" * 4096)  # a file no case may touch
    cases = []
    for name in BAD_FILES:
        (root / name).mkdir()
        cases.append(_bad_model_files(root / name, name))
    cases += _external_cases(root).values()
    cases += _model_cases(root).values()
    cases += _option_cases(root).values()
    cases += _hardening_cases(root).values()
    cases += _malformed_model_cases(root).values()
    cases += _hf_folder_cases(root).values()
    (root / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    written = make_corpus(Path(sys.argv[1]))
    print(f"{len(written)} cases in {sys.argv[1]}")

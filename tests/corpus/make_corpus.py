"""The bad-input corpus: every way a model, its external data, a plan or the options can be wrong.

    .venv/bin/python -m tests.corpus.make_corpus OUT_DIR    # write the cases and OUT_DIR/cases.json

Each case is a folder holding what it needs (a small model, data files, plans, symlinks) and the
`spa` arguments that must fail, with the exit code and a word the one-line error must contain.
Files are tiny (a few KB) and written fresh for every test run, so symlinks, permissions and
hard links are real. tests/test_corpus.py runs every case through the CLI.
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

from spa.errors import InputError, OutputError, PlanError, UnsafePathError, UnsupportedError, UsageError

USAGE, INPUT, UNSAFE, UNSUPPORTED, OUTPUT, PLAN = (e.exit_code for e in (
    UsageError, InputError, UnsafePathError, UnsupportedError, OutputError, PlanError))


@dataclass
class Case:
    name: str
    args: list[str]      # `spa` arguments, relative to the case folder (the command runs there)
    exit_code: int
    contains: str        # a word the error line must contain (case-insensitive)


# ---------------------------------------------------------------- small models


def cnn(opset: int = 18, seed: int = 0) -> onnx.ModelProto:
    """x(1,3,8,8) → conv 8 → relu → conv 6 → relu → conv 4 (y): two prunable groups."""
    rng = np.random.default_rng(seed)
    inits, nodes, h, c_in = [], [], "x", 3
    for i, c_out in enumerate((8, 6, 4), start=1):
        inits += [numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [h, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4))
        h, c_in = f"c{i}", c_out
        if i < 3:
            nodes.append(helper.make_node("Relu", [h], [f"r{i}"], name=f"relu{i}"))
            h = f"r{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
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
    (root / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    written = make_corpus(Path(sys.argv[1]))
    print(f"{len(written)} cases in {sys.argv[1]}")

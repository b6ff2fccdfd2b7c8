"""The bad-input corpus (tests/corpus/make_corpus.py) through the real CLI, one subprocess per case.

Every case must give: one line on stderr starting `spa: error:` that names the problem, its own
exit code, no traceback, no new or changed file anywhere in the corpus (no output, no temp files,
inputs and the sentinel outside the model folders byte-identical)."""
from __future__ import annotations

import builtins
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.corpus.make_corpus import Case, cnn, external, make_corpus, save

ROOT = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under root: file hashes, symlink targets, folders (and their permissions)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = f"<dir {oct(p.stat().st_mode & 0o777)}>"
        elif not p.is_file():  # a FIFO: reading it would block
            out[rel] = f"<special {oct(p.lstat().st_mode)}>"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_case(root: Path, case: Case) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SPA_DEBUG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "spa.cli", *case.args], cwd=root / case.name, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    cases = make_corpus(root)
    before = snapshot(root)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([c.name for c in cases], pool.map(lambda c: run_case(root, c), cases)))
    return root, cases, before, snapshot(root), results


def test_corpus_is_big_and_distinct(corpus):
    _, cases, _, _, _ = corpus
    assert len(cases) >= 100
    assert len({c.name for c in cases}) == len(cases)
    assert len({c.exit_code for c in cases}) >= 6  # usage, input, unsafe, unsupported, output, plan


def test_corpus_leaves_every_file_as_it_was(corpus):
    root, _, before, after, _ = corpus
    assert after == before  # no output, no temp file, no input or outside file changed


def _ids():
    # the names are fixed by the generator; build them without writing files
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [c.name for c in make_corpus(Path(tmp) / "c")]


@pytest.mark.parametrize("name", _ids())
def test_case_is_a_clear_refusal(corpus, name):
    _, cases, _, _, results = corpus
    case = next(c for c in cases if c.name == name)
    r = results[name]
    lines = r.stderr.splitlines()
    assert "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[0].startswith("spa: error: "), r.stderr
    assert case.contains.lower() in lines[0].lower(), lines[0]
    assert r.returncode == case.exit_code, (r.returncode, lines[0])
    assert r.stdout == ""


# ---------------------------------------------------------------- traversal: refused before any access


class _FileAudit:
    """Every path opened (audit hook: open, os.open, mmap's file) or stat'ed/read-linked while active."""

    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        self.active = False
        sys.addaudithook(self._hook)  # hooks cannot be removed; `active` switches this one off
        for name in ("stat", "lstat", "readlink"):
            real = getattr(os, name)

            def spy(path, *a, _real=real, **k):
                self._record(path)
                return _real(path, *a, **k)

            monkeypatch.setattr(os, name, spy)

    def _record(self, path) -> None:
        if self.active and isinstance(path, (str, bytes, os.PathLike)):
            self.paths.append(os.path.abspath(os.fsdecode(path)))

    def _hook(self, event, args):
        if event == "open" and args:
            self._record(args[0])

    def touched(self, folder: Path) -> list[str]:
        folder = str(folder.resolve())
        return [p for p in self.paths if p == folder or p.startswith(folder + os.sep)]


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink-file", "symlink-folder"])
def test_traversal_is_refused_before_the_outside_file_is_touched(tmp_path, monkeypatch, capsys, how):
    from spa.cli import main

    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"dotdot": "../outside/secret.bin", "absolute": str(secret), "symlink-file": "w.bin",
                "symlink-folder": "data/secret.bin"}[how]
    save(external(cnn(), "w2", location, secret), folder / "model.onnx")
    if how == "symlink-file":
        (folder / "w.bin").symlink_to(secret)
    if how == "symlink-folder":
        (folder / "data").symlink_to(outside, target_is_directory=True)
    secret_bytes = secret.read_bytes()
    audit = _FileAudit(monkeypatch)
    audit.active = True
    try:
        code = main(["prune", str(folder / "model.onnx"), "-o", str(tmp_path / "out.onnx")])
    finally:
        audit.active = False
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.startswith("spa: error: ") and len(err.splitlines()) == 1
    assert audit.paths, "the audit saw nothing: it would not catch an access either"
    assert any(p.startswith(str(folder)) for p in audit.paths)  # it did read the model file
    assert audit.touched(outside) == [], "a file outside the model's folder was accessed"
    assert secret.read_bytes() == secret_bytes
    assert not (tmp_path / "out.onnx").exists()


def test_audit_does_catch_an_outside_read(tmp_path, monkeypatch):
    """The audit itself: reading the outside file through numpy's memmap is recorded."""
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"\0" * 64)
    audit = _FileAudit(monkeypatch)
    audit.active = True
    np.memmap(secret, dtype=np.uint8, mode="r")
    audit.active = False
    assert audit.touched(secret.parent)


def test_symlink_inside_the_folder_is_accepted(tmp_path):
    """Containment, not a ban on symlinks: a link to a data file in the same folder loads and prunes."""
    from spa import io
    from spa.pipeline import prune

    folder = tmp_path / "model"
    (folder / "blobs").mkdir(parents=True)
    save(external(cnn(), "w2", "w.bin", folder / "blobs" / "real.bin"), folder / "model.onnx")
    (folder / "w.bin").symlink_to("blobs/real.bin")
    model = io.load(folder / "model.onnx")
    want = onnx.numpy_helper.to_array(next(t for t in cnn().graph.initializer if t.name == "w2"))
    np.testing.assert_array_equal(model.graph.initializers["w2"].const_value.numpy(), want)
    result = prune(folder / "model.onnx")
    assert result.model.graph.initializers["w2"].const_value.numpy().shape[1] < 8


def test_python_api_refuses_like_the_cli(tmp_path):
    from spa import io
    from spa.errors import UnsafePathError

    save(external(cnn(), "w2", "../secret.bin", None), tmp_path / "model.onnx")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        io.load(tmp_path / "model.onnx")


def test_open_is_not_called_on_refused_location(tmp_path, monkeypatch):
    """Belt and braces for the CLI test: builtins.open never sees the outside path either."""
    from spa import io
    from spa.errors import UnsafePathError

    (tmp_path / "m").mkdir()
    save(external(cnn(), "w2", "../s.bin", tmp_path / "s.bin"), tmp_path / "m" / "model.onnx")
    seen = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (seen.append(str(f)), real_open(f, *a, **k))[1])
    with pytest.raises(UnsafePathError):
        io.load(tmp_path / "m" / "model.onnx")
    assert not any(s.endswith("s.bin") for s in seen)


# ---------------------------------------------------------------- signals during a run


def _wide_cnn(width: int) -> onnx.ModelProto:
    """cnn()'s shape with wide layers: a save that takes long enough to be interrupted."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, h, c_in = [], [], "x", 3
    for i, c_out in enumerate((width, width, 4), start=1):
        inits.append(numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [h, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4))
        h, c_in = f"c{i}", c_out
        if i < 3:
            nodes.append(helper.make_node("Relu", [h], [f"r{i}"], name=f"relu{i}"))
            h = f"r{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _spa(folder: Path, *args, popen=False):
    env = {k: v for k, v in os.environ.items() if k != "SPA_DEBUG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "spa.cli", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".spa-"))


def _working(pid: int) -> bool:
    """The child is past its imports and into the work (ONNX Runtime is loaded: analysis and
    validation run), where SPA's handlers are installed; before, a signal finds nothing to clean."""
    try:
        return "onnxruntime" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _signal_run(tmp_path: Path, sig: int, when: str, width: int):
    import signal as _signal
    import time

    save(_wide_cnn(width), tmp_path / "model.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    first = _spa(tmp_path, "prune", "model.onnx", "-o", "out/out.onnx", "--ratio", "0.2", "-q")
    assert first.returncode == 0, first.stderr
    old = (out_dir / "out.onnx").read_bytes()
    child = _spa(tmp_path, "prune", "model.onnx", "-o", "out/out.onnx", "--ratio", "0.5", "-q", popen=True)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if (when == "save" and _temps(out_dir)) or (when == "early" and _working(child.pid)):
            break
        time.sleep(0.0005 if when == "save" else 0.05)
    if child.poll() is None:
        child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    expected = {_signal.SIGINT: 130, _signal.SIGTERM: 143, _signal.SIGKILL: -9}[sig]
    assert child.returncode in (0, expected), err
    assert "Traceback" not in err
    now = (out_dir / "out.onnx").read_bytes()
    if now != old:  # the new output, complete: it loads, checks and runs
        onnx.checker.check_model(str(out_dir / "out.onnx"), full_check=True)
    if sig != _signal.SIGKILL:
        assert _temps(out_dir) == [], "an interrupted run left temporary files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "out"]  # nothing outside the output
    after = _spa(tmp_path, "prune", "model.onnx", "-o", "out/out.onnx", "--ratio", "0.3", "-q")
    assert after.returncode == 0, after.stderr
    assert _temps(out_dir) == [], "the next run did not sweep a killed run's temporaries"


@pytest.mark.parametrize("sig,when", [("SIGINT", "save"), ("SIGTERM", "save"), ("SIGKILL", "save"),
                                      ("SIGTERM", "early"), ("SIGINT", "early")])
def test_signal_leaves_old_or_new_output_and_no_temporaries(tmp_path, sig, when):
    import signal as _signal

    _signal_run(tmp_path, getattr(_signal, sig), when, width=256)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_signal_on_a_model_over_1_gib(tmp_path, sig):
    """The same on a model saved with external data (weights over 1 GiB): slow, -m slow."""
    import signal as _signal

    _signal_run(tmp_path, getattr(_signal, sig), "save", width=5600)


def test_diff_fails_when_b_lacks_an_output_of_a(tmp_path):
    a = cnn()
    from onnx import TensorProto, helper

    a.graph.output.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 8, 8, 8]))
    save(a, tmp_path / "a.onnx")
    save(cnn(), tmp_path / "b.onnx")
    r = _spa(tmp_path, "diff", "a.onnx", "b.onnx")
    assert r.returncode != 0, r.stdout

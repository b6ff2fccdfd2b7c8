"""The bad-input corpus (tests/corpus/make_corpus.py) through the real CLI: `python -m spa.cli`'s
entry point, each case in its own folder with its own stdout, stderr and exit code, in two
long-lived interpreters (tests/cli_runner.py; an interpreter per case spent minutes on imports).

Every case must give: one line on stderr starting `spa: error:` that names the problem, its own
exit code, no traceback, no new or changed file anywhere in the corpus (no output, no temp files,
inputs and the sentinel outside the model folders byte-identical)."""
from __future__ import annotations

import builtins
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.cli_runner import run_many
from tests.corpus.make_corpus import cnn, external, make_corpus, save

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    cases = make_corpus(root)
    before = snapshot(root)
    # no case needs a process of its own (no environment, stdin or signal of its own): they share
    # two interpreters, each case still with its own working folder, output streams and exit code
    runs = run_many([(c.args, root / c.name) for c in cases], workers=2, timeout=120)
    results = dict(zip([c.name for c in cases], runs))
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
    from spa.graph import io
    from spa.flow.pipeline import prune

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
    from spa.graph import io
    from spa.core.errors import UnsafePathError

    save(external(cnn(), "w2", "../secret.bin", None), tmp_path / "model.onnx")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        io.load(tmp_path / "model.onnx")


def test_open_is_not_called_on_refused_location(tmp_path, monkeypatch):
    """Belt and braces for the CLI test: builtins.open never sees the outside path either."""
    from spa.graph import io
    from spa.core.errors import UnsafePathError

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
    return cnn(seed=0, widths=(width, width, 4), side=4, bias=False)


def _spa(folder: Path, *args, popen=False, tmpdir: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k != "SPA_DEBUG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    cmd = [sys.executable, "-m", "spa.cli", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)


def _spa_here(folder: Path, *args, tmpdir: Path) -> subprocess.CompletedProcess:
    """`_spa` in this process, for the runs before and after the interrupted one (they need no
    process of their own; a new interpreter costs seconds): the same working folder and $TMPDIR,
    stdout and stderr captured, main's exit code."""
    import contextlib
    import io
    import tempfile

    from spa.cli import main

    cwd, tempdir = os.getcwd(), tempfile.tempdir
    env_tmpdir, debug = os.environ.get("TMPDIR"), os.environ.get("SPA_DEBUG")
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(folder)
        os.environ["TMPDIR"] = str(tmpdir)
        os.environ.pop("SPA_DEBUG", None)
        tempfile.tempdir = None  # gettempdir() reads $TMPDIR again
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(cwd)
        for name, value in (("TMPDIR", env_tmpdir), ("SPA_DEBUG", debug)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir = tempdir
    return subprocess.CompletedProcess(["spa", *map(str, args)], code, out.getvalue(), err.getvalue())


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".spa-"))


def _working(pid: int) -> bool:
    """The child is past its imports and into the work (ONNX Runtime is loaded: analysis and
    validation run), where SPA's handlers are installed; before, a signal finds nothing to clean."""
    try:
        return "onnxruntime" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _validating(tmpdir: Path, pid: int) -> bool:
    """The child writes the pruned model's temporary copy for ONNX Runtime (big models only): a
    model file inside a folder of its private temporary folder in $TMPDIR."""
    return any(p.name == "model.onnx" for p in tmpdir.glob(f".spa-{pid}-*/*/*"))


def _save_external(model: onnx.ModelProto, folder: Path) -> None:
    """model.onnx with every weight in model.onnx.data, written tensor by tensor (no protobuf copy)."""
    from onnx import TensorProto

    offset = 0
    with open(folder / "model.onnx.data", "wb") as data:
        for t in model.graph.initializer:
            raw = t.raw_data
            data.write(raw)
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", "model.onnx.data"), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
    save(model, folder / "model.onnx")


def _signal_run(tmp_path: Path, sig: int, when: str, width: int, ratios=("0.2", "0.5", "0.3"), external=False):
    """prune once (the old output), prune again and send `sig` at `when` ("save": the output's
    temporaries exist; "validation": the pruned model's ONNX Runtime copy exists; "early": SPA is
    working), then prune a third time. Old output intact or new complete; no temporaries left in
    the output folder or $TMPDIR after the third run (SIGINT/SIGTERM: after the second already);
    nothing written beside the input."""
    import signal as _signal
    import time

    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    if external:
        _save_external(_wide_cnn(width), work)
    else:
        save(_wide_cnn(width), work / "model.onnx")
    inputs = sorted(p.name for p in work.iterdir())
    out_dir = work / "out"
    out_dir.mkdir()
    # the runs around the interrupted one only write the old output and sweep: l2, the quick criterion
    first = _spa_here(work, "prune", "model.onnx", "-o", "out/out.onnx", "--ratio", ratios[0], "--criterion", "l2",
                      "-q", tmpdir=tmpdir)
    assert first.returncode == 0, first.stderr
    if external:
        assert (out_dir / "out.onnx.data").exists(), "the old output should have external data"
    old = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    child = _spa(work, "prune", "model.onnx", "-o", "out/out.onnx", "--ratio", ratios[1], "-q", popen=True,
                 tmpdir=tmpdir)
    deadline = time.monotonic() + 600
    while child.poll() is None and time.monotonic() < deadline:
        if ((when == "save" and _temps(out_dir)) or (when == "early" and _working(child.pid))
                or (when == "validation" and _validating(tmpdir, child.pid))):
            break
        time.sleep(0.0005 if when == "save" else 0.05)
    if external:  # a small model may finish between two polls; the big one must be caught mid-way
        assert child.poll() is None, "the run ended before the signal: the test interrupted nothing"
    if child.poll() is None:
        child.send_signal(sig)
    _, err = child.communicate(timeout=300)
    # SIGINT: the clean-up done, the process ends by the signal itself (a shell reads 130)
    expected = {_signal.SIGINT: -_signal.SIGINT, _signal.SIGTERM: 143, _signal.SIGKILL: -9}[sig]
    assert child.returncode in (0, expected), err
    assert "Traceback" not in err
    now = {p.name: p.read_bytes() for p in out_dir.iterdir() if not p.name.startswith(".spa-")}
    if now != old:  # the new output, complete: it loads, checks and runs
        onnx.checker.check_model(str(out_dir / "out.onnx"), full_check=True)
        _ort_runs(out_dir / "out.onnx")
    if sig != _signal.SIGKILL:
        assert _temps(out_dir) == [], "an interrupted run left temporary files"
        assert list(tmpdir.iterdir()) == [], "an interrupted run left temporary files in $TMPDIR"
    assert sorted(p.name for p in work.iterdir()) == sorted(inputs + ["out"])  # nothing outside the output
    # the next command (in this process: the sweep goes by the killed run's pid, not the caller's)
    after = _spa_here(work, "prune", "model.onnx", "-o", "out/out.onnx", "--ratio", ratios[2], "--criterion", "l2",
                      "-q", tmpdir=tmpdir)
    assert after.returncode == 0, after.stderr
    assert _temps(out_dir) == [], "the next run did not sweep a killed run's temporaries"
    assert list(tmpdir.iterdir()) == [], "the next run did not sweep a killed run's temporaries in $TMPDIR"
    assert sorted(p.name for p in work.iterdir()) == sorted(inputs + ["out"])


def _ort_runs(path: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [y] = sess.run(None, {"x": np.ones((1, 3, 4, 4), np.float32)})
    assert y.shape == (1, 4, 4, 4)


@pytest.mark.parametrize("sig,when", [("SIGINT", "save"), ("SIGTERM", "save"), ("SIGKILL", "save"),
                                      ("SIGTERM", "early"), ("SIGINT", "early"), ("SIGKILL", "early")])
def test_signal_leaves_old_or_new_output_and_no_temporaries(tmp_path, sig, when):
    import signal as _signal

    _signal_run(tmp_path, getattr(_signal, sig), when, width=256)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["save", "validation"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_signal_on_a_model_over_1_gib(tmp_path, sig, when):
    """The same on a model with its weights in external data (1.8 GB in, 1.1 GB out: the outputs have
    external data too), at save and at validation: slow, -m slow, about 5 GB of disk."""
    import signal as _signal

    _signal_run(tmp_path, getattr(_signal, sig), when, width=7000, ratios=("0.1", "0.2", "0.15"), external=True)


def test_stale_temporaries_in_tmpdir_are_swept(tmp_path):
    """A killed run's private folder in $TMPDIR goes with the next command; a live run's stays."""
    tmpdir = tmp_path / "tmp"
    (tmpdir / ".spa-999999999-0123456789ab" / "spa-x").mkdir(parents=True)
    (tmpdir / ".spa-999999999-0123456789ab" / "spa-x" / "model.onnx").write_bytes(b"x" * 100)
    (tmpdir / ".spa-999999998-0123456789ab.data").write_bytes(b"x")
    live = tmpdir / f".spa-{os.getpid()}-abcdefabcdef"
    live.mkdir()
    (tmpdir / "user-file").write_text("mine")
    save(cnn(), tmp_path / "model.onnx")
    r = _spa(tmp_path, "inspect", "model.onnx", tmpdir=tmpdir)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmpdir.iterdir()) == sorted([live.name, "user-file"])


def test_no_file_outside_the_output_with_incomplete_symbolic_inference(tmp_path):
    """ONNX Runtime's symbolic shape inference saves sym_shape_infer_temp.onnx and <uuid>.data into
    the working folder when it cannot finish (an op it does not know): nothing may appear in the
    working folder or stay in $TMPDIR."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (16, 32)), ("b", (32,)), ("w2", (32, 16)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("BiasGelu", ["h", "b"], ["g"], name="gelu", domain="com.microsoft"),
             helper.make_node("Frobnicate", ["g"], ["u"], name="frob", domain="com.microsoft"),
             helper.make_node("MatMul", ["u", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "ms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    folder, tmpdir = tmp_path / "work", tmp_path / "tmp"
    folder.mkdir()
    tmpdir.mkdir()
    save(model, folder / "model.onnx")
    (folder / "sym_shape_infer_temp.onnx").write_text("a user file of that name")
    for args in (["inspect", "model.onnx"], ["groups", "model.onnx"]):
        r = _spa(folder, *args, tmpdir=tmpdir)
        assert r.returncode in (0, 5), r.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "sym_shape_infer_temp.onnx"], args
        assert (folder / "sym_shape_infer_temp.onnx").read_text() == "a user file of that name"
        assert list(tmpdir.iterdir()) == [], args


def test_diff_fails_when_b_lacks_an_output_of_a(tmp_path):
    a = cnn()
    from onnx import TensorProto, helper

    a.graph.output.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 8, 8, 8]))
    save(a, tmp_path / "a.onnx")
    save(cnn(), tmp_path / "b.onnx")
    r = _spa(tmp_path, "diff", "a.onnx", "b.onnx")
    assert r.returncode != 0, r.stdout


def _conv_bn_export(path: Path) -> None:
    """conv1 → bn1 → relu → conv2 → bn2 → relu → conv3, exported by TorchScript with eval-mode
    BatchNorm kept as nodes (no constant folding) and PyTorch's names (/bn1/BatchNormalization, bn1.weight)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.conv3, self.relu = nn.Conv2d(16, 4, 3, padding=1), nn.ReLU()

        def forward(self, x):
            return self.conv3(self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 16, 16), str(path), dynamo=False, do_constant_folding=False,
                          input_names=["x"], output_names=["y"])
    assert "BatchNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("name,kept", [("bn1", {"conv1.weight": 8}), ("/bn1/BatchNormalization", {"conv1.weight": 8}),
                                       ("bn1.running_var", {"conv1.weight": 8}), ("bn2", {"conv2.weight": 16}),
                                       ("/conv1/Conv", {"conv1.weight": 8}), ("relu", {"conv1.weight": 8})])
def test_protect_names_a_batchnorm_fused_away(tmp_path, capsys, name, kept):
    """--protect takes the names of the model as given: a BatchNormalization that canonicalization
    fuses into its Conv (its node, output or statistics), or a PyTorch module path; the group it
    is in stays whole, the other is pruned."""
    from spa.cli import main

    _conv_bn_export(tmp_path / "m.onnx")
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5", "-q",
                 "--round-to", "1", "--protect", name])  # unrounded: these widths are under one NCHWc block
    assert code == 0, capsys.readouterr().err
    widths = {t.name: t.dims[0] for t in onnx.load(str(tmp_path / "o.onnx")).graph.initializer
              if t.name.endswith("weight")}
    for weight, width in kept.items():
        assert widths[weight] == width, widths
    assert sum(widths.values()) < 8 + 16 + 4  # the unprotected group was pruned


def test_protect_refuses_a_name_the_model_does_not_have(tmp_path, capsys):
    from spa.cli import main

    _conv_bn_export(tmp_path / "m.onnx")
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--protect", "bn9"])
    err = capsys.readouterr().err
    assert code == 2 and "bn9" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("criterion", ["l2", "obspa"])
def test_non_finite_weights_leave_their_groups_whole(tmp_path, capsys, value, criterion):
    """A NaN or Inf weight makes its groups' scores meaningless: they stay whole (said in the
    summary and the plan), the run succeeds, no warning noise on stderr."""
    import json

    from spa.cli import main

    model = cnn()
    w2 = onnx.numpy_helper.to_array(model.graph.initializer[2]).copy()
    w2[1, 0, 0, 0] = float(value)  # conv2's row 1 (group b2) and column 0 (group b1)
    model.graph.initializer[2].CopyFrom(onnx.numpy_helper.from_array(w2, "w2"))
    save(model, tmp_path / "m.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "invalid value" noise would end in exit 1
        code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5", "--json",
                     "--criterion", criterion])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert summary["plan"]["not_finite"] == ["b1:0", "b2:0"] and summary["channels_removed"] == 0


def test_non_finite_weights_in_one_layer_leave_the_others_prunable(tmp_path, capsys):
    import json

    from spa.cli import main

    model = cnn()
    w1 = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    w1[:] = np.nan  # conv1: group b1 only (its input is the graph input)
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w1, "w1"))
    save(model, tmp_path / "m.onnx")
    # l2 reads each group's own weights; a statistics criterion would also leave b2 whole, since
    # conv1's NaN outputs are b2's inputs
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5", "--json",
                 "--criterion", "l2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["plan"]["not_finite"] == ["b1:0"] and summary["groups_pruned"] == 1


def test_plan_with_duplicate_indices_removes_and_counts_one_channel(tmp_path, capsys):
    import json

    from spa.cli import main

    save(cnn(), tmp_path / "m.onnx")
    (tmp_path / "plan.json").write_text(json.dumps({"spa_plan": 1, "meta": {}, "groups": [
        {"key": "b1:0", "width": 8, "remove": [3] * 8}]}))
    code = main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--plan",
                 str(tmp_path / "plan.json"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["channels_removed"] == 1
    w1 = next(t for t in onnx.load(str(tmp_path / "o.onnx")).graph.initializer if t.name == "w1")
    assert w1.dims[0] == 7

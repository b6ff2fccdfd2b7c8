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
    assert len(cases) >= 40
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

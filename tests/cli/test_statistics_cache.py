"""--statistics-cache: a second prune of the same model reads the moments instead of measuring them, and
writes the same model it would have written without the cache; another model or other settings miss."""
import json
import shutil

import numpy as np
import onnx
import pytest

from models import hf_zoo
from spa.cli import main
from spa.statistics import generation


@pytest.fixture
def text_runs(monkeypatch):
    """Counts how often the model's own text is written (the work the cache saves)."""
    calls = []
    real = generation.generated_feeds

    def counting(*args, **kwargs):
        calls.append(1)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(generation, "generated_feeds", counting)
    return calls


def _weights(path):
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _prune(model, out, ratio, *extra):
    assert main(["prune", str(model), "-o", str(out), "--ratio", ratio, "--criterion", "obspa", "--samples", "8",
                 "--no-latency", "-q", *extra]) == 0


def test_second_prune_reads_the_cache_and_writes_the_same_model(tmp_path, text_runs):
    model = hf_zoo.cached_export("llama", "optimum") / "model.onnx"
    cache = tmp_path / "stats"
    _prune(model, tmp_path / "a.onnx", "0.3", "--statistics-cache", str(cache))
    written = len(text_runs)
    assert written >= 1 and len(list(cache.glob("*.npz"))) == 1
    _prune(model, tmp_path / "b.onnx", "0.5", "--statistics-cache", str(cache))
    assert len(text_runs) == written  # measured once, read the second time
    _prune(model, tmp_path / "c.onnx", "0.5")  # the oracle: the same run without a cache
    assert len(text_runs) > written
    cached, fresh = _weights(tmp_path / "b.onnx"), _weights(tmp_path / "c.onnx")
    assert cached.keys() == fresh.keys() and all(np.array_equal(cached[k], fresh[k]) for k in fresh)
    _prune(model, tmp_path / "d.onnx", "0.5", "--statistics-cache", str(cache), "--seed", "3")
    assert len(list(cache.glob("*.npz"))) == 2  # other settings: measured and kept beside the first


def test_another_model_misses_and_a_bad_cache_path_is_refused(tmp_path, text_runs, capsys):
    source = hf_zoo.cached_export("llama", "optimum") / "model.onnx"
    cache = tmp_path / "stats"
    _prune(source, tmp_path / "a.onnx", "0.3", "--statistics-cache", str(cache))
    changed = onnx.load(source)
    weight = next(t for t in changed.graph.initializer if t.dims and len(t.dims) == 2)
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(changed, tmp_path / "other.onnx")
    before = len(text_runs)
    killed = cache / ".spa-999999999-0123456789ab.npz"  # a run killed by SIGKILL while storing
    killed.write_bytes(b"partial")
    (cache / "notes.txt").write_text("the user's")
    _prune(tmp_path / "other.onnx", tmp_path / "b.onnx", "0.3", "--statistics-cache", str(cache))
    assert len(text_runs) > before and len(list(cache.glob("*.npz"))) == 2
    assert not killed.exists() and (cache / "notes.txt").read_text() == "the user's"
    (tmp_path / "file").write_text("not a folder")
    capsys.readouterr()
    assert main(["prune", str(source), "-o", str(tmp_path / "c.onnx"), "--criterion", "obspa",
                 "--statistics-cache", str(tmp_path / "file")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--statistics-cache must be a folder" in err[0]
    assert not (tmp_path / "c.onnx").exists() and (tmp_path / "file").read_text() == "not a folder"
    shutil.rmtree(cache)

"""Training and held-out inputs never share a source (file, document, sample)."""
from __future__ import annotations

import numpy as np
import pytest

from spa.core.errors import InputError, UsageError
from spa.graph.load import load
from spa.training import data as sources
from tests.training.models import classifier, photo_folder


def test_held_out_items_are_set_aside_and_never_in_training():
    train, held = sources.split_held_out(list(range(11)))
    assert set(train).isdisjoint(held) and sorted(train + held) == list(range(11))
    assert len(held) == 2  # every fifth
    with pytest.raises(InputError, match="at least 2"):
        sources.split_held_out([0])


def test_an_image_folder_holds_out_whole_files_and_normalises_with_the_given_mean_and_std(tmp_path):
    model = load(classifier(tmp_path / "m.onnx", batch=1))
    photos = photo_folder(tmp_path / "photos", count=5)
    data = sources.image_files(model, photos, mean=(0.5,), std=(0.25,))
    assert set(data.training_sources).isdisjoint(data.held_out_sources)
    assert len(data.training_sources) + len(data.held_out_sources) == 5
    feed = data.sample(np.random.default_rng(0), 3)[0]
    assert feed["x"].shape == (1, 3, 16, 16) and feed["x"].dtype == np.float32
    # 0..1 pixels → (p - 0.5) / 0.25 lies in [-2, 2]
    assert feed["x"].min() >= -2.0 - 1e-5 and feed["x"].max() <= 2.0 + 1e-5
    # a held-out view is the centred crop of its file, computed here independently
    from PIL import Image

    held_file = data.held_out_sources[0]
    pixels = np.asarray(Image.open(held_file).convert("RGB"), dtype=np.float32) / 255.0
    expected = ((pixels - 0.5) / 0.25).mean()  # 40×30 → centred 30×30, then resized: the mean barely moves
    assert abs(float(data.held_out[0]["x"].mean()) - expected) < 0.15
    assert len(data.held_out) == sources.HELD_OUT_VIEWS * len(data.held_out_sources)


def test_text_holds_out_whole_documents(tmp_path):
    model = load(classifier(tmp_path / "m.onnx"))
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"document {i} " + "word " * 40 for i in range(6)))
    with pytest.raises(UsageError, match="token-ids input"):
        sources.text_files(model, path, tokenizer=None, sequence=8)
    docs = sources.documents(path)
    assert len(docs) == 6 and docs[0].startswith("document 0")


def test_an_npz_must_name_the_model_inputs_and_holds_out_samples(tmp_path):
    model = load(classifier(tmp_path / "m.onnx"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match="named after the model's inputs"):
        sources.array_file(model, bad)
    good = tmp_path / "good.npz"
    x = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((10, 3, 16, 16), np.float32)
    np.savez(good, x=x)
    data = sources.array_file(model, good)
    held_values = {float(f["x"][0, 0, 0, 0]) for f in data.held_out}
    drawn = {float(f["x"][0, 0, 0, 0]) for f in data.sample(np.random.default_rng(1), 200)}
    assert held_values and drawn and held_values.isdisjoint(drawn)
    assert len(held_values) + len(drawn) == 10

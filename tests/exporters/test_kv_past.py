"""Decoders with a KV cache: SPA's export of a decoder takes the cache optimum's generate() feeds by
default; a model read with a cache is pruned as the plain decoder and written with the cache again;
the cached copy is written only when it gives the plain graph's logits."""
import json

import numpy as np
import pytest

from models import hf_zoo
from spa.cli import main
from spa.flow import kv_past
from spa.graph import io
from spa.graph.kv_inputs import drop_kv_cache
from spa.runtime.validate import session


@pytest.fixture(scope="module")
def folder():
    return hf_zoo.cached_export("llama", "optimum")


def _past_names(model):
    return [v.name for v in model.graph.inputs if v.name.startswith("past_key_values.")]


def test_the_export_generates_with_default_arguments_as_without_a_cache(folder):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    assert json.loads((folder / "config.json").read_text())["use_cache"] is True
    assert len(_past_names(io.load(folder / "model.onnx"))) == 2 * 2  # two layers: keys and values
    ids = torch.tensor([[0, 0, 5, 7, 9], [3, 1, 4, 1, 5]])  # the first prompt padded on the left
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    cached = ORTModelForCausalLM.from_pretrained(folder).generate(
        ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    plain = ORTModelForCausalLM.from_pretrained(folder, use_cache=False).generate(
        ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert cached.shape == (2, 11) and torch.equal(cached, plain)


def test_read_without_the_cache_the_decoder_computes_the_same(folder):
    with_cache = io.load(folder / "model.onnx")
    plain = io.load(folder / "model.onnx")
    assert drop_kv_cache(plain)
    assert not _past_names(plain) and [v.name for v in plain.graph.outputs] == ["logits"]
    ids = np.random.default_rng(0).integers(0, 128, (2, 6))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.tile(np.arange(6), (2, 1))}
    expected = session(plain).run(["logits"], feed)[0]
    empty = {name: np.zeros((2, 4, 0, 8), np.float32) for name in _past_names(with_cache)}
    got = session(with_cache).run(["logits"], {**feed, **empty})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_file_read_with_a_cache_is_written_with_it(folder, tmp_path):
    out = tmp_path / "small.onnx"
    assert main(["prune", str(folder / "model.onnx"), "-o", str(out), "--ratio", "0.5", "--no-latency"]) == 0
    read, written = io.load(folder / "model.onnx"), io.load(out)
    assert [v.name for v in written.graph.inputs] == [v.name for v in read.graph.inputs]
    assert [v.name for v in written.graph.outputs] == [v.name for v in read.graph.outputs]
    assert main(["bench", str(out), "--rounds", "3", "--warmup", "1"]) == 0  # empty caches fed by default


def test_a_cached_copy_that_disagrees_is_not_written(folder, monkeypatch):
    plain = io.load(folder / "model.onnx")
    drop_kv_cache(plain)
    assert kv_past.with_past(plain) is not None
    original = kv_past._concatenate_past

    def new_before_past(graph, value, layer, role, *args):
        original(graph, value, layer, role, *args)
        concat = next(n for n in graph if n.outputs[0].name == f"present.{layer}.{role}")
        past, new = concat.inputs
        concat.replace_input_with(0, new)
        concat.replace_input_with(1, past)

    monkeypatch.setattr(kv_past, "_concatenate_past", new_before_past)
    assert kv_past.with_past(plain) is None

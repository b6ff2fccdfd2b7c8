"""Hugging Face transformers: the tiny zoo through optimum and torch.onnx (heads, GQA, FFN and the
hidden width), the exported and pruned folders in optimum's ORTModel classes, `spa export hf`.
`make test` runs a subset; `pytest -m zoo` runs every architecture through both exporters
(`bench/hf_zoo_table.py` runs the same check and writes the table in BENCHMARKS.md)."""
import json
import os

import numpy as np
import pytest

from models import hf_zoo
from models.hf_check import check_hf_model, failures
from spa.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", hf_zoo.SUBSET)
def test_hf_subset_optimum(name):
    result = check_hf_model(name, "optimum")
    assert not failures(result), result
    assert result["kinds"].get("heads") and result["kinds"].get("channels")
    assert result["whole_heads"] is True  # head groups were cut, at whole heads


def test_hf_torch_export_keeps_heads_visible():
    """torch.onnx writes kᵀ as a Reshape→Transpose→Reshape detour through batch·heads; folded, the
    heads are prunable as in the optimum export."""
    result = check_hf_model("llama", "torch")
    assert not failures(result), result
    assert result["kinds"].get("heads") == 2 and result["whole_heads"] is True


@pytest.mark.zoo
@pytest.mark.parametrize("exporter", ["optimum", "torch"])
@pytest.mark.parametrize("name", hf_zoo.NAMES)
def test_hf_full(name, exporter):
    if exporter == "optimum" and name in hf_zoo.OPTIMUM_UNSUPPORTED:
        pytest.skip(f"optimum has no exporter for {name} on its own")
    result = check_hf_model(name, exporter)
    assert not failures(result), result


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    src = tmp_path_factory.mktemp("hf") / "bert"
    hf_zoo.build("bert").save_pretrained(src)
    out = src.parent / "bert-onnx"
    assert main(["export", "hf", str(src), "-o", str(out)]) == 0
    return out


def test_export_hf_then_prune_folder_loads_in_ort_feature_extraction(bert_folder, tmp_path):
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    pruned = tmp_path / "pruned"
    assert main(["prune", str(bert_folder), "-o", str(pruned), "--ratio", "0.5", "--scope", "heads"]) == 0
    config = json.loads((pruned / "config.json").read_text())
    original = json.loads((bert_folder / "config.json").read_text())
    assert config["num_attention_heads"] == original["num_attention_heads"] // 2
    assert config["intermediate_size"] == original["intermediate_size"]  # --scope heads left the FFN whole
    model = ORTModelForFeatureExtraction.from_pretrained(pruned)
    ids = np.array([[2, 5, 7, 9, 11]], dtype=np.int64)
    out = model(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    assert tuple(out.last_hidden_state.shape) == (1, 5, original["hidden_size"])
    assert np.isfinite(np.asarray(out.last_hidden_state)).all()


def test_pruned_llm_folder_generates_and_keeps_the_gqa_ratio(tmp_path):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    import shutil

    folder = tmp_path / "source"
    shutil.copytree(hf_zoo.cached_export("llama", "optimum"), folder)
    original = json.loads((folder / "config.json").read_text())
    pruned = tmp_path / "llama"
    assert main(["prune", str(folder), "-o", str(pruned), "--ratio", "0.5", "--scope", "all"]) == 0
    config = json.loads((pruned / "config.json").read_text())
    assert config["num_key_value_heads"] == original["num_key_value_heads"] // 2
    assert config["num_attention_heads"] // config["num_key_value_heads"] == \
        original["num_attention_heads"] // original["num_key_value_heads"]
    assert config["intermediate_size"] < original["intermediate_size"]
    assert config["hidden_size"] < original["hidden_size"]
    assert config["head_dim"] == original["hidden_size"] // original["num_attention_heads"]
    assert config["use_cache"] is True  # the graph takes a KV cache again (the source's did)
    model = ORTModelForCausalLM.from_pretrained(pruned)  # default arguments: with the cache
    ids = torch.tensor([[1, 5, 7, 9]])
    generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                               pad_token_id=0)
    assert generated.shape == (1, 7) and (generated[:, :4] == ids).all()
    plain = ORTModelForCausalLM.from_pretrained(pruned, use_cache=False)  # the whole prefix at every step
    assert (plain.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                           pad_token_id=0) == generated).all()


def test_groups_reports_heads_and_scope_refusals(capsys):
    folder = hf_zoo.cached_export("llama", "optimum")
    assert main(["groups", str(folder / "model.onnx"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    heads = [r for r in rows if r["kind"] == "heads"]
    assert len(heads) == 2 and all(r["prunable"] for r in heads)
    assert any("key/value heads, 2 query heads each, × 8" in c for r in heads for c in r["constraints"])
    hidden = [r for r in rows if r["kind"] == "hidden"]
    assert hidden and "--scope hidden" in hidden[0]["reason"]  # opt-in
    assert main(["groups", str(folder / "model.onnx"), "--json", "--scope", "heads"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows if r["prunable"]} == {"heads"}


def test_export_hf_bad_input_is_one_line(tmp_path, capsys):
    assert main(["export", "hf", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spa: error:")
    (tmp_path / "empty").mkdir()
    assert main(["export", "hf", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) != 0
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_heads_left_whole_by_rounding_are_named(tmp_path, capsys):
    """4 key/value heads per layer: a 20% share rounds to no head (the summary says so); 50% removes two."""
    folder = hf_zoo.cached_export("llama", "optimum")
    for ratio, untouched in (("0.2", 2), ("0.5", 0)):
        out = tmp_path / f"llama-{ratio}"
        assert main(["prune", str(folder), "-o", str(out), "--ratio", ratio, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["head_groups_untouched"] == untouched
        config = json.loads((out / "config.json").read_text())
        assert (config["num_key_value_heads"] == 4) == bool(untouched)
    assert main(["prune", str(folder), "-o", str(tmp_path / "text"), "--ratio", "0.2"]) == 0
    assert "no attention head removed (2 head groups" in " ".join(capsys.readouterr().out.split())

"""`spa export hf` sources beyond a transformers folder — a GGUF checkpoint (file or folder), de-quantized
through transformers' loader — and the side files a pruned folder carries (chat template,
sentence-transformers modules, model card; never the dense weights)."""
import json
import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from models import hf_zoo
from spa.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("gguf")

VOCAB, HIDDEN, LAYERS, FFN, HEADS, KV_HEADS = 96, 32, 2, 64, 4, 2


def _write_gguf(path):
    """A tiny Llama as llama.cpp writes it (float32 tensors, GGUF tensor names)."""
    import gguf

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(VOCAB)
    head_dim = HIDDEN // HEADS

    def tensor(name, *shape, scale=0.2):
        writer.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    tensor("token_embd.weight", VOCAB, HIDDEN, scale=1.0)
    tensor("output_norm.weight", HIDDEN)
    tensor("output.weight", VOCAB, HIDDEN)
    for i in range(LAYERS):
        tensor(f"blk.{i}.attn_norm.weight", HIDDEN)
        tensor(f"blk.{i}.ffn_norm.weight", HIDDEN)
        tensor(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        tensor(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        tensor(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        tensor(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        tensor(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    _write_gguf(folder / "tiny.gguf")
    (folder / "notes.txt").write_text("not part of the model")
    return folder


@pytest.mark.parametrize("given", ["file", "folder"])
def test_export_gguf_matches_transformers_own_loading(gguf_dir, tmp_path, given):
    import torch
    from transformers import AutoModelForCausalLM

    from spa.runtime.examples import empty_cache

    source = gguf_dir / "tiny.gguf" if given == "file" else gguf_dir
    out = tmp_path / "onnx"
    assert main(["export", "hf", str(source), "-o", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]  # a language model, not the bare decoder
    assert config["num_key_value_heads"] == KV_HEADS and config["use_cache"] is True  # the graph takes a KV cache
    assert not (out / "notes.txt").exists()  # the GGUF's folder is not the model's folder
    # the oracle: transformers' own de-quantized model, run in PyTorch
    reference = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file="tiny.gguf", dtype=torch.float32)
    ids = np.array([[3, 17, 42, 5, 88, 1]], dtype=np.int64)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids)).logits.numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "position_ids" in {i.name for i in session.get_inputs()}:
        feed["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
    feed.update(empty_cache(session, feed))
    logits = session.run(["logits"], feed)[0]
    assert logits.shape == (1, ids.shape[1], VOCAB)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_export_gguf_refusals_are_one_line(gguf_dir, tmp_path, capsys):
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        shutil.copyfile(gguf_dir / "tiny.gguf", two / name)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")
    text = tmp_path / "model.txt"
    text.write_text("hello")
    for source, words in ((two, "holds 2 .gguf files"), (broken, "not a readable GGUF"), (text, "not a folder")):
        out = tmp_path / f"out-{source.name}"
        assert main(["export", "hf", str(source), "-o", str(out)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spa: error:") and words in err[0], err
        assert not out.exists()


def test_pruned_folder_carries_every_side_file_but_no_weights(tmp_path):
    source = tmp_path / "bert"
    shutil.copytree(hf_zoo.cached_export("bert", "optimum"), source)
    side = {"chat_template.jinja": "{{ messages }}", "README.md": "# card", "modules.json":
            json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]),
            "sentence_bert_config.json": json.dumps({"max_seq_length": 64}),
            "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})}
    for name, text in side.items():
        (source / name).parent.mkdir(exist_ok=True)
        (source / name).write_text(text)
    (source / "model.safetensors").write_bytes(b"dense weights")
    (source / "model.safetensors.index.json").write_text("{}")
    (source / "unrelated").mkdir()
    (source / "unrelated" / "x.json").write_text("{}")
    out = tmp_path / "pruned"
    assert main(["prune", str(source), "-o", str(out), "--ratio", "0.3", "-q"]) == 0
    for name, text in side.items():
        assert (out / name).read_text() == text, name
    assert not (out / "model.safetensors").exists() and not (out / "unrelated").exists()
    assert not (out / "model.safetensors.index.json").exists()
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx"]


_ENCODE = """
import json, sys
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], backend="onnx", device="cpu")
print(json.dumps(model.encode(json.loads(sys.argv[2])).tolist()))
"""


def test_sentence_transformers_onnx_backend_reads_a_pruned_folder(tmp_path):
    """sentence-transformers' ONNX backend, default arguments, on a pruned folder: its embeddings are
    the mean of the pruned graph's token states over the attention mask (computed here with the
    folder's tokenizer and ONNX Runtime)."""
    import importlib.util
    import subprocess
    import sys

    from transformers import AutoTokenizer, BertTokenizerFast

    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers is not installed (`make` installs it without its dependencies)")
    source = tmp_path / "bert"
    shutil.copytree(hf_zoo.cached_export("bert", "optimum"), source)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(123)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(source)
    hidden = json.loads((source / "config.json").read_text())["hidden_size"]
    side = {"modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
            "sentence_bert_config.json": {"max_seq_length": 32, "do_lower_case": False},
            "1_Pooling/config.json": {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}}
    for name, content in side.items():
        (source / name).parent.mkdir(exist_ok=True)
        (source / name).write_text(json.dumps(content))
    out = tmp_path / "pruned"
    assert main(["prune", str(source), "-o", str(out), "--ratio", "0.4", "-q", "--no-latency"]) == 0
    sentences = ["w1 w2 w3 w4 w5", "w7 w9"]
    env = dict(os.environ, USE_TF="0", HF_HUB_OFFLINE="1")  # transformers 4.57 refuses TensorFlow's Keras 3
    run = subprocess.run([sys.executable, "-c", _ENCODE, str(out), json.dumps(sentences)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = np.asarray(json.loads(run.stdout.strip().splitlines()[-1]))
    tokens = AutoTokenizer.from_pretrained(out)(sentences, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    states = session.run(None, {k: v.astype(np.int64) for k, v in tokens.items() if k in names})[0]
    mask = tokens["attention_mask"][..., None].astype(np.float32)
    want = (states * mask).sum(1) / mask.sum(1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

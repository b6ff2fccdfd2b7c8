"""The out-of-core path on a tiny version of bench/scale.py's Llama-style model (fp16 weights in an
external data file): it prunes through the CLI, the SwiGLU FFN groups shrink, the result runs in
ONNX Runtime, and big weights stay mapped/lazy instead of being copied into memory."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from bench.scale import SIZES, build, prune_child
from spa.graph import io
from spa.allocation.allocate import Budget
from spa.flow.pipeline import prune


def test_tiny_llama_prunes_through_the_cli(tmp_path):
    cfg = SIZES["tiny"]
    model = build(cfg, tmp_path / "llama")
    result = prune_child(model, tmp_path / "llama" / "pruned.onnx", 0.3)
    assert result["groups_pruned"] >= cfg.layers  # at least every layer's FFN
    assert result["params_after"] < result["params_before"]
    assert result["peak_rss"] > 0
    pruned = onnx.load(str(tmp_path / "llama" / "pruned.onnx"))
    shapes = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    ffn = shapes["layers.0.w_gate"][1]
    assert ffn < cfg.ffn and shapes["layers.0.w_up"][1] == ffn and shapes["layers.0.w_down"][0] == ffn
    sess = ort.InferenceSession(str(tmp_path / "llama" / "pruned.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"input_ids": np.arange(cfg.seq, dtype=np.int64)[None] % cfg.vocab})
    assert logits.shape == (1, cfg.seq, cfg.vocab) and np.isfinite(logits).all()


def test_big_weights_stay_out_of_memory(tmp_path, monkeypatch):
    """With every tensor counted as big, sliced weights are LazyTensors over mapped files and the
    unsliced ones remain MappedTensors: pruning copies no weight into memory until it is written."""
    monkeypatch.setattr(io, "LAZY_SLICE_MIN_BYTES", 0)
    model = build(SIZES["tiny"], tmp_path / "llama")
    result = prune(model, Budget(ratio=0.3))
    kinds = {type(v.const_value).__name__ for v in result.model.graph.initializers.values()
             if v.const_value.nbytes >= 4096}
    assert kinds <= {"MappedTensor", "LazyTensor"} and "LazyTensor" in kinds
    out = tmp_path / "small.onnx"
    io.save(result.model, out, external_data=True)
    loaded = ir.load(out)
    gate = loaded.graph.initializers["layers.0.w_gate"].const_value.numpy()
    assert gate.dtype == np.float16 and gate.shape[1] < SIZES["tiny"].ffn

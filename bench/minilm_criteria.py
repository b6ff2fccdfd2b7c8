"""Every criterion on the real all-MiniLM-L6-v2 at one budget (20% of parameters, heads + FFN,
local allocation): Lee similarity Pearson against the human ratings. Statistics criteria (wanda,
flap, obspa) use the calibration-free default source: made-up inputs (token ids inside the
vocabulary), as many as spa.statistics.sources.default_samples gives (256 sequences of 64 tokens here).

    HF_HUB_OFFLINE=1 nice .venv/bin/python bench/minilm_criteria.py     # after `make bench-transformers`
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import transformer_fidelity as tf  # noqa: E402  (model location, export cache, the Lee metric)
from sweep import write_block  # noqa: E402

import spa  # noqa: E402

CRITERIA = ("l2", "l1", "random", "lamp", "fpgm", "wanda", "flap", "obspa")
RATIO = 0.2


def main() -> None:
    from transformers import AutoTokenizer

    from minilm_seeds import minilm_model

    src = minilm_model() / "model.onnx"
    tok = AutoTokenizer.from_pretrained(str(tf.minilm_dir()))
    docs, sims = tf.lee_data()
    dense = tf.lee_pearson(src, tok, docs, sims)
    rows = []
    for criterion in CRITERIA:
        start = time.perf_counter()
        result = spa.prune(str(src), spa.Budget(ratio=RATIO, target="params"), criterion=criterion)
        seconds = time.perf_counter() - start
        out = tf.BUILD / f"minilm-criteria-{criterion}.onnx"
        result.save(out)
        score = tf.lee_pearson(out, tok, docs, sims)
        left = result.after["params"] / result.before["params"]
        rows.append(f"| {criterion} | {left:.1%} | {score:.4f} | {score - dense:+.4f} | {seconds:.1f} |")
        print(rows[-1], flush=True)
    write_block("minilm-criteria", [
        "## Criteria on all-MiniLM-L6-v2 (real weights), 20% of parameters, no data, no fine-tuning", "",
        f"Command: `HF_HUB_OFFLINE=1 nice .venv/bin/python bench/minilm_criteria.py`. Dense Lee Pearson {dense:.4f}. "
        "Heads + FFN neurons, local allocation, seed 0; wanda/flap/obspa take their statistics from made-up "
        "inputs (token ids inside the vocabulary, 256 sequences of 64 tokens: the calibration-free default); "
        "flap and obspa also update the sinks. Prune time on the shared 2-core machine. Local obspa's score above dense "
        "is not fidelity: the MiniLM seeds table in the plain command section (above) also measures closeness to dense.", "",
        "| criterion | params left | Lee Pearson | Δ vs dense | prune s |", "|---|---|---|---|---|", *rows])


if __name__ == "__main__":
    main()

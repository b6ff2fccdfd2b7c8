"""The plain `spa prune` on all-MiniLM-L6-v2 at -30% params over seeds 0..4: Lee Pearson per seed
(issue 16: >= 0.63 on every seed; dense 0.6564), plus two fidelity columns (the Lee Pearson is a
task score, which a pruned model can beat): the mean cosine of the 50 documents' pruned to dense
embeddings, and the Pearson of the pruned model's pairwise similarities against the dense model's.
Each prune is its own child process:

    .venv/bin/spa prune MINILM -o build/minilm_seeds/s<seed> --ratio 0.3 --target params --seed <seed> --json --no-latency -q [OPTION ...]

    HF_HUB_OFFLINE=1 nice .venv/bin/python bench/minilm_seeds.py [--ratio 0.3] [--option=--samples --option=128]

MINILM: build/transformers/minilm (a Hugging Face folder with model.onnx), else the export
bench/transformer_fidelity.py makes. Each --option is appended to every prune (compare configurations).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import transformer_fidelity as tf  # noqa: E402

SPA = ROOT / ".venv" / "bin" / "spa"
OUT = ROOT / "build" / "minilm_seeds"


def minilm_model() -> Path:
    for path in (ROOT / "build" / "transformers" / "minilm", tf.BUILD / "all-MiniLM-L6-v2"):
        if (path / "model.onnx").exists():
            return path
    raise SystemExit("no exported MiniLM: run bench/transformer_fidelity.py --models minilm first")


def embeddings(path: Path, tok, docs) -> np.ndarray:
    """The Lee documents' sentence embeddings (mask mean pooling, L2-normalised), as lee_pearson makes them."""
    sess = tf.session(path, threads=2)
    rows = []
    for doc in docs:
        enc = tok([doc], truncation=True, max_length=256, return_tensors="np")
        out = sess.run(None, tf.feed_for(sess, enc["input_ids"], enc["attention_mask"]))[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        v = ((out * m).sum(1) / m.sum(1))[0]
        rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--option", action="append", default=[], help="an extra `spa prune` argument (repeatable)")
    ap.add_argument("--ratio", default="0.3")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    model = minilm_model()
    tok = AutoTokenizer.from_pretrained(str(tf.minilm_dir()))
    docs, sims = tf.lee_data()
    dense = embeddings(model / "model.onnx", tok, docs)
    iu = np.triu_indices(len(docs), 1)
    rows = []
    for seed in range(args.seeds):
        out = OUT / f"s{seed}"
        shutil.rmtree(out, ignore_errors=True)  # spa refuses to write into a non-empty folder
        cmd = [str(SPA), "prune", str(model), "-o", str(out), "--ratio", args.ratio, "--target", "params",
               "--seed", str(seed), "--json", "--no-latency", "-q", *args.option]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        report = json.loads(done.stdout)
        before, after = report["before"]["params"], report["after"]["params"]
        onnx = out / "model.onnx" if out.is_dir() else out
        score = tf.lee_pearson(onnx, tok, docs, sims)
        emb = embeddings(onnx, tok, docs)
        cos = float((emb * dense).sum(1).mean())  # mean cosine to the dense embedding
        # how well the pairwise similarities follow the dense model's (Pearson over the 1225 pairs)
        sim_r = float(np.corrcoef((emb @ emb.T)[iu], (dense @ dense.T)[iu])[0, 1])
        inside = sum(report["seconds"].values())  # load .. validation, without imports and the save
        stats = report["seconds"].get("statistics", 0.0)
        rows.append((seed, 1 - after / before, score, cos, sim_r, wall, inside, stats))
        print(f"seed {seed}: removed {1 - after / before:.1%}, Pearson {score:.4f}, cos {cos:.4f}, prune {wall:.1f} s "
              f"({inside:.1f} s inside, statistics {rows[-1][-1]:.1f} s)", flush=True)
    scores = [r[2] for r in rows]
    print(f"\n`spa prune MINILM --ratio {args.ratio} --target params --seed S {' '.join(args.option)}`\n")
    print("| seed | params removed | Lee Pearson | cos to dense | sims r vs dense | prune wall s (process) | spa's phases s "
          "| statistics s |\n|---|---|---|---|---|---|---|---|")
    for seed, removed, score, cos, sim_r, wall, inside, stats in rows:
        print(f"| {seed} | {removed:.1%} | {score:.4f} | {cos:.4f} | {sim_r:.4f} | {wall:.1f} | {inside:.1f} | {stats:.1f} |")
    print(f"\nmean {statistics.mean(scores):.4f}, min {min(scores):.4f}, max {max(scores):.4f}; "
          f">= 0.63 on {sum(s >= 0.63 for s in scores)}/{len(scores)} seeds; "
          f"cos to dense mean {statistics.mean(r[3] for r in rows):.4f}, sims r vs dense mean "
          f"{statistics.mean(r[4] for r in rows):.4f}; prune wall mean {statistics.mean(r[5] for r in rows):.1f} s, "
          f"spa's phases {statistics.mean(r[6] for r in rows):.1f} s")


if __name__ == "__main__":
    main()

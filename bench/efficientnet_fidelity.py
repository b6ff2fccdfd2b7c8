"""EfficientNet-Lite0 (real ImageNet weights): what each criterion keeps at equal MACs reduction.

    .venv/bin/python bench/efficientnet_fidelity.py

Top-1 agreement and KL(dense‖pruned) on the 48 scikit-image photo views of the demo. The `data`
row calibrates on *other* random crops of the same 8 photos (seed 7), so it is an optimistic
reference for data-driven OBS, not a clean held-out number.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import efficientnet_lite, photos  # noqa: E402

VARIANTS = {
    "l2 (magnitude, no compensation)": ["--criterion", "l2"],
    "obspa, synthetic moments (calibration-free)": ["--criterion", "obspa", "--hessian", "synthetic"],
    "obs, data moments (32 photo crops)": ["--criterion", "obspa", "--hessian", "data", "--calib", "{calib}"],
}


def logits(path, images):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": img[None]})[0] for img in images])


def main() -> None:
    dense_path = ROOT / "build" / "demo" / "efficientnet_lite0.onnx"
    if not dense_path.exists():
        efficientnet_lite.export(dense_path, exporter="torchscript", dynamic_batch=False, batch=1)
    images = efficientnet_lite.preprocess(photos.imagenet_batch())
    dense = logits(dense_path, images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib.npz"
        np.savez(calib, input=efficientnet_lite.preprocess(photos.imagenet_batch(seed=7, crops_per_image=3)))
        for ratio in (0.1, 0.2, 0.3):
            for label, extra in VARIANTS.items():
                out = Path(tmp) / "pruned.onnx"
                cmd = [sys.executable, "-m", "spa.cli", "prune", str(dense_path), "-o", str(out), "--target", "macs",
                       "--ratio", str(ratio), "--round-to", "8"] + [a.format(calib=calib) for a in extra]
                subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
                pruned = logits(out, images)
                rows.append((ratio, label, photos.top1_agreement(dense, pruned), photos.kl_divergence(dense, pruned)))
    print("| MACs removed | criterion | top-1 agreement | KL(dense‖pruned) |")
    print("|---|---|---|---|")
    for ratio, label, agree, kl in rows:
        print(f"| {ratio:.0%} | {label} | {agree:.1%} | {kl:.3f} |")


if __name__ == "__main__":
    main()

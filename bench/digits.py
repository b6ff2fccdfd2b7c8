"""The three pruning times on real labelled data: scikit-learn's digits (8×8, 10 classes).

A small CNN (PyTorch) is pruned by SPA through ONNX at one MACs reduction:
  dense                              trained, not pruned
  before training                    an initialised model pruned, round-tripped to torch, trained
  after training + fine-tuning       the trained model pruned, fine-tuned a few epochs, re-exported
  after training + spa finetune      the same, but by `spa.finetune`: distillation from the dense ONNX
                                     model on the training images, no labels, no PyTorch source
  after training, no fine-tuning     the trained model pruned (SPA's default use)
with magnitude (L2) and OBSPA (calibration-free compensation) as criteria. Test accuracy through
ONNX Runtime on the held-out split; every number is the mean over seeds.

    python bench/digits.py [--seeds 3]     # writes the "digits" block of BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

EPOCHS, FINE_TUNE_EPOCHS, RATIO, DISTIL_BATCH = 40, 5, 0.5, 32


def data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    return train_test_split(x, digits.target.astype(np.int64), test_size=0.3, random_state=seed,
                            stratify=digits.target)


def network(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(module, x, y, epochs: int, seed: int, lr: float = 0.01):
    import torch

    gen = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            loss = torch.nn.functional.cross_entropy(module(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()


def to_onnx(module, path: Path, keep_batchnorm: bool = False) -> Path:
    import torch

    torch.onnx.export(module.eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      do_constant_folding=not keep_batchnorm,  # folding would fuse eval-mode BatchNorm
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    return path


def accuracy(model, x, y) -> float:
    import onnx_ir as ir
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else ir.to_proto(model).SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return float((session.run(None, {"image": x})[0].argmax(1) == y).mean())


def prune(path: Path, criterion: str, fuse_batchnorm: bool = True):
    from spa.allocation.allocate import Budget
    from spa.flow.pipeline import prune as spa_prune

    return spa_prune(path, Budget(ratio=RATIO, target="macs"), criterion=criterion, fuse_batchnorm=fuse_batchnorm)


def tune(pruned_model, x, y, epochs: int, seed: int, out: Path, lr: float) -> Path:
    """Round trip: the pruned ONNX model as a torch module, trained, written back into its graph.
    Pruned before training, BatchNorm stays (and trains); pruned after, it is folded into the
    convolutions, which fine-tuning updates."""
    from spa.runtime.to_torch import export, to_torch

    module = train(to_torch(pruned_model), x, y, epochs, seed, lr=lr)
    return export(module, out)


def distil(pruned_model, dense: Path, x, seed: int, tmp: Path) -> Path:
    """`spa finetune` with the training split as data and no labels: distillation from the dense
    ONNX model only (the tool holds out a fifth of the samples to pick the best step)."""
    import spa

    np.savez(tmp / "train.npz", image=x)
    steps = FINE_TUNE_EPOCHS * len(x) // DISTIL_BATCH
    result = spa.finetune(pruned_model, str(dense), data=str(tmp / "train.npz"), steps=steps, batch=DISTIL_BATCH,
                          lr=0.002, seed=seed)
    return spa.save(result.model, tmp / "d.onnx")


def run_seed(seed: int, tmp: Path) -> dict[str, float]:
    xtr, xte, ytr, yte = data(seed)
    row = {}
    init = to_onnx(network(seed), tmp / f"init{seed}.onnx", keep_batchnorm=True)
    dense = train(network(seed), xtr, ytr, EPOCHS, seed)
    trained = to_onnx(dense, tmp / f"trained{seed}.onnx")
    row["dense"] = accuracy(trained, xte, yte)
    for criterion in ("l2", "obspa"):
        before = prune(init, criterion, fuse_batchnorm=False)  # BatchNorm kept: it trains
        row[f"macs_{criterion}"] = before.after["macs"] / before.before["macs"]
        row[f"before_{criterion}"] = accuracy(tune(before.model, xtr, ytr, EPOCHS, seed, tmp / "b.onnx", 0.01),
                                              xte, yte)
        after = prune(trained, criterion)
        row[f"none_{criterion}"] = accuracy(after.model, xte, yte)
        row[f"ft_{criterion}"] = accuracy(tune(after.model, xtr, ytr, FINE_TUNE_EPOCHS, seed, tmp / "f.onnx", 0.002),
                                          xte, yte)
        row[f"distil_{criterion}"] = accuracy(distil(after.model, trained, xtr, seed, tmp), xte, yte)
    return row


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_seed(seed, Path(tmp)) for seed in range(args.seeds)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    low = {k: float(np.min([r[k] for r in rows])) for k in rows[0]}
    high = {k: float(np.max([r[k] for r in rows])) for k in rows[0]}

    def cell(key):
        return f"{100 * mean[key]:.1f}% ({100 * low[key]:.1f}–{100 * high[key]:.1f})"

    lines = [
        "## Digits: the three pruning times (real labelled data)", "",
        f"scikit-learn digits (1,797 8×8 images, 70/30 stratified split), a 4-layer CNN with BatchNorm "
        f"trained {EPOCHS} epochs (Adam); pruned by SPA at `--target macs --ratio {RATIO}` "
        f"(MACs ×{mean['macs_l2']:.2f} with L2, ×{mean['macs_obspa']:.2f} with OBSPA); fine-tuning "
        f"{FINE_TUNE_EPOCHS} epochs through `spa.runtime.to_torch` and back into the pruned ONNX graph. "
        f"Test accuracy in ONNX Runtime, mean (min–max) over {args.seeds} seeds. "
        f"`python bench/digits.py` ({time.perf_counter() - start:.0f} s on 1 CPU thread).", "",
        "| pruning time | magnitude (L2) | OBSPA |", "|---|---|---|",
        f"| dense (not pruned) | {cell('dense')} | {cell('dense')} |",
        f"| before training, then trained {EPOCHS} epochs | {cell('before_l2')} | {cell('before_obspa')} |",
        f"| after training + {FINE_TUNE_EPOCHS} epochs fine-tuning | {cell('ft_l2')} | {cell('ft_obspa')} |",
        f"| after training + `spa finetune` ({FINE_TUNE_EPOCHS} epochs of distillation, no labels) | "
        f"{cell('distil_l2')} | {cell('distil_obspa')} |",
        f"| after training, no fine-tuning | {cell('none_l2')} | {cell('none_obspa')} |",
    ]
    print("\n".join(lines))
    if not args.no_write:
        from sweep import write_block

        write_block("digits", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

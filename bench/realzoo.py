"""The real-file zoo sweep: every third-party ONNX file of models/realfiles.py pruned with the plain
first command (`spa prune MODEL -o OUT --ratio R`), as a new user would, in a child process.

    .venv/bin/python bench/realzoo.py [--ratio 0.3] [--criterion l2] [--keys k1,k2] [--out build/realzoo.jsonl]

One JSON line per file: exit code, the error line, seconds, params before/after, oracle error.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.realfiles import REAL_FILES, RealFileUnavailable, fetch  # noqa: E402


def prune_once(path: Path, ratio: float, criterion: str, timeout: int, extra: list[str], shapes: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="spa-realzoo-") as tmp:
        out = Path(tmp) / "pruned.onnx"
        cmd = [sys.executable, "-m", "spa.cli", "prune", str(path), "-o", str(out), "--ratio", str(ratio),
               "--criterion", criterion, "--json", "--quiet", *extra]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"rc": "timeout", "seconds": timeout}
        row = {"rc": proc.returncode, "seconds": round(time.perf_counter() - start, 1)}
        if proc.returncode == 0:
            summary = json.loads(proc.stdout)
            row.update(params_before=summary["before"]["params"], params_after=summary["after"]["params"],
                       oracle=summary.get("oracle_error"), plan=summary["plan"], drift=drift(path, out, shapes))
        else:
            row["error"] = (proc.stderr.strip().splitlines() or [""])[-1][:400]
        return row


def drift(original: Path, pruned: Path, shapes: dict, samples: int = 4) -> float:
    """Largest relative output change (max |pruned - original| / max |original|, per output) on
    role-aware example inputs (1/f-noise images, ids in the vocabulary) of the package's documented
    example shapes; SPA's own choice of shapes is not used."""
    from spa.runtime import examples
    from spa.graph import io
    from spa.runtime.validate import relative_error

    model = io.load(original)
    specs = examples.input_specs(model)
    given = {s.name: shapes[s.name] for s in specs if s.name in shapes}
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    a = ort.InferenceSession(str(original), opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(pruned), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed in range(samples):
        feeds = examples.fill(specs, examples.candidates(specs, given)[0].shapes, seed)
        worst = max(worst, relative_error(a.run(None, feeds), b.run(None, feeds)))
    return round(worst, 4)


def _drift(row: dict | None) -> str:
    return "-" if row is None else (f"{row['drift']:.3f}" if row["rc"] == 0 else f"exit {row['rc']}")


def table(paths: list[str]) -> str:
    """Markdown rows from sweep logs: the last row per (key, criterion, ratio)."""
    rows = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            rows[(row["key"], row["criterion"], row["ratio"])] = row
    by_key: dict[str, dict] = {}
    for (key, criterion, ratio), row in rows.items():
        by_key.setdefault(key, {})[(criterion, ratio)] = row
    lines = ["| file | producer | first command (l2, 0.3) | params before → after | oracle | s | l2 0.1 drift | "
             "obspa 0.1 drift | s |", "|---|---|---|---|---|---|---|---|---|"]
    for rf in REAL_FILES:
        runs = by_key.get(rf.key, {})
        first = runs.get(("l2", 0.3))
        if first is None:
            continue
        if first["rc"] == 0:
            outcome = "pruned"
            params = f"{first['params_before']:,} → {first['params_after']:,}"
            oracle = f"{first['oracle']:.1e}" if first.get("oracle") is not None else "-"
        else:
            outcome = f"exit {first['rc']}: {first.get('error', '').replace('spa: error: ', '')[:110]}"
            params = oracle = "-"
        obs = runs.get(("obspa", 0.1))
        lines.append(f"| {rf.key} | {rf.producer} | {outcome} | {params} | {oracle} | {first['seconds']} | "
                     f"{_drift(runs.get(('l2', 0.1)))} | {_drift(obs)} | {'-' if obs is None else obs['seconds']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--criterion", default="l2")
    ap.add_argument("--keys", default="")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--out", default=str(REPO / "build" / "realzoo.jsonl"))
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--table", nargs="+", metavar="LOG.jsonl", help="print the markdown table of sweep logs")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    keys = set(filter(None, args.keys.split(",")))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as log:
        for rf in REAL_FILES:
            if keys and rf.key not in keys:
                continue
            try:
                path = fetch(rf)
            except RealFileUnavailable as exc:
                print(f"{rf.key}: unavailable ({exc})", flush=True)
                continue
            row = {"key": rf.key, "producer": rf.producer, "quantized": rf.quantized, "ratio": args.ratio,
                   "criterion": args.criterion}
            row |= prune_once(path, args.ratio, args.criterion, args.timeout, ["--verify"] if args.verify else [],
                              rf.example_input)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"{rf.key:22s} rc={row['rc']} {row['seconds']}s {row.get('error', '')[:200]}", flush=True)


if __name__ == "__main__":
    main()

"""Hugging Face zoo sweep: every tiny transformer of models/hf_zoo.py through optimum and torch.onnx,
each in its own process, then the coverage table in BENCHMARKS.md.

    .venv/bin/python bench/hf_zoo_table.py            # sweep (resumes from build/hf_zoo_results.jsonl)
    .venv/bin/python bench/hf_zoo_table.py --render   # only rewrite the table from the results
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from sweep import load_results, reason_kind, run_cases, run_checked, write_block  # noqa: E402

RESULTS = ROOT / "build" / "hf_zoo_results.jsonl"
EXPORTERS = ("optimum", "torch")
BOUNDARY = ("graph input", "graph output")  # refusals by design: the model's interface keeps its widths


def run_one(name: str, exporter: str) -> dict:
    from models.hf_check import check_hf_model, failures
    from models.hf_zoo import OPTIMUM_UNSUPPORTED

    if exporter == "optimum" and name in OPTIMUM_UNSUPPORTED:
        return {"name": name, "exporter": exporter, "problems": [], "skipped": "optimum exports it only inside a "
                                                                               "larger model"}
    return run_checked(check_hf_model, failures, name, exporter)


def render() -> None:
    from models.hf_zoo import NAMES, kind_of

    results = {(r["name"], r["exporter"]): r for r in load_results(RESULTS)}
    runs = [r for r in results.values() if "skipped" not in r]
    ok = [r for r in runs if not r["problems"]]
    with_heads = [r for r in ok if r.get("kinds", {}).get("heads")]
    lines = [f"{len(NAMES)} architectures × {len(EXPORTERS)} exporters: {len(runs)} runs (optimum has no "
             f"standalone exporter for {len(results) - len(runs)} of them); **{len(ok)} pass** every check "
             "(`--scope all` analysis; the oracle ≤ 1e-4 on every head, FFN and hidden-width group pruned at 0.3; "
             "`prune --scope all --ratio 0.3` validated with finite outputs; head groups cut at whole heads "
             f"with the same share for every member). Heads are prunable in **{len(with_heads)}** runs.", "",
             "Columns count prunable groups by kind (heads / FFN-or-conv channels / hidden width). "
             "Refusals at the graph's own inputs and outputs (the embedding width of a feature-extraction "
             "model, the vocabulary) are by design and not listed.", "",
             "| model | kind | exporter | heads | FFN | hidden | params left | oracle | result | refusals (groups: reason) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in NAMES:
        for exporter in EXPORTERS:
            r = results.get((name, exporter))
            if r is None:
                continue
            if "skipped" in r:
                lines.append(f"| {name} | {kind_of(name)} | {exporter} | | | | | | skipped: {r['skipped']} | |")
                continue
            if "groups" not in r:
                lines.append(f"| {name} | {kind_of(name)} | {exporter} | | | | | | **{r['problems'][0]}** | |")
                continue
            kinds = r["kinds"]
            refused = Counter()
            for reason, n in r["refusals"].items():
                if not any(b in reason for b in BOUNDARY):
                    refused[reason_kind(reason)] += n
            text = "; ".join(f"{n}: {k}" for k, n in refused.most_common()).replace("|", "/")[:300]
            oracle = "-" if r["oracle"] is None else f"{r['oracle']:.1e}"
            result = "pass" if not r["problems"] else "**" + "; ".join(r["problems"]) + "**"
            lines.append(f"| {name} | {kind_of(name)} | {exporter} | {kinds.get('heads', 0)} | "
                         f"{kinds.get('channels', 0)} | {kinds.get('hidden', 0)} | {r['params_after']:.0%} | "
                         f"{oracle} | {result} | {text} |")
    lines += ["", "Where heads are not pruned, and why: DeBERTa-v2 computes attention (and its relative-position "
              "terms) on [batch·heads, seq, size] tensors, where the head count is fused with the dynamic batch — "
              "refused with that reason; Gemma here has a single key/value head (multi-query), so its one "
              "key/value group is the whole attention and is kept; ConvNeXt has no attention. The hidden width is "
              "refused where it is the model's output (feature extraction) and in Swin's optimum export, whose "
              "window padding is computed at run time. Command: `.venv/bin/python bench/hf_zoo_table.py` "
              "(each run in its own process; `--render` rewrites this table from build/hf_zoo_results.jsonl)."]
    write_block("hf-zoo-table", lines)


def main() -> None:
    from models.hf_zoo import NAMES

    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("NAME", "EXPORTER"))
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    if not args.render:
        run_cases(__file__, [(n, e) for n in (args.only or NAMES) for e in EXPORTERS], RESULTS, args.timeout,
                  args.redo)
    render()


if __name__ == "__main__":
    main()

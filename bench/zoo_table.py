"""Full torchvision zoo sweep: every classification model through both exporters, each in its own
process (bounded time and memory), then the coverage table in BENCHMARKS.md.

    .venv/bin/python bench/zoo_table.py            # sweep (resumes from build/zoo_results.jsonl)
    .venv/bin/python bench/zoo_table.py --render   # only rewrite the table from the results
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "build" / "zoo_results.jsonl"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"
EXPORTERS = ("dynamo", "torchscript")
# Run the biggest models last so a time limit cuts the fewest.
HEAVY = ("vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_y_16gf",
         "vgg19_bn", "vgg19", "vgg16_bn", "vgg16", "vgg13_bn", "vgg13", "vgg11_bn", "vgg11",
         "convnext_large", "efficientnet_b7", "efficientnet_b6", "swin_v2_b", "swin_b", "vit_b_16", "vit_b_32")


def run_one(name: str, exporter: str) -> dict:
    from models.zoo_check import check_zoo_model, failures

    start = time.time()
    try:
        result = check_zoo_model(name, exporter)
        result["problems"] = failures(result)
    except Exception as exc:  # recorded, not hidden: the table shows it
        text = str(exc).strip().splitlines()
        result = {"name": name, "exporter": exporter, "problems": [f"{type(exc).__name__}: {text[0] if text else ''}"[:300]]}
    result["seconds"] = round(time.time() - start, 1)
    return result


def sweep(timeout: int, only: list[str] | None, redo: bool = False) -> None:
    from models.torchvision_zoo import classification_names

    done = set() if redo else {(r["name"], r["exporter"]) for r in load_results()}
    names = only or sorted(classification_names(), key=lambda n: (n in HEAVY, HEAVY.index(n) * -1 if n in HEAVY else 0, n))
    RESULTS.parent.mkdir(exist_ok=True)
    for name in names:
        for exporter in EXPORTERS:
            if (name, exporter) in done:
                continue
            cmd = [sys.executable, __file__, "--one", name, exporter]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
                lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
                result = json.loads(lines[-1]) if lines else {
                    "name": name, "exporter": exporter,
                    "problems": [f"crashed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"]}
            except subprocess.TimeoutExpired:
                result = {"name": name, "exporter": exporter, "problems": [f"timed out after {timeout} s"]}
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(f"{name:24s} {exporter:12s} {'ok' if not result['problems'] else result['problems']}", flush=True)


def load_results() -> list[dict]:
    if not RESULTS.exists():
        return []
    latest = {}
    for line in RESULTS.read_text().splitlines():
        r = json.loads(line)
        latest[(r["name"], r["exporter"])] = r
    return list(latest.values())


def reason_kind(reason: str) -> str:
    """A refusal reason without the node and tensor names, so equal causes count together."""
    return re.sub(r"'[^']*'", "…", reason)


def render() -> None:
    results = sorted(load_results(), key=lambda r: (r["name"], r["exporter"]))
    names = sorted({r["name"] for r in results})
    ok = [r for r in results if not r["problems"]]
    whole = [r for r in ok if r["prunable"] + sum(n for reason, n in r["refusals"].items()
                                                  if "graph input" in reason or "graph output" in reason) == r["groups"]]
    lines = [BEGIN, "", f"{len(names)} torchvision classification models × {len(EXPORTERS)} exporters = "
             f"{len(results)} runs; **{len(ok)} pass** every check (groups found, oracle ≤ 1e-4 with all "
             "groups pruned at 0.3, `prune --ratio 0.3` validated, empty plan bit-identical). In "
             f"**{len(whole)}** runs every group is prunable except those at the graph input and output; "
             "the others list their refusals.", "",
             "| model | exporter | prunable / groups | params left | MACs left | oracle error | result | refusals (groups: reason) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "groups" not in r:
            lines.append(f"| {r['name']} | {r['exporter']} | - | - | - | - | **{r['problems'][0]}** | |")
            continue
        err = r["errors"].get("all")
        kinds = Counter()
        for reason, n in r["refusals"].items():
            if "graph input" not in reason and "graph output" not in reason:
                kinds[reason_kind(reason)] += n
        refusals = "; ".join(f"{n}: {kind}" for kind, n in kinds.most_common())
        lines.append(f"| {r['name']} | {r['exporter']} | {r['prunable']} / {r['groups']} | {r['params_after']:.0%} | "
                     f"{r['macs_after']:.0%} | {'-' if err is None else f'{err:.1e}'} | "
                     f"{'pass' if not r['problems'] else '**' + '; '.join(r['problems']) + '**'} | "
                     f"{refusals.replace('|', '/')[:400]} |")
    lines += ["", END]
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    block = "\n".join(lines)
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text += "\n" + block + "\n"
    BENCHMARKS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("NAME", "EXPORTER"))
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--redo", action="store_true", help="run --only models again even if they have results")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    if not args.render:
        sweep(args.timeout, args.only, args.redo)
    render()


if __name__ == "__main__":
    main()

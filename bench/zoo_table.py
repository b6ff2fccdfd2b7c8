"""Full torchvision zoo sweep: every classification model through both exporters, each in its own
process (bounded time and memory), then the coverage table in BENCHMARKS.md.

    .venv/bin/python bench/zoo_table.py            # sweep (resumes from build/zoo_results.jsonl)
    .venv/bin/python bench/zoo_table.py --render   # only rewrite the table from the results
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
RESULTS = ROOT / "build" / "zoo_results.jsonl"
EXPORTERS = ("dynamo", "torchscript")
# Run the biggest models last so a time limit cuts the fewest.
HEAVY = ("vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_y_16gf",
         "vgg19_bn", "vgg19", "vgg16_bn", "vgg16", "vgg13_bn", "vgg13", "vgg11_bn", "vgg11",
         "convnext_large", "efficientnet_b7", "efficientnet_b6", "swin_v2_b", "swin_b", "vit_b_16", "vit_b_32")


def run_one(name: str, exporter: str) -> dict:
    import tempfile
    from functools import partial

    from models.zoo_check import check_zoo_model, failures

    # The 160 exports fill about 40 GB: each lives only as long as its own check.
    with tempfile.TemporaryDirectory(prefix="spa-zoo-") as tmp:
        return run_checked(partial(check_zoo_model, cache_dir=tmp), failures, name, exporter)


def sweep(timeout: int, only: list[str] | None, redo: bool = False) -> None:
    from models.torchvision_zoo import classification_names

    names = only or sorted(classification_names(), key=lambda n: (n in HEAVY, HEAVY.index(n) * -1 if n in HEAVY else 0, n))
    run_cases(__file__, [(n, e) for n in names for e in EXPORTERS], RESULTS, timeout, redo)


def render() -> None:
    results = sorted(load_results(RESULTS), key=lambda r: (r["name"], r["exporter"]))
    names = sorted({r["name"] for r in results})
    ok = [r for r in results if not r["problems"]]
    whole = [r for r in ok if r["prunable"] + sum(n for reason, n in r["refusals"].items()
                                                  if "graph input" in reason or "graph output" in reason) == r["groups"]]
    lines = [f"{len(names)} torchvision classification models × {len(EXPORTERS)} exporters = "
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
    write_block("zoo-table", lines)


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

"""Peak memory of turning every sink's running sums into its H̃ at the end of a statistics pass
(spa.statistics.hessian._finished) against making all of them while the sums are still held (the
way before 2026-12-07), measured with tracemalloc (numpy reports its buffers to it).

    .venv/bin/python bench/moments_memory.py --sinks 8 --size 2048
"""
from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sinks", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    from spa.statistics.hessian import Moments, _finished

    def running() -> dict:
        rng = np.random.default_rng(0)
        moments = {}
        for i in range(args.sinks):
            moments[f"sink{i}"] = Moments(args.size)
            moments[f"sink{i}"].add(rng.standard_normal((64, args.size), dtype=np.float32))
        return moments

    for label, finish in (("all H̃ made while every sum is held", lambda m: {k: v.hessian() for k, v in m.items()}),
                          ("each sum dropped once its H̃ is made", _finished)):
        tracemalloc.start()
        moments = running()
        before = tracemalloc.get_traced_memory()[0]
        result = finish(moments)
        del moments
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        held = sum(m.nbytes for m in result.values())
        print(f"{label}: peak {peak / 1e9:.2f} GB (running sums {before / 1e9:.2f} GB before, "
              f"results {held / 1e9:.2f} GB after)")
        del result


if __name__ == "__main__":
    main()

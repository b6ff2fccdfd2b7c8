"""What an ONNX Runtime session of a model held in memory costs to build, as SPA builds them (every
statistics, fidelity and validation run makes one): the graph serialized with its weights, against
the graph alone with the weights handed over as arrays (spa.runtime.validate.session). Alternated,
ROUNDS each, in one process.

    .venv/bin/python bench/session_build.py build/transformers/SmolLM2-135M-Instruct
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a .onnx file or a Hugging Face folder")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from spa.flow.pipeline import load_canonical
    from spa.graph.load import model_file
    from spa.runtime import validate

    source = model_file(Path(args.model)) if Path(args.model).is_dir() else args.model
    model = load_canonical(source)
    handed_over = validate._weightless_file

    @contextlib.contextmanager
    def serialized(_model):
        yield None  # the whole model in one protobuf, as before

    times = {"weights serialized": [], "weights handed over": []}
    for _ in range(args.rounds):
        for label, way in (("weights serialized", serialized), ("weights handed over", handed_over)):
            validate._weightless_file = way
            start = time.perf_counter()
            validate.session(model)
            times[label].append(time.perf_counter() - start)
    validate._weightless_file = handed_over
    old, new = (statistics.median(t) for t in times.values())
    for label, t in times.items():
        print(f"{label}: median {statistics.median(t):.2f} s ({', '.join(f'{x:.2f}' for x in t)})")
    print(f"{old / new:.2f}x faster to build")


if __name__ == "__main__":
    main()

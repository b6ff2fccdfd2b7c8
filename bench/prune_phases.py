"""Where the time of one plain `spa prune` goes beyond the stages it prints: the fidelity check, the
latency rounds, writing the output (a decoder's KV-cache copy included) and every ONNX Runtime
session built, each timed around the CLI's own functions. Arguments are `spa prune`'s.

    .venv/bin/python bench/prune_phases.py build/transformers/SmolLM2-135M-Instruct -o build/speed/p20 --ratio 0.2 --target params
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def _timed(module, name: str, label: str) -> None:
    function = getattr(module, name)

    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            print(f"[phase] {label}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    setattr(module, name, timed)


def main() -> int:
    import spa.api
    import spa.cli.prune as prune_command
    import spa.exporters.hf as hf
    import spa.runtime.validate as validate
    from spa.cli import main as cli

    for module, name, label in ((spa.api, "prune", "prune (the printed stages)"),
                                (prune_command, "_check_fidelity", "fidelity check"),
                                (prune_command, "_measure_latency", "latency rounds"),
                                (hf, "write_pruned_folder", "writing the folder"),
                                (validate, "session", "a session")):
        _timed(module, name, label)
    start = time.perf_counter()
    code = cli(["prune", *sys.argv[1:]])
    print(f"[phase] total: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

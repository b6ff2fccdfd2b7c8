"""The framework zoo (Keras, Flax, Paddle): export each model in a child process (tensorflow and
paddle cannot share one), then the same end-to-end check as the torchvision zoo: groups found,
oracle at ratio 0.3 for every group together and alone, `prune --ratio 0.3` validated, and an
empty plan bit-identical. Used by tests/exporters/test_frameworks.py.

    python -m models.framework_zoo            # every model whose extra is installed: one line each
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

# (framework extra, builder module, model names)
ZOO = {
    "tf": ("models.keras_zoo", ("resnet", "mobilenetv2", "transformer")),
    "jax": ("models.flax_zoo", ("cnn", "mixer")),
    "paddle": ("models.paddle_zoo", ("resnet", "lcnet")),
}
ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


def cases() -> list[tuple[str, str]]:
    return [(fw, name) for fw, (_, names) in ZOO.items() for name in names]


def extra_available(framework: str) -> str | None:
    """None when the extra's modules are installed, else why not (checked without importing them:
    an import here would put tensorflow and paddle into one process)."""
    import importlib.util

    from spa.exporters.framework import EXTRAS

    modules, install = EXTRAS[framework]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"extra '{framework}' not installed ({', '.join(missing)} missing): {install}" if missing else None


def export_cli(doc: str, names, export_one, argv=None) -> int:
    """The command line every framework's zoo module runs in its child process:
    `python -m models.<framework>_zoo NAME OUTPUT [--opset N]`; export_one(name, output, opset)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("name", choices=names)
    parser.add_argument("output")
    parser.add_argument("--opset", type=int, default=None)
    args = parser.parse_args(argv)
    export_one(args.name, args.output, args.opset)
    return 0


def export_in_child(framework: str, name: str, output: str | os.PathLike, opset: int | None = None,
                    timeout: float = 600) -> Path:
    module, _ = ZOO[framework]
    cmd = [sys.executable, "-m", module, name, str(output)] + ([] if opset is None else ["--opset", str(opset)])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get(
        "PYTHONPATH", ""))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not Path(output).is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{module} {name} failed (rc {done.returncode}):\n{tail}")
    return Path(output)


def check_file(path, per_group: bool = True, ratio: float = 0.3, fuse_batchnorm: bool = True) -> dict:
    from spa.allocation.allocate import Budget
    from spa.analysis.groups import analyze
    from spa.flow.oracle import check_groups
    from spa.flow.pipeline import load_canonical, prune
    from spa.runtime.validate import random_inputs, run

    model = load_canonical(path, fuse_batchnorm=fuse_batchnorm)
    analysis = analyze(model)
    prunable = analysis.prunable_groups()
    result = {"groups": len(analysis.groups), "prunable": len(prunable),
              "refusals": dict(Counter(g.reason for g in analysis.groups if not g.prunable)),
              "errors": {}, "params_after": 1.0, "macs_after": 1.0, "identical": None}
    if not prunable:
        return result
    result["errors"] = check_groups(model, analysis, ratio=ratio, per_group=per_group)
    pruned = prune(path, Budget(ratio=ratio), fuse_batchnorm=fuse_batchnorm)  # validates: checker, ONNX Runtime run, same I/O
    result["params_after"] = pruned.after["params"] / pruned.before["params"]
    result["macs_after"] = pruned.after["macs"] / max(pruned.before["macs"], 1)
    nothing = prune(path, Budget(ratio=0.0), fuse_batchnorm=fuse_batchnorm)
    feeds = random_inputs(model)
    result["identical"] = nothing.plan.is_empty() and all(
        np.array_equal(a, b) for a, b in zip(run(model, feeds), run(nothing.model, feeds)))
    return result


def main() -> int:
    import tempfile

    from models.zoo_check import failures

    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for framework, name in cases():
            why = extra_available(framework)
            if why:
                print(f"SKIP   {framework}/{name}: {why}")
                continue
            path = export_in_child(framework, name, Path(tmp) / f"{framework}_{name}.onnx")
            result = check_file(path)
            problems = failures(result)
            bad += bool(problems)
            print(f"{'FAILED' if problems else 'PASSED'} {framework}/{name}: {result['prunable']}/{result['groups']}"
                  f" groups prunable, params ×{result['params_after']:.2f}, MACs ×{result['macs_after']:.2f}, "
                  f"worst oracle {max(result['errors'].values(), default=0):.1e} {problems or ''} "
                  f"{result['refusals']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The CLI's shape: one module per command (a Tool), shared options declared once in spa/cli/args.py,
and no optional or heavy package imported until a command needs it."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx

from tests.cli.test_cli import build_cnn

ROOT = Path(__file__).resolve().parents[2]
CLI_DIR = ROOT / "spa" / "cli"
HEAVY = ("torch", "transformers", "optimum", "tensorflow", "jax", "paddle")
COMMANDS = ["inspect", "groups", "export", "prune", "finetune", "report", "diff", "bench"]


def _child(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SPA_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


def test_help_imports_no_heavy_package():
    # `spa --help` and every command's --help: the parser is built from the standard library only
    code = f"""
import contextlib, io, json, sys
from spa.cli import main
codes = []
for argv in [["--help"]] + [[c, "--help"] for c in {COMMANDS!r}]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            codes.append(exc.code)
print(json.dumps({{"codes": codes, "heavy": sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))}}))
"""
    done = _child(code)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["codes"] == [0] * (1 + len(COMMANDS))
    assert found["heavy"] == []


def test_light_commands_survive_missing_extras(tmp_path):
    # every optional or heavy package blocked (its import fails): inspect and an l2 prune still work
    onnx.save(build_cnn(), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    code = f"""
import sys
for name in {HEAVY!r}:
    sys.modules[name] = None
from spa.cli import main
assert main(["inspect", r"{tmp_path / 'm.onnx'}", "--json"]) == 0
sys.exit(main(["prune", r"{tmp_path / 'm.onnx'}", "-o", r"{out}", "--json", "-q"]))
"""
    done = _child(code)
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_missing_hf_package_is_one_line(tmp_path):
    code = ("import sys; sys.modules['optimum'] = None; from spa.cli import main; "
            f"sys.exit(main(['export', 'hf', r'{tmp_path}', '-o', r'{tmp_path / 'out'}']))")
    done = _child(code)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("spa: error: spa export hf needs optimum") and "pip install" in lines[0]
    assert not (tmp_path / "out").exists()


def _declared_options() -> dict[str, list[str]]:
    """Each option string (--flag, -f) → the files whose add_argument calls declare it, once per call."""
    found: dict[str, list[str]] = {}
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                        found.setdefault(arg.value, []).append(path.name)
    return found


def test_each_option_is_declared_once():
    declared = _declared_options()
    assert declared["--input-shape"] == ["args.py"]
    for shared in ("--json", "--seed", "--samples", "--rounds", "--device", "--output", "--quiet"):
        assert declared[shared] == ["args.py"], shared
    repeated = {flag: files for flag, files in declared.items() if len(files) > 1}
    assert repeated == {}


def test_one_module_per_command():
    import importlib

    from spa.cli import TOOLS, build_parser
    from spa.cli.tool import Tool

    assert list(TOOLS) == COMMANDS  # the order `spa --help` lists them
    for name in COMMANDS:
        tool = importlib.import_module(f"spa.cli.{name}").TOOL
        assert isinstance(tool, Tool) and tool.name == name and tool.help and TOOLS[name] is tool
        assert type(tool).run is not Tool.run and type(tool).add_arguments is not Tool.add_arguments
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command_parser in sub.choices.items():
        flags = {s for a in command_parser._actions for s in a.option_strings}
        assert {"-q", "--quiet"} <= flags, name
        if name not in ("diff",):
            assert "--input-shape" in flags, name
    for path in CLI_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) < 350, path.name

"""What the zoo sweeps share: one subprocess per (model, exporter) with a time limit, results
appended to a JSON-lines file (a rerun resumes), and a marked block of BENCHMARKS.md rewritten."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def run_cases(script: str, cases: list[tuple[str, str]], results: Path, timeout: int, redo: bool = False) -> None:
    """Run `script --one NAME EXPORTER` for each case not yet in `results`; its last stdout line
    starting with '{' is the result."""
    done = set() if redo else {(r["name"], r["exporter"]) for r in load_results(results)}
    results.parent.mkdir(exist_ok=True)
    for name, exporter in cases:
        if (name, exporter) in done:
            continue
        try:
            proc = subprocess.run([sys.executable, script, "--one", name, exporter], capture_output=True, text=True,
                                  timeout=timeout, cwd=ROOT)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            result = json.loads(lines[-1]) if lines else {
                "name": name, "exporter": exporter,
                "problems": [f"crashed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"]}
        except subprocess.TimeoutExpired:
            result = {"name": name, "exporter": exporter, "problems": [f"timed out after {timeout} s"]}
        with results.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        print(f"{name:24s} {exporter:12s} {'ok' if not result['problems'] else result['problems']}", flush=True)


def run_checked(check, failures, name: str, exporter: str) -> dict:
    """One case in the child process: the check's result with its problems and time; an
    exception is recorded as the problem, not hidden."""
    import time

    start = time.time()
    try:
        result = check(name, exporter)
        result["problems"] = failures(result)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        result = {"name": name, "exporter": exporter,
                  "problems": [f"{type(exc).__name__}: {text[0] if text else ''}"[:300]]}
    result["seconds"] = round(time.time() - start, 1)
    return result


def load_results(results: Path) -> list[dict]:
    """The latest result of every (name, exporter)."""
    if not results.exists():
        return []
    latest = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        latest[(r["name"], r["exporter"])] = r
    return list(latest.values())


def reason_kind(reason: str) -> str:
    """A refusal reason without the node and tensor names, so equal causes count together."""
    return re.sub(r"'[^']*'", "…", reason)


def write_block(name: str, lines: list[str], path: Path = BENCHMARKS) -> None:
    """Replace the block between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, "", *lines, "", end])
    text = path.read_text() if path.exists() else ""
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)

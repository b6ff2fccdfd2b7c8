"""Many `spa` commands, each as if run alone as `python -m spa.cli ARGS` in its own folder, run in
a few long-lived interpreters that import SPA once (a fresh interpreter per command costs seconds
of imports; the bad-input corpus has over a hundred commands).

    results = run_many([(args, cwd), ...])   # one subprocess.CompletedProcess per command, in order

Each worker process runs its share of the commands one after another through `spa.cli.main`,
the function behind `python -m spa.cli`: the working folder is the command's, file descriptors 1
and 2 point at the command's own capture files while it runs (so Python prints, rich consoles,
logging and native libraries writing to fd 2 are all caught), warnings are shown afresh as in a
new interpreter, and the exit code is main's return value, argparse's SystemExit, or 1 with the
traceback on stderr for an exception that escapes main — the same stderr a real process would
print, so "no Traceback" checks still bite. A command that runs past `timeout` seconds is ended
with a traceback too. Anything a worker prints outside its commands (an import that writes to
stderr, a crash) fails the whole call.

Commands that need process-level state of their own (environment variables, stdin, signals,
$TMPDIR, the process ending) must keep running as real subprocesses; see tests/cli/test_corpus.py's
_spa and tests/cli/test_cli.py's run_cli.
"""
from __future__ import annotations

import json
import locale
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _CaseTimeout(BaseException):
    """Raised by SIGALRM in a worker: a BaseException, so `spa.cli.main`'s handlers let it through."""


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SPA_DEBUG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_many(commands: list[tuple[list, Path | str | None]], workers: int = 2,
             timeout: int = 120) -> list[subprocess.CompletedProcess]:
    """Run every (args, cwd) (cwd None: the repository) as `spa ARGS`; one CompletedProcess each,
    in order. `workers` interpreters share the commands."""
    jobs = [{"i": i, "args": [str(a) for a in args], "cwd": str(cwd or ROOT)} for i, (args, cwd) in enumerate(commands)]
    workers = max(1, min(workers, len(jobs)))
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="spa-cli-runner-") as tmp:
        procs = []
        for w in range(workers):
            share = jobs[w::workers]
            job_file, result_file = Path(tmp) / f"jobs{w}.json", Path(tmp) / f"results{w}.jsonl"
            job_file.write_text(json.dumps({"timeout": timeout, "jobs": share}))
            proc = subprocess.Popen([sys.executable, "-m", "tests.cli_runner", str(job_file), str(result_file)],
                                    cwd=ROOT, env=_worker_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            procs.append((proc, result_file, len(share)))
        problems = []
        for proc, result_file, n in procs:
            try:
                out, err = proc.communicate(timeout=n * (timeout + 10) + 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                problems.append(f"a worker ran past its time limit; stderr: {err!r}")
            if proc.returncode != 0 or out or err:
                problems.append(f"worker exit code {proc.returncode}, output outside its commands: "
                                f"stdout {out!r}, stderr {err!r}")
            if result_file.exists():
                for line in result_file.read_text().splitlines():
                    r = json.loads(line)
                    results[r["i"]] = r
    missing = [j["args"] for j in jobs if j["i"] not in results]
    if problems or missing:
        raise RuntimeError(f"the spa command runner failed: {problems}; commands without a result: {missing}")
    return [subprocess.CompletedProcess([sys.executable, "-m", "spa.cli", *j["args"]], results[j["i"]]["returncode"],
                                        results[j["i"]]["stdout"], results[j["i"]]["stderr"]) for j in jobs]


# ---------------------------------------------------------------- the worker


def _decode(data: bytes) -> str:
    return data.decode(locale.getpreferredencoding(False), errors="replace")


def _run_one(main, args: list[str], cwd: str, timeout: int) -> dict:
    import signal
    import traceback
    import warnings

    from spa.core.errors import EXIT_INTERRUPTED

    os.chdir(cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        # sys.stdout and sys.stderr on those descriptors, as in a new process (whatever they were)
        streams = sys.stdout, sys.stderr
        encoding = locale.getpreferredencoding(False)
        sys.stdout = open(1, "w", encoding=encoding, closefd=False)
        sys.stderr = open(2, "w", encoding=encoding, errors="backslashreplace", closefd=False, buffering=1)
        try:
            # a fresh interpreter's warnings: the filters as they were, every "shown once" forgotten
            with warnings.catch_warnings():
                warnings.onceregistry.clear()
                signal.alarm(timeout)
                try:
                    code = main(args)
                    code = 0 if code is None else code  # sys.exit(None)
                except SystemExit as exc:  # what `sys.exit(console_main())` would give the shell
                    if exc.code is None or isinstance(exc.code, int):
                        code = exc.code or 0
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
                except _CaseTimeout:
                    traceback.print_exc()
                    print(f"the command ran past {timeout} s", file=sys.stderr)
                    code = 1
                except BaseException:  # noqa: BLE001 - what an uncaught exception prints
                    traceback.print_exc()
                    code = 1
                finally:
                    signal.alarm(0)
            if code == EXIT_INTERRUPTED:  # console_main ends the process by SIGINT
                code = -signal.SIGINT
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            # flushed, not closed: a logging handler made during the command may keep one (fd 2 is
            # then the next command's stderr, as it should be)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {"returncode": code, "stdout": _decode(out.read()), "stderr": _decode(err.read())}


def _worker(job_file: str, result_file: str) -> None:
    import signal

    spec = json.loads(Path(job_file).read_text())

    def on_alarm(signum, frame):
        raise _CaseTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    from spa.cli import main  # once, for every command

    with open(result_file, "w") as results:
        for job in spec["jobs"]:
            r = _run_one(main, job["args"], job["cwd"], spec["timeout"])
            results.write(json.dumps({"i": job["i"], **r}) + "\n")
            results.flush()


if __name__ == "__main__":
    _worker(*sys.argv[1:])

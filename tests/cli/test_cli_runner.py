"""tests/cli_runner.py, the shared runner of many `spa` commands in a few interpreters: each command
gets what a process of its own would show — its stdout, its stderr (Python's, and native writes to
file descriptor 2), its exit code, its working folder, a traceback for an escaping exception, and
warnings shown afresh. Checked here in-process with stand-ins for `spa.cli.main`; the corpus and
the CLI's failure cases run the real one through it."""
from __future__ import annotations

import os
import signal
import sys
import time
import warnings

import pytest

from tests.cli_runner import _CaseTimeout, _run_one


def _warn():
    warnings.warn("a warning from a library", UserWarning)  # one location: "default" shows it once per process


def test_each_command_gets_its_own_streams_exit_code_and_folder(tmp_path):
    (tmp_path / "a").mkdir()

    def main(args):
        print("out:", *args)
        print("err: python", file=sys.stderr)
        sys.stderr.flush()
        os.write(2, b"err: native\n")
        print(os.getcwd(), file=sys.stderr)
        return 7

    r = _run_one(main, ["x", "y"], str(tmp_path / "a"), timeout=60)
    assert r["returncode"] == 7
    assert r["stdout"] == "out: x y\n"
    assert r["stderr"].splitlines() == ["err: python", "err: native", str(tmp_path / "a")]
    r2 = _run_one(lambda args: 0, [], str(tmp_path), timeout=60)
    assert r2 == {"returncode": 0, "stdout": "", "stderr": ""}  # nothing of the first command's


def test_an_escaping_exception_prints_its_traceback_and_exits_1(tmp_path):
    def main(args):
        raise ValueError("a bug")

    r = _run_one(main, [], str(tmp_path), timeout=60)
    assert r["returncode"] == 1
    assert "Traceback" in r["stderr"] and "ValueError: a bug" in r["stderr"]


@pytest.mark.parametrize("code,rc,err", [(2, 2, ""), (None, 0, ""), ("usage: bad", 1, "usage: bad\n")])
def test_system_exit_gives_the_exit_code_a_process_would(tmp_path, code, rc, err):
    def main(args):
        raise SystemExit(code)

    r = _run_one(main, [], str(tmp_path), timeout=60)
    assert (r["returncode"], r["stderr"]) == (rc, err)


def test_a_command_past_its_time_limit_ends_with_a_traceback(tmp_path):
    def on_alarm(signum, frame):
        raise _CaseTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)  # the worker installs it so
    try:
        start = time.monotonic()
        r = _run_one(lambda args: time.sleep(30), [], str(tmp_path), timeout=1)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 20
    assert r["returncode"] == 1 and "Traceback" in r["stderr"] and "ran past 1 s" in r["stderr"]


def test_warnings_show_in_every_command_as_in_a_fresh_interpreter(tmp_path):
    def main(args):
        _warn()
        return 0

    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")  # Python's own default for UserWarning: once per location
        # printed to stderr as Python does (pytest records them instead)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        first = _run_one(main, [], str(tmp_path), timeout=60)
        second = _run_one(main, [], str(tmp_path), timeout=60)
    assert "a warning from a library" in first["stderr"]
    assert "a warning from a library" in second["stderr"]

"""Long work shows progress in a log too: when stderr is not a terminal, progress() prints a plain line
every LOG_EVERY_S seconds and one at the end; work shorter than that prints nothing."""
import io
import sys

from spa.core import progress as progress_module


def test_long_work_prints_plain_lines_off_a_terminal(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    progress_module.set_quiet(False)
    assert list(progress_module.progress(iter(range(4)), "collecting statistics", total=4)) == [0, 1, 2, 3]
    lines = log.getvalue().splitlines()
    assert len(lines) == 5  # one per item (every 0 s here) and one at the end
    assert lines[-1].startswith("collecting statistics: item 4/4") and "elapsed" in lines[-1]
    assert "\x1b" not in log.getvalue()  # plain text, no terminal codes


def test_short_or_quiet_work_prints_nothing_off_a_terminal(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 3600.0)
    assert list(progress_module.progress([1, 2, 3], "quick")) == [1, 2, 3]
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    progress_module.set_quiet(True)
    try:
        assert list(progress_module.progress([1, 2], "quiet")) == [1, 2]
    finally:
        progress_module.set_quiet(False)
    assert log.getvalue() == ""


def test_prune_reports_the_seconds_of_each_stage(tmp_path, capsys):
    import json
    import time

    import onnx

    from spa.cli import main
    from tests.graphs import conv_relu_conv

    onnx.save(conv_relu_conv(), tmp_path / "m.onnx")
    start = time.perf_counter()
    assert main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--ratio", "0.5",
                 "--criterion", "obspa", "--json"]) == 0
    wall = time.perf_counter() - start
    seconds = json.loads(capsys.readouterr().out)["seconds"]
    assert {"load", "analysis", "statistics", "ranking", "compensation", "slicing and validation"} <= set(seconds)
    assert all(s >= 0 for s in seconds.values()) and sum(seconds.values()) <= wall
    assert main(["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "l.onnx"), "--ratio", "0.5",
                 "--criterion", "l2", "--json"]) == 0
    assert "statistics" not in json.loads(capsys.readouterr().out)["seconds"]  # l2 measures nothing

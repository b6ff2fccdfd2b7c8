"""The Python API (spa.prune / inspect / groups / save …) and the progress helper.

Numbers are checked against the models read with onnx directly, never against SPA's own counts."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import spa
from spa.core import progress as progress_module
from tests.cli.test_cli import build_cnn, float_params, inits, my_macs


def test_prune_returns_model_plan_and_report(tmp_path):
    src = build_cnn()
    result = spa.prune(src, ratio=0.25, criterion="l1")
    assert isinstance(result, spa.PruneResult)
    path = spa.save(result, tmp_path / "small.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    onnx.save(src, tmp_path / "cnn.onnx")
    assert result.report["before"]["params"] == float_params(tmp_path / "cnn.onnx")
    assert result.report["after"]["params"] == float_params(path)
    assert result.report["after"]["macs"] == my_macs(path)
    # the plan removes floor(0.25·width) channels of each conv group, and the file agrees
    widths = {"c1": 16, "c2": 24, "c3": 12}
    kept = {name: inits(path)[f"{name}.w"].shape[0] for name in widths}
    assert kept == {name: w - int(0.25 * w) for name, w in widths.items()}
    assert result.plan.meta["criterion"] == "l1"
    assert sum(len(v) for v in result.plan.removed.values()) == sum(widths[n] - kept[n] for n in widths)
    # the input is untouched
    assert [t.dims for t in src.graph.initializer] == [t.dims for t in build_cnn().graph.initializer]


def test_prune_accepts_a_budget_and_the_older_call_form():
    a = spa.prune(build_cnn(), spa.Budget(ratio=0.5, target="params"))
    b = spa.prune(build_cnn(), budget=spa.Budget(ratio=0.5, target="params"))
    assert a.plan.removed == b.plan.removed
    assert a.report["after"]["params"] <= 0.5 * a.report["before"]["params"]


def test_prune_with_a_given_plan_records_no_scores():
    first = spa.prune(build_cnn(), ratio=0.3)
    again = spa.prune(build_cnn(), plan=first.plan)
    assert again.plan.removed == first.plan.removed
    assert again.report["scores"] is None and "plan was given" in again.report["scores_note"]


def test_save_writes_any_model_form(tmp_path):
    path = spa.save(build_cnn(), tmp_path / "copy.onnx")
    assert float_params(path) == sum(int(np.prod(t.dims)) for t in build_cnn().graph.initializer)


def test_inspect_and_groups(tmp_path):
    summary = spa.inspect(build_cnn())
    onnx.save(build_cnn(), tmp_path / "cnn.onnx")
    assert summary["params"] == float_params(tmp_path / "cnn.onnx")
    assert summary["macs"] == my_macs(tmp_path / "cnn.onnx")
    found = spa.groups(build_cnn())
    by_key = {r["key"]: r for r in found.rows}
    # the three conv output groups are prunable with the conv widths; the logits group is not
    assert sorted(r["width"] for r in found.rows if r["prunable"]) == [12, 16, 24]
    assert any(not r["prunable"] and "graph output" in r["reason"] for r in found.rows)
    dot = found.to_dot()
    for key, r in by_key.items():
        assert f'"group {r["id"]}: {key}\\n' in dot  # each group's cluster is labelled with its key


def test_pruning_report_and_write_report(tmp_path):
    onnx.save(build_cnn(), tmp_path / "cnn.onnx")
    spa.save(spa.prune(tmp_path / "cnn.onnx", ratio=0.5), tmp_path / "small.onnx")
    rep = spa.pruning_report(tmp_path / "small.onnx", original=tmp_path / "cnn.onnx")
    layers = {r["weight"]: r for r in rep["layers"]}
    for name in ("c1", "c2", "c3"):
        assert layers[f"{name}.w"]["out_after"] == inits(tmp_path / "small.onnx")[f"{name}.w"].shape[0]
    files = spa.write_report(rep, tmp_path / "r.md")
    assert [f.name for f in files] == ["r.widths.png", "r.scores.png", "r.md"]
    assert all(f.stat().st_size > 0 for f in files)
    json.dumps(rep)  # JSON-ready


def test_diff_api():
    result = spa.diff(build_cnn(), build_cnn())
    assert result.passed and result.identical_structure


def test_import_spa_is_cheap():
    code = ("import sys, spa; heavy = [m for m in ('onnxruntime', 'matplotlib', 'rich', 'torch', 'onnxscript') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_on_a_terminal_only(monkeypatch):
    fake = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", fake)
    progress_module.set_quiet(False)
    assert list(progress_module.progress(iter(range(5)), "counting sheep", total=5)) == [0, 1, 2, 3, 4]
    assert "counting sheep" in fake.getvalue()
    fake.seek(0)
    fake.truncate()
    progress_module.set_quiet(True)
    try:
        assert list(progress_module.progress(range(3), "quiet please")) == [0, 1, 2]
    finally:
        progress_module.set_quiet(False)
    assert fake.getvalue() == ""


def test_progress_is_silent_when_stderr_is_not_a_terminal(monkeypatch):
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    assert list(progress_module.progress([1, 2], "nothing to see")) == [1, 2]
    assert plain.getvalue() == ""


def test_cli_quiet_flag_is_accepted_everywhere(tmp_path):
    from spa.cli import main

    onnx.save(build_cnn(), tmp_path / "cnn.onnx")
    assert main(["inspect", str(tmp_path / "cnn.onnx"), "--json", "--quiet"]) == 0
    assert progress_module._quiet
    assert main(["groups", str(tmp_path / "cnn.onnx"), "--json"]) == 0
    assert not progress_module._quiet  # a new command starts unquiet


def test_verify_checks_the_compensated_model_that_is_written(monkeypatch):
    from spa.flow import oracle as oracle_module, pipeline
    from spa.runtime.validate import random_inputs, run

    checked = []
    monkeypatch.setattr(pipeline, "oracle", lambda model, *a, **k: checked.append(model) or oracle_module.oracle(
        model, *a, **k))
    result = spa.prune(build_cnn(bn=True), 0.5, criterion="obspa", verify=True)
    assert result.plan.meta["update"] == "obs"
    assert result.oracle.masked_sinks > 0 and result.oracle.holds()
    # the oracle was given the compensated weights (a sink's weight differs from the original's)
    before = {k: v.const_value.numpy() for k, v in result.original.graph.initializers.items()}
    after = {k: v.const_value.numpy() for k, v in checked[0].graph.initializers.items()}
    assert any(not np.array_equal(before[k], after[k]) for k in before if k in after)
    # what was checked and written is compensated: the plain slice of the same plan differs from it
    plain = spa.prune(build_cnn(bn=True), plan=result.plan, criterion="l2")
    feeds = random_inputs(result.original, seed=5)
    (written,), (sliced,) = run(result.model, feeds), run(plain.model, feeds)
    assert np.abs(written - sliced).max() > 1e-3 * np.abs(sliced).max()

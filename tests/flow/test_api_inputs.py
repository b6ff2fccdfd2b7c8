"""What the Python API takes: a model file or a Hugging Face folder (model.onnx + config.json)
alike, a saved plan by its path, and any bad argument refused with a one-line spa.SpaError, never
an AttributeError/TypeError/KeyError from deep inside."""
from __future__ import annotations

import json
import shutil

import onnx
import pytest

import spa
from spa.allocation.allocate import Budget
from spa.core.errors import InputError, PlanError, SpaError, UsageError
from tests.cli.test_cli import build_cnn, float_params, inits


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), path)
    return path


@pytest.fixture
def folder(tmp_path, model):
    """A Hugging Face-style folder: the same model as model.onnx beside a config.json."""
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(model, folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"model_type": "cnn"}))
    return folder


def test_prune_takes_a_folder_like_its_model_file(model, folder):
    from_folder = spa.prune(folder, ratio=0.25, criterion="l1")
    from_file = spa.prune(model, ratio=0.25, criterion="l1")
    assert from_folder.plan.removed == from_file.plan.removed and any(from_folder.plan.removed.values())
    assert from_folder.report["after"] == from_file.report["after"]
    assert from_folder.report["after"]["params"] < from_folder.report["before"]["params"]


def test_prune_applies_a_plan_given_by_its_path(tmp_path, model, folder):
    made = spa.prune(model, ratio=0.3, criterion="l1")
    plan_path = tmp_path / "plan.json"
    made.plan.save(plan_path)
    for given in (plan_path, str(plan_path), json.loads(plan_path.read_text())):
        again = spa.prune(folder, plan=given)
        assert again.plan.removed == made.plan.removed
        written = spa.save(again, tmp_path / "again.onnx")
        assert float_params(written) == made.report["after"]["params"]
    # the file's widths are the plan's: each conv keeps width - removed
    kept = {name: inits(written)[f"{name}.w"].shape[0] for name in ("c1", "c2", "c3")}
    assert kept == {name: w - int(0.3 * w) for name, w in {"c1": 16, "c2": 24, "c3": 12}.items()}


def test_prune_result_repr_is_short_and_says_what_was_done(model, folder):
    result = spa.prune(folder, ratio=0.25, criterion="l1")
    text = repr(result)
    assert "\n" not in text and len(text) < 300, text
    assert text.startswith("PruneResult('hf/model.onnx'")
    assert "criterion l1" in text and "ratio 0.25 of channels" in text
    pruned = sum(1 for v in result.plan.removed.values() if v)
    assert f"{pruned} of {len(result.analysis.prunable_groups())} prunable groups pruned" in text
    assert f"({sum(len(v) for v in result.plan.removed.values())} channels)" in text
    assert "params " in text and " → " in text and "Model(" not in text


def test_inspect_groups_report_and_diff_take_a_folder(model, folder, tmp_path):
    assert spa.inspect(folder) == spa.inspect(model)
    assert spa.groups(folder).rows == spa.groups(model).rows
    pruned = tmp_path / "small"
    pruned.mkdir()
    spa.save(spa.prune(model, ratio=0.25, criterion="l1"), pruned / "model.onnx")
    by_folder = spa.pruning_report(pruned, original=folder)
    by_file = spa.pruning_report(pruned / "model.onnx", original=model)
    assert by_folder["stored"] and by_folder["layers"] == by_file["layers"] and by_folder["layers"]
    assert by_folder["model"] == str(pruned) and by_folder["original"] == str(folder)
    files = spa.write_report(by_folder, tmp_path / "r.md")
    assert files and all(f.exists() for f in files)
    same = spa.diff(folder, model)
    assert same.passed and same.structure["params"]["delta"] == 0
    smaller = spa.diff(folder, pruned)
    assert smaller.structure["params"]["delta"] == float_params(pruned / "model.onnx") - float_params(model)


def test_folder_without_a_single_model_is_an_input_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.onnx", "b.onnx"):
        onnx.save(build_cnn(), two / name)
    for call in (spa.prune, spa.inspect, spa.groups, spa.pruning_report):
        with pytest.raises(InputError, match="expected one .onnx model in the folder.*found none"):
            call(empty)
        with pytest.raises(InputError, match="found 2"):
            call(two)


def _bad_calls(model, tmp_path):
    not_json = tmp_path / "plan.json"
    not_json.write_text("{not json")
    return {
        "missing model": (lambda: spa.prune(tmp_path / "nope.onnx"), InputError),
        "empty path": (lambda: spa.inspect(""), InputError),
        "model of a wrong type": (lambda: spa.groups(42), InputError),
        "ratio a string": (lambda: spa.prune(model, ratio="0.3"), UsageError),
        "ratio None": (lambda: spa.prune(model, ratio=None), UsageError),
        "ratio a bool": (lambda: spa.prune(model, ratio=True), UsageError),
        "ratio nan": (lambda: spa.prune(model, ratio=float("nan")), UsageError),
        "ratio out of range": (lambda: spa.prune(model, ratio=1.5), SpaError),
        "budget not a Budget": (lambda: spa.prune(model, budget=0.3), UsageError),
        "budget ratio a string": (lambda: spa.prune(model, budget=Budget(ratio="x")), UsageError),
        "budget round_to a string": (lambda: spa.prune(model, budget=Budget(round_to="8")), UsageError),
        "budget protect a string": (lambda: spa.prune(model, budget=Budget(protect="c1")), UsageError),
        "target not a string": (lambda: spa.prune(model, target=3), UsageError),
        "criterion a list": (lambda: spa.prune(model, criterion=["l1"]), UsageError),
        "criterion unknown": (lambda: spa.prune(model, criterion="nope"), UsageError),
        "scope a list": (lambda: spa.groups(model, scope=["all"]), UsageError),
        "seed a string": (lambda: spa.prune(model, seed="x"), UsageError),
        "p a string": (lambda: spa.prune(model, criterion="lp", p="2"), UsageError),
        "compensation a string": (lambda: spa.prune(model, compensation="obs"), UsageError),
        "plan an int": (lambda: spa.prune(model, plan=3), UsageError),
        "plan not JSON": (lambda: spa.prune(model, plan=not_json), PlanError),
        "plan missing": (lambda: spa.prune(model, plan=tmp_path / "none.json"), PlanError),
        "plan dict not a plan": (lambda: spa.prune(model, plan={"groups": []}), PlanError),
        "input_shapes a list": (lambda: spa.inspect(model, input_shapes=[1, 3, 8, 8]), UsageError),
        "input_shapes a string shape": (lambda: spa.groups(model, input_shapes={"x": "1,3,8,8"}), UsageError),
        "input_shapes a zero dim": (lambda: spa.prune(model, input_shapes={"x": [0, 3, 8, 8]}), UsageError),
        "save to a non-path": (lambda: spa.save(model, 3), UsageError),
        "save an int": (lambda: spa.save(7, tmp_path / "o.onnx"), InputError),
        "report samples a string": (lambda: spa.pruning_report(model, original=model, measure=True,
                                                               samples="x"), UsageError),
        "report of a missing original": (lambda: spa.pruning_report(model, original=tmp_path / "no"), InputError),
        "write_report of a non-dict": (lambda: spa.write_report(3, tmp_path / "r.html"), UsageError),
        "write_report to a non-path": (lambda: spa.write_report({}, None), UsageError),
        "finetune steps a string": (lambda: spa.finetune(model, model, steps="x"), UsageError),
        "finetune negative lr": (lambda: spa.finetune(model, model, steps=1, lr=-1.0), UsageError),
        "finetune data an int": (lambda: spa.finetune(model, model, steps=1, data=3), UsageError),
        "finetune a missing model": (lambda: spa.finetune(tmp_path / "nope.onnx", model, steps=1), InputError),
    }


def test_every_bad_argument_is_a_one_line_spa_error(model, tmp_path):
    before = model.read_bytes()
    for label, (call, kind) in _bad_calls(model, tmp_path).items():
        with pytest.raises(SpaError) as caught:
            call()
        assert isinstance(caught.value, kind), (label, type(caught.value).__name__, caught.value)
        message = str(caught.value)
        assert message and "\n" not in message, (label, message)
    assert model.read_bytes() == before
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "r.html").exists()

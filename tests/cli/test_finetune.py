"""`spa finetune` and `spa prune --finetune` as a user runs them: a folder of photos in, held-out
fidelity before and after in the summary (checked against ONNX Runtime on the written file), the
inputs untouched, and bad requests refused with one line and nothing written."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort

from tests.cli.test_cli import run_cli, tree
from tests.cli_runner import run_many
from tests.training.models import photo_folder, pruned_pair


def test_finetune_on_a_folder_of_photos_writes_a_model_at_least_as_faithful(tmp_path):
    dense, pruned = pruned_pair(tmp_path)
    photos = photo_folder(tmp_path / "photos", count=6)
    before = tree(tmp_path)
    out = tmp_path / "tuned.onnx"
    done = run_cli("finetune", pruned, "--teacher", dense, "-o", out, "--data", photos, "--steps", 30, "--lr", 1e-2,
                   "--batch", 4, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 30 and summary["after"]["score"] >= summary["before"]["score"]
    assert "held-out views" in summary["after"]["inputs"]
    assert "fine-tuning: step 30/30" in done.stderr  # a plain progress line when stderr is not a terminal
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # inputs unchanged
    assert set(after) - set(before) == {"tuned.onnx"}  # nothing else written
    # the written model runs and keeps the interface
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.zeros((2, 3, 16, 16), np.float32)})[0].shape == (2, 5)


def test_prune_with_finetune_reports_the_training(tmp_path):
    dense, _ = pruned_pair(tmp_path)
    out = tmp_path / "small.onnx"
    done = run_cli("prune", dense, "-o", out, "--ratio", 0.5, "--criterion", "l2", "--round-to", 1, "--no-latency",
                   "--finetune", 10, "--lr", 1e-2, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["finetune"]["steps"] == 10 and out.is_file()


def test_bad_finetune_requests_are_refused_with_nothing_written(tmp_path):
    dense, pruned = pruned_pair(tmp_path)
    before = tree(tmp_path)
    cases = [
        (["--resume"], 2, "--resume needs --checkpoint"),
        (["--min-fidelity", "2"], 9, "below --min-fidelity"),
        (["--data", tmp_path / "missing"], 2, "no such file"),
        (["--steps", "0"], 2, "at least 1"),
    ]
    commands = [["finetune", pruned, "--teacher", dense, "-o", tmp_path / "out.onnx", "--steps", 2, *extra]
                for extra, _, _ in cases]
    commands.append(["finetune", pruned, "--teacher", dense, "-o", dense, "--steps", 2])  # would overwrite the teacher
    commands.append(["finetune", pruned, "--teacher", pruned, "-o", tmp_path / "o.onnx", "--steps", 1,
                     "--checkpoint", pruned])
    # refusals need no process of their own: `python -m spa.cli`'s entry point in two interpreters
    *refused, overwrite, checkpoint = run_many([(args, None) for args in commands])
    for (extra, code, phrase), done in zip(cases, refused):
        assert done.returncode == code and phrase in done.stderr and "Traceback" not in done.stderr, (extra, done.stderr)
    assert overwrite.returncode != 0 and overwrite.stderr.count("\n") == 1
    assert checkpoint.returncode != 0 and "--checkpoint" in checkpoint.stderr
    assert tree(tmp_path) == before


def test_a_hugging_face_folder_is_fine_tuned_into_a_folder_with_its_side_files(tmp_path):
    from tests.flow.test_fidelity import _zoo_llama

    dense = _zoo_llama().parent
    pruned = tmp_path / "pruned"
    done = run_cli("prune", dense, "-o", pruned, "--ratio", 0.3, "--criterion", "l2", "--no-latency", "-q")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "tuned"
    done = run_cli("finetune", pruned, "--teacher", dense, "-o", out, "--steps", 3, "--sequence", 16, "--pool", 4,
                   "--batch", 2, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["after"]["kind"] == "language model" and "wrote itself" in summary["data"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in pruned.iterdir())
    assert (out / "config.json").read_text() == (pruned / "config.json").read_text()

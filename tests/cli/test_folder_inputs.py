"""Every command that reads a model takes a Hugging Face folder (model.onnx + config.json) as it
takes the model file itself: the same output, and the same one-line error when the folder holds no
single model."""
from __future__ import annotations

import json
import shutil

import onnx
import pytest

from spa.cli import main
from tests.cli.test_cli import build_cnn, float_params, sha, tree


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    onnx.save(build_cnn(), folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"model_type": "cnn"}))
    return folder


def _json(capsys, argv) -> dict | list:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("command", ["inspect", "groups"])
def test_inspect_and_groups_print_the_same_for_a_folder(folder, capsys, command):
    by_folder = _json(capsys, [command, str(folder), "--json", "-q"])
    by_file = _json(capsys, [command, str(folder / "model.onnx"), "--json", "-q"])
    assert by_folder == by_file and by_folder


def test_groups_of_an_exported_llama_folder(capsys):
    pytest.importorskip("optimum")
    from models import hf_zoo

    folder = hf_zoo.cached_export("llama", "optimum")
    rows = _json(capsys, ["groups", str(folder), "--json", "-q"])
    assert rows == _json(capsys, ["groups", str(folder / "model.onnx"), "--json", "-q"])
    assert [r["kind"] for r in rows if r["kind"] == "heads" and r["prunable"]] == ["heads", "heads"]


def test_report_and_diff_take_folders(folder, tmp_path, capsys):
    pruned = tmp_path / "small"
    pruned.mkdir()
    assert main(["prune", str(folder / "model.onnx"), "-o", str(pruned / "model.onnx"), "--ratio", "0.25",
                 "--criterion", "l1", "--no-latency", "--json", "-q"]) == 0
    capsys.readouterr()
    by_folder = _json(capsys, ["report", str(pruned), "--original", str(folder), "-o", str(tmp_path / "a.md"),
                               "--json", "-q"])
    by_file = _json(capsys, ["report", str(pruned / "model.onnx"), "--original", str(folder / "model.onnx"),
                             "-o", str(tmp_path / "b.md"), "--json", "-q"])
    assert by_folder["stored"] and by_folder["layers"] and by_folder["layers"] == by_file["layers"]
    assert by_folder["after"]["params"] == float_params(pruned / "model.onnx")
    assert (tmp_path / "a.md").read_text().count("\n") > 5
    same = _json(capsys, ["diff", str(folder), str(folder / "model.onnx"), "--json", "-q"])
    assert same["passed"] and same["structure"]["params"]["delta"] == 0
    smaller = _json(capsys, ["diff", str(folder), str(pruned), "--json", "--no-outputs", "-q"])
    assert smaller["structure"]["params"]["delta"] == \
        float_params(pruned / "model.onnx") - float_params(folder / "model.onnx") < 0


def test_no_output_lands_on_a_file_of_the_folder(folder, capsys):
    before = tree(folder)
    assert main(["groups", str(folder), "--dot", str(folder / "config.json"), "-q"]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spa: error:") and "config.json" in err[0]
    assert tree(folder) == before and sha(folder / "config.json") == before["config.json"]


@pytest.mark.parametrize("argv", [["inspect", "{d}"], ["groups", "{d}"], ["report", "{d}", "-o", "{t}/r.html"],
                                  ["diff", "{d}", "{m}"], ["diff", "{m}", "{d}"], ["prune", "{d}", "-o", "{t}/out"],
                                  ["report", "{m}", "--original", "{d}", "-o", "{t}/r.html"]])
@pytest.mark.parametrize("contents", [[], ["a.onnx", "b.onnx"]])
def test_a_folder_without_one_model_is_one_line(tmp_path, capsys, argv, contents):
    model = tmp_path / "m.onnx"
    onnx.save(build_cnn(), model)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in contents:
        shutil.copy(model, bad / name)
    code = main([a.format(d=bad, t=tmp_path, m=model) for a in argv] + ["-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1, err
    assert err[0].startswith(f"spa: error: {bad}: expected one .onnx model in the folder")
    assert err[0].endswith("found none" if not contents else "found 2 (a KV-cache export has several; "
                           "export text-generation without past)")
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "out").exists()


def test_help_says_every_model_argument_takes_a_folder():
    from spa.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, dests in {"inspect": ["model"], "groups": ["model"], "prune": ["model"], "report": ["model"],
                        "diff": ["a", "b"], "bench": ["model"], "finetune": ["model"]}.items():
        helps = {a.dest: a.help for a in commands[name]._actions if not a.option_strings}
        for dest in dests:
            assert "Hugging Face folder" in helps[dest], (name, dest, helps[dest])

"""The plain `spa prune MODEL -o OUT`: the family's default configuration (spa.flow.defaults),
widths rounded for this CPU, and a summary that says which configuration ran, how much the outputs
changed (checked here against ONNX Runtime on the written file) and how fast it is;
`--min-fidelity` refuses to write below a threshold."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import spa
from spa.allocation.allocate import cpu_block_size
from spa.flow.defaults import default_config, model_family
from spa.flow.pipeline import analyze_scope, load_canonical
from tests.cli.test_cli import build_cnn, run_cli
from tests.graphs import GraphBuilder, conv_relu_conv


def mlp() -> onnx.ModelProto:
    b = GraphBuilder(seed=2)
    x = b.input("x", (4, 16))
    h = b.op("Relu", [b.op("Gemm", [x, b.weight((32, 16)), b.weight((32,))], transB=1)])
    b.output(b.op("Gemm", [h, b.weight((10, 32)), b.weight((10,))], transB=1))
    return b.proto()


@pytest.mark.parametrize("proto,family", [(build_cnn(), "cnn"), (build_cnn(bn=True), "cnn-bn"), (mlp(), "other")],
                         ids=["cnn", "cnn-bn", "mlp"])
def test_family_of_small_models(proto, family):
    model = load_canonical(proto)
    assert model_family(model, analyze_scope(model)) == family
    config = default_config(model, analyze_scope(model))
    assert config.criterion == "obspa" and config.global_rank == (family == "cnn-bn")


def test_a_transformer_encoder_ranks_across_groups():
    from models import hf_zoo

    model = load_canonical(str(hf_zoo.cached_export("bert", "optimum") / "model.onnx"))
    config = default_config(model, analyze_scope(model))
    assert (config.family, config.criterion, config.global_rank) == ("encoder", "obspa", True)


def test_a_language_model_is_a_decoder_and_ranks_locally(tmp_path):
    from bench.scale import SIZES, build

    model = load_canonical(build(SIZES["tiny"], tmp_path / "llama"))
    config = default_config(model, analyze_scope(model))
    assert (config.family, config.global_rank) == ("decoder", False)


def test_plain_prune_says_what_ran_and_how_much_changed(tmp_path):
    path, out = tmp_path / "bn.onnx", tmp_path / "out.onnx"
    onnx.save(build_cnn(widths=(32, 48, 40), bn=True), str(path))
    r = run_cli("prune", path, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    plan = summary["plan"]
    assert plan["criterion"] == "obspa" and plan["global"] is True and plan["default"]["family"] == "cnn-bn"
    assert plan["round_to"] == cpu_block_size()
    # the fidelity figures, recomputed from the written file on the same example inputs
    fidelity = summary["fidelity"]
    assert fidelity["kind"] == "classifier" and fidelity["samples"] == 8
    dense = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pruned = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    from spa.runtime.validate import random_inputs

    canonical = load_canonical(str(path))
    feeds = [random_inputs(canonical, seed) for seed in range(8)]
    d = np.concatenate([dense.run(None, f)[0] for f in feeds])
    p = np.concatenate([pruned.run(None, f)[0] for f in feeds])
    assert fidelity["agreement"] == pytest.approx(float(np.mean(d.argmax(1) == p.argmax(1))))
    assert fidelity["relative_error"] == pytest.approx(np.linalg.norm(d - p) / np.linalg.norm(d), rel=1e-3)
    latency = summary["latency"]
    assert latency["dense_ms"] > 0 and latency["pruned_ms"] > 0 and latency["rounds"] >= 3
    assert latency["speedup"] == pytest.approx(latency["dense_ms"] / latency["pruned_ms"])

    table = run_cli("prune", path, "-o", out)
    assert table.returncode == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "configuration: obspa, ranked across groups (default for a CNN with BatchNorm statistics" in text
    assert "fidelity: top-1 agreement" in text and "latency (cpu, alternated" in text


def test_min_fidelity_refuses_to_write(tmp_path):
    path, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(conv_relu_conv(), str(path))  # not a classifier: score = 1 - error
    args = ("prune", path, "-o", out, "--ratio", "0.5", "--round-to", "1", "--no-latency")
    r = run_cli(*args, "--min-fidelity", "0", "--json")
    assert r.returncode == 0, r.stderr
    fidelity = json.loads(r.stdout)["fidelity"]
    assert fidelity["kind"] == "outputs" and fidelity["score"] == pytest.approx(1 - fidelity["relative_error"])
    assert 0 < fidelity["score"] < 1
    out.unlink()
    r = run_cli(*args, "--min-fidelity", str((fidelity["score"] + 1) / 2))
    assert r.returncode == 9, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "--min-fidelity" in r.stderr and not out.exists()


def test_the_python_api_takes_auto():
    result = spa.prune(build_cnn(bn=True), 0.3, criterion="auto")
    assert result.plan.meta["default"]["family"] == "cnn-bn" and result.plan.meta["criterion"] == "obspa"

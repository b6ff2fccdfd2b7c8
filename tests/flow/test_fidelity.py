"""Output fidelity of a pruned model (spa.flow.fidelity): every number is checked against the
models run with ONNX Runtime directly and compared with numpy, never against SPA's own outputs."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import spa
from spa.flow.fidelity import Fidelity, measure_fidelity
from spa.runtime.validate import random_inputs
from tests.graphs import GraphBuilder


def classifier(seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm: [1, 3, 16, 16] → [1, classes]."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", (1, 3, 16, 16))
    h = b.op("Relu", [b.conv(x, 3, 16)])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    bias = b.weight(None, data=np.zeros(classes, np.float32))  # the class follows the input, not a bias
    y = b.op("Gemm", [h, b.weight((classes, 16)), bias], transB=1)
    b.output(y)
    return b.proto()


def feature_map(seed: int = 0) -> onnx.ModelProto:
    """Conv → Relu → Conv: an output of rank 4, not a classifier."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", (1, 3, 8, 8))
    b.output(b.conv(b.op("Relu", [b.conv(x, 3, 12)]), 12, 4))
    return b.proto()


def ort_outputs(model: onnx.ModelProto | ir.Model, feeds: list[dict]) -> list[list[np.ndarray]]:
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return [sess.run(None, f) for f in feeds]


def frobenius_error(dense: list[list[np.ndarray]], pruned: list[list[np.ndarray]]) -> float:
    d = np.concatenate([a.astype(np.float64).ravel() for outs in dense for a in outs])
    p = np.concatenate([a.astype(np.float64).ravel() for outs in pruned for a in outs])
    return float(np.linalg.norm(p - d) / np.linalg.norm(d))


def own_feeds(n: int, shape, seed: int = 123) -> list[dict]:
    """Noise around a random mean per channel (so that the top class varies from input to input)."""
    rng = np.random.default_rng(seed)
    means = (2 * rng.standard_normal((n, 1, shape[1]) + (1,) * (len(shape) - 2))).astype(np.float32)
    return [{"x": rng.standard_normal(shape).astype(np.float32) + m} for m in means]


def test_identical_models_agree_fully():
    model = ir.serde.deserialize_model(classifier())
    f = measure_fidelity(model, model, samples=5)
    assert f.relative_error == 0.0
    assert f.agreement == 1.0
    assert (f.kind, f.samples, f.inputs) == ("classifier", 5, "example inputs")
    assert not f.collapsed() and f.score() == 1.0
    assert f.describe() == "top-1 agreement 100.0% and relative output error 0 on 5 example inputs"


def test_pruned_classifier_matches_an_independent_run_on_the_same_feeds():
    src = classifier(seed=1)
    result = spa.prune(src, ratio=0.5)
    feeds = own_feeds(40, (1, 3, 16, 16))
    f = measure_fidelity(result.original, result.model, feeds=feeds)
    dense = ort_outputs(src, feeds)  # the model as built, not SPA's canonical copy
    pruned = ort_outputs(result.model, feeds)
    expected_error = frobenius_error(dense, pruned)
    top_d = np.array([o[0].argmax(1)[0] for o in dense])
    top_p = np.array([o[0].argmax(1)[0] for o in pruned])
    expected_agreement = float(np.mean(top_d == top_p))
    assert 0.01 < expected_error < 1  # half the channels gone: the outputs do change
    assert len(set(top_d)) > 2 and 0.2 < expected_agreement < 1  # a test that can tell agreement apart
    assert f.relative_error == pytest.approx(expected_error, rel=1e-4)
    assert f.agreement == pytest.approx(expected_agreement)
    assert (f.kind, f.samples, f.inputs) == ("classifier", 40, "given inputs")
    assert f.score() == f.agreement
    assert f.as_dict()["relative_error"] == f.relative_error


def test_default_inputs_are_the_documented_example_inputs():
    """Without feeds: example inputs of seeds seed … seed+samples-1 (random_inputs)."""
    src = classifier(seed=2)
    result = spa.prune(src, ratio=0.5)
    start = time.perf_counter()
    f = measure_fidelity(result.original, result.model, samples=6, seed=3)
    elapsed = time.perf_counter() - start
    feeds = [random_inputs(result.original, seed=s) for s in range(3, 9)]
    assert len({x["x"].tobytes() for x in feeds}) == 6  # six different inputs
    dense, pruned = ort_outputs(src, feeds), ort_outputs(result.model, feeds)
    assert f.relative_error == pytest.approx(frobenius_error(dense, pruned), rel=1e-4)
    agree = np.mean([d[0].argmax() == p[0].argmax() for d, p in zip(dense, pruned)])
    assert f.agreement == pytest.approx(agree)
    assert (f.samples, f.inputs) == (6, "example inputs")
    assert elapsed < 5, f"measure_fidelity took {elapsed:.2f} s on a tiny model"


def test_a_model_that_is_not_a_classifier_reports_output_error_only():
    src = feature_map(seed=4)
    result = spa.prune(src, ratio=0.5)
    feeds = own_feeds(7, (1, 3, 8, 8))
    f = measure_fidelity(result.original, result.model, feeds=feeds)
    expected = frobenius_error(ort_outputs(src, feeds), ort_outputs(result.model, feeds))
    assert f.kind == "outputs" and f.agreement is None and f.samples == 7
    assert f.relative_error == pytest.approx(expected, rel=1e-4)
    assert 0 < f.relative_error
    assert f.score() == pytest.approx(max(0.0, 1 - expected), rel=1e-4)
    assert f.describe().startswith("relative output error ") and f.describe().endswith(" on 7 given inputs")


def test_non_finite_outputs_give_infinite_error_and_their_rows_disagree():
    src = classifier(seed=5)
    feeds = own_feeds(12, (1, 3, 16, 16))
    tops = [o[0].argmax() for o in ort_outputs(src, feeds)]
    broken = onnx.ModelProto()
    broken.CopyFrom(src)
    bias = next(t for t in broken.graph.initializer if list(t.dims) == [10])
    values = onnx.numpy_helper.to_array(bias).copy()
    values[tops[0]] = np.nan  # NaN where the dense model's top class is: argmax there would "agree"
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    f = measure_fidelity(ir.serde.deserialize_model(src), ir.serde.deserialize_model(broken), feeds=feeds)
    assert f.relative_error == math.inf
    assert f.agreement == 0.0
    assert f.collapsed() and f.score() == 0.0


def test_collapsed_and_score():
    def make(error, agreement):
        return Fidelity(relative_error=error, agreement=agreement, kind="classifier", samples=8,
                        inputs="example inputs")

    assert make(0.3, 0.05).collapsed()
    assert not make(0.3, 0.5).collapsed()
    assert make(1.5, 0.5).collapsed()
    outputs = Fidelity(relative_error=1.5, agreement=None, kind="outputs", samples=8, inputs="example inputs")
    assert outputs.collapsed() and outputs.score() == 0.0
    assert Fidelity(0.25, None, "outputs", 8, "example inputs").score() == 0.75
    assert make(0.21, 0.875).describe() == \
        "top-1 agreement 87.5% and relative output error 0.21 on 8 example inputs"


def _zoo_llama() -> Path:
    """The tiny Llama of the Hugging Face zoo through torch.onnx (built once, then cached)."""
    from models import hf_zoo

    return hf_zoo.cached_export("llama", "torch") / "model.onnx"


def test_a_language_model_is_measured_on_its_own_text_and_masked_positions():
    result = spa.prune(str(_zoo_llama()), ratio=0.3)
    f = measure_fidelity(result.original, result.model, samples=4)
    assert (f.kind, f.samples, f.inputs) == ("language model", 4, "the model's own sampled text")
    assert 0.0 <= f.agreement <= 1.0 and math.isfinite(f.relative_error)
    assert "next-token agreement" in f.describe() and "4 sequences of the model's own sampled text" in f.describe()
    # given token ids, left-padded: only positions under the mask count
    rng = np.random.default_rng(7)
    feeds = []
    for pad in (0, 5, 11):
        mask = np.ones((1, 16), np.int64)
        mask[0, :pad] = 0
        feeds.append({"input_ids": rng.integers(0, 128, (1, 16)).astype(np.int64), "attention_mask": mask})
    g = measure_fidelity(result.original, result.model, feeds=feeds)
    proto = onnx.load(str(_zoo_llama()))
    dense, pruned = ort_outputs(proto, feeds), ort_outputs(result.model, feeds)
    same = [(d[0].argmax(-1) == p[0].argmax(-1))[f["attention_mask"] == 1] for d, p, f in zip(dense, pruned, feeds)]
    assert g.kind == "language model" and g.samples == 3
    assert g.agreement == pytest.approx(np.concatenate(same).mean())
    assert g.relative_error == pytest.approx(frobenius_error(dense, pruned), rel=1e-3)


def test_own_text_logits_come_from_the_writer_and_equal_the_dense_graphs():
    """The sampled text's dense logits are the writing session's (no second session of the model):
    the same numbers a plain ONNX Runtime run of the original gives on those sequences."""
    from models import hf_zoo
    from spa.flow import fidelity
    from spa.flow.pipeline import load_canonical

    path = hf_zoo.cached_export("llama", "optimum") / "model.onnx"  # with its KV cache, read without it
    original = load_canonical(str(path))
    feeds, text = fidelity._sampled_text(original, 3, seed=5)
    assert text.writer is not None  # written through the KV-cache copy
    written = fidelity._written_logits(text, feeds, [v.name for v in original.graph.outputs])
    plain = ort_outputs(original, feeds)
    assert len(written) == 3
    for w, p in zip(written, plain):
        assert w[0].shape == p[0].shape
        np.testing.assert_allclose(w[0], p[0], rtol=1e-4, atol=1e-4)

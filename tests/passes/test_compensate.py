"""OBS compensation (passes/compensate): the update against its closed form and against facts
that do not depend on the code (a removed channel that is a linear combination of kept ones can
be removed without changing the output; compensation never does worse on H's own distribution)."""
import numpy as np
import pytest

from spa.allocation.allocate import Budget
from spa.passes.compensate.obs import damped, obs_update, removal_cost
from spa.flow.pipeline import Compensation, prune
from spa.runtime.validate import random_inputs, run
from tests.graphs import GraphBuilder


def random_problem(seed=0, n=6, m=4, samples=200):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, n)) @ rng.standard_normal((n, n))  # correlated inputs
    w = rng.standard_normal((m, n))
    return x, w, x.T @ x / samples


def test_update_matches_the_classic_obs_formula():
    _, w, h = random_problem()
    removed = np.array([1, 4])
    h_inv = np.linalg.inv(h)
    # W ← W − W_P ((H⁻¹)_PP)⁻¹ (H⁻¹)_P:   (the textbook form, computed independently)
    expected = w - w[:, removed] @ np.linalg.inv(h_inv[np.ix_(removed, removed)]) @ h_inv[removed, :]
    np.testing.assert_allclose(obs_update(w, h, removed), expected, atol=1e-10)
    assert np.allclose(obs_update(w, h, removed)[:, removed], 0)


def test_cost_is_the_output_error_of_the_update():
    x, w, h = random_problem(seed=1)
    removed = np.array([2])
    new = obs_update(w, h, removed)
    err = np.mean(np.sum((x @ w.T - x @ new.T) ** 2, axis=1))
    assert removal_cost(w, np.linalg.inv(h), removed) == pytest.approx(0.5 * err, rel=1e-6)


def test_compensation_never_loses_to_plain_removal_on_its_own_distribution():
    for seed in range(5):
        x, w, h = random_problem(seed=seed)
        removed = np.array([0, 3])
        plain = w.copy()
        plain[:, removed] = 0
        comp = obs_update(w, h, removed)
        loss = lambda v: np.mean((x @ w.T - x @ v.T) ** 2)
        assert loss(comp) <= loss(plain) + 1e-12


def test_a_channel_that_copies_another_is_removed_without_output_change():
    """Conv1's channel 3 is 2 × channel 1 (same filter, doubled): the next conv can take it over."""
    b = GraphBuilder(seed=3)
    x = b.input("x", (1, 3, 8, 8))
    w1 = b.rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w1[3] = 2 * w1[1]
    c1 = b.op("Conv", [x, b.weight(None, data=w1)], pads=[1, 1, 1, 1])  # no bias, no ReLU: linear
    y = b.conv(c1, 6, 4, k=1)
    b.output(y)
    model = b.model()
    result = prune(model, plan=None, budget=Budget(ratio=1 / 6 + 1e-6), criterion="obspa",
                   compensation=Compensation(samples=8))
    removed = result.plan.removed[next(iter(result.plan.removed))]
    assert removed in ([1], [3])  # OBS finds the redundant pair; either copy may go
    plain = prune(model, plan=result.plan)  # the same channel removed without compensation
    feeds = random_inputs(result.original)
    dense = run(result.original, feeds)[0]
    err = lambda r: float(np.max(np.abs(run(r.model, feeds)[0] - dense)))
    # only the 1% damping of H keeps it from exact
    assert err(result) <= 0.01 * np.max(np.abs(dense))
    assert err(result) <= 0.05 * err(plain)


def test_compensation_keeps_more_of_the_output_than_magnitude_pruning():
    b = GraphBuilder(seed=4)
    x = b.input("x", (1, 4, 8, 8))
    h = b.op("Relu", [b.conv(x, 4, 16)])
    b.output(b.conv(h, 16, 8, k=1))
    model = b.model()
    feeds = random_inputs(model, seed=5)
    plain = prune(model, Budget(ratio=0.5))
    comp = prune(model, Budget(ratio=0.5), plan=plain.plan, compensation=Compensation(samples=16))
    dense = run(plain.original, feeds)[0]
    err = lambda r: float(np.mean((run(r.model, feeds)[0] - dense) ** 2))
    assert err(comp) < err(plain)
    assert damped(np.eye(3)).trace() == pytest.approx(3.03)


def test_cli_obspa_with_calibration_file(tmp_path):
    import json
    import subprocess
    import sys

    import onnx

    b = GraphBuilder(seed=6)
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 8)])
    b.output(b.conv(h, 8, 4, k=1))
    onnx.save(b.proto(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((4, 1, 3, 8, 8)).astype(np.float32)[:, 0])
    r = subprocess.run([sys.executable, "-m", "spa.cli", "prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                        "--criterion", "obspa", "--hessian", "data", "--calib", str(tmp_path / "calib.npz"),
                        "--ratio", "0.5", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["plan"]["criterion"] == "obspa" and out["plan"]["compensation"] == "data"
    assert out["after"]["params"] < out["before"]["params"]


def token_model():
    from onnx import TensorProto, helper

    b = GraphBuilder()
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]))
    b.inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]))
    emb = b.op("Gather", [b.weight((50, 8)), "input_ids"])
    mask = b.op("Unsqueeze", [b.op("Cast", ["attention_mask"], to=TensorProto.FLOAT), b.ints([2])])
    b.output(b.op("Mul", [emb, mask]))
    return b.model()


def test_synthetic_tokens_cover_the_vocabulary_and_masks_are_ones():
    from spa.statistics.hessian import synthetic_feeds

    feeds = list(synthetic_feeds(token_model(), samples=4, seed=1))
    ids = np.concatenate([f["input_ids"].ravel() for f in feeds])
    assert feeds[0]["input_ids"].shape == (1, 64)
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 30  # the whole table, not [PAD]
    assert all(np.all(f["attention_mask"] == 1) for f in feeds)


def test_synthetic_images_correlate_like_photos():
    from spa.statistics.hessian import natural_noise

    x = natural_noise([2, 3, 32, 32], np.random.default_rng(0))
    assert np.allclose(x.mean(axis=(2, 3)), 0, atol=1e-6) and np.allclose(x.std(axis=(2, 3)), 1)
    neighbours = np.mean(x[..., :, 1:] * x[..., :, :-1])
    assert neighbours > 0.5  # white noise would give about 0


def test_a_language_model_writes_its_own_calibration_text():
    """A model whose next token after t is always t+1 must yield counting sequences, not noise."""
    from onnx import TensorProto, helper

    from spa.statistics.hessian import synthetic_feeds
    from spa.flow.pipeline import load_canonical

    vocab = 20
    b = GraphBuilder()
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]))
    emb = b.op("Gather", [b.weight((vocab, vocab), data=np.eye(vocab, dtype=np.float32)), "input_ids"])
    successor = np.roll(np.eye(vocab, dtype=np.float32), 1, axis=1) * 50  # row t peaks at t+1
    b.output(b.op("MatMul", [emb, b.weight((vocab, vocab), data=successor)]))
    model = load_canonical(b.proto())
    feeds = list(synthetic_feeds(model, samples=3, seed=0, sequence=12))
    assert len(feeds) == 3
    for feed in feeds:
        ids = feed["input_ids"][0]
        assert len(ids) == 12 and np.all(np.diff(ids) % vocab == 1)
    assert len({int(f["input_ids"][0, 0]) for f in feeds}) > 1  # random starts


def test_a_constant_channel_read_by_a_bare_matmul_is_folded_into_a_new_bias():
    """x → MatMul+Add → Relu → MatMul (no bias): hidden channel 0 is always 5, so removing it and
    adding 5·W2[0] as a bias after the second MatMul must keep the output exactly."""
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 4, 6])
    w1 = b.rng.standard_normal((6, 8)).astype(np.float32)
    w1[:, 0] = 0
    bias = np.abs(b.rng.standard_normal(8)).astype(np.float32)
    bias[0] = 5
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.weight(None, data=w1)]), b.weight(None, data=bias)])])
    b.output(b.op("MatMul", [h, b.weight((8, 3))]))
    source = b.model()
    result = prune(b.proto(), Budget(ratio=0.125), criterion="flap")
    assert [len(r) for r in result.plan.removed.values()] == [1] and 0 in next(iter(result.plan.removed.values()))
    assert any(n.op_type == "Add" and n.name.endswith("_spa_bias_add") for n in result.model.graph)
    feeds = random_inputs(source, seed=1)
    assert np.allclose(run(source, feeds)[0], run(result.model, feeds)[0], atol=1e-4)


def _removal_error(result, feeds, dense):
    return float(np.mean((run(result.model, feeds)[0] - dense) ** 2))


def test_greedy_selection_keeps_one_of_two_copies():
    """Channels 1 and 3 carry the same signal: each alone costs nothing to remove (the other stands
    in), so ranking single channels removes both; greedy removal, with H⁻¹ downdated after the
    first, sees the second become expensive."""
    b = GraphBuilder(seed=3)
    x = b.input("x", (1, 3, 8, 8))
    w1 = b.rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w1[3] = 2 * w1[1]
    c1 = b.op("Conv", [x, b.weight(None, data=w1)], pads=[1, 1, 1, 1])
    b.output(b.conv(c1, 6, 4, k=1))
    model = b.model()
    budget = Budget(ratio=2 / 6 + 1e-6)
    joint = prune(model, budget, criterion="obspa", compensation=Compensation(samples=8))
    greedy = prune(model, budget, criterion="obspa", compensation=Compensation(samples=8, greedy=True))
    key = next(iter(joint.plan.removed))
    assert sorted(joint.plan.removed[key]) == [1, 3]
    assert len(set(greedy.plan.removed[key]) & {1, 3}) == 1 and len(greedy.plan.removed[key]) == 2
    feeds = random_inputs(joint.original, seed=1)
    dense = run(joint.original, feeds)[0]
    assert _removal_error(greedy, feeds, dense) < 0.5 * _removal_error(joint, feeds, dense)


def test_greedy_downdate_costs_add_up_to_the_joint_cost():
    """cost({a}) + cost(b after a, from the downdated W and H⁻¹) = cost({a, b}) removed jointly."""
    import onnx_ir as ir

    from spa.passes.compensate.greedy import _GreedySink
    from spa.passes.compensate.obs import system
    from spa.statistics.sinks import SinkWeight

    _, w, h = random_problem(seed=7, n=8, m=5)
    h = np.pad(h, ((0, 1), (0, 1)))
    h[-1, -1] = 1.0  # the constant column: zero-mean inputs
    sink = SinkWeight(None, ir.Value(name="w", const_value=ir.tensor(w.astype(np.float32))), None, "gemm", 1, False)
    space = type("Space", (), {"pos2class": np.arange(8)})
    state = _GreedySink(sink, space, 8, h)
    first = state.costs()
    state.remove(2)
    second = state.costs()
    wb, hd = system(sink, h)
    joint = removal_cost(wb, np.linalg.inv(hd), np.array([2, 5]))
    assert first[2] + second[5] == pytest.approx(joint, rel=1e-6)
    assert second[2] == pytest.approx(0.0, abs=1e-9)  # a removed channel costs nothing more


def test_sequential_measures_each_sink_on_the_compensated_prefix(monkeypatch):
    from spa.statistics import hessian

    b = GraphBuilder(seed=5)
    x = b.input("x", (1, 3, 8, 8))
    h1 = b.op("Relu", [b.conv(x, 3, 8)])
    h2 = b.op("Relu", [b.conv(h1, 8, 8)])
    b.output(b.conv(h2, 8, 4, k=1))
    model = b.model()
    seen = []
    real = hessian.collect_cross

    def spy(m, reference, sinks, feeds):
        seen.append((set(sinks), {n.name: n.inputs[1].const_value.numpy().copy() for n in m.graph
                                  if n.op_type == "Conv"}))
        return real(m, reference, sinks, feeds)

    monkeypatch.setattr(hessian, "collect_cross", spy)
    result = prune(model, Budget(ratio=0.5), criterion="obspa", compensation=Compensation(samples=8, sequential=True))
    assert len(seen) == 2  # one pass per compensated sink, in topological order
    (first_sink,), (second_sink,) = seen[0][0], seen[1][0]
    order = [n.name for n in result.original.graph]
    assert order.index(first_sink) < order.index(second_sink)
    groups = result.analysis.group_by_key()
    gone = [c for key, r in result.plan.removed.items() for c in r
            if any(s.node == first_sink for s in groups[key].sinks)]
    before, later = seen[0][1][first_sink], seen[1][1][first_sink]
    # by the second pass the first sink's removed input channels read zero weights
    assert gone and np.any(before[:, gone] != 0) and np.all(later[:, gone] == 0)


def test_sequential_loses_less_than_joint_on_a_deep_relu_net():
    b = GraphBuilder(seed=6)
    v = b.input("x", (1, 3, 16, 16))
    width = 3
    for _ in range(4):
        v = b.op("Relu", [b.conv(v, width, 12)])
        width = 12
    b.output(b.conv(v, 12, 4, k=1))
    model = b.model()
    joint = prune(model, Budget(ratio=0.4), criterion="obspa", compensation=Compensation(samples=16))
    seq = prune(model, Budget(ratio=0.4), criterion="obspa", compensation=Compensation(samples=16, sequential=True))
    assert seq.plan.removed == joint.plan.removed
    from spa.statistics.hessian import synthetic_feeds

    feeds = list(synthetic_feeds(joint.original, 16, seed=0))  # the statistics' own distribution
    dense = np.concatenate([run(joint.original, f)[0] for f in feeds])
    err = lambda r: float(np.mean((np.concatenate([run(r.model, f)[0] for f in feeds]) - dense) ** 2))
    assert err(seq) < 0.97 * err(joint)


def test_reconstruction_toward_the_same_inputs_is_the_obs_update():
    from spa.passes.compensate.obs import reconstruct

    _, w, h = random_problem(seed=2, n=7, m=3)
    removed = np.array([0, 4])
    np.testing.assert_allclose(reconstruct(w, damped(h), h, removed), obs_update(w, damped(h), removed), atol=1e-9)


def test_reconstruction_undoes_an_upstream_change():
    """The sink's input arrives scaled by 0.5 (upstream error): re-creating the reference output
    doubles the kept weights, which a plain OBS update on the new inputs cannot know."""
    from spa.passes.compensate.obs import reconstruct

    x, w, _ = random_problem(seed=3, n=6, m=2, samples=400)
    xr, xp = np.c_[x, np.ones(len(x))], np.c_[0.5 * x, np.ones(len(x))]
    h, cross = xp.T @ xp / len(x), xr.T @ xp / len(x)
    wt = np.c_[w, np.zeros(2)]
    new = reconstruct(wt, damped(h), cross, np.array([5]))
    full = reconstruct(wt, damped(h, 1e-9), cross, np.array([], dtype=int), damp=1e-9)
    np.testing.assert_allclose(full[:, :6], 2 * w, rtol=1e-5)
    assert np.mean((xr @ wt.T - xp @ new.T) ** 2) < np.mean((xr @ wt.T - xp @ obs_update(wt, damped(h), np.array([5])).T) ** 2)


def test_a_bias_free_sink_whose_output_is_pruned_too_gets_no_unsliced_bias():
    """Unfused Conv → BN chains: the sink Conv has no bias and its own outputs are pruned; a new
    full-width bias would not be sliced with them (the model would not validate)."""
    b = GraphBuilder(seed=1)
    x = b.input("x", (1, 3, 8, 8))
    c = b.op("Conv", [x, b.weight(None, data=b.rng.standard_normal((8, 3, 3, 3)).astype(np.float32))], pads=[1, 1, 1, 1])
    n = b.batchnorm(c, np.ones(8), np.zeros(8), np.zeros(8), np.ones(8))
    c2 = b.op("Conv", [b.op("Relu", [n]), b.weight(None, data=b.rng.standard_normal((8, 8, 1, 1)).astype(np.float32))])
    b.output(b.conv(b.op("Relu", [c2]), 8, 4, k=1))
    result = prune(b.model(), Budget(ratio=0.5), criterion="obspa", fuse_batchnorm=False)
    assert result.after["params"] < result.before["params"]


@pytest.mark.parametrize("flags, meta", [
    (["--criterion", "taylor"], {"criterion": "taylor", "compensation": "synthetic", "update": "none"}),
    (["--criterion", "l2", "--greedy", "--sequential", "2", "--hessian", "data"],
     {"criterion": "l2", "compensation": "data", "update": "obs", "selection": "greedy", "sequential": 2}),
    (["--criterion", "obspa", "--hessian", "weights"], {"compensation": "weights", "update": "obs"}),
])
def test_cli_statistics_options_reach_the_plan(tmp_path, flags, meta):
    import json
    import subprocess
    import sys

    import onnx

    b = GraphBuilder(seed=6)
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 8)])
    b.output(b.conv(b.op("Relu", [b.conv(h, 8, 8)]), 8, 4, k=1))
    onnx.save(b.proto(), str(tmp_path / "m.onnx"))
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):  # a folder of calibration files
        np.savez(folder / f"{i}.npz", x=np.random.default_rng(i).standard_normal((3, 3, 8, 8)).astype(np.float32))
    extra = ["--calib", str(folder)] if "data" in flags else []
    r = subprocess.run([sys.executable, "-m", "spa.cli", "prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                        "--ratio", "0.5", "--json", "--samples", "6", *flags, *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert {k: plan.get(k) for k in meta} == meta


def test_auto_reads_batchnorm_where_it_reaches_and_makes_inputs_for_the_rest():
    b = GraphBuilder(seed=2)
    x = b.input("x", (1, 3, 8, 8))
    c = b.op("Conv", [x, b.weight(None, data=b.rng.standard_normal((8, 3, 3, 3)).astype(np.float32))], pads=[1, 1, 1, 1])
    n = b.batchnorm(c, np.ones(8), np.zeros(8), np.zeros(8), np.ones(8))
    h = b.op("Relu", [b.conv(b.op("Relu", [n]), 8, 8, k=1)])  # no BatchNorm after this one
    b.output(b.conv(h, 8, 4, k=1))
    result = prune(b.model(), Budget(ratio=0.5), criterion="obspa")
    assert result.plan.meta["compensation"] == "bn+synthetic"
    only_bn = prune(b.model(), Budget(ratio=0.5), criterion="obspa", compensation=Compensation(statistics="bn"))
    assert only_bn.plan.meta["compensation"] == "bn"


def test_default_samples_give_a_language_models_widest_consumer_enough_token_rows():
    from onnx import TensorProto, helper

    from spa.statistics.sinks import SinkPlan
    from spa.statistics.sources import default_samples
    from spa.flow.pipeline import load_canonical

    vocab = 20
    b = GraphBuilder()
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]))
    emb = b.op("Gather", [b.weight((vocab, 8)), "input_ids"])
    b.output(b.op("MatMul", [emb, b.weight((8, vocab))]))
    lm = load_canonical(b.proto())
    wide = type("Sink", (), {"matrix": lambda self: np.zeros((576, 1536))})()
    assert default_samples(lm, {"down": SinkPlan(wide, None)}) == 256  # 5 rows a column, 32 tokens a sequence (OWN_TEXT_LENGTH)
    # no next-token output (a text encoder): made-up ids, 10 rows a column, 64 positions a sequence
    assert default_samples(token_model(), {"down": SinkPlan(wide, None)}) == 256
    narrow = type("Sink", (), {"matrix": lambda self: np.zeros((8, 64))})()
    assert default_samples(token_model(), {"down": SinkPlan(narrow, None)}) == 32  # never fewer than 32


def test_removal_cost_is_the_trace_formula_for_a_wide_head():
    """The cost is ½·tr(W_P ((H⁻¹)_PP)⁻¹ W_Pᵀ); computed without the rows × rows product."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((300, 7))  # a head with many more rows (classes) than columns
    a = rng.standard_normal((7, 7))
    h_inv = np.linalg.inv(a @ a.T + np.eye(7))
    removed = np.array([1, 4])
    wp = w[:, removed]
    want = 0.5 * np.trace(wp @ np.linalg.inv(h_inv[np.ix_(removed, removed)]) @ wp.T)
    assert removal_cost(w, h_inv, removed) == pytest.approx(want, rel=1e-10)


def test_a_consumer_too_wide_for_dense_moments_ranks_by_l2_and_is_left_uncompensated(monkeypatch):
    import spa.statistics.sinks as sinks
    from spa.analysis.groups import analyze
    from spa.flow.pipeline import load_canonical

    b = GraphBuilder(seed=4)
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 8, k=3)])
    b.output(b.conv(b.op("Relu", [b.conv(h, 8, 6, k=3)]), 6, 4, k=1))  # sinks of 8·9 = 72 and 6·1 columns
    model = load_canonical(b.proto())
    groups = analyze(model).prunable_groups()
    assert len(sinks.compensable_sinks(model, groups)) == 2
    monkeypatch.setattr(sinks, "MAX_COLUMNS", 50)
    assert [sp.sink.matrix().shape[1] for sp in sinks.compensable_sinks(model, groups).values()] == [6]
    result = prune(b.model(), Budget(ratio=0.5), criterion="obspa")  # the 72-column sink: L2 rank, no update
    assert result.plan.removed and all(result.plan.removed.values())


@pytest.mark.parametrize("side,samples", [(224, 32), (320, 32), (640, 8), (1024, 8), (448, 17)])
def test_default_samples_read_about_the_same_pixels_whatever_the_image_size(side, samples):
    from onnx import TensorProto, helper

    from spa.statistics.sources import default_samples
    from spa.flow.pipeline import load_canonical

    b = GraphBuilder()
    b.inputs.append(helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, side, side]))
    b.output(b.conv("images", 3, 4, k=1))
    assert default_samples(load_canonical(b.proto()), {}) == samples

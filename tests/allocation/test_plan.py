"""Plans (JSON round trip, check_against) and allocation (local floor, global ranking, min_width,
parameter/MAC targets, seeded random). Widths and counts are measured on the sliced models."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest

from spa.allocation.allocate import Budget, allocate
from spa.analysis.groups import analyze
from spa.graph.canon import canonicalize
from spa.core.errors import SpaError
from spa.importance.criteria import score_groups
from spa.analysis.metrics import count
from spa.passes.slice import slice_model
from spa.flow.pipeline import make_plan
from spa.allocation.plan import PruningPlan
from spa.runtime.validate import copy_model, random_inputs
from tests.graphs import GraphBuilder


def chain(widths=(16, 24, 12), seed=0, scale=None, out=4):
    """x → conv(w1) → relu → conv(w2) → relu → … → conv(out). Each hidden width is one prunable
    group. `scale` maps a layer index to an array (or number) multiplying that conv's output rows."""
    b = GraphBuilder(seed=seed)
    h = b.input("x", (1, 3, 8, 8))
    c_in, names = 3, []
    for i, c_out in enumerate(list(widths) + [out]):
        w = b.rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
        bias = b.rng.standard_normal(c_out).astype(np.float32)
        if scale and i in scale:
            factor = np.asarray(scale[i], np.float32).reshape(-1)
            w = w * factor.reshape(-1, 1, 1, 1) if factor.size > 1 else w * factor
            bias = bias * factor
        wn, bn = b.weight(None, name=f"L{i}.w", data=w), b.weight(None, name=f"L{i}.b", data=bias)
        h = b.op("Conv", [h, wn, bn], pads=[1] * 4)
        if i < len(widths):
            h = b.op("Relu", [h])
        names.append(wn)
        c_in = c_out
    b.output(h)
    return canonicalize(b.model())


def conv_widths(model) -> dict[str, int]:
    """Output channels of every conv weight, read from the initializers."""
    return {name: v.const_value.numpy().shape[0] for name, v in model.graph.initializers.items()
            if name.endswith(".w")}


def group_of(analysis, weight: str):
    return next(g for g in analysis.prunable_groups() if any(m.key == f"{weight}:0" for m in g.params))


def sliced(model, analysis, plan):
    m = copy_model(model)
    slice_model(m, analysis, plan)
    return m


def ort_run(model, feeds):
    from spa.graph.io import to_proto

    sess = ort.InferenceSession(to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def my_params(model) -> int:
    return sum(v.const_value.numpy().size for v in model.graph.initializers.values()
               if v.const_value is not None and np.issubdtype(v.const_value.numpy().dtype, np.floating))


@pytest.fixture(scope="module")
def base():
    model = chain()
    return model, analyze(model)


# ---------------------------------------------------------------- plan data


def test_json_round_trip(tmp_path):
    plan = PruningPlan(removed={"b:0": [5, 1, 3], "a:0": [0], "empty:0": []}, widths={"a:0": 4, "b:0": 8},
                       meta={"criterion": "l2", "ratio": 0.3})
    text = json.dumps(plan.to_json())
    again = PruningPlan.from_json(json.loads(text))
    assert again.removed == {"a:0": [0], "b:0": [1, 3, 5]}
    assert again.widths == {"a:0": 4, "b:0": 8}
    assert again.meta == plan.meta
    path = tmp_path / "plan.json"
    plan.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]
    loaded = PruningPlan.load(path)
    assert loaded.removed == again.removed and loaded.widths == again.widths and loaded.meta == again.meta
    assert json.loads(path.read_text())["spa_plan"] == 1


@pytest.mark.parametrize("data", [[], {"groups": []}, {"spa_plan": 2}, {"spa_plan": 1, "groups": [{"key": "a"}]},
                                  {"spa_plan": 1, "groups": [{"key": "a", "remove": ["x"]}]},
                                  {"spa_plan": 1, "groups": [{"key": "a", "width": "x", "remove": [0]}]},
                                  {"spa_plan": 1, "groups": 5},
                                  {"spa_plan": 1, "groups": [{"key": "a", "remove": [1.7]}]},
                                  {"spa_plan": 1, "groups": [{"key": "a", "remove": [True]}]},
                                  {"spa_plan": 1, "meta": [], "groups": []}],
                         ids=["list", "no-marker", "future-format", "no-remove", "bad-index", "width-not-int",
                              "groups-not-list", "float-index", "bool-index", "meta-not-object"])
def test_from_json_rejects_malformed(data):
    with pytest.raises(SpaError):
        PruningPlan.from_json(data)


def test_load_errors(tmp_path):
    with pytest.raises(SpaError):
        PruningPlan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SpaError):
        PruningPlan.load(tmp_path / "bad.json")
    with pytest.raises(SpaError):
        PruningPlan().save(tmp_path / "no" / "plan.json")


@pytest.mark.parametrize("plan", [PruningPlan(), "empty-lists", "ratio-0"])
def test_plan_removing_nothing_is_bit_identical(base, plan):
    model, analysis = base
    if plan == "empty-lists":
        plan = PruningPlan(removed={g.key: [] for g in analysis.prunable_groups()})
    elif plan == "ratio-0":
        plan = make_plan(analysis, Budget(ratio=0.0))
    assert plan.is_empty()
    out = sliced(model, analysis, plan)
    feeds = random_inputs(model, seed=4)
    for a, b in zip(ort_run(model, feeds), ort_run(out, feeds)):
        assert np.array_equal(a, b)
    assert conv_widths(out) == conv_widths(model)


def test_check_against_refuses_bad_plans(base):
    model, analysis = base
    g = group_of(analysis, "L1.w")
    assert g.width == 24
    bad = {
        "wrong width": PruningPlan(removed={g.key: [0]}, widths={g.key: 23}),
        "unknown key": PruningPlan(removed={"no_such_tensor:0": [0]}),
        "negative index": PruningPlan(removed={g.key: [-1]}),
        "index == width": PruningPlan(removed={g.key: [24]}),
        "every channel": PruningPlan(removed={g.key: list(range(24))}),
    }
    unprunable = next(x for x in analysis.groups if not x.prunable)
    bad["unprunable group"] = PruningPlan(removed={unprunable.key: [0]})
    for label, plan in bad.items():
        with pytest.raises(SpaError):
            plan.check_against(analysis)
        with pytest.raises(SpaError):  # slicing refuses it too, and leaves the model alone
            m = copy_model(model)
            try:
                slice_model(m, analysis, plan)
            finally:
                assert conv_widths(m) == conv_widths(model), label
    PruningPlan(removed={g.key: list(range(23))}, widths={g.key: 24}).check_against(analysis)  # 1 left: fine


# ---------------------------------------------------------------- allocation


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.3, 0.5, 0.7, 0.85])
def test_local_ratio_removes_floor_of_ratio_times_width(base, ratio):
    model, analysis = base
    plan = make_plan(analysis, Budget(ratio=ratio))
    out = sliced(model, analysis, plan)
    widths_before, widths_after = conv_widths(model), conv_widths(out)
    for name in ("L0.w", "L1.w", "L2.w"):
        w = widths_before[name]
        expected = int(np.floor(Fraction(str(ratio)) * w))
        assert widths_before[name] - widths_after[name] == expected, (name, w, ratio)
    assert widths_after["L3.w"] == 4  # the output conv is not prunable


@pytest.mark.parametrize("ratio", [0.29, 0.57, 0.7])
def test_local_ratio_floor_is_exact(ratio):
    model = chain(widths=(100,))
    analysis = analyze(model)
    plan = make_plan(analysis, Budget(ratio=ratio))
    removed = sum(len(v) for v in plan.removed.values())
    assert removed == int(Fraction(str(ratio)) * 100)


def test_global_removes_lowest_scored_channels_first():
    # L0 (16 ch): 8 channels scaled ×0.01 — far below every other channel of the model.
    weak = np.ones(16, np.float32)
    weak[::2] = 0.01
    model = chain(scale={0: weak})
    analysis = analyze(model)
    g0, g1, g2 = (group_of(analysis, n) for n in ("L0.w", "L1.w", "L2.w"))
    total = g0.width + g1.width + g2.width
    plan = make_plan(analysis, Budget(ratio=8 / total + 1e-6, global_rank=True))
    assert plan.removed[g0.key] == list(range(0, 16, 2))
    assert not plan.removed.get(g1.key) and not plan.removed.get(g2.key)
    out = sliced(model, analysis, plan)
    w = out.graph.initializers["L0.w"].const_value.numpy()
    assert w.shape[0] == 8
    strong = model.graph.initializers["L0.w"].const_value.numpy()[1::2]
    np.testing.assert_array_equal(w, strong)
    # local allocation with the same ratio spreads the removal over every group instead
    local = make_plan(analysis, Budget(ratio=8 / total + 1e-6))
    assert all(local.removed.get(g.key) for g in (g0, g1, g2))


def test_global_ranking_spares_remaining_channels_in_score_order(base):
    model, analysis = base
    scores = score_groups(analysis)
    plan = allocate(analysis, scores, Budget(ratio=0.4, global_rank=True))
    removed = [s for g in analysis.prunable_groups() for i, s in enumerate(scores[g.key])
               if i in plan.removed.get(g.key, [])]
    kept = [s for g in analysis.prunable_groups() for i, s in enumerate(scores[g.key])
            if i not in plan.removed.get(g.key, [])]
    assert len(removed) == int(0.4 * sum(g.width for g in analysis.prunable_groups()))
    assert max(removed) <= min(kept)


def test_global_keeps_a_conv_scaled_by_100():
    # Without normalization, global ranking compares raw magnitudes across layers. (The default
    # "mean" normalizer compares each channel with its own group's average instead.)
    model = chain(scale={1: 100.0})
    analysis = analyze(model)
    # L1's weight is read by two groups: its output rows (group of L1) and its input columns (group
    # of L0), so both outrank the untouched group of L2, which loses the most.
    plan = make_plan(analysis, Budget(ratio=0.3, global_rank=True), normalizer="none")
    share = {n: len(plan.removed.get(group_of(analysis, n).key, [])) / group_of(analysis, n).width
             for n in ("L0.w", "L1.w", "L2.w")}
    assert share["L2.w"] > share["L1.w"] and share["L2.w"] > share["L0.w"], share
    out = sliced(model, analysis, plan)
    assert conv_widths(out)["L1.w"] > 24 * 0.7


@pytest.mark.parametrize("global_rank", [False, True])
def test_min_width_respected(base, global_rank):
    model, analysis = base
    out = sliced(model, analysis, make_plan(analysis, Budget(ratio=0.85, min_width=6, global_rank=global_rank)))
    widths = conv_widths(out)
    assert all(widths[n] >= 6 for n in ("L0.w", "L1.w", "L2.w")), widths
    if not global_rank:  # floor(0.85 * w) would leave 3, 4, 2 channels
        assert [widths[n] for n in ("L0.w", "L1.w", "L2.w")] == [6, 6, 6]
    assert sum(widths[n] for n in ("L0.w", "L1.w", "L2.w")) < 16 + 24 + 12


@pytest.mark.parametrize("target,ratio", [("params", 0.3), ("params", 0.6), ("macs", 0.3), ("macs", 0.5)])
@pytest.mark.parametrize("global_rank", [False, True])
def test_target_reaches_requested_reduction(base, target, ratio, global_rank):
    model, analysis = base
    plan = make_plan(analysis, Budget(ratio=ratio, target=target, global_rank=global_rank))
    out = sliced(model, analysis, plan)
    before, after = count(model), count(out)
    reduction = 1 - after[target] / before[target]
    assert ratio <= reduction < ratio + 0.15, reduction
    if target == "params":  # spa.analysis.metrics.count agrees with the initializers themselves
        assert before["params"] == my_params(model) and after["params"] == my_params(out)


def test_target_unreachable_is_an_error(base):
    _, analysis = base
    with pytest.raises(SpaError):
        make_plan(analysis, Budget(ratio=0.99, target="params"))


def test_random_criterion_is_seeded(base):
    _, analysis = base
    a = make_plan(analysis, Budget(ratio=0.5), criterion="random", seed=7)
    b = make_plan(analysis, Budget(ratio=0.5), criterion="random", seed=7)
    c = make_plan(analysis, Budget(ratio=0.5), criterion="random", seed=8)
    assert a.removed == b.removed
    assert a.removed != c.removed
    assert [len(v) for v in a.removed.values()] == [len(v) for v in c.removed.values()]


def test_protect_excludes_group(base):
    model, analysis = base
    conv1 = next(n for n in model.graph if n.op_type == "Conv" and n.inputs[1].name == "L1.w")
    plan = make_plan(analysis, Budget(ratio=0.5, protect=[conv1.outputs[0].name]))
    out = sliced(model, analysis, plan)
    assert conv_widths(out)["L1.w"] == 24 and conv_widths(out)["L2.w"] == 6
    with pytest.raises(SpaError):
        make_plan(analysis, Budget(ratio=0.5, protect=["nosuchname"]))


def test_lp_criterion_matches_l1_and_l2_at_p_1_and_2(base):
    from spa.importance.criteria import score_groups

    _, analysis = base
    for p, named in ((1.0, "l1"), (2.0, "l2")):
        lp = score_groups(analysis, "lp", p=p)
        ref = score_groups(analysis, named)
        for key in ref:
            np.testing.assert_allclose(lp[key], ref[key])
    # a larger p weighs the biggest weight of each channel more: scores differ from L2
    l4 = score_groups(analysis, "lp", p=4.0)
    assert any(not np.allclose(l4[k] / l4[k].mean(), score_groups(analysis, "l2")[k] / score_groups(analysis, "l2")[k].mean())
               for k in l4)


def test_obspa_ranked_globally_compares_raw_costs_and_other_criteria_normalise():
    from spa.allocation.allocate import Budget
    from spa.flow.pipeline import ranking_defaults

    assert ranking_defaults("obspa", Budget(global_rank=True), None)[1] == "none"
    assert ranking_defaults("obspa", Budget(), None) == (Budget(global_rank=False), "mean")
    assert ranking_defaults("l2", Budget(global_rank=True), None)[1] == "mean"
    assert ranking_defaults("obspa", Budget(global_rank=True), "max")[1] == "max"  # a choice is kept

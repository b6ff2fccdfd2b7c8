"""`spa bench`, `--round-to auto` / `--device`, and `--target latency` allocation.

No assertion here depends on how fast anything ran: the tests check the JSON schema, that dense
and pruned are paired and alternated, exit codes and messages, and the allocation logic with
injected per-node costs."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from spa.allocation.allocate import Budget, allocate, cpu_block_size, resolve_round_to, round_step
from spa.analysis.groups import analyze
from spa.runtime.benchmark import alternate, cuda_available
from spa.graph.canon import canonicalize
from spa.importance.criteria import score_groups
from spa.graph.io import load
from spa.allocation.latency import UNATTRIBUTED, attribute, estimate, node_costs
from tests.cli.test_cli import build_cnn, inits, run_cli

STATS = {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    onnx.save(build_cnn(), d / "dense.onnx")
    onnx.save(build_cnn(batch="N"), d / "dynamic.onnx")
    r = run_cli("prune", d / "dense.onnx", "-o", d / "pruned.onnx", "--ratio", "0.5", "--json")
    assert r.returncode == 0, r.stderr
    other = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["y"], ["z"])], "other",
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4])]))
    onnx.save(other, d / "other.onnx")
    return d


def bench_json(*args):
    r = run_cli("bench", *args, "--json", "--rounds", "5", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bench_json_schema_and_pairing(files):
    out = bench_json(files / "dense.onnx", "--against", files / "pruned.onnx", "--threads", "1",
                     "--opt-level", "disable")
    assert out["spa_bench"] == 1
    assert set(out["models"]) == {"dense", "pruned"}
    assert out["models"]["dense"]["model"].endswith("dense.onnx")
    assert out["models"]["pruned"]["model"].endswith("pruned.onnx")
    assert all(m["session_s"] >= 0 for m in out["models"].values())
    rt = out["runtime"]
    assert rt["onnxruntime"] == ort.__version__
    assert rt["device"] == "cpu" and rt["providers"] == ["CPUExecutionProvider"]
    assert rt["threads"] == 1 and rt["opt_level"] == "disable" and rt["io_binding"] is False
    assert out["machine"]["cpu_count"] >= 1
    assert out["rounds"] == 5 and out["warmup"] == 1 and out["alternated"] is True
    [row] = out["results"]
    assert row["batch"] == 1 and row["inputs"] == {"x": [1, 3, 16, 16]}
    assert set(row["models"]) == {"dense", "pruned"}
    for s in row["models"].values():
        assert set(s) == STATS
        assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["throughput"] == pytest.approx(1000.0 / s["p50_ms"])
    assert row["speedup_p50"] == pytest.approx(row["models"]["dense"]["p50_ms"] / row["models"]["pruned"]["p50_ms"])


def test_bench_one_model_and_batches(files):
    out = bench_json(files / "dynamic.onnx", "--batch", "1,3")
    assert set(out["models"]) == {"dense"} and out["alternated"] is False
    assert [r["batch"] for r in out["results"]] == [1, 3]
    assert [r["inputs"]["x"] for r in out["results"]] == [[1, 3, 16, 16], [3, 3, 16, 16]]
    assert all("speedup_p50" not in r for r in out["results"])
    assert out["results"][1]["models"]["dense"]["throughput"] == pytest.approx(
        3000.0 / out["results"][1]["models"]["dense"]["p50_ms"])


def test_bench_table_output(files):
    r = run_cli("bench", files / "dense.onnx", "--against", files / "pruned.onnx", "--rounds", "3")
    assert r.returncode == 0, r.stderr
    assert "speedup" in r.stdout and "×" in r.stdout and "alternated" in r.stdout
    assert f"onnxruntime {ort.__version__}" in r.stdout


@pytest.mark.parametrize("args, code, text", [
    (["dense.onnx", "--batch", "4"], 2, "fixed batch of 1"),
    (["dense.onnx", "--batch", "a,b"], 2, "--batch"),
    (["dense.onnx", "--threads", "0"], 2, "--threads"),
    (["dense.onnx", "--rounds", "0"], 2, "--rounds"),
    (["dense.onnx", "--against", "other.onnx"], 2, "same inputs"),
    (["dense.onnx", "--input-shape", "q=1,2"], 2, "'q'"),
    (["nope.onnx"], 3, "nope.onnx"),
    (["dense.onnx", "--against", "nope.onnx"], 3, "nope.onnx"),
])
def test_bench_refusals(files, args, code, text):
    r = run_cli("bench", *[files / a if a.endswith(".onnx") else a for a in args])
    assert r.returncode == code, r.stderr
    assert r.stderr.startswith("spa: error:") and text in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_bench_cuda(files):
    """On a machine with the CUDA provider: IO binding on the GPU. Elsewhere: one clear line, exit 2."""
    r = run_cli("bench", files / "dense.onnx", "--against", files / "pruned.onnx", "--device", "cuda", "--json",
                "--rounds", "3")
    if cuda_available():
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["runtime"]["providers"][0] == "CUDAExecutionProvider" and out["runtime"]["io_binding"]
    else:
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.startswith("spa: error: --device cuda: CUDA is not available")
        assert "onnxruntime-gpu" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_alternate_interleaves_after_warmup():
    calls = []
    times = alternate([lambda: calls.append("dense"), lambda: calls.append("pruned")], rounds=3, warmup=2)
    assert calls == ["dense"] * 2 + ["pruned"] * 2 + ["dense", "pruned"] * 3
    assert [len(t) for t in times] == [3, 3]


# ------------------------------------------------------------------------------ --round-to auto


def test_round_to_resolution():
    assert resolve_round_to(None, None) == 1
    assert resolve_round_to(None, "cuda") == 8 and resolve_round_to("auto", "cuda") == 8
    assert resolve_round_to("auto", "cpu") == cpu_block_size() in (8, 16)
    assert resolve_round_to(4, "cuda") == 4


class _Heads:
    def __init__(self, sizes):
        self.sizes = np.asarray(sizes)

    def class_sizes(self):
        return self.sizes


def test_round_step_counts_channels_not_heads():
    assert round_step(_Heads([1] * 32), 8) == 8      # plain channels
    assert round_step(_Heads([64] * 12), 16) == 1    # whole heads of 64 channels are multiples already
    assert round_step(_Heads([8] * 12), 16) == 2     # heads of 8: an even number of them
    assert round_step(_Heads([1] * 32), 1) == 1


def test_prune_device_rounds_widths(tmp_path):
    onnx.save(build_cnn(widths=(32, 48, 40)), tmp_path / "m.onnx")
    r = run_cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.3", "--device", "cuda",
                "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["round_to"] == 8
    widths = [inits(tmp_path / "p.onnx")[f"c{i}.w"].shape[0] for i in (1, 2, 3)]
    assert all(w % 8 == 0 for w in widths) and widths != [32, 48, 40]
    from spa.allocation.allocate import cpu_block_size

    r = run_cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--ratio", "0.3", "--json")
    assert json.loads(r.stdout)["plan"]["round_to"] == cpu_block_size()  # no --device: rounded for this CPU
    r = run_cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--ratio", "0.3", "--json", "--round-to", "1")
    assert json.loads(r.stdout)["plan"]["round_to"] == 1  # widths exactly as the ratio says


def test_prune_plan_refuses_device(tmp_path):
    onnx.save(build_cnn(), tmp_path / "m.onnx")
    assert run_cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "p.onnx", "--plan-out", tmp_path / "plan.json",
                   ).returncode == 0
    r = run_cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--plan", tmp_path / "plan.json",
                "--device", "cpu")
    assert r.returncode == 2 and "--device" in r.stderr


# ------------------------------------------------------------------------------ --target latency


@pytest.fixture(scope="module")
def analysis():
    return analyze(canonicalize(load(build_cnn(widths=(32, 32, 32)))))


def test_latency_budget_spreads_the_cut_over_the_groups(analysis):
    """C3 (read by the c2 group, written by the c3 group) costs 100× the rest. A latency budget is
    met by a channel ratio, like a MAC budget: every group loses the same share (not the groups
    touching C3 cut nearly away and the rest left whole), the smallest share whose predicted time
    meets the goal."""
    scores = score_groups(analysis)
    costs = {"C1": 1.0, "R1": 0.1, "C2": 1.0, "R2": 0.1, "C3": 100.0, "R3": 0.1, UNATTRIBUTED: 0.5}
    groups = {g.key: g for g in analysis.prunable_groups()}
    touching = {k: set(g.nodes) for k, g in groups.items()}
    goal = 0.7 * sum(costs.values())
    plan = allocate(analysis, scores, Budget(ratio=0.3, target="latency"), node_costs=costs)
    removed = {len(v) for v in plan.removed.values()}
    assert len(removed) == 1 and 0 < min(removed) < 32
    n = removed.pop()
    predicted = estimate(costs, touching, {k: 1 - n / 32 for k in plan.removed})
    assert predicted <= goal + 1e-9
    assert estimate(costs, touching, {k: 1 - (n - 1) / 32 for k in plan.removed}) > goal  # the smallest share
    assert plan.meta["latency_ms"]["predicted"] == pytest.approx(predicted, abs=1e-3)
    assert plan.meta["target"] == "latency"


def test_latency_allocation_refuses_unreachable(analysis):
    costs = {"C1": 0.1, UNATTRIBUTED: 10.0}  # almost all time outside the prunable groups
    with pytest.raises(Exception, match="measured latency"):
        allocate(analysis, score_groups(analysis), Budget(ratio=0.5, target="latency"), node_costs=costs)


def test_estimate_compounds_shared_nodes():
    assert estimate({"C": 8.0, "R": 2.0}, {"a": {"C", "R"}, "b": {"C"}}, {"a": 0.5, "b": 0.5}) == 8 * 0.25 + 1


def test_attribute_fused_kernels_to_their_first_node():
    model = canonicalize(load(build_cnn()))
    ev = lambda name, op, dur, ts: {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ts": ts,
                                    "args": {"op_name": op}}
    events = [{"cat": "Session", "name": "model_run", "ts": 0}, ev("r1.out_nchwc", "Conv", 999, 1),
              {"cat": "Session", "name": "model_run", "ts": 10}, ev("r1.out_nchwc", "Conv", 3000, 11),
              ev("C2", "Conv", 1000, 12), ev("ReorderOutput", "ReorderOutput", 500, 13)]
    costs = attribute(events, model, rounds=1)
    assert costs == {"C1": 3.0, "C2": 1.0, UNATTRIBUTED: 0.5}


def test_node_costs_cover_the_convolutions():
    model = canonicalize(load(build_cnn()))
    costs = node_costs(model, rounds=2)
    assert {"C1", "C2", "C3"} <= set(costs) and all(v >= 0 for v in costs.values())


def test_prune_target_latency_cli(tmp_path):
    onnx.save(build_cnn(widths=(32, 32, 32)), tmp_path / "m.onnx")
    r = run_cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.2", "--target", "latency",
                "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["target"] == "latency" and plan["latency_ms"]["predicted"] <= 0.8 * plan["latency_ms"]["measured"]


def test_saved_model_does_not_point_at_the_inputs_external_data(tmp_path):
    """A torch export keeps weights in model.onnx.data; the tensors pruning leaves untouched must not
    stay references to that file when the pruned model is written elsewhere without external data."""
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(build_cnn(), src / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("prune", src / "model.onnx", "-o", out / "small.onnx", "--ratio", "0.3")
    assert r.returncode == 0, r.stderr
    proto = onnx.load(str(out / "small.onnx"), load_external_data=False)
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    sess = ort.InferenceSession(str(out / "small.onnx"), providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.zeros((1, 3, 16, 16), np.float32)})

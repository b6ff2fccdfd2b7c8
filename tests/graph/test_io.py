"""spa.graph.io: every accepted model form loads, prune never mutates what it was given, saving is atomic
and switches to external data. Checked against onnx.load, file bytes and ONNX Runtime outputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from spa.graph import io
from spa.graph import save as saving
from spa.allocation.allocate import Budget
from spa.core.errors import SpaError
from spa.flow.pipeline import prune
from tests.graphs import GraphBuilder


def build_proto(seed: int = 0) -> onnx.ModelProto:
    """x(1,3,8,8) → conv 16 → relu → conv 24 → relu → conv 4: two prunable groups (16, 24)."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", (1, 3, 8, 8))
    h = b.op("Relu", [b.conv(x, 3, 16)])
    h = b.op("Relu", [b.conv(h, 16, 24)])
    b.output(b.conv(h, 24, 4))
    return b.proto()


@pytest.fixture(scope="module")
def proto() -> onnx.ModelProto:
    return build_proto()


@pytest.fixture
def model_path(tmp_path, proto) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    return path


def arrays(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def feeds(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((1, 3, 8, 8)).astype(np.float32)}


def ort_outputs(model) -> list[np.ndarray]:
    if isinstance(model, ir.Model):
        model = ir.serde.serialize_model(model)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds())


def same_content(loaded: ir.Model, proto: onnx.ModelProto):
    assert [n.op_type for n in loaded.graph] == [n.op_type for n in proto.graph.node]
    want = arrays(proto)
    got = {name: v.const_value.numpy() for name, v in loaded.graph.initializers.items()}
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


# ---------------------------------------------------------------- load


@pytest.mark.parametrize("form", ["str", "Path"])
def test_load_path(model_path, proto, form):
    loaded = io.load(str(model_path) if form == "str" else model_path)
    assert isinstance(loaded, ir.Model)
    same_content(loaded, proto)


def test_load_proto_ir_and_graphsurgeon(proto):
    same_content(io.load(proto), proto)
    ir_model = ir.serde.deserialize_model(proto)
    assert io.load(ir_model) is ir_model
    loaded = io.load(gs.import_onnx(proto))
    assert isinstance(loaded, ir.Model)
    same_content(loaded, proto)


@pytest.mark.parametrize("bad", [b"\x08\x01", 42, None, ["m.onnx"]], ids=["bytes", "int", "None", "list"])
def test_load_rejects_other_objects(bad):
    with pytest.raises(SpaError):
        io.load(bad)


def test_load_missing_and_empty(tmp_path):
    with pytest.raises(SpaError):
        io.load(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(SpaError):
        io.load(tmp_path / "empty.onnx")
    with pytest.raises(SpaError):
        io.load(tmp_path)


# ---------------------------------------------------------------- prune on every form, no mutation


@pytest.mark.parametrize("form", ["str", "Path", "ModelProto", "onnx_ir", "graphsurgeon"])
def test_prune_every_form_without_mutation(model_path, form):
    proto = onnx.load(str(model_path))
    if form == "str":
        source, snapshot = str(model_path), lambda: model_path.read_bytes()
    elif form == "Path":
        source, snapshot = model_path, lambda: model_path.read_bytes()
    elif form == "ModelProto":
        source = proto
        snapshot = lambda: source.SerializeToString(deterministic=True)  # noqa: E731
    elif form == "onnx_ir":
        source = ir.serde.deserialize_model(proto)
        snapshot = lambda: ir.serde.serialize_model(source).SerializeToString(deterministic=True)  # noqa: E731
    else:
        source = gs.import_onnx(proto)
        snapshot = lambda: gs.export_onnx(source).SerializeToString(deterministic=True)  # noqa: E731
    before = snapshot()
    result = prune(source, Budget(ratio=0.5))
    assert snapshot() == before, f"prune mutated the {form} it was given"
    pruned = ir.serde.serialize_model(result.model)
    got = arrays(pruned)
    want = arrays(proto)
    # the first two convs lost half their output channels; the last one kept its 4 outputs
    shapes = sorted((v.shape for k, v in got.items() if v.ndim == 4), key=lambda s: s[1])
    assert shapes == [(8, 3, 3, 3), (12, 8, 3, 3), (4, 12, 3, 3)]
    assert sum(v.size for v in got.values()) < sum(v.size for v in want.values())
    (y,) = ort_outputs(pruned)
    assert y.shape == ort_outputs(proto)[0].shape


def test_prune_results_agree_across_forms(model_path):
    proto = onnx.load(str(model_path))
    results = [prune(src, Budget(ratio=0.3)) for src in (model_path, proto, gs.import_onnx(proto))]
    outs = [ort_outputs(r.model)[0] for r in results]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


# ---------------------------------------------------------------- save


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_save_writes_loadable_model_without_temp_files(tmp_path, proto):
    model = io.load(proto)
    out = tmp_path / "out.onnx"
    assert io.save(model, out) == out
    assert _listing(tmp_path) == ["out.onnx"]
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    for a, b in zip(ort_outputs(out), ort_outputs(proto)):
        np.testing.assert_array_equal(a, b)


def test_save_overwrites_existing_file(tmp_path, proto):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old content that is not a model")
    io.save(io.load(proto), out)
    assert _listing(tmp_path) == ["out.onnx"]
    same_content(io.load(out), proto)
    # and a second save of another model replaces the first
    other = build_proto(seed=5)
    io.save(io.load(other), out)
    same_content(io.load(out), other)
    assert _listing(tmp_path) == ["out.onnx"]


def test_save_external_data(tmp_path, proto):
    model = io.load(proto)
    reference = ort_outputs(model)
    out = tmp_path / "ext.onnx"
    io.save(model, out, external_data=True)
    assert _listing(tmp_path) == ["ext.onnx", "ext.onnx.data"]
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    # the weights really are outside the model file
    assert out.stat().st_size < sum(a.nbytes for a in arrays(proto).values())
    loaded = onnx.load(str(out), load_external_data=True)
    onnx.checker.check_model(str(out), full_check=True)
    same_content(ir.serde.deserialize_model(loaded), proto)
    for got, want in zip(ort_outputs(out), reference):
        np.testing.assert_array_equal(got, want)
    # the in-memory model still works after being saved with external data
    for got, want in zip(ort_outputs(model), reference):
        np.testing.assert_array_equal(got, want)


def test_save_switches_to_external_data_above_threshold(tmp_path, proto, monkeypatch):
    model = io.load(proto)
    io.save(model, tmp_path / "small.onnx")
    assert _listing(tmp_path) == ["small.onnx"]
    monkeypatch.setattr(saving, "EXTERNAL_DATA_THRESHOLD", 1000)
    io.save(model, tmp_path / "big.onnx")
    assert _listing(tmp_path) == ["big.onnx", "big.onnx.data", "small.onnx"]
    for got, want in zip(ort_outputs(tmp_path / "big.onnx"), ort_outputs(proto)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("external", [False, True])
def test_failing_save_leaves_nothing_behind(tmp_path, proto, monkeypatch, external):
    def broken_save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")  # a half-written file, then the failure
        if kwargs.get("external_data"):
            (Path(path).parent / kwargs["external_data"]).write_bytes(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(ir, "save", broken_save)  # the external-data path
    monkeypatch.setattr(saving, "write_streamed", broken_save)  # the one-file path
    with pytest.raises(SpaError):
        io.save(io.load(proto), tmp_path / "out.onnx", external_data=external)
    assert _listing(tmp_path) == []


def test_failing_save_keeps_previous_file(tmp_path, proto, monkeypatch):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    monkeypatch.setattr(saving, "write_streamed", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(SpaError):
        io.save(io.load(proto), out)
    assert out.read_bytes() == b"previous"
    assert _listing(tmp_path) == ["out.onnx"]


def test_save_into_missing_folder(tmp_path, proto):
    with pytest.raises(SpaError):
        io.save(io.load(proto), tmp_path / "nope" / "out.onnx")
    assert _listing(tmp_path) == []


# ---------------------------------------------------------------- models stored with external data


@pytest.fixture
def external_model(tmp_path, proto) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    io.save(io.load(proto), path, external_data=True)
    assert (folder / "m.onnx.data").is_file()
    return path


def test_prune_external_data_model_from_its_folder(external_model, monkeypatch):
    monkeypatch.chdir(external_model.parent)
    before = {p.name: p.read_bytes() for p in external_model.parent.iterdir()}
    result = prune(external_model, Budget(ratio=0.5))
    shapes = sorted(v.const_value.numpy().shape for v in result.model.graph.initializers.values()
                    if v.const_value.numpy().ndim == 4)
    assert shapes == sorted([(8, 3, 3, 3), (12, 8, 3, 3), (4, 12, 3, 3)])
    assert {p.name: p.read_bytes() for p in external_model.parent.iterdir()} == before


def test_prune_external_data_model_from_another_folder(external_model, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = prune(external_model, Budget(ratio=0.5))
    out = tmp_path / "small.onnx"
    io.save(result.model, out)
    (y,) = ort_outputs(out)
    assert y.shape == ort_outputs(external_model)[0].shape


def test_weights_listed_as_graph_inputs_are_still_pruned(tmp_path):
    """Old exporters (keep_initializers_as_inputs) list every weight as a graph input too."""
    import onnx
    import torch

    from spa.allocation.allocate import Budget
    from spa.flow.pipeline import prune

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    path = tmp_path / "old.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=11,
                      keep_initializers_as_inputs=True, input_names=["x"], output_names=["y"])
    assert len(onnx.load(str(path)).graph.input) > 1  # the weights are inputs
    result = prune(str(path), Budget(ratio=0.5))
    assert result.after["params"] < result.before["params"]
    # the interface is kept: the weights stay listed as (overridable) inputs, as in the file
    assert [v.name for v in result.model.graph.inputs] == [v.name for v in onnx.load(str(path)).graph.input]


def test_pruned_model_round_trips_to_graphsurgeon():
    import onnx_graphsurgeon as gs

    from spa.allocation.allocate import Budget
    from spa.flow.pipeline import prune

    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    b.output(b.conv(b.op("Relu", [b.conv(x, 3, 8)]), 8, 2))
    result = prune(b.proto(), Budget(ratio=0.5))
    graph = io.to_graphsurgeon(result.model)
    assert isinstance(graph, gs.Graph)
    assert sorted(n.op for n in graph.nodes) == sorted(n.op_type for n in result.model.graph)
    assert io.load(graph).graph.initializers.keys() == result.model.graph.initializers.keys()


def test_save_never_replaces_the_data_file_the_model_was_read_from(tmp_path, proto):
    """An input whose external data is named like the output's data file: the new data goes under
    a fresh name, the input's files stay byte-identical, and both models load."""
    src = tmp_path / "src.onnx"
    io.save(io.load(proto), src, external_data=True)
    model = onnx.load(str(src), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "out.onnx.data"
    (tmp_path / "src.onnx.data").rename(tmp_path / "out.onnx.data")
    onnx.save(model, str(src))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    io.save(io.load(src), tmp_path / "out.onnx", external_data=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in before} == before
    new = set(after) - set(before)
    assert len(new) == 2 and "out.onnx" in new  # the model and its freshly named data
    same_content(io.load(tmp_path / "out.onnx"), proto)
    same_content(io.load(src), proto)


def test_resave_commits_the_pair_and_removes_the_old_data(tmp_path, proto):
    out = tmp_path / "out.onnx"
    for _ in range(3):
        io.save(io.load(proto), out, external_data=True)
        names = _listing(tmp_path)
        assert len(names) == 2 and names[0] == "out.onnx" and names[1].endswith(".data"), names
        same_content(io.load(out), proto)
    io.save(io.load(proto), out, external_data=False)  # weights inside: the old data file goes
    assert _listing(tmp_path) == ["out.onnx"]


def test_user_data_files_are_never_removed(tmp_path, proto):
    """Only data files SPA named for this output are removed after a re-save, never a file the
    old model shared with another."""
    shared = tmp_path / "weights.bin"
    model = proto.__class__()
    model.CopyFrom(proto)
    onnx.save(model, str(tmp_path / "out.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    io.save(io.load(proto), tmp_path / "out.onnx")
    assert shared.exists()


def test_interrupted_commit_keeps_the_old_pair(tmp_path, proto, monkeypatch):
    out = tmp_path / "out.onnx"
    io.save(io.load(proto), out, external_data=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def interrupted(src, dst):
        if Path(dst) == out:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save(io.load(proto), out, external_data=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_signal_during_the_commit_waits_for_it(tmp_path, proto, monkeypatch):
    """SIGTERM between the data file's link and the model's rename (the handler would run at the
    loop below) does not cut the commit: the new pair is in place, the replaced data file removed,
    no temporary left; then the run ends with the signal."""
    import signal

    from spa.core.output import Terminated, signals_raise

    out = tmp_path / "out.onnx"
    io.save(io.load(proto), out, external_data=True)
    real_replace = os.replace

    def signalled(src, dst):
        if Path(dst) == out:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # without the deferral, Terminated would be raised here
                pass
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", signalled)
    with pytest.raises(Terminated):
        with signals_raise():
            io.save(io.load(proto), out, external_data=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0] == "out.onnx" and names[1].startswith("out.onnx.") and names[1] != "out.onnx.data"
    onnx.checker.check_model(str(out), full_check=True)  # the model finds its (new) data


def test_deferred_signal_is_raised_at_the_end_of_the_block():
    import signal

    from spa.core.output import deferred_signals, signals_raise

    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_raise():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
                done.append("block finished")
    assert done == ["block finished"]


def test_stale_temporaries_of_dead_runs_are_swept(tmp_path, proto):
    import subprocess
    import sys

    from spa.core.output import temp_name

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".spa-{dead}-0123456789ab").mkdir()
    (tmp_path / f".spa-{dead}-0123456789ab" / "big.onnx").write_bytes(b"x" * 100)
    (tmp_path / f".spa-{dead}-ba9876543210.png").write_bytes(b"x")
    (tmp_path / temp_name()).write_bytes(b"ours, alive")  # this process is alive: kept
    (tmp_path / ".spa-notes").write_text("a user file")  # not SPA's pattern: kept
    io.save(io.load(proto), tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".spa-{dead}")) == []
    assert (tmp_path / ".spa-notes").exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(f".spa-{os.getpid()}-")]) == 1


def test_output_policy_refuses_inputs_devices_and_fifos(tmp_path):
    from spa.core.errors import OutputError
    from spa.core.output import check_target, write_files, write_text

    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    os.link(model, tmp_path / "hard.onnx")
    (tmp_path / "soft.onnx").symlink_to(model)
    os.mkfifo(tmp_path / "fifo")
    for target in ("hard.onnx", "soft.onnx", "model.onnx"):
        with pytest.raises(OutputError, match="input"):
            write_text(tmp_path / target, "x", inputs=[model])
    for target in (Path("/dev/null"), tmp_path / "fifo"):
        with pytest.raises(OutputError, match="regular file"):
            check_target(target)
    with pytest.raises(OutputError, match="does not exist"):
        check_target(tmp_path / "nope" / "x")

    def failing(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space"):
        write_files({tmp_path / "a.txt": b"a", tmp_path / "b.txt": failing})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "hard.onnx", "model.onnx", "soft.onnx"]
    assert model.read_bytes() == b"model"
    written = write_text(tmp_path / "new.txt", "x")
    assert written.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_reads_are_typed_and_bounded(tmp_path):
    from spa.core.errors import InputError, PlanError
    from spa.allocation.plan import PruningPlan

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="regular file"):
        io.read_bounded(tmp_path / "fifo", 100, "plan")  # refused, never blocks
    with pytest.raises(PlanError, match="regular file"):
        PruningPlan.load("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(InputError, match="MiB"):
        io.read_bounded(tmp_path / "big", 100, "plan")
    with pytest.raises(InputError, match="regular file"):
        io.load(tmp_path / "fifo")
    (tmp_path / "deep.json").write_text('{"spa_plan": 1, "meta": ' + "[" * 50 + "]" * 50 + "}")
    with pytest.raises(PlanError, match="nested"):
        PruningPlan.load(tmp_path / "deep.json")


def test_plan_duplicate_indices_count_once():
    from spa.allocation.plan import PruningPlan

    plan = PruningPlan.from_json({"spa_plan": 1, "groups": [{"key": "g", "width": 8, "remove": [1, 1, 1, 2]}]})
    assert plan.removed["g"] == [1, 2]


def _hub_repo(tmp_path, proto, link_to="../../blobs/abc123"):
    """A hub cache repository: snapshots/<rev>/model.onnx(.data) are links into blobs/."""
    repo = tmp_path / "models--org--name"
    snap = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    io.save(io.load(proto), repo / "blobs" / "model.onnx", external_data=True)
    model = onnx.load(str(repo / "blobs" / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "model.onnx.data"
    onnx.save(model, str(repo / "blobs" / "m-blob"))
    (repo / "blobs" / "model.onnx.data").rename(repo / "blobs" / "abc123")
    (repo / "blobs" / "model.onnx").unlink()
    (snap / "model.onnx").symlink_to("../../blobs/m-blob")
    (snap / "model.onnx.data").symlink_to(link_to)
    return snap


def test_hub_cache_layout_is_allowed(tmp_path, proto):
    snap = _hub_repo(tmp_path, proto)
    same_content(io.load(snap / "model.onnx"), proto)


def test_links_out_of_the_hub_repository_are_refused(tmp_path, proto):
    from spa.core.errors import UnsafePathError

    snap = _hub_repo(tmp_path, proto, link_to="../../../other/blobs/abc123")
    (tmp_path / "other" / "blobs").mkdir(parents=True)
    (tmp_path / "models--org--name" / "blobs" / "abc123").rename(tmp_path / "other" / "blobs" / "abc123")
    with pytest.raises(UnsafePathError, match="symlink"):
        io.load(snap / "model.onnx")


def test_hf_side_files_are_copied_inside_the_folder_only(tmp_path):
    from spa.core.errors import UnsafePathError
    from spa.exporters.hf import copy_side_file

    (tmp_path / "secret.txt").write_text("secret")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "vocab.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UnsafePathError, match="symlink"):
        copy_side_file(src, "vocab.txt", out)
    assert not (out / "vocab.txt").exists()
    (src / "real.json").write_text("{}")
    (src / "tokenizer.json").symlink_to("real.json")  # inside: copied as a file
    assert copy_side_file(src, "tokenizer.json", out)
    assert not (out / "tokenizer.json").is_symlink() and (out / "tokenizer.json").read_text() == "{}"
    assert not copy_side_file(src, "merges.txt", out)


def test_nan_and_inf_scores_have_no_bin():
    from spa.allocation.plan import PruningPlan
    from spa.report.tables import score_histogram

    hist = score_histogram({"g": [float("nan"), 1.0, float("inf"), 2.0]}, PruningPlan(removed={"g": [0]}))
    assert hist["nonfinite"] == 2 and sum(hist["kept"]) + sum(hist["removed"]) == 2


def test_sigterm_raises_through_finally():
    import signal

    from spa.core.output import Terminated, signals_raise

    cleaned = []
    with pytest.raises(Terminated) as info:
        with signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs at the next bytecode boundary
                    pass
            finally:
                cleaned.append(True)
    assert info.value.code == 143 and cleaned
    assert signal.getsignal(signal.SIGTERM) is not None


def test_big_external_weights_are_mapped_per_read_and_sliced_lazily(tmp_path, proto, monkeypatch):
    """Out of core: external weights load as MappedTensors that keep no mapping, and slicing a
    big one yields a LazyTensor whose values equal slicing in memory."""
    monkeypatch.setattr(io, "LAZY_SLICE_MIN_BYTES", 0)
    path = tmp_path / "m.onnx"
    io.save(io.load(proto), path, external_data=True)
    model = io.load(path)
    big = [v for v in model.graph.initializers.values() if isinstance(v.const_value, ir.ExternalTensor)]
    assert big and all(isinstance(v.const_value, io.MappedTensor) for v in big)
    tensor = big[0].const_value
    first = tensor.numpy()
    assert isinstance(first, np.memmap) and tensor.raw is None  # nothing kept by the tensor
    kept = {0: np.array([0, 2]), 1: np.array([1])} if first.ndim > 1 else {0: np.array([0, 2])}
    lazy = io.take(tensor, kept, "w")
    assert isinstance(lazy, ir.LazyTensor)
    want = first[np.ix_(*[kept.get(a, np.arange(n)) for a, n in enumerate(first.shape)])]
    assert tuple(lazy.shape) == want.shape
    np.testing.assert_array_equal(lazy.numpy(), want)


@pytest.mark.parametrize("external_input", [False, True])
def test_streamed_save_writes_the_protobuf_ir_save_writes(tmp_path, proto, external_input):
    """The one-file save streams each weight; the bytes are those of ir.save's whole-proto path
    (weights read from an input's external data file included, inlined)."""
    model = io.load(proto)
    if external_input:
        io.save(model, tmp_path / "src.onnx", external_data=True)
        model = io.load(tmp_path / "src.onnx")
        assert any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())
    io.write_streamed(model, tmp_path / "streamed.onnx")
    reference = io.load(proto)
    ir.save(reference, tmp_path / "whole.onnx")
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "whole.onnx").read_bytes()


def test_save_writes_only_the_exporters_value_annotations(tmp_path):
    """Canonicalization's inferred shapes stay in memory; the saved file annotates what the input
    did (extra annotations changed ONNX Runtime's fusions: SkipLayerNormalization on BERT)."""
    from spa.graph.canon import canonicalize

    bare, one = build_proto(), build_proto()
    del bare.graph.value_info[:]
    del one.graph.value_info[1:]
    for given, expected in ((bare, set()), (one, {one.graph.value_info[0].name})):
        model = canonicalize(io.load(given))
        assert all(v.shape is not None for node in model.graph for v in node.outputs)
        io.save(model, tmp_path / "out.onnx")
        saved = onnx.load(str(tmp_path / "out.onnx"))
        outputs = {o for node in saved.graph.node for o in node.output}
        assert {v.name for v in saved.graph.value_info} & outputs == expected
        assert all(v.shape is not None for node in model.graph for v in node.outputs)  # restored

"""`spa report` and `spa groups --dot` on a zoo model (resnet18) and the small test CNN.

Numbers in the report are checked against the model files read with onnx directly (initializer
shapes, float parameter counts, MACs from ONNX shape inference); the HTML must be well-formed XML,
reference PNG files that exist, and render in a real headless browser (Debian's chromium)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import torchvision_zoo as zoo
from tests.cli.test_cli import build_cnn, float_params, inits, my_macs, run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """resnet18 (torchscript export) and its 30%-pruned copy, written by the CLI."""
    tmp = tmp_path_factory.mktemp("resnet")
    original = zoo.cached_export("resnet18", "torchscript")
    pruned = tmp / "resnet18.pruned.onnx"
    done = run_cli("prune", original, "-o", pruned, "--ratio", "0.3", "--quiet", "--criterion", "l2")
    assert done.returncode == 0, done.stderr
    return original, pruned


def out_width(path, weight: str) -> int:
    return inits(path)[weight].shape[0]


def html_tree(path: Path) -> ET.Element:
    """Parse the report as XML (the renderer writes XHTML-style markup): fails if not well-formed."""
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    return ET.fromstring(text.split("\n", 1)[1])


def table_rows(root: ET.Element, first_header: str) -> list[list[str]]:
    for table in root.iter("table"):
        rows = [[c.text or "" for c in tr] for tr in table.iter("tr")]
        if rows and rows[0][0] == first_header:
            return rows[1:]
    raise AssertionError(f"no table starting with {first_header!r}")


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prune_stores_plan_and_report_in_metadata(resnet):
    original, pruned = resnet
    model = onnx.load(str(pruned))
    onnx.checker.check_model(model, full_check=True)  # annotations keep the model valid
    meta = {p.key: p.value for p in model.metadata_props}
    plan = json.loads(meta["spa.allocation.plan"])
    report = json.loads(meta["spa.report.tables"])
    assert plan["spa_plan"] == 1 and plan["meta"]["criterion"] == "l2"
    assert report["before"]["params"] == float_params(original)
    assert report["after"]["params"] == float_params(pruned)
    assert report["before"]["macs"] == my_macs(original)
    assert report["after"]["macs"] == my_macs(pruned)
    # every layer row agrees with the weights in the two files
    a, b = inits(original), inits(pruned)
    assert report["layers"]
    for row in report["layers"]:
        assert row["out_before"] == a[row["weight"]].shape[0]  # Conv (O, I, k, k); Gemm transB=1 (N, K)
        assert row["out_after"] == b[row["weight"]].shape[0]
        assert row["params_after"] == b[row["weight"]].size + sum(
            b[n].size for n in _bias_of(model, row["layer"]) if n in b)
    # Netron shows node metadata: every pruned conv says how its width changed
    marked = {n.name: {p.key: p.value for p in n.metadata_props} for n in model.graph.node if n.metadata_props}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    w = conv.input[1]
    assert marked[conv.name]["spa.width"] == f"in 3, out {a[w].shape[0]} → {b[w].shape[0]}"
    assert "spa.groups" in marked[conv.name]
    assert meta["spa.summary"].startswith("pruned by spa")


def _bias_of(model: onnx.ModelProto, node_name: str) -> list[str]:
    node = next(n for n in model.graph.node if n.name == node_name)
    return list(node.input[2:3])


def test_report_html_with_original(resnet, tmp_path):
    original, pruned = resnet
    out = tmp_path / "report.html"
    done = run_cli("report", pruned, "--original", original, "-o", out, "--quiet")
    assert done.returncode == 0, done.stderr
    root = html_tree(out)
    # every image the page shows is a PNG file beside it
    images = [img.get("src") for img in root.iter("img")]
    assert "report.widths.png" in images and "report.scores.png" in images
    for src in images:
        assert is_png(tmp_path / src)
    # the per-layer table: widths before → after equal the initializer shapes of the two files
    a, b = inits(original), inits(pruned)
    conv_weights = {n.name: n.input[1] for n in onnx.load(str(pruned)).graph.node if n.op_type in ("Conv", "Gemm")}
    rows = table_rows(root, "layer")
    assert len(rows) == len(conv_weights)
    for layer, op, _in, out_cell, _params, _macs in rows:
        w = conv_weights[layer]
        before, after = (a[w].shape[0], b[w].shape[0])
        assert out_cell == (str(after) if before == after else f"{before} → {after}")
    # the summary table: parameters before/after in the report's human units
    summary = {r[0]: r for r in table_rows(root, "")}
    assert summary["parameters"][1] == _human(float_params(original))
    assert summary["parameters"][2] == _human(float_params(pruned))
    assert summary["MACs"][2] == _human(my_macs(pruned))
    text = out.read_text()
    assert "Fidelity not measured" in text and "Latency not measured" in text


def _human(n: float) -> str:
    # written out here, not imported: the test must not trust the code under test's formatting
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def test_report_alone_reads_the_metadata_and_writes_markdown(resnet, tmp_path):
    _, pruned = resnet
    out = tmp_path / "r.md"
    done = run_cli("report", pruned, "-o", out, "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["stored"] and rep["after"]["params"] == float_params(pruned)
    plan = rep["plan"]
    removed = {g["key"]: len(g["remove"]) for g in plan["groups"]}
    assert {g["key"]: g["width"] - g["kept"] for g in rep["groups"]} == removed
    md = out.read_text()
    assert "![kept width per layer](r.widths.png)" in md and is_png(tmp_path / "r.widths.png")
    # the histogram counts every channel of the ranked groups exactly once
    assert sum(rep["scores"]["removed"]) == sum(removed.values())
    assert sum(rep["scores"]["kept"]) + sum(rep["scores"]["removed"]) == sum(
        g["width"] for g in plan["groups"])


def test_report_measure_fidelity_and_latency(tmp_path):
    src = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), src)
    pruned = tmp_path / "small.onnx"
    assert run_cli("prune", src, "-o", pruned, "--ratio", "0.25").returncode == 0
    done = run_cli("report", pruned, "--original", src, "--measure", "--rounds", "5", "--samples", "2",
                   "-o", tmp_path / "m.html", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    out = rep["fidelity"]["outputs"][0]
    # recompute the first sample's difference with ONNX Runtime directly
    import onnxruntime as ort

    from spa.runtime.validate import random_inputs
    from spa.graph import io

    feeds = random_inputs(io.load(src), 0)
    ya = ort.InferenceSession(str(src)).run(None, feeds)[0]
    yb = ort.InferenceSession(str(pruned)).run(None, feeds)[0]
    assert out["max_abs"] >= float(np.abs(ya - yb).max()) - 1e-6
    assert 0 < out["cosine"] < 1
    assert rep["latency"]["before_ms"] > 0 and rep["latency"]["after_ms"] > 0
    assert "Latency not measured" not in (tmp_path / "m.html").read_text()


def test_report_of_a_plain_model_says_what_is_missing(tmp_path):
    src = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), src)
    out = tmp_path / "plain.html"
    done = run_cli("report", src, "-o", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "carries no SPA report" in text and "No plan" in text
    html_tree(out)
    assert not list(tmp_path.glob("*.png"))  # nothing to plot


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/r.txt"], "must end in .html or .md"),
    (["-o", "{tmp}/missing/r.html"], "output folder does not exist"),
    (["-o", "{tmp}/r.html", "--measure"], "needs the original model"),
])
def test_report_refuses_bad_requests_and_writes_nothing(tmp_path, args, message):
    src = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), src)
    done = run_cli("report", src, *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode != 0
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot's use of old pyparsing names
def test_groups_dot_parses_with_networkx(tmp_path):
    import networkx as nx

    src = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), src)
    dot = tmp_path / "g.dot"
    done = run_cli("groups", src, "--dot", dot, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    graph = nx.nx_pydot.read_dot(str(dot))
    names = {n.strip('"') for n in graph.nodes}
    # every conv weight's output axis is a channel space of the graph; couplings link c1.w to c2.w's input
    for w in ("c1.w", "c2.w", "c3.w"):
        assert f"{w}:0" in names
    undirected = nx.Graph((a.strip('"'), b.strip('"')) for a, b, _ in graph.edges)
    assert nx.has_path(undirected, "c1.w:0", "c2.w:1")
    assert not nx.has_path(undirected, "c1.w:0", "c2.w:0")
    # one cluster per group, prunable ones say so
    text = dot.read_text()
    assert len(re.findall(r"subgraph cluster_\d+", text)) == len(rows)
    assert text.count("prunable\"") == sum(r["prunable"] for r in rows)


def test_groups_png_needs_graphviz(tmp_path):
    src = tmp_path / "cnn.onnx"
    onnx.save(build_cnn(), src)
    png = tmp_path / "g.png"
    done = run_cli("groups", src, "--dot", tmp_path / "g.dot", "--png", png)
    if shutil.which("dot") is None:
        assert done.returncode != 0 and "Graphviz" in done.stderr
        assert not png.exists() and not (tmp_path / "g.dot").exists()
    else:
        assert done.returncode == 0, done.stderr
        assert is_png(png)


def chromium_screenshot(page: Path, png: Path, tmp: Path) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}", f"--screenshot={png}",
                           "--window-size=1200,1600", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
def test_report_renders_in_a_headless_browser(resnet, tmp_path):
    from matplotlib.image import imread

    original, pruned = resnet
    page = tmp_path / "report.html"
    assert run_cli("report", pruned, "--original", original, "-o", page).returncode == 0
    shot = tmp_path / "shot.png"
    done = chromium_screenshot(page, shot, tmp_path)
    assert done.returncode == 0, done.stderr[-500:]
    assert is_png(shot)
    pixels = imread(str(shot))
    assert pixels.shape[:2] == (1600, 1200)
    # not blank: many distinct colours (text, tables, the blue and grey bars of the plot)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50
    blue = np.all(np.abs(pixels[..., :3] - np.array([0x2b, 0x6c, 0xb0]) / 255) < 0.02, axis=-1)
    assert blue.sum() > 1000  # the width plot's "kept" bars were drawn (the PNG loaded)


@pytest.mark.parametrize("node, weight, block", [
    ("/layer1/layer1.0/conv1/Conv", "onnx::Conv_193", "layer1/layer1.0"),   # TorchScript: scoped node names
    ("node_Conv_809", "features.0.0.weight", "features/features.0"),       # dynamo: module path in the weight
    ("/fc/Gemm", "fc.weight", "fc"),
    ("Conv_3", "w3", "Conv_3"),                                             # nothing to go by: the layer itself
])
def test_blocks_come_from_scopes_or_module_paths(node, weight, block):
    from spa.report.tables import block_of

    assert block_of(node, weight) == block


def test_summary_splits_parameters_by_dtype_only_when_a_model_mixes_them():
    from spa.report.tables import before_after

    def stats(by_dtype):
        return {"params": sum(by_dtype.values()), "params_by_dtype": by_dtype, "macs": 1, "bytes": 1, "nodes": 1,
                "ops": {}}

    mixed = before_after(stats({"float": 600, "uint8": 4000}), stats({"float": 300, "uint8": 1000}))
    assert [r[0] for r in mixed[:3]] == ["parameters", "  float", "  uint8"]
    assert mixed[2][3] == "25.0%"
    plain = before_after(stats({"float": 600}), stats({"float": 300}))
    assert [r[0] for r in plain] == ["parameters", "MACs", "file size", "nodes"]

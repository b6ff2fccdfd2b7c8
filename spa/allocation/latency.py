"""Measured per-layer cost for `--target latency`: ONNX Runtime's own profile of the model, once.

`node_costs` runs the (canonicalized) model under ONNX Runtime with profiling on and returns the
mean milliseconds of every node per run, keyed by node name (kernels that ONNX Runtime fused or
re-laid-out are attributed to the node whose name they carry). `estimate` turns those costs and a
plan's kept widths into the predicted time of the pruned model: a node's time scales with the
kept share of every group it touches (a convolution with both its input and output channels
pruned by half costs a quarter)."""
from __future__ import annotations

import json
import os
import re
import tempfile

import onnx_ir as ir

UNATTRIBUTED = "<unattributed>"  # time of kernels that match no node of the model (reorders, copies)


def node_costs(model: ir.Model, *, device: str = "cpu", rounds: int = 10, threads: int | None = 1,
               opt_level: str = "all", seed: int = 0) -> dict[str, float]:
    """Mean milliseconds per run of each node of `model` (profiled by ONNX Runtime after warm-up)."""
    from spa.runtime.benchmark import (
        _inputs,
        fixed_shapes,
        make_feeds,
        providers_for,
        require_device,
        session_options,
    )
    from spa.runtime.sessions import open_session
    from spa.graph.io import to_proto

    require_device(device)
    inputs = _inputs(model)
    feeds = make_feeds(inputs, fixed_shapes(inputs, None, None), seed)
    source = to_proto(model).SerializeToString()
    providers = providers_for(device)
    warm = open_session(source, session_options(threads, opt_level), providers=providers, error=None)
    for _ in range(2):
        warm.run(None, feeds)
    del warm
    with tempfile.TemporaryDirectory(prefix="spa-profile-") as tmp:
        options = session_options(threads, opt_level)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        sess = open_session(source, options, providers=providers, error=None)
        sess.run(None, feeds)  # the first run (allocations) is left out below
        for _ in range(rounds):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as handle:
            events = json.load(handle)
    return attribute(events, model, rounds)


_SUFFIX = re.compile(r"_(kernel_time|fence_before|fence_after)$")


def attribute(events: list[dict], model: ir.Model, rounds: int) -> dict[str, float]:
    """Sum the kernel times of a profile per model node over the last `rounds` runs, in ms per run.

    ONNX Runtime names a kernel after its node, or — for a fused or re-laid-out one such as
    Conv+Relu in the NCHWc layout — after the value it writes plus a suffix ("r1.out_nchwc"); such
    a kernel counts for the node of the kernel's op type that the fusion started from (the Conv).
    Kernels that match nothing go to UNATTRIBUTED."""
    kernels = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(runs) > rounds:  # keep the kernels of the last `rounds` runs
        start = sorted(r["ts"] for r in runs)[-rounds]
        kernels = [e for e in kernels if e["ts"] >= start]
    named = {n.name: n for n in model.graph if n.name}
    named.update({v.name: n for n in model.graph for v in n.outputs if v.name and v.name not in named})
    costs: dict[str, float] = {}
    cache: dict[tuple[str, str], str] = {}
    for e in kernels:
        key = (_SUFFIX.sub("", e["name"]), str(e.get("args", {}).get("op_name", "")))
        if key not in cache:
            cache[key] = _owner(*key, named)
        costs[cache[key]] = costs.get(cache[key], 0.0) + e["dur"] / 1000.0 / rounds
    return costs


def _owner(kernel: str, op_type: str, named: dict) -> str:
    if kernel in named:
        node = named[kernel]
    else:  # rewritten kernels keep a node's or value's name and add a suffix ("…_nchwc", "…_token_12")
        best = max((n for n in named if kernel.startswith(n)), key=len, default=None)
        if best is None:
            return UNATTRIBUTED
        node = named[best]
    start = node
    for _ in range(4):  # a fused kernel is named after its last node; its time is the first one's
        if node.op_type == op_type or not node.inputs or node.inputs[0] is None:
            break
        node = node.inputs[0].producer()
        if node is None:
            break
    return node.name if node is not None and node.op_type == op_type else start.name


def group_nodes(analysis, groups) -> dict[str, set[str]]:
    """The nodes whose time a group's width scales: every reader of one of its members (the
    convolution or MatMul whose weight it is, activations and normalisations of its channels)."""
    return {g.key: set(g.nodes) for g in groups}


def estimate(costs: dict[str, float], touching: dict[str, set[str]], kept_share: dict[str, float]) -> float:
    """Predicted milliseconds of the model with each group keeping `kept_share[key]` of its width."""
    factor = dict.fromkeys(costs, 1.0)
    for key, nodes in touching.items():
        share = kept_share.get(key, 1.0)
        for n in nodes:
            if n in factor:
                factor[n] *= share
    return sum(t * factor[n] for n, t in costs.items())

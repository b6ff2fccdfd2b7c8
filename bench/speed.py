"""Speed benchmarks → BENCHMARKS.md: what SPA's pruned graphs buy under ONNX Runtime, and how fast SPA prunes.

    nice .venv/bin/python bench/speed.py efficiency --record   # SPA-pruned vs built-at-the-pruned-widths (ideal)
    nice .venv/bin/python bench/speed.py roundto --record      # --round-to 1 / 8 / 16 on CPU CNN latency
    nice .venv/bin/python bench/speed.py prune-time --record   # SPA vs Torch-Pruning 1.6.1: wall time, peak RSS
    nice .venv/bin/python bench/speed.py scaling --record      # analysis + prune time of 4/16/64-layer Llama stacks
    nice .venv/bin/python bench/speed.py criterion-cost --repeat 3 --record  # obspa vs l2 prune time, real detector

Every latency here is ONNX Runtime on the CPU, one intra-op thread, graph optimizations on, batch 1,
sessions created before timing, warm-up, then the models of one comparison alternated round by
round in one process (spa.runtime.benchmark); ratios of medians are reported, since absolute times on this
shared machine drift. Models are built with random weights (no downloads). Torch-Pruning comes
from the `bench` extra (`pip install -e '.[bench]'`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sweep import write_block

OUT = ROOT / "build" / "speed"
RATIOS = (0.25, 0.5)
CNNS = ("resnet50", "mobilenet_v2")
IMAGE = 224
SEQ = 128
LLAMA = dict(vocab_size=1024, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
             head_dim=64, intermediate_size=1376, max_position_embeddings=256)
MODELS = CNNS + ("bert-base", "llama-stack")
LABELS = {"resnet50": "ResNet-50", "mobilenet_v2": "MobileNetV2", "bert-base": "BERT-base",
          "llama-stack": "Llama-style stack"}
SHAPES = {"resnet50": f"1×3×{IMAGE}×{IMAGE}", "mobilenet_v2": f"1×3×{IMAGE}×{IMAGE}", "bert-base": f"1×{SEQ} tokens",
          "llama-stack": f"1×{SEQ} tokens"}


# ------------------------------------------------------------------------------------- models


def torch_model(name: str, widths: dict | None = None):
    """The dense model (random weights), or — with `widths` — the same architecture built at
    those widths (CNNs: per weight name, the pruned ONNX's weight shapes; transformers: kept
    heads and FFN size per layer)."""
    import torch

    if name in CNNS:
        from models import torchvision_zoo

        model = torchvision_zoo.build(name)
        return model if widths is None else narrow_cnn(model, widths)
    import transformers

    torch.manual_seed(0)
    if name == "bert-base":
        config = transformers.BertConfig()
        if widths:
            config.intermediate_size = widths["ffn"]
        model = transformers.BertModel(config, add_pooling_layer=False)
        if widths:
            for layer in model.encoder.layer:
                narrow_bert_attention(layer.attention, widths["heads"])
        return model.eval()
    config = transformers.LlamaConfig(**LLAMA)
    if widths:
        config.num_key_value_heads = widths["kv_heads"]
        config.num_attention_heads = widths["heads"]
        config.intermediate_size = widths["ffn"]
    return transformers.LlamaModel(config).eval()


def narrow_cnn(model, widths: dict):
    """Replace every Conv2d/BatchNorm2d/Linear by one of the widths SPA's pruned graph has for it
    (widths: weight name → (shape, group)); a BatchNorm takes the width of the conv before it."""
    from torch import nn

    last = None
    for path, module in list(model.named_modules()):
        parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
        attr = path.rpartition(".")[2]
        if isinstance(module, nn.Conv2d):
            shape, group = widths.get(f"{path}.weight", (tuple(module.weight.shape), module.groups))
            new = nn.Conv2d(shape[1] * group, shape[0], module.kernel_size, module.stride, module.padding,
                            module.dilation, group, module.bias is not None)
            last = shape[0]
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(last)
        elif isinstance(module, nn.Linear):
            shape, _ = widths.get(f"{path}.weight", (tuple(module.weight.shape), 1))
            new = nn.Linear(shape[1], shape[0], module.bias is not None)
        else:
            continue
        setattr(parent, attr, new)
    return model.eval()


def narrow_bert_attention(attention, heads: int) -> None:
    from torch import nn

    self_attn = attention.self
    size = self_attn.attention_head_size
    hidden = self_attn.query.in_features
    self_attn.num_attention_heads, self_attn.all_head_size = heads, heads * size
    for proj in ("query", "key", "value"):
        setattr(self_attn, proj, nn.Linear(hidden, heads * size))
    attention.output.dense = nn.Linear(heads * size, hidden)


def export(name: str, model, path: Path) -> Path:
    """The same exporter for the dense model and every ideal: torch.onnx (dynamo) for the CNNs,
    optimum for the transformers (spa.exporters.hf)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if name in CNNS:
        from models.torchvision_zoo import _quiet

        with _quiet(), torch.no_grad():
            torch.onnx.export(model, (torch.randn(1, 3, IMAGE, IMAGE),), str(path), dynamo=True, optimize=True,
                              report=False, input_names=["input"], output_names=["logits"], opset_version=18)
        return path
    from spa.exporters.hf import export as hf_export

    shutil.rmtree(path.parent, ignore_errors=True)  # a rerun replaces the folder
    return hf_export(model, path.parent, task="feature-extraction", exporter="optimum")


def dense_file(name: str) -> Path:
    path = OUT / name / "dense" / "model.onnx"
    if not path.is_file():
        export(name, torch_model(name), path)
    return path


def widths_of(name: str, result) -> dict:
    """What an ideal model needs to be built at SPA's pruned widths."""
    if name in CNNS:
        out = {}
        for node in result.model.graph:
            if node.op_type in ("Conv", "Gemm") and node.inputs[1] is not None:
                w = node.inputs[1]
                group = node.attributes["group"].value if "group" in node.attributes else 1
                shape = tuple(w.shape)
                if node.op_type == "Gemm" and not (node.attributes.get("transB") and node.attributes["transB"].value):
                    shape = shape[::-1]
                out[w.name] = (shape, group)
        return out
    groups = result.analysis.group_by_key()
    kept = {"heads": set(), "channels": set()}
    for key, removed in result.plan.removed.items():
        g = groups[key]
        kept[g.kind].add(g.width - len(removed))
    if len(kept["heads"]) != 1 or len(kept["channels"]) != 1:
        raise SystemExit(f"{name}: layers kept different widths {kept}; the ideal model assumes one per kind")
    heads, ffn = kept["heads"].pop(), kept["channels"].pop()
    if name == "bert-base":
        return {"heads": heads, "ffn": ffn}
    per_kv = LLAMA["num_attention_heads"] // LLAMA["num_key_value_heads"]
    return {"kv_heads": heads, "heads": heads * per_kv, "ffn": ffn}


def spa_prune(path: Path, ratio: float, round_to: int = 1):
    import spa

    return spa.prune(str(path), budget=spa.Budget(ratio=ratio, round_to=round_to))


# --------------------------------------------------------------------------------- timing


def alternate_files(files: list[Path], rounds: int, warmup: int = 5) -> list[dict]:
    """p50 etc. of each file, alternated round by round in this process (1 thread, CPU, batch 1)."""
    from spa.graph import io
    from spa.runtime.benchmark import (
        _inputs,
        alternate,
        fixed_shapes,
        make_feeds,
        make_session,
        runner,
        stats,
    )

    inputs = _inputs(io.load(str(files[0])))
    feeds = make_feeds(inputs, fixed_shapes(inputs, None, None))
    sessions = [make_session(str(f), "cpu", 1, "all", str(f)) for f in files]
    times = alternate([runner(s, feeds, "cpu") for s in sessions], rounds, warmup)
    return [stats(t, 1) for t in times]


def efficiency(models: list[str], rounds: int) -> list[dict]:
    from spa.api import inspect

    rows = []
    for name in models:
        dense = dense_file(name)
        files, meta = [dense], []
        for ratio in RATIOS:
            folder = OUT / name / f"r{ratio}"
            result = spa_prune(dense, ratio)
            folder.mkdir(parents=True, exist_ok=True)
            result.save(folder / "spa.onnx")
            widths = widths_of(name, result)
            ideal = export(name, torch_model(name, widths), folder / "ideal" / "model.onnx")
            files += [folder / "spa.onnx", ideal]
            ideal_stats = inspect(str(ideal))  # canonicalized like SPA's output (BN folded), so they compare
            meta.append({"ratio": ratio, "params_spa": result.after["params"], "macs_spa": result.after["macs"],
                         "params_ideal": ideal_stats["params"], "macs_ideal": ideal_stats["macs"],
                         "widths": widths if name not in CNNS else None})
        print(f"{name}: timing {len(files)} models, {rounds} alternated rounds", flush=True)
        timed = alternate_files(files, rounds)
        dense_ms = timed[0]["p50_ms"]
        for i, m in enumerate(meta):
            spa_ms, ideal_ms = timed[1 + 2 * i]["p50_ms"], timed[2 + 2 * i]["p50_ms"]
            row = dict(m, model=name, dense_ms=dense_ms, spa_ms=spa_ms, ideal_ms=ideal_ms,
                       speedup_spa=dense_ms / spa_ms, speedup_ideal=dense_ms / ideal_ms,
                       efficiency=ideal_ms / spa_ms, rounds=rounds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def roundto(models: list[str], rounds: int, ratio: float = 0.3) -> list[dict]:
    from spa.allocation.allocate import cpu_block_size

    rows = []
    for name in models:
        dense = dense_file(name)
        files = [dense]
        steps = (1, 8, 16)
        for r in steps:
            out = OUT / name / f"round{r}-{ratio}.onnx"
            result = spa_prune(dense, ratio, r)
            result.save(out)
            files.append(out)
        timed = alternate_files(files, rounds)
        for r, t in zip(steps, timed[1:]):
            rows.append({"model": name, "ratio": ratio, "round_to": r, "dense_ms": timed[0]["p50_ms"],
                         "pruned_ms": t["p50_ms"], "speedup": timed[0]["p50_ms"] / t["p50_ms"], "rounds": rounds,
                         "cpu_block": cpu_block_size()})
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------ prune time: SPA vs Torch-Pruning


def child(tool: str, name: str, ratio: float) -> dict:
    """Runs in its own process: time one prune (imports and model construction excluded)."""
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if tool == "spa":
        import spa.api  # noqa: F401  # the modules spa.prune loads lazily: imports stay outside the timer
        import spa.flow.pipeline  # noqa: F401

        path = dense_file(name)
        before = rss()
        start = time.perf_counter()
        result = spa_prune(path, ratio)
        with tempfile.TemporaryDirectory() as tmp:
            result.save(Path(tmp) / "pruned.onnx")
        wall = time.perf_counter() - start
        return {"wall_s": wall, "peak_rss": rss(), "rss_before": before, "params_after": result.after["params"]}
    import torch
    import torch_pruning as tp

    model = torch_model(name)
    if name in CNNS:
        example = torch.randn(1, 3, IMAGE, IMAGE)
        ignored = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]  # the classifier
        extra = {}
    else:
        example = {"input_ids": torch.randint(0, 2, (1, SEQ)), "attention_mask": torch.ones(1, SEQ, dtype=torch.long)}
        ignored, num_heads = _transformer_tp_setup(name, model)
        extra = dict(num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
                     output_transform=lambda out: out[0])  # the last hidden state of a ModelOutput
    before = rss()
    start = time.perf_counter()
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, ignored_layers=ignored, **extra)
    pruner.step()
    wall = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    return {"wall_s": wall, "peak_rss": rss(), "rss_before": before, "params_after": params}


def _transformer_tp_setup(name: str, model):
    """Heads and FFN only (SPA's default scope): every layer writing the hidden width is ignored,
    q/k/v projections carry their head counts."""
    from torch import nn

    num_heads, ignored = {}, [model.get_input_embeddings()]
    if name == "bert-base":
        for layer in model.encoder.layer:
            s = layer.attention.self
            num_heads.update({s.query: s.num_attention_heads, s.key: s.num_attention_heads,
                              s.value: s.num_attention_heads})
            ignored += [layer.attention.output.dense, layer.output.dense]
        ignored += [m for m in model.modules() if isinstance(m, nn.LayerNorm)] + [model.embeddings]
    else:
        for layer in model.layers:
            a = layer.self_attn
            num_heads.update({a.q_proj: model.config.num_attention_heads, a.k_proj: model.config.num_key_value_heads,
                              a.v_proj: model.config.num_key_value_heads})
            ignored += [a.o_proj, layer.mlp.down_proj, layer.input_layernorm, layer.post_attention_layernorm]
        ignored.append(model.norm)
    return ignored, num_heads


CHILD_TIMEOUT = 240


def prune_time(models: list[str], ratio: float = 0.5, repeat: int = 1) -> list[dict]:
    """Each tool pruned in a fresh child process; with repeat > 1 the tools alternate that many
    times and each keeps its fastest run (this machine is shared: load from others only adds time)."""
    rows = []
    for name in models:
        dense_file(name)  # exported once, outside the timed children
        row = {"model": name, "ratio": ratio, "repeat": repeat}
        for _ in range(repeat):
            for tool in ("spa", "tp"):
                if "error" in row.get(tool, {}):
                    continue  # a timeout or failure is not retried
                result = _child_run(tool, name, ratio)
                if tool not in row or "error" in result or result["wall_s"] < row[tool]["wall_s"]:
                    row[tool] = result
        if "wall_s" in row["spa"] and "wall_s" in row["tp"]:
            row["time_ratio"] = row["tp"]["wall_s"] / row["spa"]["wall_s"]
            row["rss_ratio"] = row["tp"]["peak_rss"] / row["spa"]["peak_rss"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _child_run(tool: str, name: str, ratio: float) -> dict:
    try:
        proc = subprocess.run([sys.executable, __file__, "child", tool, name, str(ratio)],
                              capture_output=True, text=True, cwd=ROOT, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {CHILD_TIMEOUT} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


# ------------------------------------------------------------------------------------ scaling


def scaling(layers: list[int], ratio: float = 0.3) -> list[dict]:
    from scale import Config, build

    import spa
    from spa.flow.pipeline import analyze_scope, load_canonical

    rows = []
    build(Config(hidden=256, layers=2, heads=4, ffn=704, vocab=256), OUT / "warm")  # imports, caches
    spa.prune(str(OUT / "warm" / "model.onnx"), ratio)
    for n in layers:
        cfg = Config(hidden=256, layers=n, heads=4, ffn=704, vocab=256)
        path = build(cfg, OUT / f"llama-{n}")
        start = time.perf_counter()
        analysis = analyze_scope(load_canonical(str(path)))
        analysed = time.perf_counter() - start
        start = time.perf_counter()
        result = spa.prune(str(path), ratio)
        pruned = time.perf_counter() - start
        rows.append({"layers": n, "nodes": len(list(result.original.graph)), "groups": len(analysis.groups),
                     "analysis_s": analysed, "prune_s": pruned, "config": cfg.__dict__})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- criterion cost

#: (real file of models/realfiles.py, --input-shape): a YOLOv8n-class detector at 640², as its users run it
COST_MODELS = (("nudenet_320n", "images=1,3,640,640"),)


def criterion_cost(repeat: int = 3, ratio: float = 0.1) -> list[dict]:
    """`spa prune --criterion l2` and `--criterion obspa` (statistics, compensation) on the same
    file, each in a fresh child process, alternated `repeat` times; each keeps its fastest run."""
    from models.realfiles import REAL_FILES, fetch

    rows = []
    for key, shape in COST_MODELS:
        path = fetch(next(rf for rf in REAL_FILES if rf.key == key))
        row = {"model": key, "input_shape": shape, "ratio": ratio, "repeat": repeat}
        for _ in range(repeat):
            for criterion in ("l2", "obspa"):
                result = _timed_prune(path, ratio, criterion, shape)
                if criterion not in row or result["wall_s"] < row[criterion]["wall_s"]:
                    row[criterion] = result
        row["time_ratio"] = row["obspa"]["wall_s"] / row["l2"]["wall_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _timed_prune(path: Path, ratio: float, criterion: str, shape: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="spa-cost-") as tmp:
        cmd = [sys.executable, "-m", "spa.cli", "prune", str(path), "-o", str(Path(tmp) / "out.onnx"),
               "--ratio", str(ratio), "--criterion", criterion, "--input-shape", shape, "--quiet"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{criterion} failed on {path.name}: {proc.stderr.read().decode()[-300:]}")
        return {"wall_s": wall, "peak_rss": usage.ru_maxrss * 1024}


# ------------------------------------------------------------------------------------- record


def _machine_line(threads: str = "1 ONNX Runtime thread") -> str:
    import onnxruntime as ort

    from spa.runtime.benchmark import machine

    m = machine()
    return (f"Measured {time.strftime('%Y-%m-%d')} on {m['cpu']} ({m['cpu_count']} cores, shared), "
            f"onnxruntime {ort.__version__}, {threads}")


def record(section: str, rows: list[dict]) -> None:
    lines = [_machine_line()]
    if section == "efficiency":
        lines += ["", "| model (input) | ratio | dense ms | SPA-pruned ms | ideal ms | SPA speedup | ideal speedup | "
                      "**efficiency** (SPA / ideal) |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {LABELS[r['model']]} ({SHAPES[r['model']]}) | {r['ratio']} | {r['dense_ms']:.2f} | "
                         f"{r['spa_ms']:.2f} | {r['ideal_ms']:.2f} | {r['speedup_spa']:.2f}× | "
                         f"{r['speedup_ideal']:.2f}× | **{r['efficiency']:.2f}** |")
        lines += ["", f"Medians of {rows[0]['rounds']} alternated rounds (dense, then SPA and ideal at each ratio)."]
    elif section == "roundto":
        lines += ["", "| model | ratio | --round-to | dense ms | pruned ms | speedup |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {LABELS[r['model']]} | {r['ratio']} | {r['round_to']} | {r['dense_ms']:.2f} | "
                         f"{r['pruned_ms']:.2f} | {r['speedup']:.2f}× |")
        lines += ["", f"This CPU's NCHWc block (what `--round-to auto` picks on cpu): {rows[0]['cpu_block']}. "
                      f"Medians of {rows[0]['rounds']} alternated rounds."]
    elif section == "prune-time":
        lines[0] = _machine_line("torch " + __import__("torch").__version__ + ", torch-pruning 1.6.1")
        lines += ["", "| model | ratio | SPA s | Torch-Pruning s | **TP / SPA time** | SPA peak RSS | TP peak RSS | "
                      "TP / SPA RSS | RSS growth SPA / TP |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            s, t = r["spa"], r["tp"]
            if "error" in s or "error" in t:
                cell = lambda d: f"{d['wall_s']:.2f}" if "wall_s" in d else d["error"]
                lines.append(f"| {LABELS[r['model']]} | {r['ratio']} | {cell(s)} | {cell(t)} | | | | | |")
                continue
            mb = lambda n: f"{n / 2**20:.0f} MiB"
            lines.append(f"| {LABELS[r['model']]} | {r['ratio']} | {s['wall_s']:.2f} | {t['wall_s']:.2f} | "
                         f"**{r['time_ratio']:.2f}×** | {mb(s['peak_rss'])} | {mb(t['peak_rss'])} | "
                         f"{r['rss_ratio']:.2f}× | {mb(s['peak_rss'] - s['rss_before'])} / "
                         f"{mb(t['peak_rss'] - t['rss_before'])} |")
    elif section == "scaling":
        lines[0] = _machine_line("in one process after a warm-up prune")
        lines += ["", "| layers | nodes | groups | analysis s | prune s (load → validate) | prune ms per layer |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['layers']} | {r['nodes']} | {r['groups']} | {r['analysis_s']:.2f} | "
                         f"{r['prune_s']:.2f} | {1000 * r['prune_s'] / r['layers']:.0f} |")
    elif section == "criterion-cost":
        lines[0] = _machine_line("each run a fresh `spa prune` process, wall time")
        lines += ["", "| file | input | ratio | l2 s | obspa s | **obspa / l2 time** | l2 peak RSS | obspa peak RSS |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mb = lambda n: f"{n / 2**20:.0f} MiB"
            lines.append(f"| {r['model']} | {r['input_shape'].split('=')[1]} | {r['ratio']} | {r['l2']['wall_s']:.2f} | "
                         f"{r['obspa']['wall_s']:.2f} | **{r['time_ratio']:.2f}×** | {mb(r['l2']['peak_rss'])} | "
                         f"{mb(r['obspa']['peak_rss'])} |")
        lines += ["", f"Fastest of {rows[0]['repeat']} alternated runs each."]
    write_block(f"speed:{section}", lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("section", choices=["efficiency", "roundto", "prune-time", "scaling", "criterion-cost", "child"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--models", default=None, help="comma-separated subset")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--record", action="store_true", help="write the table into BENCHMARKS.md")
    ap.add_argument("--repeat", type=int, default=1, help="prune-time: runs per tool, alternated; the fastest is kept")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.section == "child":
        tool, name, ratio = args.args
        print(json.dumps(child(tool, name, float(ratio))))
        return
    models = args.models.split(",") if args.models else list(MODELS if args.section != "roundto" else CNNS)
    if args.section == "efficiency":
        rows = efficiency(models, args.rounds)
    elif args.section == "roundto":
        rows = roundto(models, args.rounds)
    elif args.section == "prune-time":
        rows = prune_time(models, repeat=args.repeat)
    elif args.section == "criterion-cost":
        rows = criterion_cost(repeat=args.repeat)
    else:
        rows = scaling([int(n) for n in (args.args or ["4", "16", "64"])])
    OUT.mkdir(parents=True, exist_ok=True)
    saved = OUT / f"{args.section}.json"
    if args.models and saved.exists():  # a subset rerun replaces those models' rows, keeps the others
        rows = [r for r in json.loads(saved.read_text()) if r.get("model") not in models] + rows
        rows.sort(key=lambda r: (list(MODELS).index(r["model"]), r.get("ratio"), r.get("round_to")))
    saved.write_text(json.dumps(rows, indent=1))
    if args.record:
        record(args.section, rows)


if __name__ == "__main__":
    main()

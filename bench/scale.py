"""Out-of-core scale check: build a Llama-style model (random fp16 weights in an external data file),
prune it through the `spa` CLI in a child process, and record the child's peak RSS and wall time.

    .venv/bin/python bench/scale.py                  # ~1B parameters (hidden 2048, 16 layers)
    .venv/bin/python bench/scale.py --size 2b        # 2B: 4.1 GB of weights, past the 2 GB protobuf limit
    .venv/bin/python bench/scale.py --size 7b        # 7B class (hidden 4096, 32 layers), if the disk allows
    .venv/bin/python bench/scale.py --size tiny      # seconds; what the test suite runs
    .venv/bin/python bench/scale.py --keep           # leave build/scale-<size>/ in place
    .venv/bin/python bench/scale.py --record         # also rewrite the scale section of BENCHMARKS.md

The builder never holds more than one tensor: each weight is generated, appended to the data file
and dropped, and the graph (a small protobuf) only points at offsets in that file.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
OPSET = 18


@dataclass(frozen=True)
class Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    seq: int = 16

    def params(self) -> int:
        per_layer = 4 * self.hidden ** 2 + 3 * self.hidden * self.ffn + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


SIZES = {
    "tiny": Config(hidden=64, layers=2, heads=4, ffn=176, vocab=256),
    "1b": Config(hidden=2048, layers=16, heads=16, ffn=5632, vocab=32000),
    "2b": Config(hidden=2560, layers=24, heads=20, ffn=6912, vocab=32000),  # 4.1 GB of fp16: over 2 GB
    "7b": Config(hidden=4096, layers=32, heads=32, ffn=11008, vocab=32000),
}


class _Writer:
    """Appends fp16 tensors to one external data file (64 KiB aligned, so ONNX Runtime can map
    them) and returns TensorProtos that point into it."""

    ALIGN = 1 << 16

    def __init__(self, path: Path, seed: int):
        self.file = open(path, "wb")
        self.location = path.name
        self.rng = np.random.default_rng(seed)

    def random(self, name: str, shape: tuple[int, ...], scale: float) -> TensorProto:
        rows = []
        # generate in row blocks of ~16 MiB so even the embedding never exists whole in memory
        block = max(1, (1 << 23) // max(1, int(np.prod(shape[1:], dtype=np.int64))))
        offset = self._pad()
        for start in range(0, shape[0], block):
            n = min(block, shape[0] - start)
            chunk = (self.rng.standard_normal((n, *shape[1:]), dtype=np.float32) * scale).astype(np.float16)
            self.file.write(chunk.tobytes())
            rows.append(n)
        return self._proto(name, shape, offset)

    def ones(self, name: str, shape: tuple[int, ...]) -> TensorProto:
        offset = self._pad()
        self.file.write(np.ones(shape, np.float16).tobytes())
        return self._proto(name, shape, offset)

    def _pad(self) -> int:
        offset = self.file.tell()
        aligned = -(-offset // self.ALIGN) * self.ALIGN
        self.file.write(b"\0" * (aligned - offset))
        return aligned

    def _proto(self, name, shape, offset) -> TensorProto:
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT16, dims=list(shape))
        tensor.data_location = TensorProto.EXTERNAL
        length = int(np.prod(shape, dtype=np.int64)) * 2
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def close(self):
        self.file.close()


def build(cfg: Config, folder: Path, seed: int = 0) -> Path:
    """Write folder/model.onnx + folder/model.onnx.data; returns the model path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    writer = _Writer(folder / "model.onnx.data", seed)
    h, f, nh = cfg.hidden, cfg.ffn, cfg.heads
    hd = h // nh
    nodes, inits = [], []

    def const(name, values, dtype=np.int64):
        inits.append(onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    const("axes_last", [-1])
    const("eps", np.float16(1e-5), np.float16)
    const("attn_scale", np.float16(1 / np.sqrt(hd)), np.float16)
    const("heads_shape", [1, cfg.seq, nh, hd])
    const("hidden_shape", [1, cfg.seq, h])
    causal = np.triu(np.full((cfg.seq, cfg.seq), -1e4, np.float16), 1)
    const("causal", causal, np.float16)

    def rms_norm(x, prefix):
        # RMSNorm in primitive ops: x * 1/sqrt(mean(x*x) + eps) * g
        inits.append(writer.ones(f"{prefix}.g", (h,)))
        sq = node("Mul", [x, x], f"{prefix}.sq")
        mean = node("ReduceMean", [sq, "axes_last"], f"{prefix}.mean", keepdims=1)
        inv = node("Reciprocal", [node("Sqrt", [node("Add", [mean, "eps"], f"{prefix}.add")], f"{prefix}.sqrt")],
                   f"{prefix}.inv")
        return node("Mul", [node("Mul", [x, inv], f"{prefix}.normed"), f"{prefix}.g"], f"{prefix}.out")

    def linear(x, name, n_in, n_out):
        inits.append(writer.random(name, (n_in, n_out), 1 / np.sqrt(n_in)))
        return node("MatMul", [x, name], f"{name}.out")

    inits.append(writer.random("embed", (cfg.vocab, h), 0.02))
    x = node("Gather", ["embed", "input_ids"], "embedded", axis=0)
    for i in range(cfg.layers):
        p = f"layers.{i}"
        n = rms_norm(x, f"{p}.attn_norm")
        q, k, v = (linear(n, f"{p}.{w}", h, h) for w in ("wq", "wk", "wv"))
        q = node("Transpose", [node("Reshape", [q, "heads_shape"], f"{p}.q4")], f"{p}.qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, "heads_shape"], f"{p}.k4")], f"{p}.kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, "heads_shape"], f"{p}.v4")], f"{p}.vt", perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"{p}.qk"), "attn_scale"], f"{p}.scaled"),
                              "causal"], f"{p}.masked")
        ctx = node("MatMul", [node("Softmax", [scores], f"{p}.probs", axis=-1), v], f"{p}.ctx")
        ctx = node("Reshape", [node("Transpose", [ctx], f"{p}.ctxt", perm=[0, 2, 1, 3]), "hidden_shape"],
                   f"{p}.ctx3")
        x = node("Add", [x, linear(ctx, f"{p}.wo", h, h)], f"{p}.attn_res")
        n = rms_norm(x, f"{p}.ffn_norm")
        gate, up = linear(n, f"{p}.w_gate", h, f), linear(n, f"{p}.w_up", h, f)
        act = node("Mul", [gate, node("Sigmoid", [gate], f"{p}.sig")], f"{p}.silu")
        x = node("Add", [x, linear(node("Mul", [act, up], f"{p}.swiglu"), f"{p}.w_down", f, h)], f"{p}.ffn_res")
    n = rms_norm(x, "final_norm")
    inits.append(writer.random("lm_head", (h, cfg.vocab), 1 / np.sqrt(h)))
    node("MatMul", [n, "lm_head"], "logits")
    writer.close()
    graph = helper.make_graph(
        nodes, "llama", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, cfg.seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, [1, cfg.seq, cfg.vocab])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="spa-bench")
    onnx.save(model, str(path))
    return path


def _poll_rss(pid: int, peak: dict, stop: threading.Event) -> None:
    """Sample the child's resident memory; keep the split (anonymous vs file-backed, i.e. mapped
    weights) at the highest total seen."""
    while not stop.is_set():
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            sample = {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile", "RssShmem")}
        except (OSError, ValueError, KeyError):
            break
        if sum(sample.values()) > sum(peak.values()):
            peak.clear()
            peak.update(sample)
        stop.wait(0.01)


def prune_child(model: Path, out: Path, ratio: float, criterion: str = "l2", timeout: float | None = None) -> dict:
    """Run `spa prune` in a child; peak RSS from wait4's rusage, breakdown from /proc sampling. A
    child still running after `timeout` seconds is stopped and reported as such (peak so far)."""
    # unrounded, no latency check: what the recorded memory and time figures measured (l2 by default)
    cmd = [sys.executable, "-m", "spa.cli", "prune", str(model), "-o", str(out), "--ratio", str(ratio), "--json",
           "--criterion", criterion, "--round-to", "1", "--no-latency"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, stop = {}, threading.Event()
    poller = threading.Thread(target=_poll_rss, args=(child.pid, peak, stop), daemon=True)
    poller.start()
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        stop.set()
        poller.join()
        raise SystemExit(f"spa prune still running after {timeout:.0f} s, stopped; peak RSS so far "
                         f"{sum(peak.values()) / 1e9:.2f} GB (anonymous {peak.get('RssAnon', 0) / 1e9:.2f} GB); "
                         f"last progress: {stderr.strip().splitlines()[-1] if stderr.strip() else '-'}")
    wall = time.perf_counter() - start
    stop.set()
    poller.join()
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN (max over children, in KiB)
    import resource

    max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if child.returncode != 0:
        raise SystemExit(f"spa prune failed ({child.returncode}): {stderr.strip()}")
    summary = json.loads(stdout)
    return {"command": " ".join([".venv/bin/python", *cmd[1:]]).replace(str(ROOT) + "/", ""), "wall_s": round(wall, 1),
            "peak_rss": max_rss, "peak_rss_anon": peak.get("RssAnon"), "peak_rss_file": peak.get("RssFile"),
            "params_before": summary["before"]["params"], "params_after": summary["after"]["params"],
            "groups_pruned": summary["groups_pruned"], "channels_removed": summary["channels_removed"],
            "stages": summary.get("seconds")}


def record(r: dict) -> None:
    """Replace the text between this size's markers in BENCHMARKS.md with this run's table."""
    BEGIN, END = f"<!-- scale:{r['size']}:begin -->", f"<!-- scale:{r['size']}:end -->"
    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    cfg = r["config"]
    text = f"""{BEGIN}
Measured {time.strftime('%Y-%m-%d')}: a Llama-style decoder built by `bench/scale.py --size {r['size']}`
(hidden {cfg['hidden']}, {cfg['layers']} layers, {cfg['heads']} heads, SwiGLU FFN {cfg['ffn']}, vocab {cfg['vocab']},
RMSNorm as primitive ops, random fp16 weights in one external data file), pruned through the CLI:

`{r['command']}`

| | |
|---|---|
| parameters | {r['params_before'] / 1e9:.3f} B → {r['params_after'] / 1e9:.3f} B |
| weights on disk | {gb(r['data_bytes'])} |
| groups pruned / channels removed | {r['groups_pruned']} / {r['channels_removed']} |
| wall time (load → validate → save) | {r['wall_s']} s |
| **peak RSS** (wait4 rusage of the CLI process) | **{gb(r['peak_rss'])}** |
| …of which at the peak: anonymous / file-backed (mapped weights) | {gb(r['peak_rss_anon'] or 0)} / {gb(r['peak_rss_file'] or 0)} |
{END}"""
    path = ROOT / "BENCHMARKS.md"
    body = path.read_text()
    if BEGIN in body:
        body = body[: body.index(BEGIN)] + text + body[body.index(END) + len(END):]
    else:
        body = body.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(body)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--keep", action="store_true", help="keep the built and pruned models")
    ap.add_argument("--record", action="store_true", help="write the result into BENCHMARKS.md")
    ap.add_argument("--criterion", default="l2", help="the prune's criterion (obspa: statistics and compensation)")
    ap.add_argument("--timeout", type=float, default=None, help="stop the prune after this many seconds")
    args = ap.parse_args(argv)
    cfg = SIZES[args.size]
    folder = BUILD / f"scale-{args.size}"
    need = cfg.params() * 2 * 2.5  # the model, the pruned copy and validation's temporary copy
    free = shutil.disk_usage(BUILD if BUILD.exists() else ROOT).free
    if need > free:
        raise SystemExit(f"{args.size}: needs about {need / 1e9:.0f} GB of disk, {free / 1e9:.0f} GB free")
    try:
        start = time.perf_counter()
        model = build(cfg, folder)
        built = time.perf_counter() - start
        result = prune_child(model, folder / "pruned.onnx", args.ratio, args.criterion, args.timeout)
        result.update(size=args.size, config=cfg.__dict__, params=cfg.params(), build_s=round(built, 1),
                      data_bytes=(folder / "model.onnx.data").stat().st_size)
        print(json.dumps(result, indent=1))
        if args.record and args.criterion == "l2":  # the recorded tables are magnitude's
            record(result)
        return result
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Latency of models under ONNX Runtime, measured the same way for each so they compare.

`bench` is what `spa bench` runs: sessions are created outside the timer, every model is warmed
up, inputs have fixed shapes, and the timed runs alternate between the models (dense, pruned) in
one process so that machine load drifts affect all of them alike. On CUDA the inputs and outputs
stay on the device (IO binding), so the timer sees the model, not host↔device copies."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.core.errors import InputError, UsageError
from spa.runtime.sessions import open_session, quiet_options

BENCH_FORMAT = 1
DEVICES = ("cpu", "cuda")
OPT_LEVELS = ("all", "extended", "basic", "disable")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
DEFAULT_SEQUENCE = 128  # the length given to symbolic non-batch dims (a sequence) unless --input-shape


def alternate(runners: list, rounds: int, warmup: int, description: str = "measuring latency") -> list[list[float]]:
    """Seconds of each call of each runner (a no-argument callable): `warmup` untimed calls each,
    then `rounds` rounds that call every runner once, in turn."""
    from spa.core.progress import progress

    if rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if warmup < 0:
        raise UsageError("--warmup must be at least 0")
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    for _ in progress(range(rounds), description):
        for run, bucket in zip(runners, times):
            start = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - start)
    return times


def median_latency_ms(models: list[ir.Model], feeds: dict, rounds: int = 50, warmup: int = 3) -> list[float]:
    """Median milliseconds per run of each model on `feeds` (CPU, ONNX Runtime's defaults)."""
    from spa.runtime.validate import session

    sessions = [session(m) for m in models]
    times = alternate([lambda s=s: s.run(None, feeds) for s in sessions], rounds, warmup)
    return [1000.0 * float(np.median(t)) for t in times]


def quick_speedup(model, pruned, *, device: str = "cpu", feeds: dict | None = None, input_shapes: dict | None = None,
                  seconds: float = 1.5, seed: int = 0) -> dict:
    """Dense vs pruned median latency, alternated in one process for about `seconds` (3 to 50
    rounds, after one warm-up run each), with ONNX Runtime's default threads: the check a prune
    prints. `model` and `pruned`: paths or models, as for `bench`; `feeds`: the inputs (default:
    made like `bench`'s). Files are read by ONNX Runtime alone when `feeds` are given (they were
    read and checked already: the prune's input and its output)."""
    loaded = [_source_of(m, parse=feeds is None and i == 0) for i, m in enumerate((model, pruned))]
    if feeds is None:
        inputs = _inputs(loaded[0][2])
        feeds = make_feeds(inputs, fixed_shapes(inputs, None, input_shapes), seed)
    runners = [runner(make_session(source, device, None, "all", label), feeds, device) for label, source, _ in loaded]
    start = time.perf_counter()
    for run in runners:
        run()
    one_round = max(time.perf_counter() - start, 1e-6)
    rounds = int(min(50, max(3, seconds / one_round)))
    dense, after = (1000.0 * float(np.median(t)) for t in alternate(runners, rounds, 0, "dense vs pruned latency"))
    return {"dense_ms": dense, "pruned_ms": after, "speedup": dense / after if after > 0 else None,
            "rounds": rounds, "device": device}


# ------------------------------------------------------------------------------------ spa bench


def cuda_available() -> bool:
    import onnxruntime as ort

    return PROVIDERS["cuda"] in ort.get_available_providers()


def require_device(device: str) -> None:
    """Refuse a device this ONNX Runtime cannot run on, in one line that says what to install."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got '{device}'")
    if device == "cuda" and not cuda_available():
        raise UsageError(f"--device cuda: CUDA is not available — this ONNX Runtime ({ort.__version__}) has no "
                         f"CUDAExecutionProvider (it has {', '.join(ort.get_available_providers())}); install "
                         "onnxruntime-gpu (pip install 'spa-prune[gpu]') on a machine with an NVIDIA GPU, "
                         "or use --device cpu")


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--batch expects sizes like 1,32, got '{text}'") from None
    if not batches or any(b < 1 for b in batches):
        raise UsageError(f"--batch expects positive sizes like 1,32, got '{text}'")
    return batches


@dataclass
class _Input:
    name: str
    dtype: np.dtype
    dims: list  # ints and symbolic names
    spec: object = None  # spa.runtime.examples.InputSpec: the input's role, for its values


def _inputs(model: ir.Model) -> list[_Input]:
    from spa.runtime.examples import input_specs

    return [_Input(s.name, s.dtype, [d if isinstance(d, int) else str(d) for d in s.dims], s)
            for s in input_specs(model)]


def fixed_shapes(inputs: list[_Input], batch: int | None, given: dict | None) -> dict[str, list[int]]:
    """One fixed shape per input: --input-shape as given; otherwise a symbolic first dim is the
    batch and other symbolic dims are DEFAULT_SEQUENCE (0 in a KV cache). A fixed first dim must
    equal the batch."""
    given = dict(given or {})
    unknown = set(given) - {i.name for i in inputs}
    if unknown:
        raise UsageError(f"--input-shape names {sorted(unknown)[0]!r}, which is not an input of the model")
    shapes = {}
    for inp in inputs:
        if inp.name in given:
            shape = list(given[inp.name])
            if len(shape) != len(inp.dims):
                raise UsageError(f"--input-shape {inp.name}: rank {len(shape)}, the model's input has rank {len(inp.dims)}")
            if batch is not None and shape and shape[0] != batch:
                shape[0] = batch
        else:
            shape = []
            for axis, d in enumerate(inp.dims):
                if isinstance(d, int):
                    if axis == 0 and batch is not None and d != batch:
                        raise UsageError(f"input '{inp.name}' has a fixed batch of {d}; --batch {batch} needs a "
                                         "model exported with a dynamic batch dimension")
                    shape.append(d)
                elif axis == 0:
                    shape.append(batch if batch is not None else 1)
                else:  # a decoder's KV cache is empty: the model computes what it computes without one
                    shape.append(0 if getattr(inp.spec, "role", None) == "kv-cache" else DEFAULT_SEQUENCE)
        for axis, d in enumerate(inp.dims):
            if isinstance(d, int) and shape[axis] != d:
                raise UsageError(f"input '{inp.name}' has a fixed size {d} on axis {axis}, not {shape[axis]}")
        shapes[inp.name] = shape
    return shapes


def default_shapes(model: ir.Model, given: dict | None = None) -> dict[str, list[int]]:
    """The input shapes `spa bench` feeds at its default batch (fixed_shapes): also what MACs are
    counted at (spa.analysis.metrics)."""
    return fixed_shapes(_inputs(model), None, given)


def make_feeds(inputs: list[_Input], shapes: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Role-aware values (spa.runtime.examples.fill: ids inside the vocabulary, masks of ones, …)."""
    from spa.runtime.examples import fill

    return fill([i.spec for i in inputs], shapes, seed)


def _source_of(model, parse: bool = True):
    """(label, what ONNX Runtime loads, the onnx-ir model for its inputs — None for a file with
    `parse` False: a 650 MB decoder takes seconds to parse)."""
    from spa.graph import io
    from spa.graph.load import model_label

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if os.path.isdir(path):
            from spa.graph.load import model_file

            path = str(model_file(path))
        if not parse:
            return model_label(model), path, None
        loaded = io.load(path)  # refuses unreadable files and unsafe external data before ORT sees them
        return model_label(model), path, loaded
    loaded = io.load(model)
    return model_label(model), io.to_proto(loaded).SerializeToString(), loaded


def session_options(threads: int | None, opt_level: str):
    import onnxruntime as ort

    if opt_level not in OPT_LEVELS:
        raise UsageError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}, got '{opt_level}'")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1")
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    options = quiet_options()
    options.graph_optimization_level = levels[opt_level]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def providers_for(device: str) -> list[str]:
    """The execution providers for `device` (CUDA falls back to the CPU for the ops it lacks)."""
    return [PROVIDERS[device]] + (["CPUExecutionProvider"] if device == "cuda" else [])


def make_session(source, device: str, threads: int | None, opt_level: str, label: str):
    if device == "cuda":
        try:
            import torch  # noqa: F401  (loads the CUDA and cuDNN libraries the provider needs)
        except ImportError:
            pass
    return open_session(source, session_options(threads, opt_level), providers=providers_for(device), what=label,
                        error=InputError)


def runner(sess, feeds: dict, device: str):
    """A no-argument callable that runs `sess` once on `feeds`. On CUDA the inputs are copied to
    the GPU once and the outputs stay there (IO binding)."""
    import onnxruntime as ort

    from spa.runtime.examples import empty_cache

    feeds = {**feeds, **empty_cache(sess, feeds)}  # a decoder written with its KV cache
    if device == "cpu":
        return lambda: sess.run(None, feeds)
    binding = sess.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda")

    def run():
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return run


def stats(seconds: list[float], batch: int) -> dict:
    ms = 1000.0 * np.asarray(seconds)
    p50 = float(np.percentile(ms, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "throughput": batch * 1000.0 / p50 if p50 > 0 else None}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def bench(model, against=None, *, device: str = "cpu", batches: list[int] | None = None,
          threads: int | None = None, opt_level: str = "all", rounds: int = 50, warmup: int = 5,
          input_shapes: dict | None = None, seed: int = 0) -> dict:
    """Latency percentiles and throughput of `model` (and of `against`, its pruned copy, alternated
    with it in the same process) under ONNX Runtime; a JSON-ready dict (`spa bench --json`)."""
    import onnxruntime as ort

    require_device(device)
    session_options(threads, opt_level)  # option errors before any load
    if rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if warmup < 0:
        raise UsageError("--warmup must be at least 0")
    entries = [("dense", model)] + ([("pruned", against)] if against is not None else [])
    loaded = [(role, *_source_of(m)) for role, m in entries]
    inputs = _inputs(loaded[0][3])
    if against is not None:
        other = _inputs(loaded[1][3])
        if [(i.name, i.dtype, len(i.dims)) for i in inputs] != [(i.name, i.dtype, len(i.dims)) for i in other]:
            raise UsageError(f"--against: {loaded[1][1]} does not take the same inputs (names, dtypes, ranks) as "
                             f"{loaded[0][1]}; it is not a pruned copy of it")
    sessions, created = [], []
    for role, label, source, _ in loaded:
        start = time.perf_counter()
        sessions.append(make_session(source, device, threads, opt_level, label))
        created.append(time.perf_counter() - start)
    results = []
    for batch in batches or [None]:
        shapes = fixed_shapes(inputs, batch, input_shapes)
        feeds = make_feeds(inputs, shapes, seed)
        first = next(iter(shapes.values()), [])
        size = batch if batch is not None else first[0] if first else 1
        try:
            runners = [runner(s, feeds, device) for s in sessions]
            times = alternate(runners, rounds, warmup, f"batch {size}")
        except Exception as exc:
            raise InputError(f"ONNX Runtime failed to run at batch {size}: "
                             f"{str(exc).strip().splitlines()[0][:300]}") from None
        row = {"batch": size, "inputs": shapes,
               "models": {role: stats(t, size) for (role, *_), t in zip(loaded, times)}}
        if against is not None:
            dense, pruned = row["models"]["dense"], row["models"]["pruned"]
            row["speedup_p50"] = dense["p50_ms"] / pruned["p50_ms"] if pruned["p50_ms"] else None
            row["speedup_mean"] = dense["mean_ms"] / pruned["mean_ms"] if pruned["mean_ms"] else None
        results.append(row)
    return {
        "spa_bench": BENCH_FORMAT,
        "models": {role: {"model": label, "session_s": round(c, 3)}
                   for (role, label, _, _), c in zip(loaded, created)},
        "runtime": {"onnxruntime": ort.__version__, "device": device, "providers": sessions[0].get_providers(),
                    "threads": threads, "inter_op_threads": 1, "opt_level": opt_level, "execution": "sequential",
                    "io_binding": device == "cuda"},
        "machine": machine(),
        "rounds": rounds, "warmup": warmup, "alternated": against is not None, "seed": seed,
        "results": results,
    }

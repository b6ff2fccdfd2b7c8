"""A statistics pass in stages that fit a memory budget, layer by layer as GPTQ/SparseGPT measure:
the sinks are split, in graph order, into runs whose running sums fit MOMENTS_BUDGET; each stage is
a cut of the model that starts from the values the stages before it stored (a decoder's residual
stream, its masks) and computes only its own sinks' inputs and what later stages need. Every node
runs once per sample, ONNX Runtime holds one stage's weights at a time, and the moments of one stage
are in memory while they are summed. The finished H̃ go to a SpilledArrays: past the budget, to an
unlinked temporary file read back as memory maps (a 1B decoder's are 4.6 GB)."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from spa.core.errors import InputError

#: Bytes of running sums a stage may hold (float64: 8 an entry).
MOMENTS_BUDGET = 1 << 30
#: Bytes of finished moments a staged pass keeps in memory; the rest go to a temporary file.
HELD_BUDGET = 1 << 28
BYTES_PER_ENTRY = 8


def moment_bytes(columns: int) -> int:
    return BYTES_PER_ENTRY * (columns + 1) ** 2


def split_sinks(model: ir.Model, sinks: dict, budget: int = MOMENTS_BUDGET) -> list[list[str]]:
    """The sinks (name → SinkWeight) in graph order, in runs whose moments fit `budget` (a sink
    larger than the budget is a run of its own). One run where everything fits, or where the graph
    has bodies (If/Loop read outer values that a cut cannot see)."""
    order = {n.name: i for i, n in enumerate(model.graph)}
    names = sorted(sinks, key=lambda name: order[name])
    sizes = {name: moment_bytes(sinks[name].matrix().shape[1]) for name in names}
    if sum(sizes.values()) <= budget or _has_bodies(model):
        return [names] if names else []
    runs, current, held = [], [], 0
    for name in names:
        if current and held + sizes[name] > budget:
            runs.append(current)
            current, held = [], 0
        current.append(name)
        held += sizes[name]
    return runs + [current]


def _has_bodies(model: ir.Model) -> bool:
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
               for n in model.graph for a in n.attributes.values())


@dataclass
class Stage:
    sinks: list[str]
    targets: list[str]                                  # the values the sinks read
    nodes: list[ir.Node] = field(default_factory=list)  # what this stage runs
    stored_inputs: list[str] = field(default_factory=list)  # values earlier stages computed
    keep: list[str] = field(default_factory=list)       # values it computes that later stages read


def plan_stages(model: ir.Model, runs: list[list[str]]) -> list[Stage]:
    """Which nodes each run of sinks needs that no earlier stage ran, what it reads from earlier
    stages and what it must keep for later ones."""
    nodes = {n.name: n for n in model.graph}
    position = {id(n): i for i, n in enumerate(model.graph)}
    made_by: dict[str, int] = {}  # value name → the stage that computes it
    stages = []
    for index, run in enumerate(runs):
        stage = Stage(run, list(dict.fromkeys(nodes[name].inputs[0].name for name in run)))
        found, seen = [], set()
        pending = [nodes[name].inputs[0] for name in run]
        while pending:
            value = pending.pop()
            node = value.producer() if value is not None else None
            if node is None or id(node) in seen or value.name in made_by:
                continue
            seen.add(id(node))
            found.append(node)
            pending.extend(v for v in node.inputs if v is not None)
        stage.nodes = sorted(found, key=lambda n: position[id(n)])
        for node in stage.nodes:
            for out in node.outputs:
                made_by[out.name] = index
        stages.append(stage)
    for index, stage in enumerate(stages):
        read = {v.name for n in stage.nodes for v in n.inputs if v is not None} | set(stage.targets)
        stage.stored_inputs = sorted(name for name in read if made_by.get(name, index) < index)
        for earlier in sorted({made_by[name] for name in stage.stored_inputs}):
            stages[earlier].keep.extend(name for name in stage.stored_inputs
                                        if made_by[name] == earlier and name not in stages[earlier].keep)
    return stages


def cut(model: ir.Model, stage: Stage) -> ir.Model | None:
    """A copy of `model` that starts from the stage's stored inputs (graph inputs of their own) and
    whose outputs are what the stage computes of its targets and keeps; None when it computes
    nothing (its targets all come from earlier stages or the feeds)."""
    from spa.runtime.validate import copy_model

    made = {v.name for n in stage.nodes for v in n.outputs}
    outputs = [name for name in dict.fromkeys(stage.targets + stage.keep) if name in made]
    if not outputs:
        return None
    copy = copy_model(model)
    values = {v.name: v for n in copy.graph for v in n.outputs}
    copy.graph.outputs.clear()
    for name in stage.stored_inputs:
        old = values[name]
        fresh = ir.Value(name=name, shape=old.shape, type=old.type)
        old.name = f"{name}__spa_before_cut"
        ir.convenience.replace_all_uses_with(old, fresh)
        copy.graph.inputs.append(fresh)
    copy.graph.outputs.extend(values[name] for name in outputs)
    RemoveUnusedNodesPass()(copy)
    used = {v.name for n in copy.graph for v in n.inputs if v is not None} | set(outputs)
    for value in [v for v in copy.graph.inputs if v.name not in used and not v.is_initializer()]:
        copy.graph.inputs.remove(value)  # ONNX Runtime rejects feeds for inputs it does not have
    return copy


def staged_runs(model: ir.Model, runs: list[list[str]], feeds: list[dict]) -> Iterator[tuple[list[str], Iterator[dict]]]:
    """Per run of sinks: (its sink names, the values of every feed in turn: the feed itself, the
    stored values it starts from and what its stage computed). Each stage's iterator must be read
    to the end before the next stage's (it stores what later stages read)."""
    from spa.runtime.validate import session

    stored: dict[str, list] = {}
    stages = plan_stages(model, runs)
    for index, stage in enumerate(stages):
        part = cut(model, stage)
        sess = None if part is None else session(part)
        yield stage.sinks, _stage_values(sess, stage, feeds, stored)
        del sess, part
        later = {name for s in stages[index + 1:] for name in s.stored_inputs}
        for name in [n for n in stored if n not in later]:
            del stored[name]


def _stage_values(sess, stage: Stage, feeds: list[dict], stored: dict[str, list]) -> Iterator[dict]:
    inputs = [] if sess is None else [i.name for i in sess.get_inputs()]
    outputs = [] if sess is None else [o.name for o in sess.get_outputs()]
    for name in stage.keep:
        stored[name] = []
    for i, feed in enumerate(feeds):
        values = dict(feed)
        values.update({name: stored[name][i] for name in stage.stored_inputs})
        if sess is not None:
            try:
                computed = sess.run(outputs, {name: values[name] for name in inputs})
            except Exception as exc:  # ONNX Runtime rejects inputs of the wrong shape or type
                raise InputError("the calibration inputs do not fit the model: "
                                 f"{str(exc).strip().splitlines()[0][:200]}") from None
            values.update(zip(outputs, computed))
        for name in stage.keep:
            stored[name].append(values[name])
        yield values


class SpilledArrays(Mapping):
    """Arrays by name, held in memory up to `budget` bytes and past it written to an unlinked
    temporary file (nothing is left behind, however the process ends), each read back as a
    read-only memory map on access and unmapped once dropped."""

    def __init__(self, budget: float = HELD_BUDGET):
        self.budget, self.held = budget, 0
        self._memory: dict[str, np.ndarray] = {}
        self._spilled: dict[str, tuple[int, tuple, np.dtype]] = {}
        self._file = None

    def __setitem__(self, name: str, array: np.ndarray) -> None:
        if self.held + array.nbytes <= self.budget:
            self._memory[name] = array
            self.held += array.nbytes
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="spa-moments-")
        self._file.seek(0, 2)
        offset = self._file.tell()
        self._file.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        self._file.flush()
        self._spilled[name] = (offset, array.shape, array.dtype)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._memory:
            return self._memory[name]
        offset, shape, dtype = self._spilled[name]
        return np.memmap(self._file, dtype=dtype, mode="r", offset=offset, shape=shape)

    def __iter__(self):
        yield from self._memory
        yield from self._spilled

    def __len__(self) -> int:
        return len(self._memory) + len(self._spilled)

    @property
    def spilled_bytes(self) -> int:
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for _, shape, dtype in self._spilled.values())

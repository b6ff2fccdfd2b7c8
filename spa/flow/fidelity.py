"""How much a prune changed what the model computes: the pruned model next to the original on
the same inputs, under ONNX Runtime.

Inputs, per kind of model:
- a language model (spa.statistics.hessian.next_token_logits finds ids in, [batch, sequence,
  vocabulary] logits out): `samples` sequences of SEQUENCE tokens the dense model samples itself
  (hessian.generated_feeds); agreement is the share of positions (where the attention mask is 1)
  whose next-token argmax is the same;
- a classifier (one float output of rank 2, [batch, classes] with classes > 1) and any other
  model: `samples` example inputs (spa.runtime.examples, seeds seed … seed+samples-1, in the shapes
  the original ran on when it was loaded); a classifier's agreement is the share of rows whose
  top-1 class is the same.
The relative error is ‖pruned − dense‖ / ‖dense‖ (Frobenius) over every output of every sample;
it is inf when an output is not finite. A row or position with a non-finite logit disagrees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from spa.runtime import examples
from spa.runtime.validate import session, weight_bytes

#: Tokens per sampled sequence of a language model.
SEQUENCE = 32
#: Agreement below this (or a relative error above 1) means the pruned model no longer computes
#: what the original did.
COLLAPSED_AGREEMENT = 0.10

CLASSIFIER, LANGUAGE_MODEL, OUTPUTS = "classifier", "language model", "outputs"


@dataclass
class Fidelity:
    relative_error: float          # ||pruned - dense|| / ||dense|| over all outputs (Frobenius, all samples)
    agreement: float | None        # top-1 (classifier) or next-token (language model) agreement; else None
    kind: str                      # "classifier", "language model" or "outputs"
    samples: int                   # independent inputs (images / sequences) it was measured on
    inputs: str                    # what they were, in words

    def collapsed(self) -> bool:
        return (self.agreement is not None and self.agreement < COLLAPSED_AGREEMENT) or not self.relative_error <= 1

    def score(self) -> float:
        """What --min-fidelity compares: the agreement, else 1 − relative error (at least 0)."""
        if self.agreement is not None:
            return self.agreement
        return max(0.0, 1.0 - self.relative_error) if math.isfinite(self.relative_error) else 0.0

    def as_dict(self) -> dict:
        return {"relative_error": self.relative_error, "agreement": self.agreement, "kind": self.kind,
                "samples": self.samples, "inputs": self.inputs, "score": self.score(),
                "collapsed": self.collapsed(), "summary": self.describe()}

    def describe(self) -> str:
        """One line: "top-1 agreement 87.5% and relative output error 0.21 on 8 example inputs"."""
        error = f"relative output error {self.relative_error:.2g}"
        if self.agreement is not None:
            which = "next-token" if self.kind == LANGUAGE_MODEL else "top-1"
            error = f"{which} agreement {self.agreement:.1%} and {error}"
        unit = f"sequence{'s' * (self.samples != 1)} of " if self.kind == LANGUAGE_MODEL else ""
        return f"{error} on {self.samples} {unit}{self.inputs}"


#: Weights past this many bytes: the fidelity check's sessions run lean (spa.runtime.validate.session).
LEAN_WEIGHT_BYTES = 1 << 30


def measure_fidelity(original: ir.Model, pruned: ir.Model, *, samples: int = 8, seed: int = 0,
                     feeds: list[dict] | None = None, inputs: str | None = None) -> Fidelity:
    """Run `original` (dense) and `pruned` (same inputs and outputs) on the same inputs and compare
    (see the module doc). `feeds`: the inputs to use instead of made-up ones (one dict of arrays per
    run), described by `inputs`; `samples` and `seed` then play no part."""
    lm = _language_model(original)
    # a model past ONNX Runtime's in-memory size runs lean (no fp32 copies of fp16 weights), and
    # the two models one after the other: a 1B decoder's two sessions held 6.8 GB together
    lean = weight_bytes(original) >= LEAN_WEIGHT_BYTES
    names = [v.name for v in original.graph.outputs]
    text = dense = None
    if feeds is not None:
        feeds, inputs = list(feeds), inputs or ("given token ids" if lm is not None else "given inputs")
    elif lm is not None:
        sampled = _sampled_text(original, samples, seed)
        if sampled is not None:
            (feeds, text), inputs = sampled, "the model's own sampled text"
        else:  # the model cannot be sampled from as it is (a cache input): example inputs
            dense = session(original, lean=lean)
            feeds, inputs = _example_feeds(original, dense, samples, seed), "example inputs"
    else:
        dense = session(original, lean=lean)
        feeds, inputs = _example_feeds(original, dense, samples, seed), "example inputs"
    expected = _written_logits(text, feeds, names)
    if expected is None:
        dense = dense or session(original, lean=lean)
        expected = [dense.run(names, feed) for feed in feeds]
    del dense, text
    small = session(pruned, lean=lean)
    runs = ((feed, outputs, small.run(names, feed)) for feed, outputs in zip(feeds, expected))
    return compare_runs(original, names, runs, inputs)


def compare_runs(original: ir.Model, names: list[str], runs, inputs: str) -> Fidelity:
    """The Fidelity of (feed, dense outputs, pruned outputs) triples — outputs as arrays in the
    order of `names`, the original's outputs — however they were computed (ONNX Runtime here,
    the fine-tuning loop's torch copy there)."""
    lm = _language_model(original)
    error = _Error()
    agree = total = rows_seen = 0
    classifier = None
    for feed, outs_d, outs_p in runs:
        for d, p in zip(outs_d, outs_p):
            error.add(d, p)
        if lm is not None:
            ids_name, logits_name, _ = lm
            i = names.index(logits_name)
            a, n = _agreeing(outs_d[i], outs_p[i], _mask(original, feed, outs_d[i].shape[:2]))
            rows_seen += int(np.shape(feed[ids_name])[0]) if np.ndim(feed[ids_name]) else 1
        else:
            if classifier is None:
                classifier = _is_classifier(outs_d)
            if classifier:
                a, n = _agreeing(outs_d[0], outs_p[0], None)
                rows_seen += n
            else:
                a, n = 0, 0
                rows_seen += 1
        agree, total = agree + a, total + n
    kind = LANGUAGE_MODEL if lm is not None else CLASSIFIER if classifier else OUTPUTS
    agreement = agree / total if kind != OUTPUTS and total else None
    return Fidelity(error.value(), agreement, kind, rows_seen, inputs)


def _language_model(model: ir.Model) -> tuple[str, str, int] | None:
    from spa.statistics.hessian import next_token_logits

    try:
        return next_token_logits(model)
    except Exception:  # noqa: BLE001 - an odd graph is simply not a language model here
        return None


def _sampled_text(model: ir.Model, samples: int, seed: int):
    """(feeds, the OwnText that wrote them), or None where the model cannot be sampled from."""
    from spa.statistics.generation import OwnText
    from spa.statistics.hessian import can_generate, next_token_logits

    if not can_generate(model, next_token_logits(model)[0]):  # fixed dims: example inputs instead
        return None
    text = OwnText(model, seed)
    try:
        return list(text.feeds(samples, SEQUENCE)), text
    except Exception:  # noqa: BLE001 - ONNX Runtime refuses the made-up extra inputs
        return None


def _written_logits(text, feeds: list[dict], names: list[str]) -> list[list[np.ndarray]] | None:
    """The dense outputs of the written sequences from the session that wrote them (one session of
    the model less), when logits are the model's only output; else None."""
    if text is None or names != [text.logits_name]:
        return None
    logits = [text.logits(feed) for feed in feeds]
    return None if any(x is None for x in logits) else [[x] for x in logits]


def _example_feeds(model: ir.Model, dense, samples: int, seed: int) -> list[dict]:
    """`samples` example inputs (seeds seed … seed+samples-1) in the shapes the original ran on
    when it was loaded (examples.CHOICE), else the first candidate shapes the dense model runs on."""
    specs = examples.input_specs(model)
    if examples.CHOICE in model.meta:
        shapes = examples.shapes(model)
    else:
        shapes = examples.choose(model, lambda f: dense.run(None, f), seed=seed)[0].shapes
    return [examples.fill(specs, shapes, seed + i) for i in range(samples)]


def _is_classifier(outputs: list[np.ndarray]) -> bool:
    return len(outputs) == 1 and np.issubdtype(outputs[0].dtype, np.floating) \
        and outputs[0].ndim == 2 and outputs[0].shape[1] > 1


def _mask(model: ir.Model, feed: dict, shape) -> np.ndarray | None:
    """The attention mask of a [batch, sequence] feed: positions that count (None: all)."""
    for v in model.graph.inputs:
        if v.name in feed and v.name not in model.graph.initializers and examples.spec_of(v).role == "mask":
            mask = np.asarray(feed[v.name])
            if mask.shape == tuple(shape):
                return mask != 0
    return None


def _agreeing(dense: np.ndarray, pruned: np.ndarray, mask: np.ndarray | None) -> tuple[int, int]:
    """(rows whose argmax over the last axis agrees, rows counted); a row with a non-finite value
    disagrees."""
    if dense.shape != pruned.shape:
        return 0, int(np.prod(dense.shape[:-1]))
    same = (np.argmax(dense, -1) == np.argmax(pruned, -1)) \
        & np.isfinite(dense).all(-1) & np.isfinite(pruned).all(-1)
    if mask is not None:
        return int(same[mask].sum()), int(mask.sum())
    return int(same.sum()), int(same.size)


class _Error:
    """Sums of squares of the difference and of the dense outputs, in float64."""

    def __init__(self):
        self.diff = self.norm = 0.0
        self.finite = True
        self.compared = False

    def add(self, dense: np.ndarray, pruned: np.ndarray) -> None:
        if dense.dtype.kind not in "biuf" or pruned.dtype.kind not in "biuf":
            return  # strings and the like: nothing to measure
        if dense.shape != pruned.shape:  # a value-dependent axis (a detector's box count) changed
            return
        d, p = dense.astype(np.float64), pruned.astype(np.float64)
        self.compared = True
        if not (np.isfinite(d).all() and np.isfinite(p).all()):
            self.finite = False
            return
        self.diff += float(np.sum((p - d) ** 2))
        self.norm += float(np.sum(d ** 2))

    def value(self) -> float:
        if not self.finite or not self.compared:
            return math.inf
        if self.norm == 0:
            return 0.0 if self.diff == 0 else math.inf
        return math.sqrt(self.diff / self.norm)

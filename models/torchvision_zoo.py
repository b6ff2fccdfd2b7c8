"""Randomly initialised torchvision classifiers and their ONNX exports.

Nothing here downloads anything: every model is built with ``weights=None``.

Random initialisation leaves BatchNorm as an identity (mean 0, var 1, gamma 1,
beta 0), ViT's head at zero and ConvNeXt's layer scale at 1e-6, which makes a
pruning oracle weak (folded BN would be a no-op, whole residual branches ~0),
and deep nets without BN vanish or explode. :func:`build` therefore runs
:func:`_calibrate`: random norm affine parameters and layer scales, then one
eval-mode pass over a random batch that sets every BatchNorm's running stats
from its real input statistics (then perturbs them) and rescales every
Conv/Linear to unit output std (LSUV style), and finally scales the classifier
so logits have std ~3. Everything is deterministic (seed 0).

Public API: :func:`classification_names`, :func:`build`, :func:`input_shape`,
:func:`example_input`, :func:`export`, :func:`cached_export`,
:func:`default_cache_dir`, :data:`SUBSET`, :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

__all__ = [
    "SUBSET",
    "ExportError",
    "build",
    "cached_export",
    "classification_names",
    "default_cache_dir",
    "example_input",
    "export",
    "input_shape",
]

#: Bump when :func:`build` changes in a way that changes the weights; it is part
#: of the cache key of :func:`cached_export`.
INIT_VERSION = 1

#: A small representative subset for fast tests, one model per structural
#: pattern. Export time on 2 CPU cores: ~3.5 s in total with the TorchScript
#: exporter, ~19 s with dynamo (plus ~5 s of model building).
SUBSET: list[str] = [
    "resnet18",            # residual Add
    "squeezenet1_1",       # Fire modules: Concat of two convs, conv classifier
    "googlenet",           # inception branches: 4-way Concat, MaxPool branch
    "regnet_x_400mf",      # grouped convolutions (group width 16) + residual
    "mobilenet_v2",        # depthwise convolutions, inverted residuals
    "shufflenet_v2_x0_5",  # channel split / shuffle (Reshape-Transpose-Reshape)
    "alexnet",             # Flatten -> Linear (6x6 spatial x channels)
    "mobilenet_v3_small",  # squeeze-excite (Mul by broadcast gate), hardswish
]

#: Families whose graph needs the full 224x224 input.
#: * vit_*: the position embedding is fixed to 224/patch.
#: * maxvit_t: window/grid partitions need 224 (divisible by 7*32).
#: * alexnet / vgg*: the classifier is an AdaptiveAvgPool to 6x6 / 7x7 before
#:   Flatten->Linear; 224 gives exactly that feature size (pooling is an
#:   identity), whereas smaller inputs make the pool *upsample* (not exportable
#:   by the TorchScript exporter, odd graphs with dynamo).
#: * swin*: run at 64x64 too, but the windows then cover the whole feature map
#:   and shifted-window masks vanish; 224 keeps the real structure.
_FULL_SIZE_PREFIXES = ("vit_", "swin_", "maxvit_", "alexnet", "vgg")

#: Everything else runs (and exports) at this size; checked for every model in
#: :func:`classification_names` (inception_v3's minimum is 75).
_SMALL_SIZE = 64


def classification_names() -> list[str]:
    """Every torchvision classification architecture (sorted).

    Detection / segmentation / video / quantization / optical-flow models live
    in submodules and are excluded.
    """
    return sorted(torchvision.models.list_models(module=torchvision.models))


def input_shape(name: str) -> tuple[int, int, int, int]:
    """The smallest sensible NCHW input (batch 1) for fast tests of ``name``."""
    if name.startswith(_FULL_SIZE_PREFIXES):
        size = 224
    elif name == "inception_v3":
        size = 96  # minimum is 75 (three stride-2 stages without padding)
    else:
        size = _SMALL_SIZE
    return (1, 3, size, size)


def _constructor_kwargs(name: str) -> dict:
    # Auxiliary heads are unused in eval mode; leaving them out keeps the
    # state dict equal to the exported graph. init_weights=True silences the
    # "default weight init will change" warning.
    if name in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: Target standard deviation of the logits after calibration.
_LOGIT_STD = 3.0

#: Calibration batch for small (<= 96 px) inputs; 4 images at 224.
_CALIB_BATCH = 32


@torch.no_grad()
def _calibrate(model: nn.Module, shape: tuple[int, ...], gen: torch.Generator) -> None:
    """Make a randomly initialised model non-trivial and well scaled.

    1. Norm affine parameters ~ U(0.5, 1.5) / N(0, 0.1); layer-scale ~ U(0.1, 0.3);
       all-zero weight tensors (e.g. ViT's head) get a random init.
    2. One eval-mode forward pass over a random batch, in execution order:
       * each BatchNorm's running stats are set from its actual input statistics,
         then perturbed (mean + 0.1*std*N(0,1), var * U(0.5, 1.5)), so eval-mode
         BN is not an identity yet keeps activations O(1) at any depth;
       * each Conv/Linear weight is rescaled so its output (minus bias) has unit
         std (data-dependent init, LSUV style), so nets without BN neither vanish
         nor explode.
    3. The last executed Conv/Linear (the classifier) is scaled so the logits
       have std ~ ``_LOGIT_STD``, a trained-model-like softmax temperature.
    """
    for m in model.modules():
        if isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    for pname, p in model.named_parameters():
        if pname.endswith("layer_scale"):  # ConvNeXt CNBlock (init 1e-6)
            p.copy_(0.1 + 0.2 * torch.rand(p.shape, generator=gen))
        elif p.dim() >= 2 and not p.any():  # zero-initialised heads
            p.copy_(torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5)

    done: set[int] = set()
    order: list[nn.Module] = []

    def bn_pre(m, args):
        if id(m) in done or not m.track_running_stats:
            return
        done.add(id(m))
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        c = mean.numel()
        m.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(c, generator=gen))
        # floor: a channel (almost) dead on the calibration batch must not
        # amplify other inputs by orders of magnitude
        var = var.clamp_min(max(1e-4, 0.05 * float(var.mean())))
        m.running_var.copy_(var * (0.5 + torch.rand(c, generator=gen)))

    def lin_post(m, args, out):
        if id(m) in done:
            return None
        done.add(id(m))
        order.append(m)
        if m.bias is not None:
            shape_b = [1] * out.dim()
            shape_b[1 if not isinstance(m, nn.Linear) else -1] = -1
            b = m.bias.view(shape_b)
        else:
            b = 0
        std = float((out - b).std())
        if not (std > 1e-12) or std != std:
            return None
        s = 1.0 / std
        m.weight.mul_(s)
        return (out - b) * s + b

    hooks = []
    for m in model.modules():
        if isinstance(m, _BNS):
            hooks.append(m.register_forward_pre_hook(bn_pre))
        elif isinstance(m, _LINEAR):
            hooks.append(m.register_forward_hook(lin_post))
    model.eval()
    n = _CALIB_BATCH if shape[-1] <= 96 else 4
    x = torch.randn((n,) + tuple(shape[1:]), generator=gen)
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    # logit scale measured on a fresh batch (the calibration batch is fitted exactly)
    out = model(torch.randn((min(n, 8),) + tuple(shape[1:]), generator=gen))
    if order and isinstance(out, torch.Tensor):
        std = float(out.std())
        if std > 1e-12:
            last = order[-1]
            k = _LOGIT_STD / std
            last.weight.mul_(k)
            if last.bias is not None:
                last.bias.mul_(k)


def build(name: str) -> nn.Module:
    """``name`` with deterministic random weights (seed 0), in eval mode.

    Normalisation layers are calibrated and perturbed, weights rescaled (see the
    module docstring); logits have std ~3 on N(0,1) inputs. googlenet and
    inception_v3 are built without their (eval-unused) auxiliary heads.
    Parameters keep ``requires_grad=True`` (freezing them would switch
    nn.MultiheadAttention to its non-exportable fast path); use ``torch.no_grad()``.
    """
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown torchvision classification model {name!r}")
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, weights=None, **_constructor_kwargs(name))
    gen = torch.Generator().manual_seed(0)
    _calibrate(model, input_shape(name), gen)
    model.eval()
    return model


def example_input(name: str, seed: int = 0) -> torch.Tensor:
    """A deterministic N(0,1) input of :func:`input_shape` ``(name)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape(name), generator=gen)


class ExportError(RuntimeError):
    """Raised when a model cannot be exported to ONNX."""


_TWO_GIB = 2**31 - 1


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' warnings, logging and progress prints."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                                "torch.fx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


@contextlib.contextmanager
def _no_mha_fastpath():
    """nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention,
    taken e.g. when no parameter requires grad) is not exportable by the
    TorchScript exporter (vit_*); force the decomposed path while exporting."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    old = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(old)


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def export(name: str, path: str | os.PathLike, exporter: str = "dynamo", opset: int = 18,
           model: nn.Module | None = None) -> Path:
    """Export :func:`build` ``(name)`` to ONNX at ``path`` and return the path.

    ``exporter`` is ``"dynamo"`` (``torch.onnx.export(..., dynamo=True)``, which
    also runs the onnxscript optimizer) or ``"torchscript"`` (the legacy
    exporter, ``dynamo=False``, with constant folding). Input is named
    ``"input"``, output ``"logits"``; all shapes are static
    (:func:`input_shape`). Weights are stored inside the single .onnx file
    unless the model exceeds the 2 GiB protobuf limit (then a
    ``<path>.data`` / exporter-chosen side file is written next to it).
    Raises :class:`ExportError` with the exporter's message on failure.
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', not {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = build(name)
    x = example_input(name)
    big = _model_bytes(model) > _TWO_GIB - (64 << 20)
    common = dict(input_names=["input"], output_names=["logits"], opset_version=opset,
                  verbose=False)
    try:
        with _quiet(), _no_mha_fastpath():
            if exporter == "dynamo":
                torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=big,
                                  optimize=True, report=False, **common)
            else:
                torch.onnx.export(model, (x,), str(path), dynamo=False,
                                  do_constant_folding=True, **common)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # drop ANSI colours
        first = msg.splitlines()[0] if msg else type(exc).__name__
        raise ExportError(f"{exporter} export of {name} failed: {type(exc).__name__}: {first}") from exc
    if not path.is_file():
        raise ExportError(f"{exporter} export of {name} wrote no file at {path}")
    return path


def default_cache_dir() -> Path:
    """``<repo>/build/zoo`` (git-ignored)."""
    return Path(__file__).resolve().parents[1] / "build" / "zoo"


def _cache_name(name: str, exporter: str, opset: int) -> str:
    def clean(v: str) -> str:
        return re.sub(r"[^0-9A-Za-z.]+", "_", v)

    return (f"{name}.{exporter}.opset{opset}.torch{clean(torch.__version__)}"
            f".tv{clean(torchvision.__version__)}.init{INIT_VERSION}.onnx")


def cached_export(name: str, exporter: str = "dynamo", cache_dir: str | os.PathLike | None = None,
                  opset: int = 18) -> Path:
    """Like :func:`export`, but done once per name/exporter/opset/torch+torchvision version.

    The file is written into a private temporary folder inside ``cache_dir``
    (spa.core.output.temp_dir: removed on exit, swept after a kill) and moved
    into place with :func:`os.replace`, so concurrent callers never see a
    partial file (external-data side files, if any, are moved first).
    """
    from spa.core.output import temp_dir

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / _cache_name(name, exporter, opset)
    if final.is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with temp_dir(cache_dir) as tmpdir:
        tmp = export(name, tmpdir / final.name, exporter=exporter, opset=opset)
        # side files (external data) first, the .onnx last: its presence marks completion
        for f in tmpdir.iterdir():
            if f != tmp:
                os.replace(f, cache_dir / f.name)
        os.replace(tmp, final)
    return final

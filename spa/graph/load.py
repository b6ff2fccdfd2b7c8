"""Which file to load: the ONNX model inside an exported Hugging Face folder."""
from __future__ import annotations

import os
from pathlib import Path

from spa.core.errors import InputError


def model_file(folder: str | os.PathLike) -> Path:
    """The ONNX model of an exported folder (model.onnx, as optimum and `spa export hf` write it)."""
    folder = Path(folder)
    candidates = [folder / "model.onnx"] if (folder / "model.onnx").is_file() else sorted(folder.glob("*.onnx"))
    if len(candidates) != 1:
        raise InputError(f"{folder}: expected one .onnx model in the folder, found "
                         f"{len(candidates) or 'none'}" + (" (a KV-cache export has several; export "
                                                           "text-generation without past)" if candidates else ""))
    return candidates[0]

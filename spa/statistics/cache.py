"""Sink statistics kept between runs (`--statistics-cache DIR`, opt-in: nothing is written outside
-o unless asked). A second prune of the same model — another ratio, criterion or target — reads the
moments instead of writing text and probing again. The key is a hash of the model's files and of
everything the moments depend on (source, samples, seed, calibration file, input shapes, the own
text's length); one .npz per key, written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from spa.core.errors import OutputError

_CHUNK = 1 << 23


def cache_key(files: list[str], **settings) -> str:
    """sha256 over the model files' bytes (in name order) and the settings as JSON."""
    digest = hashlib.sha256()
    for name in sorted(files):
        with open(name, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def check_folder(folder: str | os.PathLike) -> Path:
    """The cache folder: an existing folder, or one to make in an existing folder (OutputError)."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(f"{folder}: --statistics-cache must be a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise OutputError(f"{folder}: the folder for --statistics-cache is not in an existing folder")
    return folder


def load(folder: Path, key: str, names: list[str]) -> dict[str, np.ndarray] | None:
    """The moments of `names` stored under `key`, or None (absent, unreadable or missing a sink)."""
    path = folder / f"{key}.npz"
    if not path.is_file() or path.is_symlink():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if not set(names) <= set(stored.files):
                return None
            return {name: stored[name] for name in names}
    except (OSError, ValueError, KeyError):  # a damaged entry is measured again and replaced
        return None


def store(folder: Path, key: str, hs: dict[str, np.ndarray]) -> None:
    """Write the moments under `key`: a temporary file in the folder, renamed into place (and the
    temporaries of runs killed while writing here are swept first)."""
    from spa.core.output import deferred_signals, new_temp_file, sweep_stale

    folder.mkdir(exist_ok=True)
    sweep_stale(folder)
    temp = new_temp_file(folder, ".npz")
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, **hs)
        with deferred_signals():
            os.replace(temp, folder / f"{key}.npz")
    except OSError as exc:
        raise OutputError(f"{folder}: could not write the statistics cache ({exc.strerror or exc})") from None
    finally:
        if temp.exists():
            temp.unlink()

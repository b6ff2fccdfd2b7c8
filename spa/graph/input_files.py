"""Bounded, typed reads of the files a user names (models, plans, calibration data, side files):
refused before anything opens them when missing, not regular files or too big.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from spa.core.errors import InputError


def check_input_file(path, what: str, *, limit: int | None = None, error=InputError,
                     folder_ok: bool = False) -> os.stat_result:
    """Refuse, before anything opens it, an input that is missing, not a regular file (a FIFO
    would block the read forever, /dev/zero never ends) or bigger than `limit` bytes."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file (the {what})") from None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: {what} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(info.st_mode) and folder_ok:
        return info
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise error(f"{path}: the {what} is {kind}")
    if limit is not None and info.st_size > limit:
        raise error(f"{path}: the {what} is {info.st_size} bytes, more than the {limit >> 20} MiB SPA reads")
    return info


# Calibration arrays SPA reads at most (all files together): statistics need far less.
CALIB_MAX_BYTES = 16 << 30


def check_calibration(path) -> None:
    """--calib: a regular .npz/.npy file, or a folder whose .npz/.npy entries are regular files,
    CALIB_MAX_BYTES at most in all; refused (InputError) before anything is opened."""
    info = check_input_file(path, "calibration", folder_ok=True)
    if not stat.S_ISDIR(info.st_mode):
        files = [Path(path)]
    else:
        files = [p for p in Path(path).iterdir() if p.suffix in (".npz", ".npy")]
    total = sum(check_input_file(f, "calibration").st_size for f in files)
    if total > CALIB_MAX_BYTES:
        raise InputError(f"{path}: {total} bytes of calibration data, more than the "
                         f"{CALIB_MAX_BYTES >> 30} GiB SPA reads")


def read_bounded(path, limit: int, what: str, *, error=InputError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking and checked
    again on the open descriptor, so a file swapped for a FIFO after the check cannot hang us."""
    check_input_file(path, what, limit=limit, error=error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{path}: {what} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: the {what} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: the {what} is more than the {limit >> 20} MiB SPA reads")
    return data

"""Where SPA may write, and how: one policy for every output path and one atomic writer.

Every command that writes (a pruned model and its data, --plan-out, reports, DOT/PNG, Hugging Face
folders) checks its targets with `check_target` before any work and writes through `write_files`
(or, for the model's two-file commit, `temp_dir` + `sweep_stale`), so:
- no input is ever a target: inputs are compared by inode (st_dev, st_ino), which also catches
  hard links and symlinks to them;
- only regular files are replaced: `-o /dev/null` or a FIFO is refused, not swapped for a file;
- a file appears whole or not at all: bytes go to a temporary name in the target's folder, then
  os.replace; temporaries are removed on any failure, on SIGINT/SIGTERM (see `signals_raise`), and
  those left by a killed run are swept by the next run writing into that folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Union

from spa.core.errors import OutputError

# .spa-<pid>-<12 hex>[suffix]: the owner's pid tells a later run whether the owner is still alive
TEMP_PREFIX = ".spa-"
_TEMP_NAME = re.compile(r"^\.spa-(\d+)-[0-9a-f]{12}(\.[A-Za-z0-9.]+)?$")
# a temporary whose owner pid is alive is still swept past this age (the pid may have been reused)
STALE_AFTER_S = 6 * 3600

Content = Union[bytes, str, Callable[[Path], None]]


# ---------------------------------------------------------------- the policy


def file_ids(paths: Iterable) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) -> the path, for every path that exists (symlinks followed)."""
    ids = {}
    for p in paths:
        if p is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(p)
            ids[(info.st_dev, info.st_ino)] = str(p)
    return ids


def check_target(path: str | os.PathLike, *, inputs: Iterable = (), what: str = "-o") -> Path:
    """Refuse a target that is an input (by inode), a folder, not a regular file (device, FIFO,
    socket), or lies in a folder that is missing or read-only. Raises OutputError; returns the path."""
    path = Path(path)
    text = os.fspath(path)
    if "\0" in text:
        raise OutputError(f"{what}: the path contains a NUL byte")
    if path.name in ("", ".", ".."):
        raise OutputError(f"{path}: give a file name for {what}")
    folder = path.parent
    try:
        if not stat.S_ISDIR(os.stat(folder).st_mode):
            raise OutputError(f"{folder}: is not a folder; {what} needs an existing folder")
    except FileNotFoundError:
        raise OutputError(f"{folder}: output folder does not exist") from None
    except OSError as exc:
        raise OutputError(f"{folder}: output folder cannot be used ({exc.strerror})") from None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:  # a name too long, a loop of symlinks, …
        raise OutputError(f"{path}: cannot be written ({exc.strerror})") from None
    if info is not None:
        source = file_ids(inputs).get((info.st_dev, info.st_ino))
        if source is not None:
            raise OutputError(f"{path}: {what} would overwrite an input ('{source}'); choose another path")
        if stat.S_ISDIR(info.st_mode):
            raise OutputError(f"{path}: is a folder; give a file name for {what}")
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"{path}: is not a regular file (a device, FIFO or socket); {what} only "
                              "replaces regular files")
    if not _writable(folder):
        raise OutputError(f"{folder}: output folder is read-only")
    return path


def check_distinct(targets: Iterable) -> None:
    """Refuse two outputs of one command that name the same file."""
    seen = {}
    for target, what in targets:
        key = os.path.realpath(target)
        if key in seen:
            raise OutputError(f"{target}: {what} would overwrite {seen[key]}; choose another path")
        seen[key] = what


def _writable(folder: Path) -> bool:
    # root passes os.access everywhere; a folder without any write bit is read-only by intent
    return os.access(folder, os.W_OK) and bool(os.stat(folder).st_mode & 0o222)


# ---------------------------------------------------------------- temporaries


def temp_name(suffix: str = "") -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}{suffix}"


def new_temp_file(folder: Path, suffix: str = "") -> Path:
    """An empty file with a fresh temporary name in `folder`, created exclusively. Mode 0666
    minus the umask, like any file the user creates (mkstemp's 0600 would stick to the output)."""
    for _ in range(100):
        path = folder / temp_name(suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise OutputError(f"{folder}: could not create a temporary file")


@contextlib.contextmanager
def temp_dir(folder: Path):
    """A fresh temporary folder inside `folder`, removed with everything in it on exit."""
    sweep_stale(folder)
    path = folder / temp_name()
    made = False
    try:
        with deferred_signals():  # made and known to the clean-up below, or not made
            try:
                path.mkdir()
            except OSError as exc:
                raise OutputError(f"{folder}: could not write there ({exc.strerror or exc})") from None
            made = True
        yield path
    finally:
        if made:
            with deferred_signals():
                shutil.rmtree(path, ignore_errors=True)


def commit_folder(staging: Path, target: Path) -> None:
    """Move a folder assembled under a temporary name into place (replacing an empty `target`
    folder, which check_target-style policies allow); a signal cannot cut the two steps apart."""
    with deferred_signals():
        if target.exists():
            target.rmdir()
        os.replace(staging, target)


@contextlib.contextmanager
def private_tempdir():
    """For one command: a fresh `.spa-<pid>-<hex>` folder in the system's temporary folder
    ($TMPDIR) that every `tempfile` user of this process (validation's model copies, ONNX Runtime's
    symbolic shape inference, profiling) writes into, removed with everything in it on exit. A run
    killed by SIGKILL leaves it behind under its own pid: the next command sweeps it (with
    `sweep_stale`), as it sweeps an output folder's. Yields the folder (None when $TMPDIR cannot
    take one: tempfile's default then applies)."""
    base = Path(tempfile.gettempdir())
    sweep_stale(base)
    path = base / temp_name()
    previous = tempfile.tempdir, os.environ.get("TMPDIR")
    made = False
    try:
        with deferred_signals():
            try:
                path.mkdir(mode=0o700)
                made = True
            except OSError:
                pass
            if made:  # $TMPDIR too: native code reads it (ONNX Runtime's telemetry keeps a `.ses` file there)
                tempfile.tempdir = os.environ["TMPDIR"] = str(path)
        yield path if made else None
    finally:
        if made:
            with deferred_signals():
                tempfile.tempdir = previous[0]
                if previous[1] is None:
                    os.environ.pop("TMPDIR", None)
                else:
                    os.environ["TMPDIR"] = previous[1]
                shutil.rmtree(path, ignore_errors=True)


def sweep_stale(folder: Path) -> list[str]:
    """Remove SPA temporaries in `folder` left by runs that were killed: only names of SPA's own
    pattern, only when their owner process is gone (or they are very old). Returns the names."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if _alive(int(match.group(1))) and age < STALE_AFTER_S:
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process: assume it is still writing
    return True


# ---------------------------------------------------------------- the writer


def write_files(files: dict, *, inputs: Iterable = (), what: str = "the output") -> list[Path]:
    """Write every target atomically: each to a temporary file beside it, then all renamed into
    place in order (the last one last: a report appears only once its images exist). A value is
    bytes, text, or a function that writes the file at the path it is given. Targets are checked
    with `check_target` first. Raises OutputError; on any failure no temporary is left."""
    targets = [Path(t) for t in files]
    inputs = list(inputs)
    for target in targets:
        check_target(target, inputs=inputs, what=what)
    check_distinct((t, what) for t in targets)
    temps: list[tuple[Path, Path]] = []
    try:
        for target, content in zip(targets, files.values()):
            sweep_stale(target.parent)
            with deferred_signals():  # a temporary exists only once the clean-up knows it
                temps.append((new_temp_file(target.parent, target.suffix), target))
            tmp = temps[-1][0]
            if callable(content):
                content(tmp)
            else:
                with open(tmp, "wb") as handle:
                    handle.write(content.encode() if isinstance(content, str) else content)
        with deferred_signals():  # all renamed into place, or (on an error) what was renamed stays
            for tmp, target in temps:
                os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"{temps[-1][1] if temps else targets[0]}: could not write {what} "
                          f"({exc.strerror or exc})") from None
    finally:
        with deferred_signals():
            for tmp, _ in temps:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    return targets


def write_text(path: str | os.PathLike, text: str, *, inputs: Iterable = (), what: str = "the output") -> Path:
    return write_files({Path(path): text}, inputs=inputs, what=what)[0]


# ---------------------------------------------------------------- signals


class Terminated(SystemExit):
    """SIGTERM as an exception: `finally` blocks run (temporaries are removed) on the way out."""


EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


_FIRED: list[int] = []  # the signal signals_raise turned into an exception, if any


def signal_received() -> int | None:
    """The exit code of the signal that interrupted this run (130, 143), or None. An exception
    raised inside a C extension's import comes back as ImportError: the code still tells."""
    return (128 + _FIRED[0]) if _FIRED else None


_DEFERRING = [0]  # depth of deferred_signals blocks
_PENDING: list[int] = []  # a signal that arrived inside one


def _raise_for(signum: int):
    _FIRED.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(EXIT_SIGTERM)


@contextlib.contextmanager
def deferred_signals():
    """A block SIGINT/SIGTERM do not cut in two (renames that commit an output, removing
    temporaries): a signal that arrives inside is raised when the block ends. Only while
    `signals_raise` is active; elsewhere signals keep their usual effect."""
    _DEFERRING[0] += 1
    try:
        yield
    finally:
        _DEFERRING[0] -= 1
        if not _DEFERRING[0] and _PENDING and not _FIRED:
            _raise_for(_PENDING.pop())


@contextlib.contextmanager
def signals_raise():
    """While active, SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated — once: a second
    signal during the clean-up is ignored, so the clean-up finishes. Handlers are restored on exit
    (the CLI also runs in-process, in tests). Outside the main thread this does nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = _FIRED
    fired.clear()
    _PENDING.clear()

    def handler(signum, frame):
        if fired or _PENDING:
            return
        if _DEFERRING[0]:  # inside a commit or a clean-up: raised when it is done
            _PENDING.append(signum)
            return
        _raise_for(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

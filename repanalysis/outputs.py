"""Result files written as one set: all of them replace the previous run's files, or none does.

An analysis writes a JSON (or CSV) and several figures into one folder. Each file is first written to a
temporary file beside its target; inside :func:`output_set` the renames into place are held back until the
whole block has succeeded, so a failure part-way (a full disk, a figure that cannot be drawn, Ctrl-C) leaves
the previous run's files as they were and no temporary file behind. Outside a set, a file is renamed into
place as soon as it is complete (still atomic per file).

Example::

    >>> with output_set() as outputs:
    ...     write_json_atomic(out / "calibration.json", payload)
    ...     written = save_calibration_figures(out, ...)
    ...     outputs.discard(out / "nci_scatter.png")      # an earlier run's figure that this run does not make
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from repanalysis.errors import DataError

_ACTIVE = threading.local()


class OutputSet:
    """Renames held back until the set ends: ``place`` queues one, ``discard`` queues a removal."""

    def __init__(self) -> None:
        self._moves: list[tuple[str, Path]] = []
        self._stale: list[Path] = []

    def place(self, tmp: str | os.PathLike, target: str | os.PathLike) -> None:
        self._moves.append((os.fspath(tmp), Path(target)))

    def discard(self, *paths: str | os.PathLike) -> None:
        """Remove these files when the set succeeds (an earlier run's output that this run does not write)."""
        self._stale += [Path(p) for p in paths]

    def _commit(self) -> None:
        """Rename every file into place. What can stop a rename in the same folder (a folder standing where a
        file goes) is checked for all of them first, so such a failure replaces none."""
        moves, self._moves = self._moves, []
        blocked = next((target for _, target in moves if target.is_dir() and not target.is_symlink()), None)
        if blocked is not None:
            remove_files(tmp for tmp, _ in moves)
            raise DataError(f"cannot write {blocked}: a folder of that name is in the way")
        for i, (tmp, target) in enumerate(moves):
            try:
                os.replace(tmp, target)
            except OSError as err:          # not foreseeable (e.g. the folder made read-only meanwhile)
                remove_files(t for t, _ in moves[i:])
                raise DataError(f"cannot write {target}: {err.strerror or err}") from None
        placed = {target for _, target in moves}
        remove_files(p for p in self._stale if p not in placed)
        sweep_stale_temps(*placed)

    def _savepoint(self) -> tuple[int, int]:
        return len(self._moves), len(self._stale)

    def _rollback(self, to: tuple[int, int] = (0, 0)) -> None:
        """Drop (and delete the temporary files of) what was queued since the savepoint ``to``."""
        moves, stale = to
        remove_files(tmp for tmp, _ in self._moves[moves:])
        del self._moves[moves:], self._stale[stale:]


def remove_files(paths) -> None:
    """Delete the files at ``paths``, ignoring any already gone."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


@contextmanager
def output_set():
    """Hold back the renames of every file written inside (through :func:`place`) until the block succeeds;
    on an error remove their temporary files instead. A set opened inside another joins the outer one; when
    that inner block fails, what it queued is dropped (even if the caller catches the error and goes on)."""
    outer = getattr(_ACTIVE, "set", None)
    if outer is not None:               # joined: a failure inside drops only what this block queued
        mark = outer._savepoint()
        try:
            yield outer
        except BaseException:
            outer._rollback(mark)
            raise
        return
    current = _ACTIVE.set = OutputSet()
    try:
        yield current
    except BaseException:
        current._rollback()
        raise
    finally:
        _ACTIVE.set = None
    current._commit()


def current_file(target: str | os.PathLike) -> Path:
    """Where ``target``'s newest content is now: the temporary file queued for it in the active
    :func:`output_set` (written in this set, not yet renamed into place), else ``target`` itself. A report that
    embeds figures drawn in the same set reads them through this."""
    target = Path(target)
    active = getattr(_ACTIVE, "set", None)
    if active is not None:
        for tmp, queued in reversed(active._moves):
            if queued == target:
                return Path(tmp)
    return target


def place(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the complete temporary file ``tmp`` to ``target``: now, or at the end of the enclosing set."""
    active = getattr(_ACTIVE, "set", None)
    if active is None:
        os.replace(tmp, target)
        sweep_stale_temps(target)
    else:
        active.place(tmp, target)


def temp_file(target: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, str]:
    """(fd, path) of a new temporary file beside ``target``: ``.<name>.<host>.<pid>-<random><suffix>``, where
    <host> tags this machine and PID namespace. It lets a later run remove what a killed one left
    (:func:`sweep_stale_temps`) without touching a live writer elsewhere (another container or NFS client)."""
    target = Path(target)
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_host_tag()}.{os.getpid()}-", suffix=suffix)


def sweep_stale_temps(*targets: str | os.PathLike) -> None:
    """Remove the temporary files of ``targets`` made by :func:`temp_file` on this machine and PID namespace
    by processes that no longer run (a run killed before it could clean up). Anything else is kept: files of
    running processes (this one included), of other hosts or namespaces, and files not of that exact shape.
    Each folder is listed once."""
    by_folder: dict[Path, list[str]] = {}
    for target in map(Path, targets):
        by_folder.setdefault(target.parent, []).append(re.escape(f".{target.name}.{_host_tag()}."))
    for folder, prefixes in by_folder.items():
        shape = re.compile(f"(?:{'|'.join(prefixes)})" + r"([0-9]{1,9})-[a-z0-9_]{8}\.[a-z]{1,4}")
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            m = shape.fullmatch(name)
            if m and int(m.group(1)) != os.getpid() and not _running(int(m.group(1))):
                remove_files([folder / name])


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):    # EPERM: it runs, under another user; anything odd: keep
        return True
    return True


def _host_tag() -> str:
    """Six hex digits naming this host and PID namespace (a process id means nothing outside them)."""
    global _HOST_TAG
    if _HOST_TAG is None:
        try:
            namespace = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            namespace = 0
        _HOST_TAG = hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:6]
    return _HOST_TAG


_HOST_TAG: str | None = None


# --- atomic text files: results and a Dump's meta.json --------------------------------------------------
def umask_mode(path: str | os.PathLike) -> None:
    """Give a file made by mkstemp (0600) the mode a plain open() would give it (0666 minus the umask)."""
    current = os.umask(0)
    os.umask(current)
    os.chmod(path, 0o666 & ~current)


def _write_atomic(path: str | os.PathLike, write, newline: str | None = None, *, in_set: bool = True,
                  binary: bool = False) -> None:
    """Write a text file (``binary``: a binary one) through a temporary file in the same folder and a rename: a
    reader never sees half a file, and an interrupted or failed write (a full disk) leaves the previous file
    untouched."""
    path = Path(path)
    fd, tmp = temp_file(path)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)) as fh:
            write(fh)
        umask_mode(tmp)
        if in_set:
            place(tmp, path)          # now, or with the rest of an enclosing output_set
        else:
            os.replace(tmp, path)     # a Dump's own meta.json: in place at once, whatever the caller opened
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj, *, in_set: bool = True) -> None:
    """Write JSON atomically (see :func:`_write_atomic`); NaN and inf become null (see :func:`json_text`).
    ``in_set``: a result file, put in place with the enclosing :func:`repanalysis.outputs.output_set` if any;
    False for a Dump's meta.json, which must be in place as soon as it is written."""
    def write(fh):
        fh.write(json_text(obj))
        fh.write("\n")
    _write_atomic(path, write, in_set=in_set)


def write_binary_atomic(path: str | os.PathLike, write, *, in_set: bool = True) -> None:
    """Call ``write(fh)`` on a binary file handle and put the file at ``path`` atomically (see
    :func:`_write_atomic`): ``np.savez(fh, ...)``, say."""
    _write_atomic(path, write, in_set=in_set, binary=True)


def write_text_atomic(path: str | os.PathLike, text: str, *, in_set: bool = True) -> None:
    """Write ``text`` (UTF-8) atomically (see :func:`_write_atomic`), with the enclosing
    :func:`output_set` if any: an HTML report, a README of results. ``in_set=False``: in place at once (an input
    that later steps of the same set read, such as a box list)."""
    _write_atomic(path, lambda fh: fh.write(text), newline="", in_set=in_set)


def json_text(obj) -> str:
    """Strict JSON text of results: numpy scalars and arrays as numbers and lists (numpy dict keys as their
    plain values), NaN and +-inf as null (``json.dumps`` would write the non-standard ``NaN``, which other JSON
    readers reject), result objects through their ``to_dict()``; anything else raises :class:`DataError`."""
    return json.dumps(_json_plain(obj), indent=2, default=_json_default, allow_nan=False)


def _json_plain(obj):
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_plain(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if callable(getattr(obj, "to_dict", None)) and not isinstance(obj, type):   # results (CalibrationResult, ...)
        return _json_plain(obj.to_dict())
    return obj


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Write dict rows as CSV atomically; the header is every row's keys in order of first appearance (a row
    without a column leaves its cell empty)."""
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)

    def write(fh):
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)) or ["model"])
        writer.writeheader()
        writer.writerows(rows)
    _write_atomic(path, write, newline="")


def _json_default(obj):
    """What :func:`_json_plain` leaves for json.dumps to ask about (numpy values are already plain)."""
    if isinstance(obj, Path):
        return str(obj)
    raise DataError(f"cannot write a {type(obj).__name__} as JSON; expected numbers, text, lists, dicts, numpy "
                    "arrays or a result object with to_dict()")


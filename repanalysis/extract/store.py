"""Writing a Dump: :class:`DumpWriter` fills the arrays of a Dump folder in place through memory maps, records the
rows done in ``meta.json`` (so an interrupted run resumes) and marks the Dump complete at the end. Reading a Dump
is :mod:`repanalysis.dump`; the format is described there."""
from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from repanalysis.errors import DumpError
from repanalysis.dump.dump import (ARRAY_NAMES, FORMAT, VERSION, Dump, _check_names, _check_shapes,  # noqa: F401
                                   _to_numpy, integral_labels, load_dump, release_pages)
from repanalysis.dump.seed_pt import check_pt_output, save_seed_pt  # noqa: F401
from repanalysis.dump.shards import run_differences
from repanalysis.outputs import json_text, umask_mode, write_csv_atomic, write_json_atomic  # noqa: F401


def _empty_folder(path: Path) -> None:
    """Remove everything inside ``path``, keeping the folder."""
    for item in path.iterdir():
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)




def is_complete_run(path: str | os.PathLike, fingerprint, num_samples: int) -> bool:
    """True when ``path`` holds a complete Dump of the run ``fingerprint`` with ``num_samples`` rows."""
    meta = _read_meta(Path(path))
    return _same_run(meta, fingerprint, num_samples) and bool(meta.get("complete"))


def _same_run(meta: dict | None, fingerprint, num_samples: int) -> bool:
    """Whether the Dump meta ``meta`` is of the run ``fingerprint`` with ``num_samples`` rows."""
    return (meta is not None and meta.get("format") == FORMAT and fingerprint is not None
            and meta.get("fingerprint") == fingerprint and meta.get("num_samples") == num_samples)


# --- reading -------------------------------------------------------------------------------------


class DumpWriter:
    """Create or resume a Dump directory and fill its arrays in place.

    ``specs`` maps array name -> (row shape, dtype); every such array has N rows. ``meta`` holds
    provenance; ``meta['fingerprint']`` (any JSON value) identifies the run: re-opening a directory
    whose incomplete Dump has the same fingerprint resumes it at ``writer.done``; a different or
    complete one is refused unless ``overwrite`` (an incomplete Dump with no rows done holds nothing and is
    replaced). With ``overwrite`` the new Dump is built in the sibling staging folder
    ``<path>.overwrite.partial`` and swapped in by :meth:`finalize`, so the existing Dump stays intact until
    the new one is complete; an interrupted overwrite resumes there when re-run. Only a Dump of ours (or a
    damaged one: nothing but a Dump's file names) is ever replaced or emptied: a folder holding other files is
    refused, with ``overwrite`` too. ``for_file``: the ``.pt`` this Dump is the unfinished extraction of;
    messages name that file, and ``overwrite`` replaces this Dump in place (the file itself is replaced only
    once written). ``static_arrays`` (e.g. classifier weights) are written once at creation. ``path`` is where
    rows are being written, ``target`` where the complete Dump will be. ``resume``: resume an incomplete Dump of
    this same run with ``overwrite`` too (a shard: its rows are the run's whatever replaced it before).
    """

    def __init__(self, path: str | os.PathLike, num_samples: int, specs: Mapping[str, tuple],
                 meta: dict, overwrite: bool = False, static_arrays: Mapping[str, np.ndarray] | None = None,
                 sample_names: Sequence[str] | None = None, for_file: str | os.PathLike | None = None,
                 resume: bool = False):
        path = Path(path)
        self.path = self.target = path if path.name else path.resolve()     # "." and the like: a named folder
        self.num_samples = int(num_samples)
        self.specs = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in specs.items()}
        self.for_file = Path(for_file) if for_file is not None else None
        self.resume_always = bool(resume)
        self._names = {*self.specs, *(static_arrays or {})}
        self.done = 0
        self.fresh = False  # True when this writer laid the Dump out (rather than resuming one)
        _recover_swap(self.target)
        if self.path.exists() and self.path.is_file():
            raise DumpError(f"output {self.path} exists and is a file; expected a Dump directory path")
        if self.path.is_dir() and any(not _os_file(p) for p in self.path.iterdir()) and self._take_existing(
                meta, overwrite):
            return          # resumed
        # The Dump is laid out in a hidden folder inside the output, its files moved up when all are made,
        # meta.json last: a run killed while laying out leaves no meta.json (readers see no Dump) and that
        # folder, by which the next run knows the output holds nothing but an unfinished layout of ours.
        created = not self.path.exists()
        self._created_dir = created
        self.path.mkdir(parents=True, exist_ok=True)
        work = self.path / LAYOUT_DIR
        try:
            work.mkdir()
            self._check_space(static_arrays)
            self.meta = {"format": FORMAT, "version": VERSION, **meta, "num_samples": self.num_samples,
                         "complete": False, "progress": {"done": 0},
                         "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "arrays": {k: {"shape": [self.num_samples, *shape], "dtype": dt.name}
                                    for k, (shape, dt) in self.specs.items()}}
            from repanalysis import __version__

            self.meta.setdefault("tool_version", __version__)
            if static_arrays:
                for key, value in static_arrays.items():
                    np.save(work / f"{key}.npy", np.asarray(value))
            if sample_names is not None:
                bad = next((s for s in sample_names if "\n" in str(s) or "\r" in str(s)), None)
                if bad is not None:
                    raise DumpError(f"sample name {str(bad)!r} contains a line break, which samples.txt (one name "
                                    "per line) cannot hold; expected file names without line breaks (rename it)")
                text = "".join(f"{s}\n" for s in sample_names)
                # UTF-8 whatever the locale; file names that are not UTF-8 (surrogate escapes) round-trip
                (work / "samples.txt").write_text(text, encoding="utf-8", errors="surrogateescape")
            self._arrays = {}
            for key, (shape, dt) in self.specs.items():
                file = work / f"{key}.npy"
                arr = np.lib.format.open_memmap(file, mode="w+", dtype=dt, shape=(self.num_samples, *shape))
                self._arrays[key] = arr
                _reserve(file)
            write_json_atomic(work / "meta.json", self.meta, in_set=False)
            for item in sorted(work.iterdir(), key=lambda f: f.name == "meta.json"):   # meta.json last
                os.replace(item, self.path / item.name)                               # memory maps follow
            work.rmdir()
            self.fresh = True
        except BaseException:
            # a full disk or an interrupt while laying out a new Dump leaves nothing half-made behind
            self._arrays = {}
            if created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                _empty_folder(self.path)              # the folder was empty before: all of this is ours
            raise

    def _take_existing(self, meta: dict, overwrite: bool) -> bool:
        """Deal with the non-empty folder at ``self.path``: resume the incomplete Dump of this run there (True),
        or clear the way for a new Dump (False): a layout of ours killed before it finished is emptied, an empty
        Dump removed, and with ``overwrite`` another Dump of ours is replaced (built beside it, or in place for a
        ``for_file`` run). Anything else raises DumpError; files that are not a Dump's are never deleted."""
        fingerprint = meta.get("fingerprint")
        existing = _read_meta(self.path)
        same_run = _same_run(existing, fingerprint, self.num_samples)
        empty = _holds_no_rows(existing)     # laid out (or being laid out when killed), no row written
        if same_run and not existing.get("complete") and not empty and (not overwrite or self.for_file
                                                                         or self.resume_always):
            self._resume(existing)
            return True
        _refuse_foreign(self.path, existing, self._names, self._shown())
        if existing is None and (self.path / LAYOUT_DIR).is_dir() and not (self.path / "meta.json").exists():
            _empty_folder(self.path)        # a layout killed before it finished: all of it is ours
            return False
        if not overwrite and not empty:
            raise DumpError(self._exists_message(existing, meta, same_run))
        if empty or self.for_file is not None:
            shutil.rmtree(self.path)   # nothing to keep: no row done, or the unfinished extraction of a file
            return False
        # keep the existing Dump until the new one is complete (finalize swaps them)
        self.path = staging_path(self.target)
        if self.path.is_file():
            raise DumpError(f"cannot replace {self.target}: {self.path} is a file, not a Dump's staging folder; "
                            "expected it absent (move it away)")
        if self.path.is_dir():
            staged = _read_meta(self.path)
            if _same_run(staged, fingerprint, self.num_samples) and not staged.get("complete"):
                self._resume(staged)
                return True
            _refuse_foreign(self.path, staged, self._names, str(self.path))
            shutil.rmtree(self.path)
        return False

    def _shown(self) -> str:
        """How messages name the output: the user's ``.pt`` file for a ``for_file`` run, else the folder."""
        return str(self.for_file if self.for_file is not None else self.path)

    def _exists_message(self, existing: dict | None, meta: dict, same_run: bool) -> str:
        """The one line refusing to replace the Dump of ours at ``self.path`` without ``overwrite``."""
        ours = existing is not None
        what = ("a complete Dump of this same run" if same_run else
                _different_run(existing, meta) if ours else
                "a damaged Dump: its meta.json is missing or unreadable")
        if ours and not same_run and not existing.get("complete") and _scheme(existing) < _scheme(meta):
            what = ("an incomplete Dump of a different run, or of this run made by an earlier repanalysis "
                    "whose run identity did not cover the images' content, so it cannot be resumed")
        if self.for_file is not None:
            return (f"output {self.for_file} has an unfinished extraction that cannot be resumed ({what}); "
                    "pass --overwrite to start it again")
        return f"output {self.path} already exists ({what}); pass --overwrite to replace it"

    def _resume(self, existing: dict) -> None:
        self.meta = existing
        self.done = int((existing.get("progress") or {}).get("done", 0))
        self._arrays = {k: np.load(self.path / f"{k}.npy", mmap_mode="r+") for k in self.specs}

    def discard(self) -> None:
        """Remove a Dump this writer laid out when it holds no finished rows (a run that failed at once):
        nothing half-written stays behind, and an existing Dump being overwritten is left as it was."""
        if not self.fresh or self.done > 0 or not self.path.exists():
            return
        self._arrays = {}
        if self.path != self.target or self._created_dir:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            _empty_folder(self.path)             # the folder was empty before: all of this is ours

    def _check_space(self, static_arrays) -> None:
        need = sum(self.num_samples * int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                   for shape, dt in self.specs.values())
        need += sum(np.asarray(v).nbytes for v in (static_arrays or {}).values())
        free = shutil.disk_usage(self.path).free
        if need > free:
            raise DumpError(f"not enough disk space for the Dump at {self.path}: it needs "
                            f"{need / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free")

    def write(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows ``start:start+len`` of each array (no commit: call :meth:`commit` after)."""
        for key, value in arrays.items():
            value = np.asarray(value)
            self._arrays[key][start:start + len(value)] = value

    def commit(self, done: int) -> None:
        """Flush the arrays, then record that the first ``done`` rows are final."""
        for arr in self._arrays.values():
            arr.flush()
        self.done = int(done)
        self.meta["progress"] = {"done": self.done}
        write_json_atomic(self.path / "meta.json", self.meta, in_set=False)

    def finalize(self, extra_meta: Mapping | None = None) -> None:
        """Flush everything and mark the Dump complete (the only place ``complete`` becomes true)."""
        for arr in self._arrays.values():
            arr.flush()
        self.meta.update(extra_meta or {})
        self.meta["progress"] = {"done": self.num_samples}
        self.meta["complete"] = True
        self.meta["completed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(self.path / "meta.json", self.meta, in_set=False)
        self.done = self.num_samples
        if self.path != self.target:  # an overwrite built in staging: swap it in only now it is complete
            old = _replaced_path(self.target)
            if old.exists():
                shutil.rmtree(old)
            if self.target.exists():
                os.replace(self.target, old)
            os.replace(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
            self.path = self.target


LAYOUT_DIR = ".layout.partial"    # inside a Dump folder while its files are being made


def _scheme(meta: dict) -> int:
    """The run-fingerprint scheme a Dump's meta records (1: none recorded, before the images' content counted)."""
    value = meta.get("fingerprint_scheme")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


_TMP_META = re.compile(r"^\.meta\.json\..+\.tmp$")     # write_json_atomic's temporary file
_OS_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}   # what file browsers leave in any folder (and "._*")


def _os_file(p: Path) -> bool:
    """A file a file browser leaves in any folder (Finder's .DS_Store and AppleDouble ._x, Windows' Thumbs.db)."""
    return (p.name in _OS_FILES or p.name.startswith("._")) and p.is_file() and not p.is_symlink()


def _foreign_entries(folder: Path, names=()) -> list[str]:
    """Sorted names in ``folder`` that no Dump of ours makes (``names``: array names beyond ARRAY_NAMES)."""
    ours = {f"{k}.npy" for k in (*ARRAY_NAMES, *names)} | {"meta.json", "samples.txt", LAYOUT_DIR}
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in ours and not _TMP_META.match(p.name) and not _os_file(p))


def _refuse_foreign(folder: Path, meta: dict | None, names, shown: str) -> None:
    """DumpError unless everything in ``folder`` is a Dump's: a meta.json of ours (or none readable, a damaged
    Dump) and only the files a Dump holds. Such a folder is never emptied or replaced, --overwrite or not."""
    foreign = _foreign_entries(folder, names)
    if meta is not None and meta.get("format") != FORMAT:
        foreign.insert(0, "meta.json of another tool")
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        where = shown if shown == str(folder) else f"{shown} ({folder})"
        raise DumpError(f"output {where} holds files that are not a Dump's ({listed}); expected a Dump or an empty "
                        "folder: choose another --output or empty it")


def _different_run(existing: dict, meta: dict) -> str:
    """'a Dump of a different run', naming what differs (checkpoint, data, ...) when the metas say."""
    differs = run_differences(existing, meta)
    return "a Dump of a different run" + (f": other {', '.join(differs)}" if differs else "")


def staging_path(path: str | os.PathLike) -> Path:
    """Sibling folder where ``DumpWriter(overwrite=True)`` builds the Dump that replaces ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".overwrite.partial")


def _replaced_path(path: Path) -> Path:
    """Where the Dump being replaced waits, for the instant of the swap, before it is removed."""
    return path.with_name(f".{path.name}.replaced")


def _recover_swap(target: Path) -> None:
    """Finish or undo a swap that was interrupted between its two renames."""
    old = _replaced_path(target)
    if not old.is_dir():
        return
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)  # the new Dump is in place: only the clean-up was left
    else:
        os.replace(old, target)  # the old Dump was moved aside but the new one never moved in: put it back


def _holds_no_rows(meta: dict | None) -> bool:
    """True for the meta of an incomplete Dump with 0 rows done (a run that failed before its first row)."""
    if meta is None or meta.get("format") != FORMAT or meta.get("complete"):
        return False
    progress = meta.get("progress")
    try:
        return int((progress or {}).get("done", 0)) == 0 if isinstance(progress, (dict, type(None))) else False
    except (TypeError, ValueError):
        return False


def _read_meta(path: Path) -> dict | None:
    """The meta.json object of a Dump directory, or None when it is missing, unreadable or not an object."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _reserve(file: Path) -> None:
    """Allocate the file's blocks now: a full disk then fails here with ENOSPC instead of a SIGBUS later."""
    if not hasattr(os, "posix_fallocate"):
        return
    size = file.stat().st_size
    fd = os.open(file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise DumpError(f"disk full while reserving {size / 2**20:.1f} MiB for {file}") from None
    finally:
        os.close(fd)


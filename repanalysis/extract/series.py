"""Checkpoint series of training runs: ordering the checkpoints of one run by epoch, and extracting each once.

A run is a glob of checkpoints (``ckpts/ce/epoch_*.pth``), a folder of them, or a list of paths. Its checkpoints
are ordered by the epoch each one records (the ``epoch`` entry of a dict checkpoint, as timm, DeiT, torchvision's
reference scripts and :func:`repanalysis.train.train_small_cnn` save it; ``epoch`` in a ``.safetensors`` file's
metadata), read with safe loading (``torch.load(weights_only=True)``: no code runs, tensors memory-mapped and never
read); else by the number in the file name. When neither orders them (two files of the same epoch or number, a
file without a number) the run is refused, naming the files.

Each checkpoint is extracted once into ``<dumps>/<run>/<stem>-<tag>`` (:func:`extract_series`): a complete Dump of
the same run (same checkpoint sha256, data, transform, ...) is reused and an interrupted one resumed, so a killed
run picks up where it stopped and a second run extracts nothing.

Example::

    >>> series = checkpoint_series("ckpts/ce/epoch_*.pth", name="CE")
    >>> [(e, p.name) for e, p in series.checkpoints]
    [(1, 'epoch_1.pth'), (2, 'epoch_2.pth'), ..., (10, 'epoch_10.pth')]
    >>> dumps = extract_series(series, "data/val", "runs/dynamics/dumps")      # [(epoch, Dump), ...]
"""
from __future__ import annotations

import glob
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from repanalysis.errors import DataError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt", ".bin", ".safetensors")
ORDERS = ("epoch key", "file name")
_EPOCH_WORD = re.compile(r"epoch[^0-9a-z]*(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


@dataclass
class CheckpointSeries:
    """One training run: ``checkpoints`` [(epoch, path), ...] in epoch order, ``name`` the run's display name,
    ``ordered_by`` "epoch key" (the epoch each checkpoint records) or "file name" (the number in its name)."""

    name: str
    checkpoints: list[tuple[int, Path]]
    ordered_by: str
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> list[int]:
        return [e for e, _ in self.checkpoints]

    @property
    def paths(self) -> list[Path]:
        return [p for _, p in self.checkpoints]

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "ordered_by": self.ordered_by,
                "checkpoints": [{"epoch": e, "path": str(p)} for e, p in self.checkpoints]}


# --- reading the epoch a checkpoint records ----------------------------------------------------------------------
def checkpoint_epoch(path: str | os.PathLike, trust: bool = False) -> int | None:
    """The epoch a checkpoint records: the integer ``epoch`` entry of a dict checkpoint (an int, or a one-element
    integer tensor), or ``epoch`` in a ``.safetensors`` file's metadata; None when it records none.

    Read with ``torch.load(weights_only=True)`` (no code runs; a zip checkpoint is memory-mapped, so its tensors
    are not read); a file that safe loading refuses (pickled code) records no epoch unless ``trust``. A file
    that cannot be read at all records none either: loading it for extraction names the damage.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                value = (fh.metadata() or {}).get("epoch")
        except Exception:
            return None
        return _as_epoch(value.strip() if isinstance(value, str) else None)
    try:
        mmap = zipfile.is_zipfile(path)
        obj = _load(torch, path, weights_only=True, mmap=mmap)
    except Exception:
        if not trust:
            return None
        try:
            obj = _load(torch, path, weights_only=False, mmap=False)
        except Exception:
            return None
    return _as_epoch(obj.get("epoch")) if isinstance(obj, dict) else None


def _load(torch, path: Path, *, weights_only: bool, mmap: bool):
    import argparse

    # DeiT saves its argparse.Namespace under 'args': plain data, which safe loading takes when allowed
    scoped = getattr(torch.serialization, "safe_globals", None)
    if weights_only and scoped is not None:
        with scoped([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)


def _as_epoch(value) -> int | None:
    """An epoch value as an int: ints (not bools), integral one-element tensors, digit strings; else None."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            return None
        value = int(value.item())
    if isinstance(value, str):
        value = int(value) if value.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def file_numbers(paths: Sequence[str | os.PathLike]) -> dict[Path, int | None]:
    """The number in each file name (its stem): the one after "epoch" when every name has one (``epoch_12``,
    ``ckpt-epoch12-acc0.93``); else, when every name holds as many numbers and they differ in one place only, the
    number in that place (``ce_e8_n4000_s0_3`` -> 3); else each name's last number. None for a name without a
    number, and for every name when they differ in several places (``ep1_acc90``, ``ep2_acc93``: ambiguous)."""
    paths = [Path(p) for p in paths]
    stems = [_stem(p) for p in paths]
    words = [_EPOCH_WORD.findall(s) for s in stems]
    if paths and all(words):
        return {p: int(w[-1]) for p, w in zip(paths, words)}
    numbers = [[int(n) for n in _NUMBER.findall(s)] for s in stems]
    if all(numbers) and len(paths) > 1 and len({len(n) for n in numbers}) == 1:
        varying = [i for i in range(len(numbers[0])) if len({n[i] for n in numbers}) > 1]
        if len(varying) > 1:
            return {p: None for p in paths}
        if varying:
            return {p: n[varying[0]] for p, n in zip(paths, numbers)}
    return {p: n[-1] if n else None for p, n in zip(paths, numbers)}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(CHECKPOINT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# --- ordering ----------------------------------------------------------------------------------------------------
def order_checkpoints(paths: Sequence[str | os.PathLike], *, trust: bool = False, what: str = "run"
                      ) -> tuple[list[tuple[int, Path]], str]:
    """Order one run's checkpoints: ([(epoch, path), ...] ascending, "epoch key" or "file name").

    By the epoch each checkpoint records (:func:`checkpoint_epoch`) when every one records a different epoch;
    else by the number in the file names (:func:`file_numbers`) when every name has a different one; else
    DataError naming the files that share an epoch or number, or have none.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(f"{what}: no checkpoints; expected at least one checkpoint file")
    dup = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if dup is not None:
        raise DataError(f"{what}: {dup} is given twice; expected each checkpoint once")
    recorded = {p: checkpoint_epoch(p, trust=trust) for p in paths}
    if _orders(recorded):
        return sorted(((e, p) for p, e in recorded.items()), key=lambda t: t[0]), "epoch key"
    numbers = file_numbers(paths)
    if _orders(numbers):
        return sorted(((n, p) for p, n in numbers.items()), key=lambda t: t[0]), "file name"
    raise DataError(f"{what}: cannot order its checkpoints by epoch: by the epoch they record, "
                    f"{_why(recorded, 'recorded epoch')}; by file name, {_why(numbers, 'number')}; expected "
                    "checkpoints that record distinct epochs (an 'epoch' entry) or file names with distinct numbers "
                    "(epoch_<k>.pth)")


def _orders(values: dict) -> bool:
    vals = list(values.values())
    return all(v is not None for v in vals) and len(set(vals)) == len(vals)


def _why(values: dict[Path, int | None], what: str) -> str:
    """Why ``values`` (an epoch or number per file, ``what`` names which) do not order the files, naming them."""
    missing = [p.name for p, v in values.items() if v is None]
    if missing:
        shown = ", ".join(missing[:4]) + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else "")
        if len(missing) == len(values) and len(values) > 1 and what == "number" and \
                all(_NUMBER.search(_stem(p)) for p in values):
            return "their file names differ in more than one number"
        return f"{shown} {'have' if len(missing) > 1 else 'has'} no {what}"
    by_value: dict[int, list[str]] = {}
    for p, v in values.items():
        by_value.setdefault(v, []).append(p.name)
    value, names = next((v, n) for v, n in sorted(by_value.items()) if len(n) > 1)
    shown = " and ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return f"{shown} share {what} {value}"


# --- finding a run's checkpoints --------------------------------------------------------------------------------
def expand_checkpoints(source) -> list[Path]:
    """The checkpoint files of one run: a glob pattern (``~`` expanded; ``**`` recursive), a folder (its files
    ending in .pth, .pt, .pth.tar, .ckpt, .bin or .safetensors) or a list of paths. DataError when nothing
    matches."""
    if isinstance(source, (list, tuple)):
        paths = [Path(os.path.expanduser(os.fspath(p))) for p in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"checkpoint {missing[0]} does not exist; expected a checkpoint file")
        return paths
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise DataError(f"a run's checkpoints: expected a glob pattern, a folder or a list of paths; got {source!r}")
    text = os.path.expanduser(os.fspath(source))
    if os.path.isdir(text):
        found = sorted(p for p in Path(text).iterdir() if p.is_file() and p.name.lower().endswith(CHECKPOINT_SUFFIXES))
        if not found:
            raise DataError(f"folder {text} holds no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}); expected a "
                            "folder of one run's checkpoints or a glob such as 'ckpts/ce/epoch_*.pth'")
        return found
    found = sorted(Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p))
    if not found:
        what = "matches no file" if glob.has_magic(text) else "does not exist"
        raise DataError(f"checkpoint pattern {text!r} {what}; expected a glob such as 'ckpts/ce/epoch_*.pth' (quoted "
                        "so that the shell leaves it to repanalysis), a folder or a checkpoint file")
    return found


def checkpoint_series(source, name: str | None = None, *, trust: bool = False) -> CheckpointSeries:
    """One run's :class:`CheckpointSeries` from a glob pattern, a folder or a list of paths (see
    :func:`expand_checkpoints`), ordered by :func:`order_checkpoints`. ``name``: the run's display name
    (default: the folder the checkpoints are in)."""
    paths = expand_checkpoints(source)
    if name is None:
        parents = {p.resolve().parent.name for p in paths}
        name = parents.pop() if len(parents) == 1 else _stem(paths[0])
    ordered, how = order_checkpoints(paths, trust=trust, what=f"run {name!r}")
    return CheckpointSeries(name=str(name), checkpoints=ordered, ordered_by=how,
                            source=os.fspath(source) if isinstance(source, (str, os.PathLike)) else "")


# --- extracting each checkpoint once ----------------------------------------------------------------------------
def safe_name(name: str) -> str:
    """A display name as a folder name: runs of characters other than letters, digits, ``._+-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)).strip("._") or "run"


def series_dump_path(dumps_dir: str | os.PathLike, run: str, checkpoint: str | os.PathLike, tag: str) -> Path:
    """Where a series checkpoint's Dump of the data ``tag`` ("val", "train") goes: <dumps>/<run>/<stem>-<tag>."""
    return Path(dumps_dir) / safe_name(run) / f"{safe_name(_stem(Path(checkpoint)))}-{tag}"


def extract_series(series: CheckpointSeries, data, dumps_dir: str | os.PathLike, *, tag: str = "val",
                   arch: str | None = None, trust: bool = False, device: str = "auto", batch_size: int = 128,
                   workers: int | None = None, layout: str = "auto", split: str | None = None, class_order=None,
                   transform=None, progress: bool = False, log: Callable[[str], None] | None = None,
                   extracted: list | None = None) -> list[tuple[int, object]]:
    """[(epoch, Dump), ...] of every checkpoint of ``series`` on ``data``, in epoch order.

    Each goes to :func:`series_dump_path` and is extracted with ``reuse=True, overwrite=True``: a complete Dump of
    the same run is reused as it is, an interrupted one resumed, a Dump of another run there replaced. The paths
    of the Dumps this call extracted (not reused) are appended to ``extracted``. ``log``: one line per checkpoint.
    """
    from repanalysis.extract.runner import extract_cached
    from repanalysis.models.loading import load_model

    log = log or (lambda message: None)
    out = []
    for epoch, ckpt in series.checkpoints:
        lm = load_model(ckpt, arch, trust=trust)
        target = series_dump_path(dumps_dir, series.name, ckpt, tag)
        dump, reused = extract_cached(lm, data, target, device=device, batch_size=batch_size, workers=workers,
                                      layout=layout, split=split, class_order=class_order, transform=transform,
                                      name=series.name, progress=progress, log=log)
        if reused:
            log(f"{series.name} epoch {epoch}: reusing {target}")
        else:
            if extracted is not None:
                extracted.append(str(target))
            log(f"{series.name} epoch {epoch}: extracted {tag} data -> {target}")
        dump.name = series.name
        out.append((epoch, dump))
    return out

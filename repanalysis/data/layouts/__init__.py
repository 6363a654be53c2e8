"""The registry of data layouts: one module per way users keep their images on disk.

Each module of this package (``imagefolder``, ``imagenet_val``, ``cifar``, ``mnist``, ``npz``) registers a
:class:`Layout`: its name(s), how to recognise it on disk and how to open it. ``open_dataset``,
``detect_layout`` and ``data_root`` (in :mod:`repanalysis.data.datasets`) consult this registry and never
name a layout themselves, so adding a layout is adding a module here (modules whose name starts with ``_``
hold shared helpers and register nothing).

A layout's ``open(root, layout, split, *, labels_file, synsets_file, strict)`` returns ``(root, parts, split)``:
the folder or file the samples are read from, a dict with ``labels`` (int64 (N,)), ``class_names`` (K,),
optionally ``wnids`` (K,), either ``files`` (paths relative to root) or ``images`` (uint8 array) plus
``sample_prefix``, and optionally ``sources`` / ``listed`` (see :class:`~repanalysis.data.datasets.ImageDataset`).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


def _root_itself(root: Path, layout: str, split: str | None) -> Path:
    return root


@dataclass(frozen=True, eq=False)   # identity hash: one Layout may serve several names
class Layout:
    """One data layout.

    names: the layout names it opens (``("cifar10", "cifar100")`` for one module serving both).
    open: ``(root, layout, split, *, labels_file, synsets_file, strict) -> (root, parts, split)``.
    find: ``(folder, scan, found) -> {name: what on disk says so}`` for a folder: ``scan()`` gives the folder's
        (top-level image names, sub-folders holding images), ``found`` what layouts of lower ``priority`` found.
    priority: the order in which ``find`` runs (lower first; also the order of a "several layouts" message).
    order: the position of ``names`` in :data:`LAYOUTS`-style listings (error messages, ``--layout`` help).
    is_file: ``(path) -> bool`` for a path that is a file (None: the layout is never a single file).
    confirm: ``(folder, what, labels_file) -> None``, raising DataError when ``find``'s finding alone cannot be
        opened (an ImageNet-val folder without labels). None: nothing to confirm.
    data_root: ``(root, layout, split) -> Path``, the file or folder the samples are read from, from names on
        disk alone (default: root itself).
    folder_of_images: the layout reads image files from a folder (a split sub-folder is entered first; a file
        is refused).
    stats: per-channel (mean, std) of array data by key (layout name, or a variant such as "fashion-mnist").
    """

    names: tuple[str, ...]
    open: Callable
    find: Callable
    priority: int
    order: int
    is_file: Callable[[Path], bool] | None = None
    confirm: Callable | None = None
    data_root: Callable = _root_itself
    folder_of_images: bool = False
    stats: dict = field(default_factory=dict)


_REGISTRY: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    """Add ``layout`` under each of its names; a name registered twice is a programming error."""
    for name in layout.names:
        if name in _REGISTRY or name == "auto":
            raise ValueError(f"data layout {name!r} is registered twice")
    for name in layout.names:
        _REGISTRY[name] = layout
    return layout


def get_layout(name: str) -> Layout:
    """The Layout registered under ``name`` (KeyError when none is)."""
    return _REGISTRY[name]


def layout_names() -> tuple[str, ...]:
    """Every registered layout name, in listing order."""
    layouts = sorted(set(_REGISTRY.values()), key=lambda lay: lay.order)
    return tuple(name for lay in layouts for name in lay.names)


def by_priority() -> list[Layout]:
    """Every registered Layout once, in detection order."""
    return sorted(set(_REGISTRY.values()), key=lambda lay: lay.priority)


def array_stats(key: str):
    """(mean, std) per channel registered for ``key`` by any layout, or None."""
    for layout in by_priority():
        if key in layout.stats:
            return layout.stats[key]
    return None


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Layout", "register", "get_layout", "layout_names", "by_priority", "array_stats"]

"""``npz``: an ``.npz`` with ``images`` (N, H, W) or (N, H, W, C), uint8 or float in [0, 1] / [0, 255],
``labels`` (N,) and optionally ``class_names`` (K,); or a folder of ``<split>.npz`` files."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from repanalysis.data.layouts import Layout, register
from repanalysis.data.layouts._common import _some, _visible
from repanalysis.errors import DataError

# An .npz without class_names has K = max(label) + 1 classes; a larger K than this (ImageNet-21k has 21,841)
# is taken for a stray label rather than allocated.
_MAX_IMPLIED_CLASSES = 100_000


def _npz_holds_data(path: Path) -> bool:
    """An .npz archive with ``images`` and ``labels`` arrays (not, say, a stray mean_std.npz)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {"images.npy", "labels.npy"} <= set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _as_uint8_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3, 4):
        images = images.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise DataError(f"'images' in {path} has shape {images.shape}; expected (N, H, W) or (N, H, W, C) "
                        "with C in 1, 3, 4")
    if images.dtype == np.uint8:
        return images
    if images.dtype == bool or not (np.issubdtype(images.dtype, np.number)):
        raise DataError(f"'images' in {path} has dtype {images.dtype}; expected uint8 or float")
    images = images.astype(np.float32, copy=False)
    if images.size and not np.isfinite(images).all():
        raise DataError(f"'images' in {path} contains NaN or inf; expected finite pixel values")
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 1.0)
    if lo < 0 or hi > 255:
        raise DataError(f"'images' in {path} range {lo:g}..{hi:g}; expected pixel values in [0, 1] or [0, 255]")
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)


def _npz_split_file(path: Path, split: str | None) -> tuple[Path, str | None]:
    """(the .npz to read, split): ``path`` itself, or the ``<split>.npz`` of a folder of them (default: test.npz,
    then val.npz, then the only one)."""
    if path.is_dir():
        files = {p.stem: p for p in _visible(path) if p.suffix.lower() == ".npz"}
        if not files:
            raise DataError(f"no .npz file in {path}; expected <split>.npz files")
        data = {s: p for s, p in files.items() if _npz_holds_data(p)}
        files = data or files          # mean_std.npz beside data.npz is no split (one alone: its own message)
        if split is None:
            split = next((s for s in ("test", "val") if s in files), None)
            if split is None and len(files) == 1:
                split = next(iter(files))
            if split is None:
                raise DataError(f"{path} holds several .npz files ({', '.join(f'{s}.npz' for s in sorted(files))}) "
                                "and no test.npz or val.npz; pass split= (--split) to choose one")
        if split not in files:
            raise DataError(f"split {split!r} not found in {path}; expected one of "
                            f"{', '.join(f'{s}.npz' for s in sorted(files))} (split= / --split)")
        path = files[split]
    return path, split


def open_npz(path: Path, layout: str, split: str | None, *, labels_file=None, synsets_file=None,
              strict: bool = False):
    path, split = _npz_split_file(path, split)
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if not head.startswith(b"PK"):   # an .npz is a zip archive
        what = ("a single .npy array" if head == b"\x93NUMPY" else f"it starts with {head!r}" if head
                else "it is empty")
        raise DataError(f"cannot read {path}: it is not an .npz archive ({what}); expected a zip archive written by "
                        "numpy.savez with 'images' and 'labels'")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if not {"images", "labels"} <= keys:
                raise DataError(f"{path} has arrays {', '.join(sorted(keys)) or '(none)'}; expected 'images' "
                                "and 'labels' (and optionally 'class_names')")
            images, labels = npz["images"], npz["labels"]
            names = npz["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as err:  # object arrays need pickle, which we refuse
        raise DataError(f"cannot read {path}: {err}; expected numeric images/labels and a string class_names") \
            from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
        raise DataError(f"{path} is not a readable .npz archive ({type(err).__name__}: "
                        f"{str(err).strip()[:120]}); expected an .npz written by numpy.savez with 'images' and "
                        "'labels'") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        if labels.ndim == 1 and np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"'labels' in {path} is {labels.dtype} {labels.shape}; expected integers (N,)")
    if len(images) != len(labels):
        raise DataError(f"{path} has {len(images)} images but {len(labels)} labels; expected equal lengths")
    if len(labels) == 0:
        raise DataError(f"{path} holds no images; expected at least one")
    images = _as_uint8_images(images, path)
    labels = labels.astype(np.int64)
    if names is not None:
        class_names = [str(n) for n in np.asarray(names).reshape(-1)]
    else:
        top = int(labels.max())
        if top >= _MAX_IMPLIED_CLASSES:
            raise DataError(f"'labels' in {path} holds {top} (at index {int(labels.argmax())}) but there is no "
                            f"'class_names', so K would be {top + 1}; expected labels 0..K-1 (without class_names "
                            f"K = max(label) + 1 must be at most {_MAX_IMPLIED_CLASSES}), or add class_names")
        class_names = [str(i) for i in range(max(top + 1, 1))]
    prefix = split if split is not None else path.stem
    return path, {"images": images, "labels": labels, "class_names": class_names, "sample_prefix": prefix}, split



def find_npz(path: Path, scan, found: dict) -> dict[str, str]:
    npz = [p.name for p in _visible(path) if p.suffix.lower() == ".npz" and p.is_file()]
    if npz:
        top_images, class_dirs = scan()
        if found or class_dirs or top_images:       # beside other data: only .npz files of images count
            npz = [n for n in npz if _npz_holds_data(path / n)]
    return {"npz": f"{len(npz)} .npz file(s) ({_some(npz)})"} if npz else {}


def is_npz_file(path: Path) -> bool:
    return path.suffix.lower() == ".npz"


def npz_root(root: Path, layout: str, split: str | None) -> Path:
    return _npz_split_file(root, split)[0]


register(Layout(names=("npz",), open=open_npz, find=find_npz, priority=30, order=50, is_file=is_npz_file,
                data_root=npz_root))

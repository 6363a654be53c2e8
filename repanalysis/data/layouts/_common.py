"""Helpers the layouts share: listing image files, finding files beside a folder, split folders, reading and
verifying images, ImageNet class-name lookups."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from repanalysis.data.imagenet import imagenet_class_names, imagenet_wnids
from repanalysis.errors import DataError

# torchvision's IMG_EXTENSIONS, compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("val", "test", "validation", "valid", "train")
_DEFAULT_FOLDER_SPLITS = ("val", "test", "validation", "valid")
_SEARCH_LEVELS = 4  # label files may sit this many folders above the images (Kaggle: ILSVRC/Data/CLS-LOC/val)


def _some(names: Sequence[str], most: int = 3) -> str:
    """'a, b, c and 4 more'."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _is_wnid(text: str) -> bool:
    return len(text) == 9 and text[0] == "n" and text[1:].isdigit()


def _imagenet_name_lookup() -> dict[str, str]:
    return dict(zip(imagenet_wnids(), imagenet_class_names()))


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _scan_top(folder: Path) -> tuple[list[str], list[Path]]:
    """(image file names at the top level, sub-folders that contain at least one image somewhere)."""
    top, subdirs = [], []
    for entry in _visible(folder):
        if entry.is_dir():
            subdirs.append(entry)
        elif _is_image(entry.name):
            top.append(entry.name)
    with_images = [d for d in subdirs if _walk_images(d, first_only=True)]
    return top, with_images


def _walk_images(folder: Path, first_only: bool = False) -> list[str]:
    """Image files under ``folder`` (recursive, sorted as torchvision's ImageFolder walks), relative to it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, folder)
        for name in sorted(filenames):
            if _is_image(name):
                out.append(name if rel == "." else os.path.join(rel, name))
                if first_only:
                    return out
    return out


def _find_beside(folder: Path, names: Sequence[str], levels: int = _SEARCH_LEVELS) -> Path | None:
    """First of ``names`` found in ``folder`` or up to ``levels`` folders above it."""
    here = folder.resolve()
    for _ in range(levels + 1):
        for name in names:
            if (here / name).is_file():
                return here / name
        if here.parent == here:
            break
        here = here.parent
    return None


def _read_image(path: Path) -> Image.Image:
    try:
        with open(path, "rb") as fh:
            image = Image.open(fh)
            image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"image file missing: {path}; expected the data set unchanged since it was opened") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}; expected a readable image (or pass skip_bad / "
                        "--skip-bad to leave unreadable images out)") from None


def _verify_one(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            Image.open(fh).verify()
        with open(path, "rb") as fh:  # verify() misses truncated JPEGs: decode at reduced size to be sure
            image = Image.open(fh)
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _verify_images(paths: Sequence[Path]) -> np.ndarray:
    """Boolean (N,): which image files PIL can open, verify and decode (threads; PIL releases the GIL)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.fromiter(pool.map(_verify_one, paths, chunksize=64), dtype=bool, count=len(paths))


def _enter_split_folder(root: Path, split: str | None) -> tuple[Path, str | None]:
    """A folder whose sub-folders are all split names (train/val/test): descend into the requested split."""
    dirs = [p.name for p in _visible(root) if p.is_dir()]
    if not dirs or not all(d.lower() in SPLIT_FOLDERS for d in dirs):
        return root, split
    by_lower = {d.lower(): d for d in dirs}
    if split is None:
        split = next((s for s in _DEFAULT_FOLDER_SPLITS if s in by_lower), None)
        if split is None:
            raise DataError(f"{root} holds only the split folder(s) {', '.join(dirs)}; pass split= (--split) to "
                            "choose one explicitly")
    if split.lower() not in by_lower:
        raise DataError(f"split {split!r} not found in {root}; expected one of {', '.join(dirs)}")
    return root / by_lower[split.lower()], split


def _array_split(split: str | None, layout: str) -> str:
    split = "test" if split is None else split
    if split not in ("train", "test", "val"):
        raise DataError(f"split {split!r} does not exist for {layout}; expected train, test or val (= test)")
    return split

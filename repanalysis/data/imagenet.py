"""ImageNet metadata without downloads: class names (torchvision), WordNet ids (timm), and label/box files.

File formats (REFERENCE.md "Grad-CAM localisation" and "Checkpoint formats"):
- ``val_map.txt``: ``<image_filename>\\t<label>`` per line.
- ``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca`` per line, in class-index order.
- ``LOC_val_solution.csv``: header ``ImageId,PredictionString``; the string holds groups of
  ``wnid xmin ymin xmax ymax`` in original pixels.
- a class-order file: one WordNet id (or class name) per line, line i = the model's class i.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from repanalysis.errors import DataError


@lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names as torchvision lists them ("tench", ..., "schipperke", ...)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@lru_cache(maxsize=1)
def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (shipped with timm)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def _lines(path: str | Path, what: str) -> list[str]:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory; expected a text file")
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not a text file") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"{what} {path} is empty")
    return lines


def read_val_map(path: str | Path) -> dict[str, int]:
    """``val_map.txt`` -> {image file name: label}."""
    out: dict[str, int] = {}
    for i, line in enumerate(_lines(path, "val_map file"), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path} line {i}: expected '<image_filename><TAB><label>', got {line[:80]!r}")
        out[parts[0]] = int(parts[1])
    return out


def read_synset_mapping(path: str | Path) -> tuple[list[str], list[str]]:
    """``LOC_synset_mapping.txt`` -> (wnids in index order, first name of each class)."""
    wnids, names = [], []
    for i, line in enumerate(_lines(path, "synset mapping"), 1):
        wnid, _, desc = line.partition(" ")
        if not (wnid.startswith("n") and wnid[1:].isdigit()):
            raise DataError(f"{path} line {i}: expected 'n01440764 tench, Tinca tinca', got {line[:80]!r}")
        wnids.append(wnid)
        names.append(desc.split(",")[0].strip() or wnid)
    return wnids, names


def read_loc_solution(path: str | Path) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """``LOC_val_solution.csv`` -> {ImageId: [(wnid, xmin, ymin, xmax, ymax), ...]} in original pixels.

    UTF-8 with or without a byte-order mark (spreadsheet exports add one). An ImageId repeated on several
    rows keeps the boxes of every row, as VOC XML and the flat list do."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"box file not found: {path}")
    out: dict[str, list] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path}: expected header 'ImageId,PredictionString', got {header}")
        for row_no, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) < 2:
                raise DataError(f"{path} line {row_no}: expected 'ImageId,PredictionString'")
            image_id = row[0].strip()
            if not image_id:
                raise DataError(f"{path} line {row_no}: empty ImageId; expected an image name before the comma")
            tokens = row[1].split()
            if len(tokens) % 5:
                raise DataError(f"{path} line {row_no}: PredictionString must hold groups of "
                                f"'wnid xmin ymin xmax ymax'; got {len(tokens)} tokens")
            boxes = []
            for j in range(0, len(tokens), 5):
                try:
                    x0, y0, x1, y1 = (float(t) for t in tokens[j + 1:j + 5])
                except ValueError:
                    raise DataError(f"{path} line {row_no}: non-numeric box {tokens[j:j + 5]}") from None
                boxes.append((tokens[j], x0, y0, x1, y1))
            out.setdefault(image_id, []).extend(boxes)     # an ImageId on several rows: all its boxes count
    if not out:
        raise DataError(f"box file {path} has no rows")
    return out


def read_class_order(path: str | Path, known: list[str] | None = None) -> list[str]:
    """A class-order file: one wnid (or class name) per line, line i is the model's class i."""
    order = [ln.split()[0] if ln.split()[0].startswith("n") and ln.split()[0][1:].isdigit() else ln
             for ln in _lines(path, "class-order file")]
    if len(set(order)) != len(order):
        dup = next(x for x in order if order.count(x) > 1)
        raise DataError(f"class-order file {path} lists {dup!r} twice; expected each class once")
    if known is not None:
        missing = [c for c in order if c not in set(known)]
        if missing:
            raise DataError(f"class-order file {path} names classes not in the data set: "
                            f"{', '.join(missing[:5])}")
    return order

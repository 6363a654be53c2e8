"""Object boxes and masks for Grad-CAM localisation, mapped onto the pixels the model saw.

Sources (REFERENCE.md "Grad-CAM localisation"):
- ``LOC_val_solution.csv`` (``ImageId,PredictionString`` with groups ``wnid xmin ymin xmax ymax``), with
  ``LOC_synset_mapping.txt`` giving the class order (line i = class i);
- a folder of ILSVRC VOC XML files (``annotation/filename``, ``object/name``, ``object/bndbox``);
- a flat list, one box per line: ``path,x0,y0,x1,y1`` (several lines for one image = the union);
- a folder of PNG masks named like the images (non-zero = object).

Images are matched by file stem (``ILSVRC2012_val_00000001.JPEG`` <-> ``ILSVRC2012_val_00000001``).
Boxes are in original-image pixels and go through exactly the resize and crop the image went through
(:meth:`EvalTransform.map_boxes`); masks through the same geometry with nearest-neighbour resampling.
The region of an image is the union of the boxes of its ground-truth class, whichever class a CAM explains.

Example::

    >>> regions = open_regions("LOC_val_solution.csv", transform, synset_mapping="LOC_synset_mapping.txt")
    >>> r = regions.region("ILSVRC2012_val_00000001", label=65, size=(500, 375), out_hw=(224, 224))
    >>> r.mask.shape, r.boxes.shape                      # (224, 224), (M, 4)
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import csv
import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from repanalysis.analyze.localisation import boxes_to_mask
from repanalysis.data.imagenet import read_loc_solution, read_synset_mapping
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import DataError

BoxList = list  # [(wnid or None, x0, y0, x1, y1), ...] in original pixels
_EDGE_TOLERANCE = 1.0  # ILSVRC boxes use inclusive pixel indices, so xmax may equal the width


def image_key(name: str) -> str:
    """The key an image is matched by: its file name without folders and extension."""
    return Path(str(name).replace("\\", "/")).stem


@dataclass
class Region:
    """An image's object region on the model input: mask [H, W] bool, boxes [M, 4] (x0, y0, x1, y1)
    in model-input pixels, or None for a mask source."""

    mask: np.ndarray
    boxes: np.ndarray | None


class RegionSource(ABC):
    """Base of box and mask sources: ``has(name)``, ``region(name, label, size, out_hw)``, ``source``."""

    source: str = ""

    @abstractmethod
    def has(self, name: str) -> bool:
        """Whether the source holds a region for the image ``name``."""

    @abstractmethod
    def region(self, name: str, label: int, size: tuple[int, int], out_hw: tuple[int, int]) -> Region:
        """The region of image ``name`` (class ``label``, original ``size`` W x H) on the model input."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of images with a region."""


class BoxRegions(RegionSource):
    """Boxes per image -> regions on the model input.

    boxes: {image name or key: [(wnid or None, x0, y0, x1, y1), ...]} in original pixels.
    transform: the EvalTransform the images went through (None: boxes already in input pixels).
    class_wnids: the model's class order as WordNet ids; when given, an image's region is the union of
    the boxes whose wnid is that of its label (boxes without a wnid always count).
    """

    def __init__(self, boxes: dict[str, BoxList], transform: EvalTransform | None = None,
                 class_wnids: Sequence[str] | None = None, source: str = "boxes"):
        self.boxes = {image_key(k): list(v) for k, v in boxes.items()}
        self.transform = transform
        self.class_wnids = list(class_wnids) if class_wnids is not None else None
        self.source = str(source)

    def __len__(self) -> int:
        return len(self.boxes)

    def has(self, name: str) -> bool:
        return image_key(name) in self.boxes

    def original_boxes(self, name: str, label: int | None = None) -> np.ndarray:
        """[M, 4] boxes of the image's ground-truth class in original pixels."""
        key = image_key(name)
        if key not in self.boxes:
            raise DataError(f"no box for image {name} in {self.source}")
        entries = self.boxes[key]
        if self.class_wnids is not None and label is not None:
            if not 0 <= int(label) < len(self.class_wnids):
                raise DataError(f"image {name}: label {label} outside the {len(self.class_wnids)} classes of the "
                                "synset mapping")
            wnid = self.class_wnids[int(label)]
            entries = [e for e in entries if e[0] is None or e[0] == wnid]
            if not entries:
                found = sorted({e[0] for e in self.boxes[key]})
                raise DataError(f"image {name}: its boxes are for {', '.join(found)} but its label is {wnid}; "
                                "expected boxes of the labelled class (is the class order right?)")
        return np.array([e[1:5] for e in entries], dtype=np.float64).reshape(-1, 4)

    def region(self, name: str, label: int, size: tuple[int, int], out_hw: tuple[int, int]) -> Region:
        """Region of image ``name`` (label ``label``, original ``size`` = (width, height)) on an input of
        ``out_hw`` = (H, W) pixels."""
        width, height = int(size[0]), int(size[1])
        boxes = self.original_boxes(name, label)
        check_boxes(boxes, width, height, name)
        mapped = self.transform.map_boxes(boxes, width, height) if self.transform is not None else \
            boxes.clip(0, [width, height, width, height])
        if self.transform is not None and tuple(self.transform.output_size(width, height))[::-1] != tuple(out_hw):
            raise DataError(f"image {name}: the transform gives {self.transform.output_size(width, height)} "
                            f"pixels but the CAM is {out_hw[1]}x{out_hw[0]}; expected the same geometry")
        return Region(boxes_to_mask(mapped, int(out_hw[0]), int(out_hw[1])).numpy(), mapped)


def check_boxes(boxes: np.ndarray, width: int, height: int, name: str = "image") -> None:
    """Raise DataError unless every box satisfies 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H (1 px slack)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    tol = _EDGE_TOLERANCE
    bad = ((b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > width + tol) | (b[:, 3] > height + tol)
           | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | ~np.isfinite(b).all(1))
    if bad.any():
        x0, y0, x1, y1 = b[np.flatnonzero(bad)[0]]
        raise DataError(f"{name}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image; "
                        f"expected 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")


class MaskRegions(RegionSource):
    """A folder of PNG masks named like the images (``<stem>.png``); non-zero pixels are the object.

    Each mask must have its image's size; it goes through the image's resize and crop (nearest).
    """

    def __init__(self, folder: str | Path, transform: EvalTransform | None = None):
        folder = Path(folder)
        self.paths = {p.stem: p for p in sorted(folder.glob("*.png"))}
        if not self.paths:
            raise DataError(f"no PNG masks in {folder}; expected <image stem>.png files")
        self.transform = transform
        self.source = str(folder)

    def __len__(self) -> int:
        return len(self.paths)

    def has(self, name: str) -> bool:
        return image_key(name) in self.paths

    def region(self, name: str, label: int, size: tuple[int, int], out_hw: tuple[int, int]) -> Region:
        path = self.paths.get(image_key(name))
        if path is None:
            raise DataError(f"no mask for image {name} in {self.source}")
        with Image.open(path) as img:
            mask_img = img.convert("L")
        if mask_img.size != tuple(size):
            raise DataError(f"mask {path.name} is {mask_img.size[0]}x{mask_img.size[1]} but its image is "
                            f"{size[0]}x{size[1]}; expected the same size")
        if self.transform is not None:
            geometry = dataclasses.replace(self.transform, interpolation="nearest", channels=1, mean=(0.0,),
                                           std=(1.0,))
            mask_img = geometry.geometric(mask_img)
        mask = np.asarray(mask_img) > 0
        if mask.shape != tuple(out_hw):
            raise DataError(f"mask {path.name} maps to {mask.shape[1]}x{mask.shape[0]} pixels but the CAM is "
                            f"{out_hw[1]}x{out_hw[0]}; expected the same geometry")
        return Region(mask, None)


# --- readers ---------------------------------------------------------------------------------------------

def read_flat_boxes(path: str | Path) -> dict[str, BoxList]:
    """``path,x0,y0,x1,y1`` per line (a header line is allowed) -> {image key: [(None, x0, y0, x1, y1)]}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"box file not found: {path}")
    out: dict[str, BoxList] = {}
    with path.open(newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), 1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            if len(row) != 5:
                raise DataError(f"{path} line {line_no}: expected 'path,x0,y0,x1,y1', got {','.join(row)[:80]!r}")
            try:
                coords = tuple(float(c) for c in row[1:])
            except ValueError:
                if line_no == 1:
                    continue  # header
                raise DataError(f"{path} line {line_no}: non-numeric box {row[1:]}") from None
            out.setdefault(image_key(row[0]), []).append((None, *coords))
    if not out:
        raise DataError(f"box file {path} has no boxes; expected lines 'path,x0,y0,x1,y1'")
    return out


def read_voc_folder(folder: str | Path) -> dict[str, BoxList]:
    """A folder of ILSVRC VOC XML files -> {image key: [(wnid, xmin, ymin, xmax, ymax), ...]}."""
    folder = Path(folder)
    files = sorted(folder.rglob("*.xml"))
    if not files:
        raise DataError(f"no .xml annotation files in {folder}; expected ILSVRC VOC XML")
    out: dict[str, BoxList] = {}
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as exc:
            raise DataError(f"{f}: not valid XML ({exc})") from None
        name = root.findtext("filename") or f.stem
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                raise DataError(f"{f}: object without <bndbox>; expected xmin/ymin/xmax/ymax")
            try:
                coords = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                raise DataError(f"{f}: <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
            boxes.append(((obj.findtext("name") or "").strip() or None, *coords))
        if boxes:
            out.setdefault(image_key(name), []).extend(boxes)
    if not out:
        raise DataError(f"the XML files in {folder} hold no <object> boxes")
    return out


def load_boxes(path: str | Path) -> dict[str, BoxList]:
    """Read any box source: LOC_val_solution csv, VOC XML folder, or flat ``path,x0,y0,x1,y1`` list."""
    path = Path(path)
    if path.is_dir():
        return read_voc_folder(path)
    if not path.is_file():
        raise DataError(f"box file not found: {path}")
    with path.open(newline="") as fh:
        first = fh.readline()
    if first.strip().startswith("ImageId"):
        return {image_key(k): list(v) for k, v in read_loc_solution(path).items()}
    return read_flat_boxes(path)


def open_regions(path: str | Path, transform: EvalTransform | None = None, *,
                 synset_mapping: str | Path | None = None,
                 class_wnids: Sequence[str] | None = None) -> RegionSource:
    """Open boxes or masks at ``path`` as a RegionSource for images that went through ``transform``.

    A folder of PNGs is read as masks, a folder of XML as VOC boxes, a file as LOC csv or flat list.
    synset_mapping: LOC_synset_mapping.txt; its order is the class order (overrides ``class_wnids``).
    Every wnid in the boxes must be in that class order (DataError naming the first that is not).
    """
    path = Path(path)
    if path.is_dir() and any(path.glob("*.png")) and not any(path.rglob("*.xml")):
        return MaskRegions(path, transform)
    boxes = load_boxes(path)
    if synset_mapping is not None:
        class_wnids = read_synset_mapping(synset_mapping)[0]
    if class_wnids is not None:
        known = set(class_wnids)
        for key, entries in boxes.items():
            unknown = [e[0] for e in entries if e[0] is not None and e[0] not in known]
            if unknown:
                where = synset_mapping or "the model's class list"
                raise DataError(f"{path}: image {key} has a box for {unknown[0]}, which is not in {where}; "
                                "expected wnids of the mapping")
    return BoxRegions(boxes, transform, class_wnids, source=str(path))


def foreground_boxes(images, names: Sequence[str], level: float = 0.3) -> dict[str, BoxList]:
    """Boxes around the bright pixels of images on a dark background (e.g. digits): for each image
    [H, W] (or [H, W, C], channels averaged), the tightest box holding every pixel above ``level`` times
    the image's maximum, as (None, x0, y0, x1, y1) with x1, y1 exclusive. Images with no such pixel get
    no box. images: [N, H, W] or [N, H, W, C]; names: N image names. Vectorised over images."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr.mean(axis=3)
    if arr.ndim != 3 or len(arr) != len(names):
        raise DataError(f"images must be [N, H, W] with one name each; got shape {arr.shape} and {len(names)} names")
    fg = arr > level * arr.reshape(len(arr), -1).max(axis=1)[:, None, None]
    rows, cols = fg.any(axis=2), fg.any(axis=1)
    h, w = arr.shape[1:]
    y0, y1 = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    present = rows.any(axis=1)
    return {image_key(names[i]): [(None, float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i]))]
            for i in np.flatnonzero(present)}

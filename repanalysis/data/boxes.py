"""Object boxes and masks for Grad-CAM localisation, mapped onto the pixels the model saw.

Sources (REFERENCE.md "Grad-CAM localisation"):
- ``LOC_val_solution.csv`` (``ImageId,PredictionString`` with groups ``wnid xmin ymin xmax ymax``), with
  ``LOC_synset_mapping.txt`` giving the class order (line i = class i);
- a folder of ILSVRC VOC XML files (``annotation/filename``, ``object/name``, ``object/bndbox``);
- a flat list, one box per line: ``path,x0,y0,x1,y1`` (several lines for one image = the union);
- a folder of PNG masks named like the images (non-zero = object).

Images are matched by path relative to the data root, folder by folder, without file extensions
(``ILSVRC2012_val_00000001.JPEG`` <-> ``ILSVRC2012_val_00000001``; ``zero/0.png`` <-> ``zero/0``). A key
fits an image when one is a trailing part of the other: a bare name (``0.png``, a LOC ImageId, an array
sample index) fits every image of that name in any folder, ``zero/0.png`` only the one in ``zero/``. A key
that fits several images is refused (DataError naming them) unless one of them is exactly that path.
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
import torch
from PIL import Image

from repanalysis.arrays import as_tensor, check_number
from repanalysis.data.imagenet import read_loc_solution, read_synset_mapping
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import DataError

BoxList = list  # [(wnid or None, x0, y0, x1, y1), ...] in original pixels
_EDGE_TOLERANCE = 1.0  # ILSVRC boxes use inclusive pixel indices, so xmax may equal the width


def boxes_to_mask(boxes, height: int, width: int, valid=None) -> torch.Tensor:
    """Union of boxes as a pixel mask.

    boxes: [N, M, 4] (or [M, 4] for one image) of (x0, y0, x1, y1) in pixels, x = columns, y = rows;
    valid: [N, M] bool marking real boxes when rows are padded (default: all). Pixel (r, c) covers
    [c, c+1) x [r, r+1) and is inside a box when its centre (c + 0.5, r + 0.5) is: x0 <= c + 0.5 <= x1
    and y0 <= r + 0.5 <= y1. Returns [N, H, W] bool (or [H, W] for one image).
    """
    b = as_tensor(boxes, dtype=torch.float64)
    single = b.ndim == 2
    if single:
        b = b.unsqueeze(0)
    if b.ndim != 3 or b.shape[-1] != 4:
        raise DataError(f"boxes must be [N, M, 4] or [M, 4] as (x0, y0, x1, y1); got shape {tuple(b.shape)}")
    height = check_number(height, "mask height", integer=True, minimum=1)
    width = check_number(width, "mask width", integer=True, minimum=1)
    v = torch.ones(b.shape[:2], dtype=torch.bool) if valid is None else as_tensor(valid, device=b.device).bool()
    if single and v.ndim == 1:
        v = v.unsqueeze(0)
    if v.shape != b.shape[:2]:
        raise DataError(f"valid must be [N, M] with one flag per box {tuple(b.shape[:2])}; got shape {tuple(v.shape)}")
    cx = torch.arange(width, dtype=torch.float64) + 0.5
    cy = torch.arange(height, dtype=torch.float64) + 0.5
    in_x = (cx >= b[..., 0:1]) & (cx <= b[..., 2:3]) & v[..., None]       # [N, M, W]
    in_y = (cy >= b[..., 1:2]) & (cy <= b[..., 3:4])                      # [N, M, H]
    mask = (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).any(dim=1)           # [N, H, W]
    return mask[0] if single else mask


def image_key(name: str) -> str:
    """An image's file name without folders and extension (the last part of :func:`path_key`)."""
    return Path(str(name).replace("\\", "/")).stem


def clean_key(name) -> str:
    """A box / mask / image name with '/' separators and no empty or '.' parts (extension kept)."""
    return "/".join(p for p in str(name).strip().replace("\\", "/").split("/") if p not in ("", "."))


def path_key(name) -> tuple[str, ...]:
    """What a name is matched by: its folders and its file name without extension, as a tuple."""
    parts = clean_key(name).split("/")
    if parts == [""]:
        return ()
    return (*parts[:-1], Path(parts[-1]).stem or parts[-1])


def _suffix(keys: tuple, parts: tuple) -> bool:
    """Whether the shorter of two path keys is a trailing part of the longer (they name the same file)."""
    n = min(len(keys), len(parts))
    return n > 0 and keys[-n:] == parts[-n:]


def _extension(name) -> str:
    return Path(clean_key(name)).suffix.lower()


class _KeyIndex:
    """Keys of a box or mask source (one entry per image, as written in the source) matched to image names
    (see the module docstring). ``bind(names)`` pairs keys with the images of a data set and refuses a key
    that fits several images; until then ``keys_for(name)`` matches one name at a time."""

    def __init__(self, keys, source: str, what: str = "box"):
        self.source, self.what = source, what
        self.parts = {k: path_key(k) for k in keys}
        self.by_stem: dict[str, list[str]] = {}
        for k, parts in self.parts.items():
            if parts:
                self.by_stem.setdefault(parts[-1], []).append(k)
        self.bound: dict[str, list[str]] | None = None
        self.bound_names: set[str] = set()

    def _fitting(self, name) -> list[str]:
        parts = path_key(name)
        if not parts:
            return []
        return [k for k in self.by_stem.get(parts[-1], ()) if _suffix(self.parts[k], parts)]

    def keys_for(self, name) -> list[str]:
        """The keys that belong to image ``name`` (several = the union, e.g. 'a.jpg' and 'x/a.jpg')."""
        if self.bound is not None and str(name) in self.bound_names:
            return self.bound.get(str(name), [])
        keys = self._fitting(name)
        if len(keys) > 1:  # e.g. the name '0.png' and the keys 'zero/0.png', 'one/0.png'
            longest = max((self.parts[k] for k in keys), key=len)
            if all(longest[-len(self.parts[k]):] == self.parts[k] for k in keys):
                return keys  # 'a.jpg' and 'x/a.jpg': the same image twice, the union
            parts = path_key(name)
            exact = [k for k in keys if self.parts[k] == parts]
            if not exact:
                raise DataError(f"image {name} fits several entries of {self.source} "
                                f"({', '.join(sorted(keys)[:3])}); expected the image's path relative to the "
                                "data root, which names one of them")
            return exact
        return keys

    def bind(self, names) -> np.ndarray:
        """Pair every key with the one image of ``names`` it names; [len(names)] bool: image has a key.

        Raises DataError when a key fits several images (a bare file name used in several folders)."""
        names = [str(n) for n in names]
        name_parts = [path_key(n) for n in names]
        by_stem: dict[str, list[int]] = {}
        for i, parts in enumerate(name_parts):
            if parts:
                by_stem.setdefault(parts[-1], []).append(i)
        bound: dict[str, list[str]] = {}
        for key, kparts in self.parts.items():
            if not kparts:
                continue
            fits = [i for i in by_stem.get(kparts[-1], ()) if _suffix(kparts, name_parts[i])]
            if len(fits) > 1:
                fits = [i for i in fits if name_parts[i] == kparts] or fits
            if len(fits) > 1 and _extension(key):
                fits = [i for i in fits if _extension(names[i]) == _extension(key)] or fits
            if len(fits) > 1:
                shown = ", ".join(names[i] for i in fits[:3]) + (", ..." if len(fits) > 3 else "")
                raise DataError(f"{self.source}: the {self.what} for {key!r} fits {len(fits)} images ({shown}); "
                                f"expected a path relative to the data root that names one image, e.g. "
                                f"{clean_key(names[fits[0]])}")
            if fits:
                bound.setdefault(names[fits[0]], []).append(key)
        self.bound, self.bound_names = bound, set(names)
        return np.array([n in bound for n in names], dtype=bool)


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

    def bind(self, names: Sequence[str]) -> np.ndarray:
        """Match the source's entries to the images ``names`` of a data set (all of them, so that an entry
        fitting several images is caught: DataError); returns [len(names)] bool, True = has a region.
        Later ``has``/``region`` calls use this pairing."""
        return np.array([self.has(n) for n in names], dtype=bool)


class BoxRegions(RegionSource):
    """Boxes per image -> regions on the model input.

    boxes: {image name or key: [(wnid or None, x0, y0, x1, y1), ...]} in original pixels.
    transform: the EvalTransform the images went through (None: boxes already in input pixels).
    class_wnids: the model's class order as WordNet ids; when given, an image's region is the union of
    the boxes whose wnid is that of its label (boxes without a wnid always count).
    """

    def __init__(self, boxes: dict[str, BoxList], transform: EvalTransform | None = None,
                 class_wnids: Sequence[str] | None = None, source: str = "boxes"):
        self.boxes: dict[str, BoxList] = {}
        for k, v in boxes.items():
            self.boxes.setdefault(clean_key(k), []).extend(v)
        self.transform = transform
        self.class_wnids = list(class_wnids) if class_wnids is not None else None
        self.source = str(source)
        self._index = _KeyIndex(self.boxes, self.source, "box")

    def __len__(self) -> int:
        return len(self.boxes)

    def has(self, name: str) -> bool:
        return bool(self._index.keys_for(name))

    def bind(self, names: Sequence[str]) -> np.ndarray:
        return self._index.bind(names)

    def original_boxes(self, name: str, label: int | None = None) -> np.ndarray:
        """[M, 4] boxes of the image's ground-truth class in original pixels."""
        keys = self._index.keys_for(name)
        if not keys:
            raise DataError(f"no box for image {name} in {self.source}")
        entries = [e for k in keys for e in self.boxes[k]]
        all_entries = entries
        if self.class_wnids is not None and label is not None:
            if not 0 <= int(label) < len(self.class_wnids):
                raise DataError(f"image {name}: label {label} outside the {len(self.class_wnids)} classes of the "
                                "synset mapping")
            wnid = self.class_wnids[int(label)]
            entries = [e for e in entries if e[0] is None or e[0] == wnid]
            if not entries:
                found = sorted({e[0] for e in all_entries})
                raise DataError(f"image {name}: its boxes are for {', '.join(found)} but its label is {wnid}; "
                                "expected boxes of the labelled class (is the class order right?)")
        return np.array([e[1:5] for e in entries], dtype=np.float64).reshape(-1, 4)

    def region(self, name: str, label: int, size: tuple[int, int], out_hw: tuple[int, int]) -> Region:
        """Region of image ``name`` (label ``label``, original ``size`` = (width, height)) on an input of
        ``out_hw`` = (H, W) pixels."""
        width, height = int(size[0]), int(size[1])
        boxes = self.original_boxes(name, label)
        check_boxes(boxes, width, height, f"{name} (boxes from {self.source})")
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
        if not np.isfinite([x0, y0, x1, y1]).all():
            raise DataError(f"{name}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has a non-finite coordinate; expected "
                            "four finite numbers x0, y0, x1, y1")
        if x1 <= x0 or y1 <= y0:
            raise DataError(f"{name}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or has its corners reversed; "
                            "expected (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
        raise DataError(f"{name}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image; "
                        f"expected 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")


class MaskRegions(RegionSource):
    """A folder of PNG masks named like the images (``<stem>.png``, or ``<class>/<stem>.png`` in sub-folders
    mirroring the data set's); non-zero pixels are the object.

    Each mask must have its image's size; it goes through the image's resize and crop (nearest).
    """

    def __init__(self, folder: str | Path, transform: EvalTransform | None = None):
        folder = Path(folder)
        self.paths = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*.png"))}
        if not self.paths:
            raise DataError(f"no PNG masks in {folder}; expected <image stem>.png files")
        self.transform = transform
        self.source = str(folder)
        self._index = _KeyIndex(self.paths, self.source, "mask")

    def __len__(self) -> int:
        return len(self.paths)

    def has(self, name: str) -> bool:
        return bool(self._index.keys_for(name))

    def bind(self, names: Sequence[str]) -> np.ndarray:
        return self._index.bind(names)

    def region(self, name: str, label: int, size: tuple[int, int], out_hw: tuple[int, int]) -> Region:
        keys = self._index.keys_for(name)
        if not keys:
            raise DataError(f"no mask for image {name} in {self.source}")
        if len(keys) > 1:
            raise DataError(f"image {name} has {len(keys)} masks in {self.source} ({', '.join(keys[:3])}); "
                            "expected one")
        path = self.paths[keys[0]]
        try:
            with Image.open(path) as img:
                mask_img = img.convert("L")
        except OSError as exc:
            raise DataError(f"cannot read mask {path}: {exc}; expected a PNG image") from None
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
    with path.open(newline="", encoding="utf-8-sig") as fh:
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
            out.setdefault(clean_key(row[0]), []).append((None, *coords))
    if not out:
        raise DataError(f"box file {path} has no boxes; expected lines 'path,x0,y0,x1,y1'")
    return out


def read_voc_folder(folder: str | Path) -> dict[str, BoxList]:
    """A folder of ILSVRC VOC XML files (or one such file) -> {image key: [(wnid, xmin, ymin, xmax, ymax), ...]}."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.xml"))
    if not files:
        raise DataError(f"no .xml annotation files in {folder}; expected ILSVRC VOC XML")
    out: dict[str, BoxList] = {}
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as exc:
            raise DataError(f"{f}: not valid XML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {f}: {exc}; expected an ILSVRC VOC XML file") from None
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
            out.setdefault(clean_key(name), []).extend(boxes)
    if not out:
        raise DataError(f"the XML files in {folder} hold no <object> boxes")
    return out


_EXPECTED_SOURCES = ("expected LOC_val_solution.csv, a 'path,x0,y0,x1,y1' text list, VOC XML (a file or a folder) "
                     "or a folder of PNG masks")


def _check_text_file(path: Path) -> None:
    """Raise DataError unless ``path`` starts like UTF-8 text (a checkpoint, image or archive is not)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise DataError(f"cannot read box file {path}: {exc.strerror or exc}") from None
    if head.startswith(b"\x89PNG"):
        raise DataError(f"box file {path} is a single PNG image; masks must be given as a folder of "
                        "<image>.png files")
    controls = sum(head.count(bytes([c])) for c in (*range(9), *range(14, 32)))
    if b"\x00" in head or controls > len(head) // 100:
        raise DataError(f"box file {path} is binary, not text (a checkpoint or an archive?); {_EXPECTED_SOURCES}")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            raise DataError(f"box file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                            f"{_EXPECTED_SOURCES}") from None


def load_boxes(path: str | Path) -> dict[str, BoxList]:
    """Read any box source: LOC_val_solution csv, VOC XML folder or file, or flat ``path,x0,y0,x1,y1`` list."""
    path = Path(path)
    if path.is_dir():
        return read_voc_folder(path)
    if not path.is_file():
        raise DataError(f"box file not found: {path}")
    _check_text_file(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
        if first.lstrip("\ufeff").lstrip().startswith("<"):
            return read_voc_folder(path)
        if first.strip().startswith("ImageId"):
            return {clean_key(k): list(v) for k, v in read_loc_solution(path).items()}
        return read_flat_boxes(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"box file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                        f"{_EXPECTED_SOURCES}") from None


def open_regions(path: str | Path, transform: EvalTransform | None = None, *,
                 synset_mapping: str | Path | None = None,
                 class_wnids: Sequence[str] | None = None) -> RegionSource:
    """Open boxes or masks at ``path`` as a RegionSource for images that went through ``transform``.

    A folder of PNGs is read as masks, a folder of XML as VOC boxes, a file as LOC csv or flat list.
    synset_mapping: LOC_synset_mapping.txt; its order is the class order (overrides ``class_wnids``).
    Every wnid in the boxes must be in that class order (DataError naming the first that is not).
    """
    path = Path(path)
    if path.is_dir() and any(path.rglob("*.png")) and not any(path.rglob("*.xml")):
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
    stems = [image_key(n) for n in names]
    keys = stems if len(set(stems)) == len(stems) else [clean_key(n) for n in names]  # the same name in two folders
    return {keys[i]: [(None, float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i]))]
            for i in np.flatnonzero(present)}


def boxes_beside(dataset) -> Path:
    """The data set's own box file: the labels file it was opened with when that is a LOC_val_solution.csv
    (first line starts with "ImageId"); DataError asking for boxes otherwise."""
    labels_file = (getattr(dataset, "sources", None) or {}).get("labels_file")
    if labels_file is not None and Path(labels_file).is_file():
        with open(labels_file, "rb") as fh:
            if fh.readline().lstrip(b"\xef\xbb\xbf").startswith(b"ImageId"):
                return Path(labels_file)
    raise DataError(f"no boxes for {dataset.root}: pass --boxes (LOC_val_solution.csv, a VOC XML folder, a "
                    "'path,x0,y0,x1,y1' list or a folder of PNG masks)")

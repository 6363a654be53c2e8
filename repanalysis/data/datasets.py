"""Image data sets for extraction: one ``open_dataset`` for every layout users keep their images in.

Layouts (``layout="auto"`` detects them from what is on disk):

- ``imagefolder``: ``root/<class>/**/<image>`` (torchvision's ImageFolder: classes are the sorted folder
  names, label i = i-th folder). Folders named by WordNet id (``n01440764``) get ImageNet class names.
- ``imagenet-val``: a flat folder of images labelled by ``val_map.txt`` (``<file>\\t<label>``) or by
  ``LOC_val_solution.csv`` + ``LOC_synset_mapping.txt``, found in the folder or up to four folders above it,
  or given as ``labels_file`` / ``synsets_file``.
- ``cifar10`` / ``cifar100``: the python pickle batches (``cifar-10-batches-py``, ``cifar-100-python``).
- ``mnist``: IDX files ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]`` (and ``t10k-``),
  MNIST or Fashion-MNIST (detected by "fashion" in the path).
- ``npz``: an ``.npz`` with ``images`` (N, H, W) or (N, H, W, C), uint8 or float in [0, 1] / [0, 255],
  ``labels`` (N,) and optionally ``class_names`` (K,); or a folder of ``<split>.npz`` files.

A folder whose sub-folders are split names (``train``, ``val``, ``test``) is entered at ``split``
(default: val, then test). ``class_order`` (a class-order file or a list of WordNet ids / names) relabels
the data so that label i is the model's class i.

Example::

    >>> import repanalysis as ra
    >>> ds = ra.open_dataset("~/data/imagenet/val", class_order="zip_order.txt")   # doctest: +SKIP
    >>> image, label, index = ds[0]          # float32 [3, 224, 224], int, int
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from repanalysis.data.imagenet import (imagenet_class_names, imagenet_wnids, read_class_order,
                                       read_loc_solution, read_synset_mapping, read_val_map)
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import DataError
from repanalysis.paths import as_path
from repanalysis.text import display_text

LAYOUTS = ("imagefolder", "imagenet-val", "cifar10", "cifar100", "mnist", "npz")
# torchvision's IMG_EXTENSIONS, compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_FOLDERS = ("val", "test", "validation", "valid", "train")
_DEFAULT_FOLDER_SPLITS = ("val", "test", "validation", "valid")
_LABEL_FILES = ("val_map.txt", "LOC_val_solution.csv")
_SYNSET_FILE = "LOC_synset_mapping.txt"
_SEARCH_LEVELS = 4  # label files may sit this many folders above the images (Kaggle: ILSVRC/Data/CLS-LOC/val)

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
# Per-channel statistics of each training set (the values the usual training recipes normalise with).
_ARRAY_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# An .npz without class_names has K = max(label) + 1 classes; a larger K than this (ImageNet-21k has 21,841)
# is taken for a stray label rather than allocated.
_MAX_IMPLIED_CLASSES = 100_000
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


# ------------------------------------------------------------------------------------------------------
# The data set
# ------------------------------------------------------------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """Images with integer labels; ``ds[i] -> (transform(image) float32 [C, H, W], label int, i)``.

    Built by :func:`open_dataset`. Images come either from files (``files``: paths relative to ``root``)
    or from an array (``images``: uint8 (N, H, W) or (N, H, W, C)), never both.

    Attributes: ``samples`` (list[str], file names relative to root or ``"<split>/<i>"`` for arrays),
    ``labels`` (int64 (N,)), ``class_names`` (K names), ``wnids`` (K WordNet ids or None),
    ``num_classes`` (K), ``root`` (Path), ``layout``, ``split``, ``transform``, ``skipped`` (files left out
    by ``skip_bad``), ``listed`` (how many images the labels file of a flat ImageNet-val folder lists, which
    may be more than the folder holds; None for other layouts).
    """

    def __init__(self, *, root: Path, layout: str, labels: np.ndarray, class_names: Sequence[str],
                 samples: Sequence[str], transform: Callable | None, split: str | None = None,
                 wnids: Sequence[str] | None = None, files: Sequence[str] | None = None,
                 images: np.ndarray | None = None, skipped: Sequence[str] = (), class_order=None,
                 sources: dict | None = None, listed: int | None = None):
        if (files is None) == (images is None):
            raise DataError("an ImageDataset needs either image files or an image array; got "
                            + ("both" if files is not None else "neither"))
        self.root = Path(root)
        self.layout = layout
        self.split = split
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.class_names = [display_text(c) for c in class_names]   # folder names that are not UTF-8 get U+FFFD
        self.wnids = list(wnids) if wnids is not None else None
        self.samples = list(samples)
        self.skipped = list(skipped)
        self.class_order = class_order
        self.sources = dict(sources or {})
        self.listed = None if listed is None else int(listed)
        self._files = list(files) if files is not None else None
        self._images = images
        self.transform = transform if transform is not None else default_transform(self)
        n = len(self.samples)
        if len(self.labels) != n:
            raise DataError(f"{len(self.labels)} labels for {n} samples in {self.root}; expected one label "
                            "per image")
        _check_label_range(self.labels, self.num_classes, self.root)

    # --- torch Dataset ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        index = self._check_index(index)
        image = self.load_image(index)
        return self.transform(image), int(self.labels[index]), index

    # --- access -------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def is_array(self) -> bool:
        """True for array-backed data sets (CIFAR, MNIST, npz), False for image files."""
        return self._images is not None

    def path(self, index: int) -> Path | None:
        """Absolute path of image ``index`` (None for array data sets)."""
        index = self._check_index(index)
        return None if self._files is None else self.root / self._files[index]

    def load_image(self, index: int) -> Image.Image:
        """The original image ``index`` as a PIL image (file pixels or array pixels, before any transform)."""
        index = self._check_index(index)
        if self._images is not None:
            return Image.fromarray(np.asarray(self._images[index]))
        return _read_image(self.root / self._files[index])

    def _check_index(self, index) -> int:
        n = len(self.samples)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a data set of {n} images")
        return i

    def with_class_order(self, class_order) -> "ImageDataset":
        """The same images relabelled so that label i is the model's class i.

        class_order: a class-order file or a list of K' WordNet ids / class names (e.g. ``imagenet_wnids()``
        for a 1000-class model evaluated on a few WordNet-id class folders). No file is re-listed or re-read.
        """
        order, source = _read_order(class_order)
        labels, names, wnids = apply_class_order(self.labels, self.class_names, self.wnids, order, source)
        return ImageDataset(root=self.root, layout=self.layout, labels=labels, class_names=names,
                            samples=self.samples, transform=self.transform, split=self.split, wnids=wnids,
                            files=self._files, images=self._images, skipped=self.skipped, class_order=source,
                            sources=self.sources, listed=self.listed)

    # --- provenance ---------------------------------------------------------------------------------
    def describe(self) -> dict:
        """JSON-able summary for a Dump's meta.json."""
        order = self.class_order
        return {
            "root": str(self.root), "layout": self.layout, "split": self.split,
            "num_samples": self.num_samples, "num_classes": self.num_classes,
            "class_order": str(order) if isinstance(order, (str, os.PathLike)) else order,
            "skipped": list(self.skipped), "listed": self.listed,
            **{k: (str(v) if v is not None else None) for k, v in self.sources.items()},
        }

    def fingerprint(self) -> str:
        """Short hash of root, layout, split, sample list, labels and the images' content (an image array's
        bytes; each image file's size and modification time): the same data gives the same string, and a data
        file rewritten in place with other images does not (an interrupted extraction must not resume on it)."""
        h = hashlib.sha256()
        h.update(json.dumps([str(self.root.resolve()), self.layout, self.split, self.num_classes]).encode())
        h.update("\n".join(self.samples).encode())
        h.update(self.labels.tobytes())
        if self._images is not None:
            h.update(np.ascontiguousarray(self._images).data)
        else:
            h.update(np.array([_size_and_time(self.root / f) for f in self._files], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return (f"ImageDataset(layout={self.layout!r}{split}, N={self.num_samples}, K={self.num_classes}, "
                f"root={str(self.root)!r})")


def _size_and_time(path: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file; (-1, -1) when it is gone (reading it will say so)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def default_transform(ds: ImageDataset) -> EvalTransform:
    """Default evaluation transform: no resize for array data sets (with their channel statistics),
    ImageNet's resize 256 / crop 224 for image files."""
    if not ds.is_array:
        return EvalTransform()
    key = ds.layout
    if key == "mnist" and ds.class_names == FASHION_MNIST_CLASSES:
        key = "fashion-mnist"
    channels = 1 if ds._images.ndim == 3 else 3
    mean, std = _ARRAY_STATS.get(key, ((0.5,) * channels, (0.5,) * channels))
    return EvalTransform(resolution=None, mean=mean, std=std, channels=channels)


# ------------------------------------------------------------------------------------------------------
# open_dataset
# ------------------------------------------------------------------------------------------------------
def open_dataset(spec, layout: str = "auto", transform: Callable | None = None, split: str | None = None,
                 class_order=None, skip_bad: bool = False, labels_file=None,
                 synsets_file=None, strict: bool = False) -> ImageDataset:
    """Open the data set at ``spec`` (a folder or an .npz file) as an :class:`ImageDataset`.

    layout: "auto" or one of LAYOUTS. transform: callable PIL image -> tensor [C, H, W] (default
    :func:`default_transform`). split: "train" / "test" / "val" for CIFAR and MNIST (default "test"), the
    split sub-folder of a folder tree, or the ``<split>.npz`` of a folder of npz files.
    class_order: class-order file (or list of WordNet ids / names): label i becomes the model's class i.
    skip_bad: verify every image file first and leave out the unreadable ones (listed in ``.skipped``).
    labels_file / synsets_file: ``val_map.txt`` or ``LOC_val_solution.csv`` / ``LOC_synset_mapping.txt``
    for a flat ImageNet-val folder, when they are not beside the images. A flat folder holding only some of
    the images its labels file lists (a few classes copied out, a partial download) is opened on the images
    present, with one warning giving the counts ("12 of 50,000 listed images are in the folder; using those");
    ``strict=True`` refuses it instead. An image the labels file does not list is always an error.
    """
    if not isinstance(strict, (bool, np.bool_)):
        raise DataError(f"strict must be True or False; got {strict!r}")
    if spec is None or str(spec) == "":
        raise DataError("no data set given; expected a folder or an .npz file")
    root = as_path(spec, "data set").expanduser().absolute()
    if not root.exists():
        raise DataError(f"data set not found: {root}")
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"unknown data layout {layout!r}; expected auto or one of {', '.join(LAYOUTS)}")
    if layout in ("imagefolder", "imagenet-val") and not root.is_dir():
        raise DataError(f"layout {layout!r} expects a folder of images but {root} is a file; pass the folder "
                        "(or layout='auto' / 'npz' for an .npz)")
    if transform is not None and not callable(transform):
        raise DataError(f"transform must be a callable (PIL image -> tensor [C, H, W]) or None; got "
                        f"{type(transform).__name__}")
    for what, value in (("labels file", labels_file), ("synsets file", synsets_file)):
        if value is not None and not as_path(value, what).expanduser().is_file():
            raise DataError(f"{what} not found: {value}")
    labels_file = Path(labels_file).expanduser() if labels_file is not None else None
    synsets_file = Path(synsets_file).expanduser() if synsets_file is not None else None

    if root.is_dir() and layout in ("auto", "imagefolder", "imagenet-val"):
        root, split = _enter_split_folder(root, split)
    if layout == "auto":
        layout = detect_layout(root, labels_file=labels_file)

    if layout == "imagefolder":
        parts = _open_imagefolder(root)
    elif layout == "imagenet-val":
        parts = _open_imagenet_val(root, labels_file, synsets_file, strict=bool(strict))
    elif layout in ("cifar10", "cifar100"):
        root, parts, split = _open_cifar(root, layout, split)
    elif layout == "mnist":
        root, parts, split = _open_mnist(root, split)
    else:
        root, parts, split = _open_npz(root, split)

    labels, class_names, wnids = parts.pop("labels"), parts.pop("class_names"), parts.pop("wnids", None)
    _check_label_range(labels, len(class_names), root)
    order_source = None
    if class_order is not None:
        order, order_source = _read_order(class_order)
        labels, class_names, wnids = apply_class_order(labels, class_names, wnids, order, order_source)

    skipped: list[str] = []
    files = parts.get("files")
    if skip_bad and files is not None:
        ok = _verify_images([root / f for f in files])
        skipped = [f for f, good in zip(files, ok) if not good]
        if skipped:
            keep = np.flatnonzero(ok)
            files = [files[i] for i in keep]
            labels = labels[keep]
            if not files:
                raise DataError(f"none of the {len(skipped)} images in {root} could be read; expected "
                                "readable image files")
        parts["files"] = files
    if files is not None:
        samples = files
    else:
        prefix = parts["sample_prefix"]
        samples = [f"{prefix}/{i}" for i in range(len(labels))]
    return ImageDataset(root=root, layout=layout, labels=labels, class_names=class_names, samples=samples,
                        transform=transform, split=split, wnids=wnids, files=files,
                        images=parts.get("images"), skipped=skipped, class_order=order_source,
                        sources=parts.get("sources"), listed=parts.get("listed"))


def data_root(spec, layout: str = "auto", split: str | None = None) -> Path:
    """The file or folder ``open_dataset(spec, layout, split=split)`` reads its samples from (its ``root``), found
    from names on disk alone, without reading a sample: the split sub-folder, the ``<split>.npz`` of a folder of
    them, the CIFAR batches' or MNIST IDX files' folder. DataError where ``open_dataset`` would fail to find it
    (no data, several layouts, a split that is not there)."""
    root = as_path(spec, "data set").expanduser().absolute()
    if not root.is_dir():
        return root
    if layout in ("auto", "imagefolder", "imagenet-val"):
        root, split = _enter_split_folder(root, split)
    if layout == "auto":
        layout = detect_layout(root)
    if layout in ("cifar10", "cifar100"):
        found = _find_cifar(root, layout)
        return found[1] if found is not None else root
    if layout == "mnist":
        return _find_idx_folder(root) or root
    return _npz_split_file(root, split)[0] if layout == "npz" else root


def detect_layout(path, labels_file=None) -> str:
    """The layout of the data at ``path`` (one of LAYOUTS), from the files it holds."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data set not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        if _IDX_NAME.match(path.name):
            return "mnist"
        raise DataError(f"{path} is a file of an unknown kind; expected a folder of images, an .npz, or a "
                        "folder holding CIFAR batches or MNIST IDX files")
    found = _layouts_found(path)
    if set(found) == {"imagefolder", "imagenet-val"}:
        raise DataError(f"{path} holds {found['imagenet-val']} and {found['imagefolder']}; expected one layout: "
                        "class sub-folders only (ImageFolder) or a flat folder of images with val_map.txt "
                        "(ImageNet val)")
    if len(found) > 1:
        what = "; ".join(f"{layout}: {text}" for layout, text in found.items())
        raise DataError(f"{path} holds data of {len(found)} layouts: {what}; expected one: pass layout= "
                        f"(--layout) {' or '.join(found)} to choose, or keep each data set in its own folder")
    if found:
        layout = next(iter(found))
        if layout != "imagenet-val" or labels_file is not None or _find_beside(path, _LABEL_FILES) is not None:
            return layout
        raise DataError(f"{path} holds {found[layout]} but no class sub-folders and no labels; "
                        "expected class sub-folders (ImageFolder) or val_map.txt / LOC_val_solution.csv beside "
                        "the images (ImageNet val)")
    raise DataError(f"no images found in {path}; expected class sub-folders (ImageFolder), a flat folder of "
                    "images with val_map.txt or LOC_val_solution.csv, cifar-10-batches-py / cifar-100-python, "
                    "MNIST IDX files or an .npz")


def _layouts_found(path: Path) -> dict[str, str]:
    """Every layout the folder ``path`` holds data of -> what on disk says so (CIFAR batches, MNIST IDX files,
    .npz files, class sub-folders of images, images at its top level), in that order."""
    found = {layout: f"{layout.upper().replace('CIFAR', 'CIFAR-')} batches in {folder.name}"
             for layout, folder in _find_cifars(path)}
    idx = _find_idx_folder(path)
    if idx is not None:
        found["mnist"] = "MNIST IDX files" + (f" in {idx.relative_to(path).as_posix()}" if idx != path else "")
    npz = [p.name for p in _visible(path) if p.suffix.lower() == ".npz" and p.is_file()]
    top_images, class_dirs = _scan_top(path)
    if npz and (found or class_dirs or top_images):       # beside other data: only .npz files of images count
        npz = [n for n in npz if _npz_holds_data(path / n)]
    if npz:
        found["npz"] = f"{len(npz)} .npz file(s) ({_some(npz)})"
    if class_dirs:
        found["imagefolder"] = f"{len(class_dirs)} sub-folders of images ({_some([d.name for d in class_dirs])})"
    if top_images:
        found["imagenet-val"] = f"{len(top_images)} images at its top level"
    return found


def _some(names: Sequence[str], most: int = 3) -> str:
    """'a, b, c and 4 more'."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# ------------------------------------------------------------------------------------------------------
# Class order and label checks
# ------------------------------------------------------------------------------------------------------
def _norm_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def _is_wnid(text: str) -> bool:
    return len(text) == 9 and text[0] == "n" and text[1:].isdigit()


def _read_order(class_order) -> tuple[list[str], object]:
    if isinstance(class_order, (str, os.PathLike)):
        return read_class_order(as_path(class_order, "class-order file").expanduser()), str(class_order)
    if isinstance(class_order, (bytes, bytearray)) or not isinstance(class_order, (Sequence, np.ndarray)):
        raise DataError(f"class_order must be a path to a class-order file or a sequence of WordNet ids / class "
                        f"names (str); got {type(class_order).__name__}")
    bad = [c for c in class_order if not isinstance(c, str)]      # None entries included
    if bad:
        raise DataError(f"class_order must list WordNet ids or class names as str; got {bad[0]!r} "
                        f"({type(bad[0]).__name__})")
    order = [str(c) for c in class_order]
    if not order:
        raise DataError("class order is empty; expected one WordNet id or class name per model class")
    if len(set(order)) != len(order):
        dup = next(x for x in order if order.count(x) > 1)
        raise DataError(f"class order lists {dup!r} twice; expected each class once")
    return order, order


def apply_class_order(labels: np.ndarray, class_names: Sequence[str], wnids: Sequence[str] | None,
                      order: Sequence[str], source="class order"):
    """Relabel so that label i is ``order[i]``, the model's class i.

    labels: int (N,) in the data set's numbering; class_names / wnids: (K,) of the data set; order: (K',)
    WordNet ids or class names (matched by id, then by name ignoring case, "_" == " ").
    Returns (labels (N,), class_names (K',), wnids (K',) or None).
    """
    by_key: dict[str, int] = {}
    for pos, entry in enumerate(order):
        by_key.setdefault(entry, pos)
        by_key.setdefault(_norm_name(entry), pos)
    mapping = np.empty(len(class_names), dtype=np.int64)
    missing = []
    for k, name in enumerate(class_names):
        keys = ([wnids[k]] if wnids is not None and wnids[k] else []) + [name, _norm_name(name)]
        pos = next((by_key[key] for key in keys if key in by_key), None)
        if pos is None:
            missing.append((wnids[k] if wnids is not None and wnids[k] else name))
        else:
            mapping[k] = pos
    if missing:
        raise DataError(f"{source} does not list {len(missing)} of the data set's {len(class_names)} classes, "
                        f"e.g. {', '.join(missing[:5])}; expected every data class by WordNet id or name")
    if len(set(mapping.tolist())) != len(mapping):
        raise DataError(f"{source} matches two data classes to the same model class; expected distinct "
                        "classes")
    new_names = []
    data_name_at = {int(pos): class_names[k] for k, pos in enumerate(mapping)}
    all_wnids = all(_is_wnid(e) for e in order)
    torchvision_names = _imagenet_name_lookup() if all_wnids else {}
    for pos, entry in enumerate(order):
        if pos in data_name_at:
            new_names.append(data_name_at[pos])
        else:
            new_names.append(torchvision_names.get(entry, entry))
    new_wnids = list(order) if all_wnids else None
    return mapping[np.asarray(labels, dtype=np.int64)], new_names, new_wnids


BY_MODEL_CLASS_NAMES = "model class names"   # the class_order recorded for folders relabelled by the model's names


def label_for_model(dataset: "ImageDataset", num_classes: int | None, class_names: Sequence[str] | None,
                    log=None) -> "ImageDataset":
    """The data set labelled in the model's label space, for data opened without a class order (extraction and
    Grad-CAM alike): a few WordNet-id class folders for a 1000-class model are labelled by their ImageNet-1k
    index, and class folders named after the model's classes by the model's index of the name (see
    :func:`label_by_model_classes`). Otherwise the data set is returned as it is. ``log`` hears what changed."""
    if getattr(dataset, "wnids", None) and dataset.num_classes < (num_classes or 0) == 1000:
        folders = dataset.num_classes
        dataset = dataset.with_class_order(imagenet_wnids())
        if log:
            log(f"labelled {folders} WordNet-id folders by their ImageNet-1k index")
    relabelled = label_by_model_classes(dataset, class_names)
    if relabelled is None:
        _warn_other_classes(dataset, num_classes, class_names)
        return dataset
    if log:
        log(f"labelled {len(np.unique(relabelled.labels))} class folders by the model's class names")
    return relabelled


def _warn_other_classes(dataset: "ImageDataset", num_classes: int | None, class_names: Sequence[str] | None) -> None:
    """Warn when the data set's named classes are none of the model's classes at the same indices (MNIST digits
    through an ImageNet model): its labels are then read as the model's class indices, and accuracy and the
    'ground-truth' CAMs are about other classes. Data named 0..K-1, or opened with a class order, say nothing."""
    from repanalysis.data.class_resolution import normalize_name

    ours = list(getattr(dataset, "class_names", None) or [])
    if dataset.class_order is not None or not ours or all(str(n) == str(i) for i, n in enumerate(ours)):
        return
    vocab = [list(class_names)] if class_names else []
    if num_classes == 1000:
        vocab += [imagenet_class_names(), imagenet_wnids()]
    vocab = [v for v in vocab if len(v) >= len(ours)]
    if not vocab or any(normalize_name(n) == normalize_name(v[i]) for v in vocab for i, n in enumerate(ours)):
        return
    theirs = vocab[0]
    warnings.warn(f"the data's classes ({', '.join(map(str, ours[:3]))}, ...) are none of the model's classes at "
                  f"the same indices ({', '.join(map(str, theirs[:3]))}, ...): its labels are read as the model's "
                  "class indices; pass --class-order (class_order=) if the data is labelled otherwise",
                  RuntimeWarning, stacklevel=3)


def label_by_model_classes(dataset: "ImageDataset", model_class_names: Sequence[str] | None
                           ) -> "ImageDataset | None":
    """An ImageFolder whose folder names are the model's class names, relabelled into the model's label space.

    ImageFolder labels folders by their sorted rank, which is not the model's class index when the folders are
    named after the model's classes ('zero', 'one', ... sorts as 'eight', 'five', ...). When every folder name
    is one of ``model_class_names`` (case-insensitive, "_" == " " == "-"), label i becomes the model's index of
    the folder's name. Returns None when nothing changes: not an ImageFolder, a class order already applied,
    no model class names, folder names that are a different set, or labels that already agree.
    """
    from repanalysis.data.class_resolution import normalize_name

    if (dataset.layout != "imagefolder" or dataset.class_order is not None or not model_class_names
            or dataset.is_array):
        return None
    index: dict[str, int] = {}
    for i, name in enumerate(model_class_names):
        key = normalize_name(name)
        if key in index:  # the model's own names collide: no unambiguous mapping
            return None
        index[key] = i
    keys = [normalize_name(n) for n in dataset.class_names]
    if len(set(keys)) != len(keys) or not all(k in index for k in keys):
        return None
    mapping = np.array([index[k] for k in keys], dtype=np.int64)
    if len(mapping) == len(model_class_names) and np.array_equal(mapping, np.arange(len(mapping))):
        return None
    names = [str(n) for n in model_class_names]
    return ImageDataset(root=dataset.root, layout=dataset.layout, labels=mapping[dataset.labels], class_names=names,
                        samples=dataset.samples, transform=dataset.transform, split=dataset.split, wnids=None,
                        files=dataset._files, images=dataset._images, skipped=dataset.skipped,
                        class_order=BY_MODEL_CLASS_NAMES, sources=dataset.sources, listed=dataset.listed)


def _imagenet_name_lookup() -> dict[str, str]:
    return dict(zip(imagenet_wnids(), imagenet_class_names()))


def _check_label_range(labels: np.ndarray, num_classes: int, root) -> None:
    if len(labels) == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = int(((labels < 0) | (labels >= num_classes)).sum())
        raise DataError(f"{bad} labels in {root} lie outside the class range 0..{num_classes - 1} "
                        f"(found {lo}..{hi}); expected labels of the {num_classes} classes")


# ------------------------------------------------------------------------------------------------------
# Image files
# ------------------------------------------------------------------------------------------------------
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


def _class_meta_from_folders(names: list[str]) -> tuple[list[str], list[str] | None]:
    """Folder names -> (class names, wnids or None): WordNet-id folders get torchvision's ImageNet names."""
    if not all(_is_wnid(n) for n in names):
        return names, None
    lookup = _imagenet_name_lookup()
    return [lookup.get(n, n) for n in names], list(names)


def _open_imagefolder(root: Path) -> dict:
    top, _ = _scan_top(root)
    class_dirs = [p for p in _visible(root) if p.is_dir()]
    if not class_dirs:
        raise DataError(f"no images found in {root}; expected class sub-folders (ImageFolder) such as "
                        f"{root}/<class>/<image>.jpg")
    per_class = [_walk_images(d) for d in class_dirs]
    empty = [d.name for d, files in zip(class_dirs, per_class) if not files]
    if top and any(per_class):
        raise DataError(f"{root} holds {len(top)} images at its top level and class sub-folders; expected "
                        "class sub-folders only (ImageFolder) or a flat folder with val_map.txt (ImageNet val)")
    if empty:
        if len(empty) == len(class_dirs):
            raise DataError(f"no images found in {root}; expected class sub-folders (ImageFolder) holding "
                            f"images ({', '.join(IMAGE_EXTENSIONS)})")
        raise DataError(f"{len(empty)} class folder(s) in {root} hold no images: {', '.join(empty[:5])}; "
                        "expected at least one image per class folder")
    files = [f"{d.name}/{f}" for d, fs in zip(class_dirs, per_class) for f in fs]
    labels = np.repeat(np.arange(len(class_dirs), dtype=np.int64), [len(fs) for fs in per_class])
    class_names, wnids = _class_meta_from_folders([d.name for d in class_dirs])
    return {"files": files, "labels": labels, "class_names": class_names, "wnids": wnids}


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


def _is_loc_csv(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.readline().lstrip(b"\xef\xbb\xbf").startswith(b"ImageId")


def _open_imagenet_val(root: Path, labels_file: Path | None, synsets_file: Path | None, strict: bool = False) -> dict:
    """A flat folder of images labelled by val_map.txt or LOC_val_solution.csv. Images the file lists but the
    folder lacks are left out with one warning (``strict``: DataError); an image it does not list is an error."""
    top, class_dirs = _scan_top(root)
    if top and class_dirs:
        raise DataError(f"{root} holds {len(top)} images at its top level and {len(class_dirs)} sub-folders "
                        "of images; expected a flat folder of images (ImageNet val)")
    if not top:
        raise DataError(f"no images found in {root}; expected a flat folder of images with val_map.txt or "
                        "LOC_val_solution.csv (ImageNet val)")
    labels_file = labels_file or _find_beside(root, _LABEL_FILES)
    if labels_file is None:
        raise DataError(f"no labels for the images in {root}; expected val_map.txt or LOC_val_solution.csv in "
                        "it or a folder above it, or pass labels_file (--labels-file)")
    synsets_file = synsets_file or _find_beside(root, (_SYNSET_FILE,))
    if synsets_file is not None:
        wnids, synset_names = read_synset_mapping(synsets_file)
    else:
        wnids, synset_names = imagenet_wnids(), None  # ImageNet-1k, standard (sorted WordNet id) order
    lookup = _imagenet_name_lookup()
    class_names = [lookup.get(w) or (synset_names[i] if synset_names else w) for i, w in enumerate(wnids)]

    if _is_loc_csv(labels_file):
        boxes = read_loc_solution(labels_file)
        index = {w: i for i, w in enumerate(wnids)}
        listed = {}
        for image_id, entries in boxes.items():
            wnid = entries[0][0] if entries else None
            if wnid not in index:
                raise DataError(f"{labels_file}: image {image_id} has class {wnid!r}, which is not in "
                                f"{synsets_file or 'the ImageNet-1k synsets'}; expected a listed WordNet id")
            listed[image_id] = index[wnid]
        key_of = lambda name: os.path.splitext(name)[0]  # noqa: E731  (ImageId has no extension)
    else:
        listed = {Path(k).name: v for k, v in read_val_map(labels_file).items()}
        key_of = lambda name: name  # noqa: E731

    keys = [key_of(f) for f in top]
    present = set(keys)
    if strict:
        missing = [k for k in listed if k not in present]
        if missing:
            raise DataError(f"{len(missing)} of {len(listed)} files listed in {labels_file.name} are missing from "
                            f"{root}, e.g. {', '.join(missing[:3])}; expected every listed image in the folder")
    unlabelled = [f for f, k in zip(top, keys) if k not in listed]
    if len(unlabelled) == len(top):
        raise DataError(f"none of the {len(listed):,} images listed in {labels_file.name} is in {root}: its "
                        f"{len(top)} images ({_some(unlabelled)}) have no label there; expected images named as "
                        f"{labels_file.name} lists them")
    if unlabelled:
        raise DataError(f"{len(unlabelled)} of {len(top)} images in {root} have no label in {labels_file.name}, "
                        f"e.g. {', '.join(unlabelled[:3])}; expected a label for every image")
    labels = np.fromiter((listed[k] for k in keys), dtype=np.int64, count=len(keys))
    if synsets_file is None and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"labels in {labels_file} run {labels.min()}..{labels.max()}, outside ImageNet-1k's "
                        "0..999; expected ImageNet-1k labels, or pass synsets_file (--synsets-file)")
    used = len(present)
    if used < len(listed):
        warnings.warn(f"{used:,} of {len(listed):,} listed images are in the folder; using those", RuntimeWarning,
                      stacklevel=3)  # the caller of open_dataset
    return {"files": list(top), "labels": labels, "class_names": class_names, "wnids": list(wnids),
            "sources": {"labels_file": labels_file, "synsets_file": synsets_file}, "listed": len(listed)}


# ------------------------------------------------------------------------------------------------------
# Array data sets: CIFAR pickles, MNIST IDX, npz
# ------------------------------------------------------------------------------------------------------
def _array_split(split: str | None, layout: str) -> str:
    split = "test" if split is None else split
    if split not in ("train", "test", "val"):
        raise DataError(f"split {split!r} does not exist for {layout}; expected train, test or val (= test)")
    return split


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code when opened."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise DataError(f"cannot read CIFAR batch {path}: {err}; expected a python pickle of arrays") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {path} holds a {type(obj).__name__}; expected a dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _find_cifars(path: Path) -> list[tuple[str, Path]]:
    """[(layout, folder)] of the CIFAR-10 and CIFAR-100 python batches in ``path`` or its standard sub-folder."""
    found = []
    for layout, folder, marker in (("cifar10", "cifar-10-batches-py", "batches.meta"),
                                   ("cifar100", "cifar-100-python", "meta")):
        for candidate in (path, path / folder):
            if (candidate / marker).is_file() and (layout == "cifar10" or (candidate / "test").is_file()
                                                   or (candidate / "train").is_file()):
                found.append((layout, candidate))
                break
    return found


def _find_cifar(path: Path, layout: str | None = None) -> tuple[str, Path] | None:
    """The first (layout, folder) of :func:`_find_cifars`, of ``layout`` when given."""
    return next((f for f in _find_cifars(path) if layout in (None, f[0])), None)


def _open_cifar(path: Path, layout: str, split: str | None):
    found = _find_cifar(path if path.is_dir() else path.parent, layout)
    if found is None:
        folder = "cifar-10-batches-py" if layout == "cifar10" else "cifar-100-python"
        raise DataError(f"no {layout} batches in {path}; expected {folder} (python version) or its contents")
    root = found[1]
    split = _array_split(split, layout)
    if layout == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, meta_file, names_key = "labels", "batches.meta", "label_names"
    else:
        names = ["train"] if split == "train" else ["test"]
        label_key, meta_file, names_key = "fine_labels", "meta", "fine_label_names"
    data, labels = [], []
    for name in names:
        batch = _load_pickle(root / name)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"CIFAR batch {root / name} lacks 'data' or '{label_key}'; expected a "
                            f"{layout} python batch")
        array = np.asarray(batch["data"])
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 3072:
            raise DataError(f"CIFAR batch {root / name} has data {array.dtype} {array.shape}; expected uint8 "
                            "(N, 3072)")
        data.append(array)
        labels.append(np.asarray(batch[label_key], dtype=np.int64).reshape(-1))
        if len(labels[-1]) != len(array):
            raise DataError(f"CIFAR batch {root / name} has {len(array)} images and {len(labels[-1])} labels; "
                            "expected equal lengths")
    meta = _load_pickle(root / meta_file)
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    if not class_names:
        raise DataError(f"{root / meta_file} lacks '{names_key}'; expected the class names")
    # rows are 1024 red, 1024 green, 1024 blue values of a 32x32 image, row-major
    images = np.ascontiguousarray(np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    parts = {"images": images, "labels": np.concatenate(labels), "class_names": class_names,
             "sample_prefix": split}
    return root, parts, split


def _find_idx_folder(path: Path) -> Path | None:
    """The folder of MNIST IDX files in ``path`` (itself, raw/, or torchvision's MNIST/raw or FashionMNIST/raw).
    DataError when torchvision's root holds both MNIST and Fashion-MNIST: no --layout can choose between them."""
    found = [c for c in (path, path / "raw", path / "MNIST" / "raw", path / "FashionMNIST" / "raw")
             if c.is_dir() and any(_IDX_NAME.match(p.name) for p in c.iterdir())]
    nested = [c for c in found if c.parent.name in ("MNIST", "FashionMNIST") and c.parent.parent == path]
    if len(found) > 1 and len(nested) == len(found):
        where = " and ".join(c.relative_to(path).as_posix() for c in nested)
        raise DataError(f"{path} holds MNIST IDX files in {where}; pass --data {nested[0].parent} or --data "
                        f"{nested[1].parent} to choose one")
    return found[0] if found else None


def _npz_holds_data(path: Path) -> bool:
    """An .npz archive with ``images`` and ``labels`` arrays (not, say, a stray mean_std.npz)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {"images.npy", "labels.npy"} <= set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _idx_file(folder: Path, prefix: str, kind: str) -> Path:
    for p in sorted(folder.iterdir()):
        m = _IDX_NAME.match(p.name)
        if m and m.group(1) == prefix and m.group(2) == kind:
            return p
    raise DataError(f"no {prefix}-{kind} IDX file in {folder}; expected {prefix}-{kind}-idx"
                    f"{3 if kind == 'images' else 1}-ubyte[.gz]")


def read_idx(path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) -> uint8 array of its shape (memory-mapped if plain)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] != 0x08:
                raise DataError(f"{path} is not an unsigned-byte IDX file (magic {header.hex() or 'missing'}); "
                                "expected magic 0x00000801 or 0x00000803")
            ndim = header[3]
            dims_raw = fh.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path} ends inside its header; expected {ndim} dimension sizes")
            shape = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            offset = 4 + 4 * ndim
            count = int(np.prod(shape))
            if opener is open:
                size = path.stat().st_size - offset
                if size < count:
                    raise DataError(f"{path} holds {size} bytes of data; expected {count} for shape {shape}")
                return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)
            data = fh.read(count)
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(data) < count:
        raise DataError(f"{path} holds {len(data)} bytes of data; expected {count} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _open_mnist(path: Path, split: str | None):
    folder = path.parent if path.is_file() else _find_idx_folder(path)
    if folder is None:
        raise DataError(f"no MNIST IDX files in {path}; expected train-images-idx3-ubyte[.gz] and "
                        "train-labels-idx1-ubyte[.gz] (or t10k-...)")
    split = _array_split(split, "mnist")
    prefix = "train" if split == "train" else "t10k"
    image_file, label_file = _idx_file(folder, prefix, "images"), _idx_file(folder, prefix, "labels")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{image_file.name} has {images.ndim} dimensions and {label_file.name} {labels.ndim}; "
                        "expected images (N, H, W) and labels (N,)")
    if len(images) != len(labels):
        raise DataError(f"{image_file.name} holds {len(images)} images but {label_file.name} {len(labels)} "
                        "labels; expected equal counts")
    fashion = "fashion" in str(label_file.resolve()).lower()
    parts = {"images": images, "labels": np.asarray(labels, dtype=np.int64),
             "class_names": list(FASHION_MNIST_CLASSES if fashion else MNIST_CLASSES), "sample_prefix": split,
             "sources": {"images_file": image_file, "labels_file": label_file}}
    return folder, parts, split


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


def _open_npz(path: Path, split: str | None):
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


__all__ = ["ImageDataset", "open_dataset", "detect_layout", "data_root", "default_transform", "apply_class_order",
           "read_idx", "label_by_model_classes", "label_for_model",
           "LAYOUTS", "IMAGE_EXTENSIONS", "MNIST_CLASSES", "FASHION_MNIST_CLASSES"]

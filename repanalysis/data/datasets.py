"""Image data sets for extraction: one ``open_dataset`` for every layout users keep their images in.

Layouts (``layout="auto"`` detects them from what is on disk), one module each in :mod:`repanalysis.data.layouts`,
a registry that ``open_dataset``, ``detect_layout`` and ``data_root`` consult:

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

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from repanalysis.data import layouts as _layouts
from repanalysis.data.imagenet import imagenet_class_names, imagenet_wnids, read_class_order
from repanalysis.data.layouts._common import (IMAGE_EXTENSIONS, SPLIT_FOLDERS, _enter_split_folder,  # noqa: F401
                                              _imagenet_name_lookup, _is_wnid, _read_image, _scan_top,
                                              _verify_images)
from repanalysis.data.layouts.mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, read_idx
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import DataError
from repanalysis.paths import as_path
from repanalysis.text import display_text

LAYOUTS = _layouts.layout_names()   # ("imagefolder", "imagenet-val", "cifar10", "cifar100", "mnist", "npz")


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
    mean, std = _layouts.array_stats(key) or ((0.5,) * channels, (0.5,) * channels)
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
    names = _layouts.layout_names()
    if layout != "auto" and layout not in names:
        raise DataError(f"unknown data layout {layout!r}; expected auto or one of {', '.join(names)}")
    if layout != "auto" and _layouts.get_layout(layout).folder_of_images and not root.is_dir():
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

    if root.is_dir() and (layout == "auto" or _layouts.get_layout(layout).folder_of_images):
        root, split = _enter_split_folder(root, split)
    if layout == "auto":
        layout = detect_layout(root, labels_file=labels_file)

    root, parts, split = _layouts.get_layout(layout).open(root, layout, split, labels_file=labels_file,
                                                           synsets_file=synsets_file, strict=bool(strict))

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
    if layout == "auto" or (layout in _layouts.layout_names() and _layouts.get_layout(layout).folder_of_images):
        root, split = _enter_split_folder(root, split)
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in _layouts.layout_names():
        return root
    return _layouts.get_layout(layout).data_root(root, layout, split)

def detect_layout(path, labels_file=None) -> str:
    """The layout of the data at ``path`` (one of LAYOUTS), from the files it holds."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data set not found: {path}")
    if path.is_file():
        for layout in _layouts.by_priority():
            if layout.is_file is not None and layout.is_file(path):
                return layout.names[0]
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
        confirm = _layouts.get_layout(layout).confirm
        if confirm is not None:
            confirm(path, found[layout], labels_file)   # DataError when the finding alone cannot be opened
        return layout
    raise DataError(f"no images found in {path}; expected class sub-folders (ImageFolder), a flat folder of "
                    "images with val_map.txt or LOC_val_solution.csv, cifar-10-batches-py / cifar-100-python, "
                    "MNIST IDX files or an .npz")


def _layouts_found(path: Path) -> dict[str, str]:
    """Every layout the folder ``path`` holds data of -> what on disk says so, asking each registered layout in
    priority order (CIFAR batches, MNIST IDX files, .npz files, class sub-folders of images, images at its top
    level)."""
    scanned: list = []

    def scan() -> tuple[list[str], list[Path]]:
        if not scanned:
            scanned.append(_scan_top(path))
        return scanned[0]

    found: dict[str, str] = {}
    for layout in _layouts.by_priority():
        found.update(layout.find(path, scan, dict(found)))
    return found


# ------------------------------------------------------------------------------------------------------
# Class order and label checks
# ------------------------------------------------------------------------------------------------------
def _norm_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


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


def _check_label_range(labels: np.ndarray, num_classes: int, root) -> None:
    if len(labels) == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = int(((labels < 0) | (labels >= num_classes)).sum())
        raise DataError(f"{bad} labels in {root} lie outside the class range 0..{num_classes - 1} "
                        f"(found {lo}..{hi}); expected labels of the {num_classes} classes")



__all__ = ["ImageDataset", "open_dataset", "detect_layout", "data_root", "default_transform", "apply_class_order",
           "read_idx", "label_by_model_classes", "label_for_model",
           "LAYOUTS", "IMAGE_EXTENSIONS", "MNIST_CLASSES", "FASHION_MNIST_CLASSES"]


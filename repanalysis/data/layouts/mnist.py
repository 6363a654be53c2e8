"""``mnist``: IDX files ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]`` (and ``t10k-``),
MNIST or Fashion-MNIST (detected by "fashion" in the path)."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from repanalysis.data.layouts import Layout, register
from repanalysis.data.layouts._common import _array_split
from repanalysis.errors import DataError

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
# Per-channel statistics of each training set (the values the usual training recipes normalise with).
MNIST_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


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


def open_mnist(path: Path, layout: str, split: str | None, *, labels_file=None, synsets_file=None,
                strict: bool = False):
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



def find_mnist(path: Path, scan, found: dict) -> dict[str, str]:
    idx = _find_idx_folder(path)
    if idx is None:
        return {}
    return {"mnist": "MNIST IDX files" + (f" in {idx.relative_to(path).as_posix()}" if idx != path else "")}


def is_idx_file(path: Path) -> bool:
    return bool(_IDX_NAME.match(path.name))


def mnist_root(root: Path, layout: str, split: str | None) -> Path:
    return _find_idx_folder(root) or root


register(Layout(names=("mnist",), open=open_mnist, find=find_mnist, priority=20, order=40, is_file=is_idx_file,
                data_root=mnist_root, stats=MNIST_STATS))

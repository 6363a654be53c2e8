"""``cifar10`` / ``cifar100``: the python pickle batches (``cifar-10-batches-py``, ``cifar-100-python``)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from repanalysis.data.layouts import Layout, register
from repanalysis.data.layouts._common import _array_split
from repanalysis.errors import DataError

# Per-channel statistics of each training set (the values the usual training recipes normalise with).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


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


def open_cifar(path: Path, layout: str, split: str | None, *, labels_file=None, synsets_file=None,
                strict: bool = False):
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



def find_cifar(path: Path, scan, found: dict) -> dict[str, str]:
    return {layout: f"{layout.upper().replace('CIFAR', 'CIFAR-')} batches in {folder.name}"
            for layout, folder in _find_cifars(path)}


def cifar_root(root: Path, layout: str, split: str | None) -> Path:
    found = _find_cifar(root, layout)
    return found[1] if found is not None else root


register(Layout(names=("cifar10", "cifar100"), open=open_cifar, find=find_cifar, priority=10, order=30,
                data_root=cifar_root, stats=CIFAR_STATS))

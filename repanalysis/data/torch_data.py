"""Data a notebook already holds: any map-style ``torch.utils.data.Dataset``, or a ``DataLoader`` over one, as the
data set of an extraction.

``ra.extract`` needs of its data what an :class:`~repanalysis.data.datasets.ImageDataset` gives: ``len``,
``ds[i] -> (image float tensor [C, H, W], int label, i)``, ``samples`` (N names), ``class_names``,
``num_classes``, ``describe()`` and ``fingerprint()``. :func:`wrap_torch_data` gives them to a torch Dataset whose
items are ``(image tensor, label, ...)`` (the images already transformed: the Dataset's own pipeline applies,
not the model's transform), and to a DataLoader yielding ``(images [B, C, H, W], labels [B])`` batches, which
extraction then iterates as it is (its batch size, workers and collate_fn; ``extract``'s own ``batch_size`` and
``workers`` do not apply). A DataLoader must keep the data set's order (no shuffle, no sampler), so that row i
of the Dump is sample i.

Class names come from the Dataset's ``classes`` (torchvision's datasets have it), else none. Sample names
are the file paths of a Dataset whose ``samples`` holds ``(path, label)`` pairs (torchvision's ImageFolder),
else ``"0"``, ``"1"``, ... The fingerprint (what a resumed or reused extraction must match) hashes the
Dataset's class, its length, its class names and the first and last items (image bytes and label): the same
data gives the same fingerprint, and a Dataset and a DataLoader over it share one.

Example::

    >>> loader = torch.utils.data.DataLoader(my_dataset, batch_size=256, num_workers=4)   # doctest: +SKIP
    >>> dump = ra.extract(my_module, loader, "runs/mine")                                  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler

from repanalysis.errors import DataError


def is_torch_data(value) -> bool:
    """True for a torch Dataset or DataLoader that is not an ImageDataset (a :class:`TorchData` is one)."""
    return isinstance(value, (TorchData, DataLoader)) or (isinstance(value, Dataset)
                                                          and not hasattr(value, "fingerprint"))


def wrap_torch_data(data) -> "TorchData":
    """A torch Dataset or DataLoader as extraction's data set (a :class:`TorchData` / :class:`LoaderData`).

    Reads the first and last items (to check them and for the fingerprint). DataError (one line) for an
    iterable-style Dataset, a shuffling or sampling DataLoader, an empty data set, or items that are not
    ``(image tensor, integer label, ...)``.
    """
    if isinstance(data, TorchData):
        return data
    if isinstance(data, DataLoader):
        return LoaderData(data)
    if isinstance(data, Dataset):
        return TorchData(data)
    raise DataError(f"data must be a path, a torch Dataset or a DataLoader; got {type(data).__name__}")


def _qualname(obj) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


class TorchData(Dataset):
    """A map-style torch Dataset of ``(image tensor [C, H, W], label, ...)`` items; ``ds[i] -> (image, label, i)``.

    Attributes as an ImageDataset's: ``samples``, ``class_names``, ``num_classes``, ``split`` (None), ``wnids``
    (None), ``class_order`` (None), ``skipped`` ([]); ``dataset`` is the wrapped Dataset.
    """

    layout = "torch-dataset"

    def __init__(self, dataset):
        if isinstance(dataset, IterableDataset):
            raise DataError(f"{type(dataset).__name__} is an IterableDataset, which has no sample indices; expected "
                            "a map-style Dataset (__getitem__ and __len__)")
        try:
            n = len(dataset)
        except TypeError:
            raise DataError(f"{type(dataset).__name__} has no length; expected a map-style Dataset (__getitem__ and "
                            "__len__)") from None
        if n == 0:
            raise DataError(f"{type(dataset).__name__} has no samples; expected at least one")
        self.dataset = dataset
        self._n = int(n)
        classes = getattr(dataset, "classes", None)
        self.class_names = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else []
        self.samples = _sample_names(dataset, self._n)
        self.split = self.wnids = self.class_order = None
        self.skipped: list[str] = []
        self._first = self[0]          # checked now, in this process (a worker would wrap the error)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int):
        i = int(index)
        image, label = _image_and_label(self.dataset[i], f"item {i} of {type(self.dataset).__name__}")
        return image, label, i

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict:
        """JSON-able summary for a Dump's meta.json (the keys of ImageDataset.describe, plus ``type``)."""
        return {"root": None, "layout": self.layout, "split": None, "num_samples": self._n,
                "num_classes": self.num_classes, "class_order": None, "skipped": [], "listed": None,
                "type": _qualname(self.dataset)}

    def fingerprint(self) -> str:
        """Short hash of the Dataset's class, length, class names and first and last items (image bytes, label)."""
        h = hashlib.sha256(json.dumps([_qualname(self.dataset), self._n, self.class_names]).encode())
        for image, label, _ in (self._first, self[self._n - 1]):
            h.update(json.dumps([str(image.dtype), list(image.shape), label]).encode())
            h.update(image.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.dataset).__name__}, N={self._n}, K={self.num_classes})"


class LoaderData(TorchData):
    """A DataLoader over a map-style Dataset, in order; :meth:`batches` yields its batches for extraction.

    ``ds[i]`` is item i of the loader's Dataset through the loader's collate_fn (as it appears in a batch).
    """

    layout = "torch-dataloader"

    def __init__(self, loader: DataLoader):
        what = f"DataLoader over {type(loader.dataset).__name__}"
        batches = loader.batch_sampler
        if batches is None:
            raise DataError(f"the {what} has batch_size=None (it yields single items); expected batches: "
                            "DataLoader(dataset, batch_size=N)")
        sampler = getattr(batches, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            raise DataError(f"the {what} shuffles, so row i of its output is not sample i; expected "
                            "shuffle=False (DataLoader(dataset, batch_size=N))")
        if type(batches) is not BatchSampler or not isinstance(sampler, SequentialSampler):
            used = type(sampler if type(batches) is BatchSampler else batches).__name__
            raise DataError(f"the {what} draws its samples with {used}; expected the data set in order "
                            "(no sampler or batch_sampler, shuffle=False)")
        if batches.drop_last:
            raise DataError(f"the {what} has drop_last=True, which leaves out the last samples; expected "
                            "drop_last=False")
        self.loader = loader
        super().__init__(loader.dataset)

    def __getitem__(self, index: int):
        i = int(index)
        try:
            batch = self.loader.collate_fn([self.dataset[i]])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"the DataLoader's collate_fn cannot batch item {i} of {type(self.dataset).__name__} "
                            f"({str(exc).strip().splitlines()[0][:120]}); expected (image tensor [C, H, W], label) "
                            "items, or a collate_fn that makes (images [B, C, H, W], labels [B])") from None
        images, labels = _batch(batch, f"item {i} of the DataLoader")
        return images[0], int(labels[0]), i

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The loader's batches as ``(images [B, ...], labels int64 [B], ids int64 [B])``, from sample ``start`` on.

        A resumed run reads (without running the model on) the batches before ``start``. DataError when the
        loader yields more or fewer samples than its Dataset holds.
        """
        pos = 0
        for batch in self.loader:
            images, labels = _batch(batch, f"batch at sample {pos} of the DataLoader")
            b = len(images)
            if pos + b > self._n:
                raise DataError(f"the DataLoader yields more than its data set's {self._n} samples; expected one "
                                "row per sample")
            if pos + b > start:
                skip = max(0, start - pos)
                yield images[skip:], labels[skip:], torch.arange(pos + skip, pos + b)
            pos += b
        if pos != self._n:
            raise DataError(f"the DataLoader yielded {pos} samples but its data set holds {self._n}; expected one "
                            "row per sample")


def _sample_names(dataset, n: int) -> list[str]:
    """File paths of a Dataset holding ``samples`` = [(path, label), ...] (torchvision's ImageFolder), else 0..N-1."""
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and len(samples) == n and all(
            isinstance(s, (tuple, list)) and s and isinstance(s[0], str) for s in samples[:1]):
        return [str(s[0]) for s in samples]
    return [str(i) for i in range(n)]


def _integer(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        return int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise DataError(f"{what} has label {_short(value)}; expected an integer class index")


def _short(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def _image_and_label(item, what: str) -> tuple[torch.Tensor, int]:
    """(image tensor, int label) of one Dataset item ``(image, label, ...)``; DataError naming ``what`` otherwise."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"{what} is {_short(item)}; expected (image tensor [C, H, W], label)")
    image, label = item[0], item[1]
    if not isinstance(image, torch.Tensor):
        raise DataError(f"{what} has an image of type {type(image).__name__}; expected a torch tensor [C, H, W] "
                        "(give the Dataset a transform that returns tensors, e.g. the model's: lm.transform)")
    return image, _integer(label, what)


def _batch(batch, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, ...], labels int64 [B] on the CPU) of one DataLoader batch ``(images, labels, ...)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise DataError(f"{what} is {_short(batch)}; expected (images [B, C, H, W], labels [B])")
    images, labels = batch[0], batch[1]
    if not isinstance(images, torch.Tensor):
        raise DataError(f"{what} has images of type {type(images).__name__}; expected a tensor [B, C, H, W] (give "
                        "the Dataset a transform that returns tensors)")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{what} has labels of type {type(labels).__name__}; expected integer class indices [B]"
                        ) from None
    if labels.ndim != 1 or len(labels) != len(images) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(f"{what} has labels {_short(labels)} for {len(images)} images; expected integer class "
                        "indices [B]")
    return images, labels.to("cpu", torch.int64)

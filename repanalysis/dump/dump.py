"""Reading a Dump: a directory of ``meta.json`` plus one ``.npy`` per array, written and read through memory maps.

Layout of a Dump directory::

    meta.json               format, version, provenance, class names, completion state (see DumpWriter)
    logits.npy              float32 or float16 (N, K)
    labels.npy              int64 (N,)
    features.npy            float32 or float16 (N, D)      optional (``repanalysis logits`` omits it)
    ids.npy                 int64 (N,) index of each sample in its data set
    classifier_weight.npy   (K, D) final linear layer      optional
    classifier_bias.npy     (K,)                           optional
    samples.txt             one sample identifier (file name) per line, in dataset order, optional

Arrays are filled in place batch by batch; ``meta.json`` records how many rows are done, so an
interrupted run resumes, and ``complete`` turns true only after the last row is flushed.
The seed tool's single-file ``.pt`` (``{'logits': [N, K], 'labels': [N]}``) reads as a Dump too.
"""
from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from repanalysis.errors import DumpError
from repanalysis.paths import as_path
from repanalysis.text import display_text

FORMAT = "repanalysis-dump"
VERSION = 1
ARRAY_NAMES = ("logits", "labels", "features", "ids", "classifier_weight", "classifier_bias")


def _check_shapes(arrays: dict[str, np.ndarray], where: str) -> None:
    """DumpError unless logits are [N, K], labels and ids [N], features [N, D], classifier_weight [K, D] and
    classifier_bias [K] (a (K, 1) or (1, K) bias is flattened in ``arrays``), the float arrays hold real numbers
    and the ids integers."""
    for key, a in arrays.items():
        kinds = "iu" if key == "ids" else "biuf" if key != "labels" else None   # labels: integral_labels
        if kinds is not None and a.dtype.kind not in kinds:
            raise DumpError(f"{where}: {key} has dtype {a.dtype}; expected "
                            f"{'integer sample indices' if key == 'ids' else 'real numbers (float)'}")
    z = arrays["logits"]
    if z.ndim != 2:
        raise DumpError(f"{where}: logits must be 2-D [N, K]; got shape {z.shape}")
    size = {"N": z.shape[0], "K": z.shape[1], "D": None}
    b = arrays.get("classifier_bias")
    if b is not None and b.ndim == 2 and 1 in b.shape and b.size == z.shape[1]:
        arrays["classifier_bias"] = b.reshape(-1)        # a (K, 1) or (1, K) bias: one entry per class
    dims = {"labels": "N", "ids": "N", "features": "ND", "classifier_weight": "KD", "classifier_bias": "K"}
    for key, names in dims.items():
        a = arrays.get(key)
        if a is not None and (a.ndim != len(names) or
                              any(size[d] is not None and s != size[d] for s, d in zip(a.shape, names))):
            raise DumpError(f"{where}: {key} must be [{', '.join(names)}] for logits of shape "
                            f"[N={size['N']}, K={size['K']}]; got shape {a.shape}")
    h, w = arrays.get("features"), arrays.get("classifier_weight")
    if h is not None and w is not None and h.shape[1] != w.shape[1]:
        raise DumpError(f"{where}: classifier_weight is [K, {w.shape[1]}] but the features have D = {h.shape[1]}; "
                        "expected the weights of the layer that maps these features to the logits")




class Dump:
    """Logits, labels and (optionally) penultimate features of one model on one data split.

    Arrays are numpy arrays (memory-mapped when read from disk). Attributes:
    ``logits`` (N, K), ``labels`` (N,), ``features`` (N, D) or None, ``ids`` (N,),
    ``classifier_weight`` (K, D) or None, ``classifier_bias`` (K,) or None, ``meta`` (dict),
    ``name`` (display name), ``path`` (directory or .pt file, None for in-memory dumps).

    Example::

        >>> d = Dump.from_arrays(np.zeros((4, 3)), np.array([0, 1, 2, 0]), name="toy")
        >>> d.num_samples, d.num_classes
        (4, 3)
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], meta: dict | None = None,
                 path: str | os.PathLike | None = None, name: str | None = None):
        self._arrays = dict(arrays)
        self.meta = dict(meta or {})
        self.path = Path(path) if path is not None else None
        if name is None:
            name = self.meta.get("name") or (self.path.stem if self.path is not None else "model")
        self.name = display_text(name)
        if "logits" not in self._arrays or "labels" not in self._arrays:
            raise DumpError(f"dump {self.path or self.name} has no logits/labels arrays; expected both")
        self._arrays["labels"] = integral_labels(self._arrays["labels"], self.path or self.name)
        n = len(self._arrays["logits"])
        for key, arr in self._arrays.items():
            if key in ("logits", "labels", "features", "ids") and len(arr) != n:
                raise DumpError(f"dump {self.path or self.name}: {key} has {len(arr)} rows but logits has {n}")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, logits, labels, features=None, *, class_names: Sequence[str] | None = None,
                    classifier_weight=None, classifier_bias=None, ids=None, name: str | None = None,
                    meta: dict | None = None) -> "Dump":
        """Wrap arrays a user already has (numpy or torch) as an in-memory Dump.

        Integer or bool logits, features and classifier arrays become float32; ``class_names`` must be a list
        of strings (integers become strings; fewer than K name the first classes, as a data set may cover only
        some of a model's classes) and ``meta`` a dict."""
        where = name or "Dump.from_arrays"
        if meta is not None and not isinstance(meta, Mapping):
            raise DumpError(f"{where}: meta must be a dict; got {type(meta).__name__}")
        arrays = {"logits": _to_numpy(logits, "logits", where),
                  "labels": integral_labels(_to_numpy(labels, "labels", where), f"labels of {where}")}
        for key, value in (("features", features), ("ids", ids), ("classifier_weight", classifier_weight),
                           ("classifier_bias", classifier_bias)):
            if value is not None:
                arrays[key] = _to_numpy(value, key, where)
        _check_shapes(arrays, where)
        for key in ("logits", "features", "classifier_weight", "classifier_bias"):
            if key in arrays and arrays[key].dtype.kind in "biu":
                arrays[key] = arrays[key].astype(np.float32)
        meta, k = dict(meta or {}), arrays["logits"].shape[1]
        if meta.get("num_classes") not in (None, k):
            raise DumpError(f"{where}: meta num_classes is {meta['num_classes']!r} but the logits have K = {k} "
                            "columns; expected the logits' width")
        if class_names is not None:
            meta["class_names"] = _check_names(class_names, "class_names", k, where)
        meta.setdefault("complete", True)
        return cls(arrays, meta, name=name)

    # --- arrays -------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self._arrays

    def array(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            hint = " (re-run `repanalysis extract` to store features)" if key == "features" else ""
            raise DumpError(f"dump {self.path or self.name} has no '{key}' array{hint}")
        return self._arrays[key]

    @property
    def logits(self) -> np.ndarray:
        return self._arrays["logits"]

    @property
    def labels(self) -> np.ndarray:
        return self._arrays["labels"]

    @property
    def features(self) -> np.ndarray | None:
        return self._arrays.get("features")

    @property
    def ids(self) -> np.ndarray:
        if "ids" in self._arrays:
            return self._arrays["ids"]
        return np.arange(self.num_samples, dtype=np.int64)

    @property
    def classifier_weight(self) -> np.ndarray | None:
        return self._arrays.get("classifier_weight")

    @property
    def classifier_bias(self) -> np.ndarray | None:
        return self._arrays.get("classifier_bias")

    @property
    def num_samples(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_classes(self) -> int:
        """K from the model (the logits' width), never from max(label) + 1."""
        return int(self.meta.get("num_classes") or self.logits.shape[1])

    @property
    def feature_dim(self) -> int | None:
        return None if self.features is None else int(self.features.shape[1])

    @property
    def class_names(self) -> list[str] | None:
        names = self.meta.get("class_names")
        return [display_text(n) for n in names] if names else None

    @property
    def wnids(self) -> list[str] | None:
        names = self.meta.get("wnids")
        return list(names) if names else None

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete", True))

    def sample_names(self) -> list[str] | None:
        """Identifiers (file names) of the samples, aligned with the rows, when the Dump stored them."""
        if self.path is None or not self.path.is_dir() or not (self.path / "samples.txt").exists():
            return self.meta.get("sample_names")
        file = self.path / "samples.txt"
        all_names = file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        ids = self.ids
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(all_names)):
            raise DumpError(f"{file} has {len(all_names)} lines but the Dump's {self.num_samples} rows refer to "
                            f"samples {int(ids.min())}..{int(ids.max())}; expected one line per sample of the data "
                            "set; the Dump is damaged")
        return [all_names[i] for i in ids.tolist()]

    def iter_chunks(self, keys: Sequence[str] = ("logits", "labels"), chunk_size: int = 65536
                    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(start, {key: rows[start:start+chunk]})`` so analyses can stream with bounded memory."""
        arrays = {k: self.array(k) for k in keys}
        yield from release_pages(
            ((start, {k: np.asarray(a[start:start + chunk_size]) for k, a in arrays.items()})
             for start in range(0, self.num_samples, chunk_size)), arrays.values())

    def subset(self, index) -> "Dump":
        """A new in-memory Dump holding the selected rows (boolean mask or integer indices)."""
        index = np.asarray(index)
        arrays = {k: np.asarray(v[index]) for k, v in self._arrays.items()
                  if k in ("logits", "labels", "features", "ids")}
        if "ids" not in arrays:
            arrays["ids"] = np.arange(self.num_samples)[index]
        for k in ("classifier_weight", "classifier_bias"):
            if k in self._arrays:
                arrays[k] = np.asarray(self._arrays[k])
        return Dump(arrays, dict(self.meta), path=None, name=self.name)

    # --- writing ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> "Dump":
        """Write this Dump as a complete Dump directory (or a seed ``.pt`` when path ends in .pt)."""
        # the writer lives a floor up, with extraction (it also resumes interrupted runs); imported only here
        from repanalysis.dump.seed_pt import save_seed_pt
        from repanalysis.extract.store import DumpWriter

        path = Path(path)
        if path.suffix == ".pt":
            return save_seed_pt(self, path, overwrite=overwrite)
        specs = {k: (tuple(v.shape[1:]), v.dtype) for k, v in self._arrays.items()
                 if k in ("logits", "labels", "features", "ids")}
        static = {k: np.asarray(v) for k, v in self._arrays.items() if k.startswith("classifier_")}
        meta = {k: v for k, v in self.meta.items() if k not in ("complete", "progress", "format", "version")}
        meta.setdefault("name", self.name)
        writer = DumpWriter(path, self.num_samples, specs, meta, overwrite=overwrite, static_arrays=static)
        for start, chunk in self.iter_chunks(tuple(specs), chunk_size=65536):
            writer.write(start, chunk)
        writer.finalize()
        return load_dump(path)

    def __repr__(self) -> str:
        d = f", D={self.feature_dim}" if self.features is not None else ""
        return f"Dump(name={self.name!r}, N={self.num_samples}, K={self.num_classes}{d}, path={self.path})"


RELEASE_BYTES = 64 << 20


def release_pages(chunks: Iterator, arrays) -> Iterator:
    """Pass chunks through, dropping the already-read pages of memory-mapped ``arrays`` every 64 MiB.

    Pages read through a memory map stay counted in the process's RSS until unmapped; MADV_DONTNEED
    drops them (the kernel keeps them in its page cache and re-reads on access), so a streaming pass over a
    Dump larger than memory keeps a bounded RSS. Chunks may be tuples or dicts of arrays.
    """
    maps = [a._mmap for a in arrays if isinstance(a, np.memmap) and getattr(a, "_mmap", None) is not None
            and hasattr(a._mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")]
    pending = 0
    for chunk in chunks:
        yield chunk
        if maps:
            parts = chunk.values() if isinstance(chunk, dict) else (chunk[1].values() if isinstance(
                chunk, tuple) and isinstance(chunk[1], dict) else chunk)
            pending += sum(getattr(x, "nbytes", 0) for x in parts)
            if pending >= RELEASE_BYTES:
                for mm in maps:
                    mm.madvise(mmap.MADV_DONTNEED)
                pending = 0




def integral_labels(labels, where) -> np.ndarray:
    """Labels as int64 class indices: integer arrays pass unchanged (memory maps stay memory maps), floats
    holding whole numbers are converted; fractional, NaN or non-numeric labels raise :class:`DumpError`."""
    labels = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.floating):
        raise DumpError(f"{where}: labels have dtype {labels.dtype}; expected integer class indices")
    bad = ~np.isfinite(labels) | (labels != np.round(labels))
    if bad.any():
        raise DumpError(f"{where}: {int(bad.sum())} of {labels.size} labels are not whole numbers (e.g. "
                        f"{float(labels[bad][0]):g}); expected integer class indices")
    return labels.astype(np.int64)


def _to_numpy(x, key: str = "array", where: str = "Dump.from_arrays") -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        return np.asarray(x)
    except ValueError:  # ragged nested lists
        raise DumpError(f"{where}: {key} is ragged (rows of different lengths); expected a rectangular "
                        "array") from None


def _check_names(names, field: str, k: int, where: str, damaged: bool = False) -> list[str]:
    """``names`` as a list of strings, one per class from class 0 (a data set may cover only some of the
    model's K = ``k`` classes; names past K are never used); integer names become strings. DumpError naming
    ``where`` otherwise. A single string is refused (it would read as one name per character)."""
    if isinstance(names, np.ndarray):
        names = names.tolist()
    sequence = isinstance(names, Sequence) and not isinstance(names, (str, bytes))
    bad = [n for n in names if not isinstance(n, (str, int, np.integer)) or isinstance(n, bool)] if sequence else []
    if not sequence or bad:
        got = type(names).__name__ if not sequence else f"the entry {bad[0]!r}"
        raise DumpError(f"{where}: {field} must be a list of strings, one per class (K = {k}); got {got}"
                        + ("; the Dump is damaged" if damaged else ""))
    return [str(n) for n in names]




def load_dump(path: str | os.PathLike, name: str | None = None, allow_incomplete: bool = False) -> Dump:
    """Open a Dump directory (memory-mapped) or a seed ``.pt`` file.

    Raises :class:`DumpError` with one line when the path is missing, incomplete or malformed.
    """
    path = as_path(path, "Dump (a Dump directory or a .pt file)")
    if not path.exists():
        raise DumpError(f"no such dump: {path} (expected a Dump directory or a .pt file)")
    if path.is_file():
        from repanalysis.dump.seed_pt import _load_seed_pt

        return _load_seed_pt(path, name)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise DumpError(f"{path} is not a Dump: it has no meta.json (expected the output of `repanalysis extract`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DumpError(f"{meta_path} is not valid JSON ({exc.msg}); the Dump is damaged") from None
    if not isinstance(meta, dict):
        raise DumpError(f"{meta_path} holds a JSON {type(meta).__name__}, expected an object with format "
                        f"{FORMAT!r}; the Dump is damaged")
    progress = meta.get("progress")
    if progress is not None and not isinstance(progress, dict):
        raise DumpError(f"{meta_path}: 'progress' is a {type(progress).__name__}, expected an object; the Dump "
                        "is damaged")
    if meta.get("format") != FORMAT:
        raise DumpError(f"{path}: meta.json format is {meta.get('format')!r}, expected {FORMAT!r}")
    if _meta_int(meta, "version", meta_path, default=0) > VERSION:
        raise DumpError(f"{path}: Dump version {meta.get('version')} is newer than this repanalysis "
                        f"understands ({VERSION}); upgrade repanalysis")
    if meta.get("complete", False) not in (True, False):           # also 0 / 1
        raise DumpError(f"{meta_path}: complete is {meta['complete']!r}; expected true or false; the Dump is damaged")
    num_samples = _meta_int(meta, "num_samples", meta_path)
    done = _meta_int(progress or {}, "progress.done", meta_path, default=0, maximum=num_samples)
    if not meta.get("complete", False) and not allow_incomplete:
        raise DumpError(f"{path} is an incomplete Dump ({done} of {num_samples} rows); "
                        f"re-run the same extract command to resume it")
    arrays = {}
    for key in ARRAY_NAMES:
        file = path / f"{key}.npy"
        if file.exists():
            try:
                arrays[key] = np.load(file, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                raise DumpError(f"{file} is unreadable ({str(exc) or type(exc).__name__}); expected a .npy "
                                "array; the Dump is damaged") from None
        elif isinstance(meta.get("arrays"), dict) and key in meta["arrays"]:
            raise DumpError(f"{path}/meta.json lists {key}.npy but the file is missing; the Dump is damaged "
                            "(re-extract it)")
    if "logits" in arrays:
        try:
            _check_shapes(arrays, str(path))
        except DumpError as exc:
            raise DumpError(f"{exc}; the Dump is damaged") from None
        rows, k = arrays["logits"].shape
        for field, value in (("num_samples", num_samples), ("progress.done", done)):
            if value is not None and (value > rows or field == "num_samples" and value != rows):
                raise DumpError(f"{meta_path}: {field} is {value} but logits.npy has {rows} rows; the Dump is "
                                "damaged")
        _meta_int(meta, "num_classes", meta_path, minimum=k, maximum=k)
        for field in ("class_names", "wnids"):
            if meta.get(field) is not None:
                _check_names(meta[field], field, k, f"{meta_path}", damaged=True)
    if not meta.get("complete", False):
        arrays = {k: (v[:done] if k in ("logits", "labels", "features", "ids") else v) for k, v in arrays.items()}
    return Dump(arrays, meta, path=path, name=name or meta.get("name") or path.name)


def _meta_int(meta: Mapping, field: str, meta_path: Path, default=None, minimum: int = 0,
              maximum: int | None = None) -> int | None:
    """meta[field's last part] as an int in [minimum, maximum] (``default`` when absent or null); DumpError
    naming meta.json and the field otherwise."""
    value = meta.get(field.rsplit(".", 1)[-1])
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():      # 1000.0 from a JSON writer that keeps floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        expected = (f"{minimum}, the logits' width" if minimum == maximum else
                    f"an integer in [{minimum}, {maximum}]" if maximum is not None else f"an integer >= {minimum}")
        raise DumpError(f"{meta_path}: {field} is {value!r}; expected {expected}; the Dump is damaged")
    return value



"""The Dump: a directory of ``meta.json`` plus one ``.npy`` per array, written and read through memory maps.

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
import math
import mmap
import os
import re
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from repanalysis.errors import DataError, DumpError
from repanalysis.outputs import place, temp_file
from repanalysis.paths import as_path
from repanalysis.text import display_text

FORMAT = "repanalysis-dump"
VERSION = 1
ARRAY_NAMES = ("logits", "labels", "features", "ids", "classifier_weight", "classifier_bias")


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file made by mkstemp (0600) the mode a plain open() would give it (0666 minus the umask)."""
    current = os.umask(0)
    os.umask(current)
    os.chmod(path, 0o666 & ~current)


def _write_atomic(path: str | os.PathLike, write, newline: str | None = None, *, in_set: bool = True) -> None:
    """Write a text file through a temporary file in the same folder and a rename: a reader never sees half
    a file, and an interrupted or failed write (a full disk) leaves the previous file untouched."""
    path = Path(path)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            write(fh)
        umask_mode(tmp)
        if in_set:
            place(tmp, path)          # now, or with the rest of an enclosing output_set
        else:
            os.replace(tmp, path)     # a Dump's own meta.json: in place at once, whatever the caller opened
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj, *, in_set: bool = True) -> None:
    """Write JSON atomically (see :func:`_write_atomic`); NaN and inf become null (see :func:`json_text`).
    ``in_set``: a result file, put in place with the enclosing :func:`repanalysis.outputs.output_set` if any;
    False for a Dump's meta.json, which must be in place as soon as it is written."""
    def write(fh):
        fh.write(json_text(obj))
        fh.write("\n")
    _write_atomic(path, write, in_set=in_set)


def json_text(obj) -> str:
    """Strict JSON text of results: numpy scalars and arrays as numbers and lists (numpy dict keys as their
    plain values), NaN and +-inf as null (``json.dumps`` would write the non-standard ``NaN``, which other JSON
    readers reject), result objects through their ``to_dict()``; anything else raises :class:`DataError`."""
    return json.dumps(_json_plain(obj), indent=2, default=_json_default, allow_nan=False)


def _json_plain(obj):
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_plain(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if callable(getattr(obj, "to_dict", None)) and not isinstance(obj, type):   # results (CalibrationResult, ...)
        return _json_plain(obj.to_dict())
    return obj


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Write dict rows as CSV atomically; the header is the first row's keys."""
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)

    def write(fh):
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)
    _write_atomic(path, write, newline="")


def _json_default(obj):
    """What :func:`_json_plain` leaves for json.dumps to ask about (numpy values are already plain)."""
    if isinstance(obj, Path):
        return str(obj)
    raise DataError(f"cannot write a {type(obj).__name__} as JSON; expected numbers, text, lists, dicts, numpy "
                    "arrays or a result object with to_dict()")


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


def _empty_folder(path: Path) -> None:
    """Remove everything inside ``path``, keeping the folder."""
    for item in path.iterdir():
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


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


def check_pt_output(output: Path) -> None:
    """DumpError when a ``.pt`` output path is an existing folder (checked before any work is done)."""
    if output.is_dir():
        raise DumpError(f"output {output} is a directory; expected the path of a .pt file (choose another "
                        "--output, or drop the .pt suffix to write a Dump folder)")


def save_seed_pt(dump: Dump, path: str | os.PathLike, overwrite: bool = False) -> Dump:
    """Write the seed tool's format ``{'logits': FloatTensor[N, K], 'labels': LongTensor[N]}`` atomically."""
    import torch

    path = Path(path)
    check_pt_output(path)
    if path.exists() and not overwrite:
        raise DumpError(f"output {path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"logits": torch.from_numpy(np.array(dump.logits, dtype=np.float32)),  # copies: memmaps are read-only
               "labels": torch.from_numpy(np.array(dump.labels, dtype=np.int64))}
    fd, tmp = temp_file(path)
    os.close(fd)
    try:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:      # torch's zip writer reports a short write (full disk) as a RuntimeError
            need = sum(t.numel() * t.element_size() for t in payload.values())
            full = shutil.disk_usage(path.parent).free < need + (1 << 20)
            why = "disk full; free space and re-run" if full else f"the write failed ({str(exc).strip()[:160]})"
            raise DumpError(f"cannot write {path}: {why}") from None
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return load_dump(path)


def is_complete_run(path: str | os.PathLike, fingerprint, num_samples: int) -> bool:
    """True when ``path`` holds a complete Dump of the run ``fingerprint`` with ``num_samples`` rows."""
    meta = _read_meta(Path(path))
    return _same_run(meta, fingerprint, num_samples) and bool(meta.get("complete"))


def _same_run(meta: dict | None, fingerprint, num_samples: int) -> bool:
    """Whether the Dump meta ``meta`` is of the run ``fingerprint`` with ``num_samples`` rows."""
    return (meta is not None and meta.get("format") == FORMAT and fingerprint is not None
            and meta.get("fingerprint") == fingerprint and meta.get("num_samples") == num_samples)


# --- reading -------------------------------------------------------------------------------------
def load_dump(path: str | os.PathLike, name: str | None = None, allow_incomplete: bool = False) -> Dump:
    """Open a Dump directory (memory-mapped) or a seed ``.pt`` file.

    Raises :class:`DumpError` with one line when the path is missing, incomplete or malformed.
    """
    path = as_path(path, "Dump (a Dump directory or a .pt file)")
    if not path.exists():
        raise DumpError(f"no such dump: {path} (expected a Dump directory or a .pt file)")
    if path.is_file():
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


def _load_seed_pt(path: Path, name: str | None) -> Dump:
    import torch

    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DumpError(f"cannot read {path} ({exc.strerror or exc}); expected a readable seed .pt file") from None
    if head == b"\x93NUMPY":
        raise DumpError(f"cannot read {path} as a Dump: it is a .npy array; expected a Dump directory (the "
                        "folder holding meta.json) or a seed .pt file")
    if not head.startswith((b"PK\x03\x04", b"\x80")):   # torch.save writes a zip (a pickle before torch 1.6)
        raise DumpError(f"cannot read {path} as a logits file: it is not a torch file (it starts with {head!r}); "
                        "expected a Dump directory or torch.save({'logits': [N, K], 'labels': [N]})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        if "Weights only load failed" in str(exc):
            why = ("it holds pickled Python objects besides tensors, and unpickling can run code, so it is not "
                   "read")
        elif head.startswith(b"PK") and not zipfile.is_zipfile(path):
            why = "the file is truncated or damaged (not a complete zip archive)"
        else:
            why = (str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:200]
        raise DumpError(f"cannot read {path} as a logits file: {why}; expected torch.save("
                        "{'logits': FloatTensor[N, K], 'labels': LongTensor[N]})") from None
    if not isinstance(obj, dict) or "logits" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DumpError(f"{path} has no 'logits' entry (found {keys}); expected "
                        "{'logits': FloatTensor[N, K], 'labels': LongTensor[N]}")
    if "labels" not in obj:
        raise DumpError(f"{path} has no 'labels' entry; expected {{'logits': [N, K], 'labels': [N]}}")
    logits, labels = obj["logits"], obj["labels"]
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise DumpError(f"{path}: 'logits' must be a 2-D tensor [N, K], got "
                        f"{getattr(logits, 'shape', type(logits).__name__)}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(logits):
        raise DumpError(f"{path}: 'labels' must be a 1-D tensor of length {len(logits)} matching logits, "
                        f"got {tuple(getattr(labels, 'shape', ()))}")
    if labels.is_complex():
        raise DumpError(f"{path}: 'labels' has dtype {labels.dtype}; expected integer class indices")
    raw_labels = labels.double().numpy() if labels.is_floating_point() else labels.long().numpy()
    arrays = {"logits": logits, "labels": integral_labels(raw_labels, path)}
    for key in ("features", "classifier_weight", "classifier_bias"):
        if isinstance(obj.get(key), torch.Tensor):
            arrays[key] = obj[key]
    complex_key = next((k for k, v in arrays.items() if k != "labels" and v.is_complex()), None)
    if complex_key is not None:
        raise DumpError(f"{path}: {complex_key!r} has dtype {arrays[complex_key].dtype}; expected real numbers")
    arrays = {k: (v if k == "labels" else v.detach().float().numpy()) for k, v in arrays.items()}
    _check_shapes(arrays, str(path))
    meta = {"format": "seed-pt", "source": str(path), "complete": True, "num_classes": int(logits.shape[1])}
    return Dump(arrays, meta, path=path, name=name or path.stem)


# --- incremental writing -------------------------------------------------------------------------
class DumpWriter:
    """Create or resume a Dump directory and fill its arrays in place.

    ``specs`` maps array name -> (row shape, dtype); every such array has N rows. ``meta`` holds
    provenance; ``meta['fingerprint']`` (any JSON value) identifies the run: re-opening a directory
    whose incomplete Dump has the same fingerprint resumes it at ``writer.done``; a different or
    complete one is refused unless ``overwrite`` (an incomplete Dump with no rows done holds nothing and is
    replaced). With ``overwrite`` the new Dump is built in the sibling staging folder
    ``<path>.overwrite.partial`` and swapped in by :meth:`finalize`, so the existing Dump stays intact until
    the new one is complete; an interrupted overwrite resumes there when re-run. Only a Dump of ours (or a
    damaged one: nothing but a Dump's file names) is ever replaced or emptied: a folder holding other files is
    refused, with ``overwrite`` too. ``for_file``: the ``.pt`` this Dump is the unfinished extraction of;
    messages name that file, and ``overwrite`` replaces this Dump in place (the file itself is replaced only
    once written). ``static_arrays`` (e.g. classifier weights) are written once at creation. ``path`` is where
    rows are being written, ``target`` where the complete Dump will be.
    """

    def __init__(self, path: str | os.PathLike, num_samples: int, specs: Mapping[str, tuple],
                 meta: dict, overwrite: bool = False, static_arrays: Mapping[str, np.ndarray] | None = None,
                 sample_names: Sequence[str] | None = None, for_file: str | os.PathLike | None = None):
        path = Path(path)
        self.path = self.target = path if path.name else path.resolve()     # "." and the like: a named folder
        self.num_samples = int(num_samples)
        self.specs = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in specs.items()}
        self.for_file = Path(for_file) if for_file is not None else None
        self._names = {*self.specs, *(static_arrays or {})}
        self.done = 0
        self.fresh = False  # True when this writer laid the Dump out (rather than resuming one)
        _recover_swap(self.target)
        if self.path.exists() and self.path.is_file():
            raise DumpError(f"output {self.path} exists and is a file; expected a Dump directory path")
        if self.path.is_dir() and any(not _os_file(p) for p in self.path.iterdir()) and self._take_existing(
                meta, overwrite):
            return          # resumed
        # The Dump is laid out in a hidden folder inside the output, its files moved up when all are made,
        # meta.json last: a run killed while laying out leaves no meta.json (readers see no Dump) and that
        # folder, by which the next run knows the output holds nothing but an unfinished layout of ours.
        created = not self.path.exists()
        self._created_dir = created
        self.path.mkdir(parents=True, exist_ok=True)
        work = self.path / LAYOUT_DIR
        try:
            work.mkdir()
            self._check_space(static_arrays)
            self.meta = {"format": FORMAT, "version": VERSION, **meta, "num_samples": self.num_samples,
                         "complete": False, "progress": {"done": 0},
                         "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "arrays": {k: {"shape": [self.num_samples, *shape], "dtype": dt.name}
                                    for k, (shape, dt) in self.specs.items()}}
            from repanalysis import __version__

            self.meta.setdefault("tool_version", __version__)
            if static_arrays:
                for key, value in static_arrays.items():
                    np.save(work / f"{key}.npy", np.asarray(value))
            if sample_names is not None:
                bad = next((s for s in sample_names if "\n" in str(s) or "\r" in str(s)), None)
                if bad is not None:
                    raise DumpError(f"sample name {str(bad)!r} contains a line break, which samples.txt (one name "
                                    "per line) cannot hold; expected file names without line breaks (rename it)")
                text = "".join(f"{s}\n" for s in sample_names)
                # UTF-8 whatever the locale; file names that are not UTF-8 (surrogate escapes) round-trip
                (work / "samples.txt").write_text(text, encoding="utf-8", errors="surrogateescape")
            self._arrays = {}
            for key, (shape, dt) in self.specs.items():
                file = work / f"{key}.npy"
                arr = np.lib.format.open_memmap(file, mode="w+", dtype=dt, shape=(self.num_samples, *shape))
                self._arrays[key] = arr
                _reserve(file)
            write_json_atomic(work / "meta.json", self.meta, in_set=False)
            for item in sorted(work.iterdir(), key=lambda f: f.name == "meta.json"):   # meta.json last
                os.replace(item, self.path / item.name)                               # memory maps follow
            work.rmdir()
            self.fresh = True
        except BaseException:
            # a full disk or an interrupt while laying out a new Dump leaves nothing half-made behind
            self._arrays = {}
            if created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                _empty_folder(self.path)              # the folder was empty before: all of this is ours
            raise

    def _take_existing(self, meta: dict, overwrite: bool) -> bool:
        """Deal with the non-empty folder at ``self.path``: resume the incomplete Dump of this run there (True),
        or clear the way for a new Dump (False): a layout of ours killed before it finished is emptied, an empty
        Dump removed, and with ``overwrite`` another Dump of ours is replaced (built beside it, or in place for a
        ``for_file`` run). Anything else raises DumpError; files that are not a Dump's are never deleted."""
        fingerprint = meta.get("fingerprint")
        existing = _read_meta(self.path)
        same_run = _same_run(existing, fingerprint, self.num_samples)
        empty = _holds_no_rows(existing)     # laid out (or being laid out when killed), no row written
        if same_run and not existing.get("complete") and not empty and (not overwrite or self.for_file):
            self._resume(existing)
            return True
        _refuse_foreign(self.path, existing, self._names, self._shown())
        if existing is None and (self.path / LAYOUT_DIR).is_dir() and not (self.path / "meta.json").exists():
            _empty_folder(self.path)        # a layout killed before it finished: all of it is ours
            return False
        if not overwrite and not empty:
            raise DumpError(self._exists_message(existing, meta, same_run))
        if empty or self.for_file is not None:
            shutil.rmtree(self.path)   # nothing to keep: no row done, or the unfinished extraction of a file
            return False
        # keep the existing Dump until the new one is complete (finalize swaps them)
        self.path = staging_path(self.target)
        if self.path.is_file():
            raise DumpError(f"cannot replace {self.target}: {self.path} is a file, not a Dump's staging folder; "
                            "expected it absent (move it away)")
        if self.path.is_dir():
            staged = _read_meta(self.path)
            if _same_run(staged, fingerprint, self.num_samples) and not staged.get("complete"):
                self._resume(staged)
                return True
            _refuse_foreign(self.path, staged, self._names, str(self.path))
            shutil.rmtree(self.path)
        return False

    def _shown(self) -> str:
        """How messages name the output: the user's ``.pt`` file for a ``for_file`` run, else the folder."""
        return str(self.for_file if self.for_file is not None else self.path)

    def _exists_message(self, existing: dict | None, meta: dict, same_run: bool) -> str:
        """The one line refusing to replace the Dump of ours at ``self.path`` without ``overwrite``."""
        ours = existing is not None
        what = ("a complete Dump of this same run" if same_run else
                _different_run(existing, meta) if ours else
                "a damaged Dump: its meta.json is missing or unreadable")
        if ours and not same_run and not existing.get("complete") and _scheme(existing) < _scheme(meta):
            what = ("an incomplete Dump of a different run, or of this run made by an earlier repanalysis "
                    "whose run identity did not cover the images' content, so it cannot be resumed")
        if self.for_file is not None:
            return (f"output {self.for_file} has an unfinished extraction that cannot be resumed ({what}); "
                    "pass --overwrite to start it again")
        return f"output {self.path} already exists ({what}); pass --overwrite to replace it"

    def _resume(self, existing: dict) -> None:
        self.meta = existing
        self.done = int((existing.get("progress") or {}).get("done", 0))
        self._arrays = {k: np.load(self.path / f"{k}.npy", mmap_mode="r+") for k in self.specs}

    def discard(self) -> None:
        """Remove a Dump this writer laid out when it holds no finished rows (a run that failed at once):
        nothing half-written stays behind, and an existing Dump being overwritten is left as it was."""
        if not self.fresh or self.done > 0 or not self.path.exists():
            return
        self._arrays = {}
        if self.path != self.target or self._created_dir:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            _empty_folder(self.path)             # the folder was empty before: all of this is ours

    def _check_space(self, static_arrays) -> None:
        need = sum(self.num_samples * int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                   for shape, dt in self.specs.values())
        need += sum(np.asarray(v).nbytes for v in (static_arrays or {}).values())
        free = shutil.disk_usage(self.path).free
        if need > free:
            raise DumpError(f"not enough disk space for the Dump at {self.path}: it needs "
                            f"{need / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free")

    def write(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows ``start:start+len`` of each array (no commit: call :meth:`commit` after)."""
        for key, value in arrays.items():
            value = np.asarray(value)
            self._arrays[key][start:start + len(value)] = value

    def commit(self, done: int) -> None:
        """Flush the arrays, then record that the first ``done`` rows are final."""
        for arr in self._arrays.values():
            arr.flush()
        self.done = int(done)
        self.meta["progress"] = {"done": self.done}
        write_json_atomic(self.path / "meta.json", self.meta, in_set=False)

    def finalize(self, extra_meta: Mapping | None = None) -> None:
        """Flush everything and mark the Dump complete (the only place ``complete`` becomes true)."""
        for arr in self._arrays.values():
            arr.flush()
        self.meta.update(extra_meta or {})
        self.meta["progress"] = {"done": self.num_samples}
        self.meta["complete"] = True
        self.meta["completed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(self.path / "meta.json", self.meta, in_set=False)
        self.done = self.num_samples
        if self.path != self.target:  # an overwrite built in staging: swap it in only now it is complete
            old = _replaced_path(self.target)
            if old.exists():
                shutil.rmtree(old)
            if self.target.exists():
                os.replace(self.target, old)
            os.replace(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
            self.path = self.target


LAYOUT_DIR = ".layout.partial"    # inside a Dump folder while its files are being made


def _scheme(meta: dict) -> int:
    """The run-fingerprint scheme a Dump's meta records (1: none recorded, before the images' content counted)."""
    value = meta.get("fingerprint_scheme")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


_TMP_META = re.compile(r"^\.meta\.json\..+\.tmp$")     # write_json_atomic's temporary file
# what each run differs in, by meta field: (field, key inside it or None, how a message names it)
_RUN_FIELDS = (("checkpoint", "sha256", "checkpoint"), ("dataset", None, "data"), ("split", None, "split"),
               ("transform", None, "transform"), ("precision", None, "precision"),
               ("feature_layer", None, "feature layer"), ("arch", None, "architecture"))


_OS_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}   # what file browsers leave in any folder (and "._*")


def _os_file(p: Path) -> bool:
    """A file a file browser leaves in any folder (Finder's .DS_Store and AppleDouble ._x, Windows' Thumbs.db)."""
    return (p.name in _OS_FILES or p.name.startswith("._")) and p.is_file() and not p.is_symlink()


def _foreign_entries(folder: Path, names=()) -> list[str]:
    """Sorted names in ``folder`` that no Dump of ours makes (``names``: array names beyond ARRAY_NAMES)."""
    ours = {f"{k}.npy" for k in (*ARRAY_NAMES, *names)} | {"meta.json", "samples.txt", LAYOUT_DIR}
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in ours and not _TMP_META.match(p.name) and not _os_file(p))


def _refuse_foreign(folder: Path, meta: dict | None, names, shown: str) -> None:
    """DumpError unless everything in ``folder`` is a Dump's: a meta.json of ours (or none readable, a damaged
    Dump) and only the files a Dump holds. Such a folder is never emptied or replaced, --overwrite or not."""
    foreign = _foreign_entries(folder, names)
    if meta is not None and meta.get("format") != FORMAT:
        foreign.insert(0, "meta.json of another tool")
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        where = shown if shown == str(folder) else f"{shown} ({folder})"
        raise DumpError(f"output {where} holds files that are not a Dump's ({listed}); expected a Dump or an empty "
                        "folder: choose another --output or empty it")


def _different_run(existing: dict, meta: dict) -> str:
    """'a Dump of a different run', naming what differs (checkpoint, data, ...) when the metas say."""
    def value(m, field, key):          # as JSON text: a tuple in ``meta`` equals the list meta.json reads back
        v = m.get(field)
        v = (v.get(key) if isinstance(v, dict) else None) if key is not None else v
        return None if v is None else json.dumps(v, sort_keys=True, default=str)

    differs = [label for field, key, label in _RUN_FIELDS
               if None not in (value(existing, field, key), value(meta, field, key))
               and value(existing, field, key) != value(meta, field, key)]
    return "a Dump of a different run" + (f": other {', '.join(differs)}" if differs else "")


def staging_path(path: str | os.PathLike) -> Path:
    """Sibling folder where ``DumpWriter(overwrite=True)`` builds the Dump that replaces ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".overwrite.partial")


def _replaced_path(path: Path) -> Path:
    """Where the Dump being replaced waits, for the instant of the swap, before it is removed."""
    return path.with_name(f".{path.name}.replaced")


def _recover_swap(target: Path) -> None:
    """Finish or undo a swap that was interrupted between its two renames."""
    old = _replaced_path(target)
    if not old.is_dir():
        return
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)  # the new Dump is in place: only the clean-up was left
    else:
        os.replace(old, target)  # the old Dump was moved aside but the new one never moved in: put it back


def _holds_no_rows(meta: dict | None) -> bool:
    """True for the meta of an incomplete Dump with 0 rows done (a run that failed before its first row)."""
    if meta is None or meta.get("format") != FORMAT or meta.get("complete"):
        return False
    progress = meta.get("progress")
    try:
        return int((progress or {}).get("done", 0)) == 0 if isinstance(progress, (dict, type(None))) else False
    except (TypeError, ValueError):
        return False


def _read_meta(path: Path) -> dict | None:
    """The meta.json object of a Dump directory, or None when it is missing, unreadable or not an object."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _reserve(file: Path) -> None:
    """Allocate the file's blocks now: a full disk then fails here with ENOSPC instead of a SIGBUS later."""
    if not hasattr(os, "posix_fallocate"):
        return
    size = file.stat().st_size
    fd = os.open(file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise DumpError(f"disk full while reserving {size / 2**20:.1f} MiB for {file}") from None
    finally:
        os.close(fd)

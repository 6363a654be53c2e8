"""Class separation of penultimate features: d_within, d_total and R^2 (Kornblith et al. 2021; MaxSup Table 2).

Definitions (REFERENCE.md "Feature geometry"): cosine distance 1 - cos(a, b); features are NOT centred;
averages run over all ordered pairs, self-pairs included, each class weighted 1/K and each class pair 1/K^2.
They are computed by the exact O(N*D) closed form (no pairwise matrix): with u = h / ||h|| and c_k the mean
of u over class k, d_within = 1 - mean_k ||c_k||^2 and d_total = 1 - ||mean_k c_k||^2.

Data is streamed in chunks into float64 accumulators (per-class sums of unit vectors), so a Dump of
1.28M x 2048 float16 features is processed in bounded memory.

Edge cases, all reported once per call:
- a class with a single sample: its d_within term is 0 by definition (only the self-pair, distance 0);
  it is kept, with a warning.
- features with zero norm (or NaN/inf): the cosine is undefined; those rows are excluded, with a warning.
- classes of the model with no sample: they are left out of the class averages (K counts present classes).
- sparse label values (e.g. 0, 1 and 10**9): only the values present get an accumulator row, so the result is
  that of the compacted labels, with the original values in ``classes``.
- fewer than two classes present: DataError.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from repanalysis.arrays import as_labels, check_number, pick_device
from repanalysis.errors import DataError

DEFAULT_CHUNK = 8192


def check_chunk_size(chunk_size) -> int:
    """``chunk_size`` (rows per chunk) as an int; DataError unless it is an integer >= 1 (numpy ones included)."""
    return check_number(chunk_size, "chunk_size (rows per chunk)", integer=True, minimum=1)


def add_classes(values: torch.Tensor, labels: torch.Tensor, *rows: torch.Tensor):
    """Compact class bookkeeping for streamed per-class sums.

    values: sorted label values that own a row of each tensor in ``rows``. Label values of ``labels`` not yet
    in ``values`` get new zero rows (kept in increasing order). Returns ``(values, rows, index)`` with index[i]
    the row of labels[i], so memory grows with the classes present, not with the largest label value.
    """
    new = torch.unique(labels)
    missing = new[~torch.isin(new, values)]
    if missing.numel():
        merged = torch.cat([values, missing]).sort().values
        at = torch.searchsorted(merged, values)
        rows = tuple(r.new_zeros((merged.shape[0], *r.shape[1:])).index_copy_(0, at, r) for r in rows)
        values = merged
    return values, rows, torch.searchsorted(values, labels)


def r2_from_distances(d_within, d_total):
    """R^2 ("inter-class separability") from the two mean distances; works on floats and arrays."""
    # Kornblith et al. 2021, Sec. 3.2 / MaxSup Table 2: R^2 = 1 - d_within / d_total
    return 1.0 - d_within / d_total


@dataclass
class SeparationResult:
    """Class separation of one feature set.

    d_within, d_total, r2: floats (REFERENCE.md definitions).
    per_class_d_within: (C,) mean cosine distance inside each present class (ordered pairs, self-pairs in).
    classes: (C,) class indices present, in increasing order; counts: (C,) samples per present class.
    n_samples: rows used; n_excluded: rows dropped for zero norm or non-finite values.
    single_sample_classes: class indices with one sample (their d_within term is 0 by definition).
    """

    d_within: float
    d_total: float
    r2: float
    per_class_d_within: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    n_samples: int
    n_excluded: int = 0
    single_sample_classes: list[int] = field(default_factory=list)
    name: str | None = None
    split: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("per_class_d_within", "classes", "counts"):
            out[key] = np.asarray(out[key]).tolist()
        return out

    def to_frame(self):
        """Tidy pandas DataFrame, one row per metric (d_within, d_total, r2): columns model, split (None when
        unknown), metric, value, n (samples used)."""
        from repanalysis.frames import tidy_frame

        return tidy_frame(self.name, {"d_within": self.d_within, "d_total": self.d_total, "r2": self.r2},
                          n=self.n_samples, split=self.split)


class SeparationAccumulator:
    """Streaming closed form: ``update(features_chunk, labels_chunk)`` any number of times, then ``compute()``.

    Keeps, in float64, the per-class sum of unit feature vectors (C, D) and the per-class counts (C,), one row
    per label value seen (``values``, increasing; all K classes when ``num_classes`` is given). These are sums,
    so accumulators of parts of the data (shards) combine: :meth:`merge`, :meth:`state` / :meth:`from_state`.
    """

    def __init__(self, num_classes: int | None = None, device: str | torch.device | None = None):
        self.num_classes = (None if num_classes is None else
                            check_number(num_classes, "num_classes", integer=True, minimum=1))
        self.device = pick_device(device) if device is not None else torch.device("cpu")
        self.values: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.n_excluded = 0
        self.n_nonfinite = 0
        self._buf: torch.Tensor | None = None

    def update(self, features, labels) -> None:
        """Add a chunk: features (n, D) float (any precision), labels (n,) integer class indices."""
        h = _read_only_tensor(features).to(self.device)
        if h.ndim != 2:
            raise DataError(f"features must be 2-D [N, D]; got shape {tuple(h.shape)}")
        if np.ndim(labels) != 1 or len(labels) != h.shape[0]:
            raise DataError(f"labels must be 1-D with one entry per feature row ({h.shape[0]}); "
                            f"got shape {tuple(np.shape(labels))}")
        y = as_labels(labels, h.shape[0], num_classes=self.num_classes, device=self.device)
        if h.shape[0] == 0:
            return
        if self.sums is None:
            k = self.num_classes or 0  # known K: one row per class up front; else rows for the values present
            self.values = torch.arange(k, device=self.device)
            self.sums = torch.zeros(k, h.shape[1], dtype=torch.float64, device=self.device)
            self.counts = torch.zeros(k, dtype=torch.int64, device=self.device)
        if h.shape[1] != self.sums.shape[1]:
            raise DataError(f"feature width changed between chunks: {self.sums.shape[1]} then {h.shape[1]}")
        # one float64 work buffer, reused across chunks (fresh large allocations cost more than the arithmetic)
        n, d = h.shape
        if self._buf is None or self._buf.shape[0] < n or self._buf.shape[1] != d:
            self._buf = torch.empty(n, d, dtype=torch.float64, device=self.device)
        u = self._buf[:n].copy_(h)
        norms = torch.linalg.vector_norm(u, dim=1)
        finite = torch.isfinite(norms)
        keep = finite & (norms > 0)
        n_drop = int((~keep).sum())
        if n_drop:
            self.n_excluded += n_drop
            self.n_nonfinite += int((~finite).sum())
            u, norms, y = u[keep], norms[keep], y[keep]
        u.mul_(norms.reciprocal_()[:, None])  # unit vectors
        self.values, (self.sums, self.counts), row = add_classes(self.values, y, self.sums, self.counts)
        self.sums.index_add_(0, row, u)
        self.counts += torch.bincount(row, minlength=self.sums.shape[0])

    def merge(self, other: "SeparationAccumulator") -> "SeparationAccumulator":
        """Add the sums of ``other`` (another part of the same data, e.g. one shard of an extraction) into this
        accumulator, in place, and return it: the result then equals one accumulator updated with both parts'
        rows (the sums are float64 sums, so up to their rounding). Label values either has get a row."""
        self.n_excluded += int(other.n_excluded)
        self.n_nonfinite += int(other.n_nonfinite)
        if other.sums is None:
            return self
        sums, counts = other.sums.to(self.device), other.counts.to(self.device)
        values = other.values.to(self.device)
        if self.sums is None:
            self.values, self.sums, self.counts = values.clone(), sums.clone(), counts.clone()
            return self
        if sums.shape[1] != self.sums.shape[1]:
            raise DataError(f"cannot merge separation sums of features of width {sums.shape[1]} into width "
                            f"{self.sums.shape[1]}; expected parts of one feature set")
        self.values, (self.sums, self.counts), row = add_classes(self.values, values, self.sums, self.counts)
        self.sums.index_add_(0, row, sums)
        self.counts.index_add_(0, row, counts)
        return self

    def state(self) -> dict:
        """The accumulator's sufficient statistics as numpy: ``values`` (C,) int64 label values, ``sums`` (C, D)
        float64 sums of unit vectors, ``counts`` (C,) int64, ``n_excluded`` and ``n_nonfinite`` (ints) and
        ``num_classes`` (int or None). ``values`` and ``sums`` are (0,) and (0, 0) before any row was added."""
        empty = self.sums is None
        return {"values": np.zeros(0, np.int64) if empty else self.values.cpu().numpy().astype(np.int64),
                "sums": np.zeros((0, 0)) if empty else self.sums.cpu().numpy(),
                "counts": np.zeros(0, np.int64) if empty else self.counts.cpu().numpy().astype(np.int64),
                "n_excluded": int(self.n_excluded), "n_nonfinite": int(self.n_nonfinite),
                "num_classes": self.num_classes}

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device | None = None) -> "SeparationAccumulator":
        """An accumulator holding ``state`` (from :meth:`state`), ready to :meth:`merge`, update or compute."""
        acc = cls(num_classes=state.get("num_classes"), device=device)
        values, sums, counts = (np.asarray(state[k]) for k in ("values", "sums", "counts"))
        if sums.ndim != 2 or values.shape != counts.shape or values.shape[0] != sums.shape[0]:
            raise DataError(f"separation state has values {values.shape}, sums {sums.shape} and counts "
                            f"{counts.shape}; expected (C,), (C, D) and (C,)")
        if not (values.size == 0 and sums.size == 0):
            acc.values = torch.as_tensor(values.astype(np.int64), device=acc.device)
            acc.sums = torch.as_tensor(sums.astype(np.float64), device=acc.device)
            acc.counts = torch.as_tensor(counts.astype(np.int64), device=acc.device)
        acc.n_excluded, acc.n_nonfinite = int(state["n_excluded"]), int(state["n_nonfinite"])
        return acc

    def compute(self, name: str | None = None, split: str | None = None) -> SeparationResult:
        if self.sums is None or int(self.counts.sum()) == 0:
            raise DataError("no usable feature rows (all empty, zero-norm or non-finite); "
                            "expected features with non-zero norm")
        if self.n_excluded:
            what = "zero norm" if self.n_nonfinite == 0 else "zero norm or NaN/inf values"
            warnings.warn(f"{self.n_excluded} feature rows with {what} have no cosine; they are excluded "
                          f"from d_within/d_total", RuntimeWarning, stacklevel=3)
        rows = torch.nonzero(self.counts > 0).flatten()
        if rows.numel() < 2:
            raise DataError(f"class separation needs at least 2 classes with samples; found {rows.numel()}")
        classes, counts = self.values[rows], self.counts[rows]
        per_class, d_within, d_total = distances_from_sums(self.sums[rows], counts.to(torch.float64))
        d_within, d_total = float(d_within), float(d_total)
        single = classes[counts == 1].tolist()
        if single:
            shown = ", ".join(str(s) for s in single[:10]) + (" ..." if len(single) > 10 else "")
            warnings.warn(f"{len(single)} class(es) have a single sample ({shown}): their d_within term is 0 "
                          f"by definition (only the self-pair); they are kept", RuntimeWarning, stacklevel=3)
        if d_total > _D_TOTAL_FLOOR:
            r2 = r2_from_distances(d_within, d_total)
        else:                  # every feature points the same way (up to rounding): nothing to separate
            r2 = float("nan")
            warnings.warn(f"{name + ': ' if name else ''}the features of all classes point the same way (d_total = "
                          f"{d_total:.1e}): R^2 = 1 - d_within / d_total is undefined and reported as NaN",
                          RuntimeWarning, stacklevel=3)
        return SeparationResult(d_within=d_within, d_total=d_total, r2=float(r2),
                                per_class_d_within=per_class.cpu().numpy(), classes=classes.cpu().numpy(),
                                counts=counts.cpu().numpy(), n_samples=int(counts.sum()),
                                n_excluded=self.n_excluded, single_sample_classes=single, name=name, split=split)


def distances_from_sums(sums: torch.Tensor, counts: torch.Tensor):
    """The closed form from per-class sums of unit vectors: ``(per_class_d_within, d_within, d_total)``.

    sums: (..., C, D) float64 sum of u = h / ||h|| over each class; counts: (..., C) float64 samples per class,
    or total multiplicities (a bootstrap replicate). Leading dimensions are batch dimensions (one per
    replicate). A class whose count is 0 is left out of the class averages (K counts the classes present) and
    its per-class value is NaN.
    """
    present = counts > 0
    k = present.sum(dim=-1).to(sums.dtype)
    c = torch.where(present[..., None], sums / counts.clamp_min(1e-300)[..., None], 0.0)  # class means of u
    # Kornblith et al. 2021 closed form: per-class mean pairwise cosine distance = 1 - ||c_k||^2
    per_class = torch.where(present, 1.0 - (c * c).sum(dim=-1), torch.nan)
    d_within = torch.where(present, per_class, 0.0).sum(dim=-1) / k
    c_bar = c.sum(dim=-2) / k[..., None]
    # Kornblith et al. 2021 closed form: d_total = 1 - ||mean_k c_k||^2 (every class pair weighted 1/K^2)
    return per_class, d_within, 1.0 - (c_bar * c_bar).sum(dim=-1)


_D_TOTAL_FLOOR = 1e-12      # d_total at or below this is rounding noise of identical directions (R^2 undefined)


def _read_only_tensor(x) -> torch.Tensor:
    """A tensor view of numpy data (memmap rows included) that is only read, never written."""
    if isinstance(x, torch.Tensor):
        return x
    arr = np.ascontiguousarray(np.asarray(x))
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():  # torch warns that a read-only array could be written through the tensor;
        warnings.simplefilter("ignore", UserWarning)  # this tensor is only read
        return torch.from_numpy(arr)


def iter_feature_chunks(source, labels=None, chunk_size: int = DEFAULT_CHUNK
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (features, labels) chunks from a Dump (via ``Dump.iter_chunks``) or from two arrays.

    Memory-mapped inputs are released page by page as the scan moves on, so memory stays bounded.
    """
    from repanalysis.dump import Dump, release_pages

    chunk_size = check_chunk_size(chunk_size)

    if isinstance(source, Dump):
        if source.features is None:
            source.array("features")  # raises DumpError with the hint to re-extract
        for _, chunk in source.iter_chunks(("features", "labels"), chunk_size=chunk_size):  # releases pages
            yield chunk["features"], chunk["labels"]
        return
    if labels is None:
        raise DataError("labels are required with a features array; expected class_separation(features, labels)")
    if isinstance(source, torch.Tensor) or isinstance(labels, torch.Tensor):
        n = len(source)
        if len(labels) != n:
            raise DataError(f"labels must have one entry per feature row ({n}); got {len(labels)}")
        for start in range(0, n, chunk_size):
            yield source[start:start + chunk_size], labels[start:start + chunk_size]
        return
    feats = source if isinstance(source, np.ndarray) else np.asarray(source)
    labs = np.asarray(labels)
    if feats.ndim != 2:
        raise DataError(f"features must be 2-D [N, D]; got shape {feats.shape}")
    if labs.ndim != 1 or len(labs) != len(feats):
        raise DataError(f"labels must be 1-D with one entry per feature row ({len(feats)}); got shape {labs.shape}")
    yield from release_pages(((feats[start:start + chunk_size], labs[start:start + chunk_size])
                              for start in range(0, len(feats), chunk_size)), [feats])


def class_separation(features, labels=None, *, num_classes: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                     device: str | torch.device | None = None, name: str | None = None,
                     split: str | None = None) -> SeparationResult:
    """d_within, d_total, R^2 and per-class d_within of penultimate features, by the exact closed form.

    features: (N, D) array/tensor/memmap of any float dtype, or a Dump (then ``labels`` is taken from it).
    labels: (N,) integer class indices (floats only with integral values); sparse values are compacted (only the
    classes present count). num_classes: K of the model (optional; checks the label range). device: None (CPU),
    "auto", "cpu", "cuda" or "cuda:N". Returns a :class:`SeparationResult`. Streams in chunks of ``chunk_size``
    rows (a positive integer; float64 accumulators).

    Example::

        >>> h = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 2.]]); y = np.array([0, 0, 1, 1])
        >>> r = class_separation(h, y); (r.d_within, r.d_total, r.r2)
        (0.0, 0.5, 1.0)
    """
    from repanalysis.dump import Dump

    if isinstance(features, Dump):
        num_classes = num_classes or features.num_classes
        name = name or features.name
        split = split or split_of(features)
    acc = SeparationAccumulator(num_classes=num_classes, device=device)   # iter_feature_chunks checks chunk_size
    for h, y in iter_feature_chunks(features, labels, chunk_size=chunk_size):
        acc.update(h, y)
    return acc.compute(name=name, split=split)


def split_of(dump) -> str | None:
    """"train" / "val" / "test" of a Dump: its meta's split, else a split word in its data set or folder name."""
    import re

    split = dump.meta.get("split") or (dump.meta.get("dataset") or {}).get("split")
    if split:
        return str(split)
    for text in ((dump.meta.get("dataset") or {}).get("root"), dump.path):
        if text:
            words = re.split(r"[^a-z]+", str(text).rsplit("/", 1)[-1].lower())
            for word, split in (("train", "train"), ("val", "val"), ("validation", "val"), ("test", "test")):
                if word in words:
                    return split
    return None


def common_split(dumps) -> str | None:
    """The split every Dump of ``dumps`` is of (:func:`split_of`), to name in a figure's title; None when any
    Dump's split is unknown or they differ (a title then names no split rather than the first Dump's)."""
    splits = {split_of(d) for d in dumps}
    return splits.pop() if len(splits) == 1 else None


def separation_models(results: Iterable[SeparationResult]) -> list[str]:
    """The model each result is shown under, in the table and in the figure alike: its ``name`` ("model" when
    None); a second result of the same name and split is another model, "<name> (2)", then "<name> (3)", ..."""
    seen: dict[str, set] = {}
    out = []
    for r in results:
        split = r.split or None
        key, copy = r.name or "model", 1
        while split in seen.get(key, ()):          # same model and split twice: a model of its own
            copy += 1
            key = f"{r.name or 'model'} ({copy})"
        seen.setdefault(key, set()).add(split)
        out.append(key)
    return out


def separation_table(results: Iterable[SeparationResult]) -> list[dict]:
    """Rows like MaxSup Table 2: one per model, train and val columns side by side when both are given.

    Results with the same ``name`` are merged; ``split`` ("train", "val", "test") picks the column suffix;
    columns run train, val, test; the same name and split twice makes a new row (:func:`separation_models`).
    """
    results = list(results)
    rows: dict[str, dict] = {}
    for r, key in zip(results, separation_models(results)):
        suffix = f" {r.split}" if r.split else ""
        row = rows.setdefault(key, {"model": key})
        row[f"d_within{suffix}"] = r.d_within
        row[f"d_total{suffix}"] = r.d_total
        row[f"R^2{suffix}"] = r.r2
    out = list(rows.values())
    keys = []
    for row in out:
        keys += [k for k in row if k not in keys]
    rank = {"train": 0, "val": 1, "test": 2}
    order = ["model"] + [k for prefix in ("d_within", "d_total", "R^2")
                         for k in sorted((k for k in keys if k.startswith(prefix)),
                                         key=lambda k: rank.get(k[len(prefix):].strip(), 3))]
    return [{k: row.get(k) for k in order} for row in out]

"""Logit statistics of the MaxSup paper (Fig. 2/3): near-zero logits, confidence, the LS error-enhancement split.

Per sample (all kept in the Result so that figures reuse them):

- ``near_zero_fraction``: share of the K logits with ``|z_k| < threshold`` (strict);
- ``top1_prob``: max softmax probability; ``logit_range``: max - min; ``logit_norm``: L2 norm;
- ``ls_loss``: the LS term written on logits, alpha * (z_y - mean z), split as in Corollary 3.4, which takes
  the logits below z_y first, then those above: ``ls_regularization`` (the M logits below z_y, >= 0) and
  ``ls_error_enhancement`` (the N logits above z_y, <= 0, zero when correct);
- ``maxsup_penalty``: alpha * (z_max - mean z);
- ``num_below_label`` (M) and ``num_above_label`` (N): how many logits lie strictly below / above z_y, in the
  paper's order; M + N = K - 1 unless some other logit equals z_y (a tie counts on neither side);
- ``correct``: argmax z == y.

Every statistic is computed in one streaming pass over row chunks (:func:`logit_stats` on arrays or
tensors, :func:`logit_stats_dump` on a Dump, float16 memory maps included), with memory bounded by the
chunk plus N floats per statistic. Rows with NaN/inf logits are excluded with a warning and counted.

Example::

    >>> import numpy as np
    >>> r = logit_stats(np.array([[2.0, 0.0, -1.0]]), np.array([1]), threshold=0.01, alpha=0.1)
    >>> round(float(r.near_zero_fraction[0]), 4), round(float(r.ls_error_enhancement[0]), 4)  # z_0 > z_y
    (0.3333, -0.0667)
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from repanalysis.arrays import check_logits_labels, check_number, model_names, pick_device
from repanalysis.errors import DataError
from repanalysis.dump import release_pages

# Per-sample float statistics held by a LogitStats, in table/JSON order.
PER_SAMPLE_STATS = ("near_zero_fraction", "top1_prob", "logit_range", "logit_norm", "ls_loss",
                    "ls_regularization", "ls_error_enhancement", "maxsup_penalty")
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Display headers for the columns of LogitStats.row() / comparison_table().
TABLE_HEADERS = {"model": "model", "samples": "N", "accuracy": "accuracy", "near_zero": "near-zero",
                 "top1_prob": "top-1 prob", "logit_range": "logit range", "ee_active": "EE active",
                 "ee_share": "EE share"}
# Elements per chunk (rows = this // K): 16 MB of float32 per temporary whatever K is. Large enough for
# torch's intra-op threads to pay off (one thread is only ~10% faster with 1 MB chunks, measured at K = 1000).
_CHUNK_ELEMENTS = 1 << 22
# Drop already-read pages of memory-mapped inputs after this many bytes, so RSS stays bounded.


LOGIT_PENALTY_BETA = 2e-3     # Dauphin & Cubuk's logit penalty beta, as the JSON reports it


class LogitSummary:
    """The table row, frame scalars and JSON summary of a logit-statistics result, from its ``name``,
    ``num_samples``, ``accuracy``, ``mean(stat)``, ``summary(stat)``, error-enhancement numbers and
    ``logit_penalty_mean`` (shared by :class:`LogitStats` and the mergeable
    :class:`~repanalysis.analyze.mergeable.MergedLogitStats`)."""

    def summary_dict(self) -> dict:
        """The JSON fields both results write: identity, accuracy, the error-enhancement split, the logit
        penalty and each statistic's summary."""
        return {
            "name": self.name, "threshold": self.threshold, "alpha": self.alpha,
            "num_classes": self.num_classes, "num_samples": self.num_samples,
            "num_excluded_nonfinite": self.num_excluded, "accuracy": self.accuracy,
            "error_enhancement": {
                "active_fraction": self.ee_active_fraction, "mean_when_active": _nan_none(self.ee_mean_active),
                "loss_share": _nan_none(self.ee_loss_share),
                "mean_regularization": self.mean("ls_regularization"),
                "mean_error_enhancement": self.mean("ls_error_enhancement"),
            },
            "logit_penalty": {"beta": LOGIT_PENALTY_BETA, "mean": self.logit_penalty_mean},
            "statistics": {s: self.summary(s) for s in PER_SAMPLE_STATS},
        }

    def row(self) -> dict:
        """One comparison-table row (the CLI's columns)."""
        return {"model": self.name, "samples": self.num_samples, "accuracy": self.accuracy,
                "near_zero": self.mean("near_zero_fraction"), "top1_prob": self.mean("top1_prob"),
                "logit_range": self.mean("logit_range"), "ee_active": self.ee_active_fraction,
                "ee_share": self.ee_loss_share}

    def frame_values(self) -> dict[str, float]:
        """The scalars of ``to_frame``: accuracy, the mean of each PER_SAMPLE_STATS statistic (under its own
        name), ee_active_fraction, ee_mean_active and ee_loss_share."""
        return {"accuracy": self.accuracy, **{s: self.mean(s) for s in PER_SAMPLE_STATS},
                "ee_active_fraction": self.ee_active_fraction, "ee_mean_active": self.ee_mean_active,
                "ee_loss_share": self.ee_loss_share}


@dataclass
class LogitStats(LogitSummary):
    """Per-sample logit statistics of one model and their summaries.

    Arrays (length N = samples kept after excluding non-finite rows; float32 unless noted):
    ``near_zero_fraction``, ``top1_prob``, ``logit_range``, ``logit_norm``, ``ls_loss``,
    ``ls_regularization``, ``ls_error_enhancement``, ``maxsup_penalty``, ``num_below_label`` (M) and
    ``num_above_label`` (N) (int32; Corollary 3.4's counts of the logits below, then above z_y), ``correct`` (bool). ``excluded`` (int64) holds the row indices dropped for NaN/inf logits.
    ``kde_x`` / ``kde_density`` (G,) hold the Gaussian KDE of the flattened logits of the first
    ``kde_samples`` kept rows (Scott's bandwidth ``kde_bandwidth``), evaluated on ``kde_range``;
    both are empty when the logits have no spread.
    """

    name: str
    threshold: float
    alpha: float
    num_classes: int
    near_zero_fraction: np.ndarray
    top1_prob: np.ndarray
    logit_range: np.ndarray
    logit_norm: np.ndarray
    ls_loss: np.ndarray
    ls_regularization: np.ndarray
    ls_error_enhancement: np.ndarray
    maxsup_penalty: np.ndarray
    num_below_label: np.ndarray
    num_above_label: np.ndarray
    correct: np.ndarray
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    kde_x: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    kde_density: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    kde_bandwidth: float = float("nan")
    kde_samples: int = 0
    kde_range: tuple[float, float] = (-4.0, 4.0)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES

    # --- headline numbers -----------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """Samples analysed (after excluding non-finite rows)."""
        return int(self.correct.shape[0])

    @property
    def num_excluded(self) -> int:
        return int(self.excluded.shape[0])

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def ee_active(self) -> np.ndarray:
        """(N,) bool: error-enhancement is active (some logit lies strictly above z_y, so the term is < 0)."""
        return self.num_above_label > 0

    @property
    def ee_active_fraction(self) -> float:
        """Share of samples whose error-enhancement term is active (every misclassified sample but ties)."""
        return float(self.ee_active.mean())

    @property
    def ee_mean_active(self) -> float:
        """Mean error-enhancement term over the samples where it is active (NaN when none is)."""
        active = self.ee_active
        return float(self.ls_error_enhancement[active].astype(np.float64).mean()) if active.any() else math.nan

    @property
    def ee_loss_share(self) -> float:
        """sum |error-enhancement| / (sum regularization + sum |error-enhancement|) over all samples."""
        ee = float(np.abs(self.ls_error_enhancement.astype(np.float64)).sum())
        reg = float(self.ls_regularization.astype(np.float64).sum())
        return ee / (ee + reg) if ee + reg > 0 else math.nan

    def mean(self, stat: str) -> float:
        """Mean of one per-sample statistic (a name from PER_SAMPLE_STATS), in float64."""
        return float(self._array(stat).astype(np.float64).mean())

    def summary(self, stat: str) -> dict[str, float]:
        """mean, std, min, the quantiles (``q05``, ``q50`` = median, ...) and max of one statistic."""
        values = self._array(stat).astype(np.float64)
        qs = np.quantile(values, self.quantiles)
        out = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min())}
        out.update({_qname(q): float(v) for q, v in zip(self.quantiles, qs)})
        out["median"] = float(np.median(values))
        out["max"] = float(values.max())
        return out

    @property
    def logit_penalty_mean(self) -> float:
        """Mean of :meth:`logit_penalty` at the reported beta (LOGIT_PENALTY_BETA)."""
        return float(self.logit_penalty(LOGIT_PENALTY_BETA).mean())

    def logit_penalty(self, beta: float = LOGIT_PENALTY_BETA) -> np.ndarray:
        """(N,) Dauphin & Cubuk logit penalty beta * sum_k z_k^2 / 2 per sample (REFERENCE "Logit analyses")."""
        return beta * self.logit_norm.astype(np.float64) ** 2 / 2

    def to_frame(self):
        """Tidy pandas DataFrame, one row per metric of :meth:`frame_values` (a per-sample statistic's row holds
        its mean): columns model, metric, value, n (samples kept)."""
        from repanalysis.frames import tidy_frame

        return tidy_frame(self.name, self.frame_values(), n=self.num_samples)

    def to_dict(self, include_arrays: bool = False) -> dict:
        """JSON-ready summary; ``include_arrays`` adds every per-sample array as a list."""
        out = {
            **self.summary_dict(),
            "kde": {"samples": self.kde_samples, "bandwidth": _nan_none(self.kde_bandwidth),
                    "range": list(self.kde_range), "x": self.kde_x.tolist(), "density": self.kde_density.tolist()},
        }
        if include_arrays:
            out["arrays"] = {s: self._array(s).tolist() for s in
                             (*PER_SAMPLE_STATS, "num_below_label", "num_above_label", "correct", "excluded")}
        return out

    def _array(self, stat: str) -> np.ndarray:
        if stat not in (*PER_SAMPLE_STATS, "num_below_label", "num_above_label", "correct", "excluded"):
            raise DataError(f"unknown logit statistic {stat!r}; expected one of {', '.join(PER_SAMPLE_STATS)}")
        return getattr(self, stat)


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}" if abs(q * 100 - round(q * 100)) < 1e-9 else f"q{q:g}"


def _nan_none(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# --- the per-chunk formulas (the one place each is written) ------------------------------------------
def _chunk_stats(z: torch.Tensor, y: torch.Tensor, threshold: float, alpha: float) -> dict[str, torch.Tensor]:
    """Per-sample statistics of a chunk of finite logits z [B, K] with labels y [B]."""
    k = z.shape[1]
    z_max, pred = z.max(dim=1)  # ties: the first maximal index is the prediction (torch.max contract)
    z_mean = z.mean(dim=1)
    z_y = z.gather(1, y[:, None])
    # Theorem 3.3: L_LS = alpha * (z_y - mean_k z_k).
    ls_loss = alpha * (z_y[:, 0] - z_mean)
    # Corollary 3.4 with d_k = z_y - z_k: error-enhancement = alpha/K * sum_{z_k > z_y} (z_y - z_k) <= 0.
    # Ties z_k == z_y (and k == y) give d_k = 0 and count on neither side, so the term is exactly 0
    # whenever no logit is strictly above z_y (every correct prediction, and a wrong one tied with z_y).
    d = z_y - z
    ee = (alpha / k) * d.clamp(max=0).sum(dim=1)
    return {
        # MaxSup Fig. 2/3: near-zero proportion, strict |z_k| < t. Compared in the analysis dtype, as the MaxSup
        # tool's float32 ``abs(z) < t`` does: t is rounded like the logits were, so a logit stored as the
        # threshold (float32 0.01 = 0.0099999998) is on it and does not count.
        "near_zero_fraction": (z.abs() < threshold).sum(dim=1).to(z.dtype) / k,
        # top-1 probability: softmax at the predicted class (one fused kernel).
        "top1_prob": torch.softmax(z, dim=1).gather(1, pred[:, None])[:, 0],
        "logit_range": z_max - z.amin(dim=1),
        "logit_norm": torch.linalg.vector_norm(z, dim=1),
        "ls_loss": ls_loss,
        # Corollary 3.4: regularization = alpha/K * sum_{z_k < z_y} (z_y - z_k) >= 0.
        "ls_regularization": (alpha / k) * d.clamp(min=0).sum(dim=1),
        "ls_error_enhancement": ee,
        # MaxSup: alpha * (z_max - mean_k z_k).
        "maxsup_penalty": alpha * (z_max - z_mean),
        # Corollary 3.4's counts, in its order: M logits below z_y, then N above (M + N = K - 1 without ties).
        "num_below_label": (d > 0).sum(dim=1).to(torch.int32),
        "num_above_label": (d < 0).sum(dim=1).to(torch.int32),
        "correct": pred == y,
    }


_KDE_MAX_BINS = 16_384


def _scott_kde(values: torch.Tensor, lo: float, hi: float, grid_size: int = 512
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian KDE of the flattened ``values`` on ``grid_size`` points of [lo, hi], as seaborn/scipy draw it.

    Bandwidth by Scott's rule (scipy.stats.gaussian_kde default, used by seaborn.kdeplot):
    h = std(values, ddof=1) * n^(-1/5). The values are first binned on a fine grid (spacing h/20,
    relative error ~ (1/20)^2 / 24; capped at 16,384 bins, so when h < (hi - lo)/800 the curve is a binned
    approximation), so millions of values cost O(n + grid * bins) instead of O(n * grid).
    Returns (x, density, h); x and density are empty when the values have no spread.
    """
    v = values.flatten()
    n = v.numel()
    var, _ = torch.var_mean(v, correction=1) if n > 1 else (torch.zeros(()), None)
    h = math.sqrt(float(var)) * n ** (-0.2) if n > 1 else 0.0
    if not h > 0 or not math.isfinite(h):
        return np.zeros(0), np.zeros(0), h
    dev = v.device
    x = torch.linspace(lo, hi, grid_size, dtype=torch.float64, device=dev)
    # Bins over [lo - 5h, hi + 5h]; values further out add < 1.5e-6 / h to any density on [lo, hi].
    g0, g1 = lo - 5 * h, hi + 5 * h
    m = min(_KDE_MAX_BINS, int(math.ceil((g1 - g0) / (h / 20))))
    counts = torch.histc(v, bins=m, min=g0, max=g1).to(torch.float64)
    step = (g1 - g0) / m
    centres = g0 + step * (torch.arange(m, dtype=torch.float64, device=dev) + 0.5)
    # Gaussian KDE: density(x) = 1 / (n h sqrt(2 pi)) * sum_i exp(-(x - v_i)^2 / (2 h^2)).
    kern = torch.exp(-0.5 * ((x[:, None] - centres[None, :]) / h) ** 2)
    dens = kern @ counts / (n * h * math.sqrt(2 * math.pi))
    return x.cpu().numpy(), dens.cpu().numpy(), h


# --- streaming ----------------------------------------------------------------------------------------
def _check_params(threshold: float, alpha: float, kde_samples: int, kde_range, quantiles,
                  dtype: torch.dtype) -> tuple[float, float]:
    check_number(threshold, "near-zero threshold", minimum=0)
    check_number(alpha, "alpha")
    check_number(kde_samples, "kde_samples", integer=True, minimum=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DataError(f"dtype must be a torch floating-point dtype (e.g. torch.float32); got {dtype!r}")
    q = np.asarray(quantiles if quantiles is not None else [], dtype=object).reshape(-1)
    if q.size == 0 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 1 for v in q):
        raise DataError(f"quantiles must lie in [0, 1], a non-empty sequence of numbers; got {quantiles!r}")
    r = np.asarray(kde_range if kde_range is not None else [], dtype=object).reshape(-1)
    if r.size != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in r):
        raise DataError(f"KDE range must be two finite numbers lo < hi; got {kde_range!r}")
    lo, hi = float(r[0]), float(r[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(f"KDE range must be two finite numbers lo < hi; got {kde_range!r}")
    return lo, hi


def _stream(chunks: Iterable[tuple[int, object, object]], num_samples: int, num_classes: int, *,
            name: str, threshold: float, alpha: float, device, dtype: torch.dtype, kde_samples: int,
            kde_range: tuple[float, float], quantiles: Sequence[float]) -> LogitStats:
    """One pass over ``(start, logits_rows, label_rows)`` chunks -> LogitStats."""
    lo, hi = _check_params(threshold, alpha, kde_samples, kde_range, quantiles, dtype)
    if num_samples == 0:
        raise DataError(f"{name}: no samples to analyse (logits have 0 rows)")
    dev = None if device is None else pick_device(device)
    arrays = {s: np.empty(num_samples, dtype=np.float32) for s in PER_SAMPLE_STATS}
    arrays["num_below_label"] = np.empty(num_samples, dtype=np.int32)
    arrays["num_above_label"] = np.empty(num_samples, dtype=np.int32)
    arrays["correct"] = np.empty(num_samples, dtype=bool)
    keep = np.ones(num_samples, dtype=bool)
    kde_rows: list[torch.Tensor] = []
    kde_have = 0
    for start, logit_rows, label_rows in chunks:
        z, y = check_logits_labels(_readonly_tensor(logit_rows), _readonly_tensor(label_rows), num_classes,
                                   device=dev, dtype=dtype)
        stop = start + z.shape[0]
        finite = torch.isfinite(z).all(dim=1)
        rows = slice(start, stop)
        if not bool(finite.all()):
            keep[start:stop] = finite.cpu().numpy()
            z, y = z[finite], y[finite]
            rows = np.flatnonzero(keep[start:stop]) + start
        if z.shape[0] == 0:
            continue
        for key, value in _chunk_stats(z, y, threshold, alpha).items():
            arrays[key][rows] = value.cpu().numpy()
        if kde_have < kde_samples:
            take = z[: kde_samples - kde_have]
            kde_rows.append(take.to(torch.float32).clone())
            kde_have += take.shape[0]
    n_bad = int((~keep).sum())
    if n_bad == num_samples:
        raise DataError(f"{name}: all {num_samples} rows of logits contain NaN or inf; nothing to analyse")
    if n_bad:
        warnings.warn(f"{name}: {n_bad} of {num_samples} samples have NaN or inf logits; they are excluded",
                      RuntimeWarning, stacklevel=3)
        arrays = {k: v[keep] for k, v in arrays.items()}
    if kde_rows:
        kde_x, kde_density, h = _scott_kde(torch.cat(kde_rows), lo, hi)
    else:
        kde_x, kde_density, h = np.zeros(0), np.zeros(0), math.nan
    return LogitStats(name=name, threshold=float(threshold), alpha=float(alpha), num_classes=int(num_classes),
                      **arrays, excluded=np.flatnonzero(~keep).astype(np.int64), kde_x=kde_x,
                      kde_density=kde_density, kde_bandwidth=h, kde_samples=kde_have, kde_range=(lo, hi),
                      quantiles=tuple(float(q) for q in quantiles))


def _readonly_tensor(x):
    """A CPU tensor sharing a (possibly read-only, memory-mapped) chunk's memory; it is only ever read."""
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(x))


def _chunk_rows(num_classes: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise DataError(f"chunk_size must be >= 1 rows; got {chunk_size}")
        return int(chunk_size)
    return max(1, _CHUNK_ELEMENTS // max(1, num_classes))


def logit_stats(logits, labels, *, threshold: float = 0.01, alpha: float = 0.1, num_classes: int | None = None,
                name: str = "model", kde_samples: int = 10_000, kde_range: tuple[float, float] = (-4.0, 4.0),
                quantiles: Sequence[float] = DEFAULT_QUANTILES, device=None, dtype: torch.dtype = torch.float32,
                chunk_size: int | None = None) -> LogitStats:
    """Per-sample logit statistics of one model from arrays.

    logits: (N, K) numpy array, memmap or torch tensor (any float dtype; cast per chunk to ``dtype``).
    labels: (N,) integer class indices in [0, K). threshold: near-zero cut, strict |z| < t, t >= 0.
    alpha: LS / MaxSup strength for the loss terms. num_classes: K from the model (checked against the
    logits' width). kde_samples / kde_range: rows and x-range of the flattened-logit KDE. device: None
    (CPU), "auto" or a torch device. chunk_size: rows per chunk (default 2^22 // K).
    Returns a :class:`LogitStats` over the rows with finite logits (the others are excluded with a
    RuntimeWarning and listed in ``.excluded``). Raises DataError on bad shapes, labels or parameters.
    """
    logits_shape = tuple(getattr(logits, "shape", np.shape(logits)))
    labels_shape = tuple(getattr(labels, "shape", np.shape(labels)))
    if len(logits_shape) != 2:
        raise DataError(f"logits must be 2-D [N, K]; got shape {logits_shape}")
    if len(labels_shape) != 1 or labels_shape[0] != logits_shape[0]:
        raise DataError(f"labels must be 1-D with one entry per logits row ({logits_shape[0]}); "
                        f"got shape {labels_shape}")
    n, k = logits_shape
    rows = _chunk_rows(k, chunk_size)
    if not isinstance(logits, torch.Tensor):
        logits = np.asarray(logits) if not isinstance(logits, np.ndarray) else logits
    if not isinstance(labels, torch.Tensor):
        labels = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
    chunks = _released(((s, logits[s:s + rows], labels[s:s + rows]) for s in range(0, n, rows)), (logits, labels))
    return _stream(chunks, n, int(num_classes or k), name=name, threshold=threshold, alpha=alpha, device=device,
                   dtype=dtype, kde_samples=kde_samples, kde_range=kde_range, quantiles=quantiles)


def logit_stats_dump(dump, *, threshold: float = 0.01, alpha: float = 0.1, name: str | None = None,
                     kde_samples: int = 10_000, kde_range: tuple[float, float] = (-4.0, 4.0),
                     quantiles: Sequence[float] = DEFAULT_QUANTILES, device=None,
                     dtype: torch.dtype = torch.float32, chunk_size: int | None = None) -> LogitStats:
    """:func:`logit_stats` of a Dump, streamed with ``Dump.iter_chunks`` (memory maps stay bounded).

    K comes from the model (``dump.num_classes``); the name defaults to ``dump.name``.
    """
    k = dump.num_classes
    rows = _chunk_rows(k, chunk_size)
    chunks = _released(((s, c["logits"], c["labels"]) for s, c in
                        dump.iter_chunks(("logits", "labels"), chunk_size=rows)), (dump.logits, dump.labels))
    return _stream(chunks, dump.num_samples, k, name=name or dump.name, threshold=threshold, alpha=alpha,
                   device=device, dtype=dtype, kde_samples=kde_samples, kde_range=kde_range, quantiles=quantiles)


def compare_logits(dumps: Sequence, names: Sequence[str] | None = None, **kwargs) -> list[LogitStats]:
    """:func:`logit_stats_dump` for each Dump (any number of models), named by ``names`` or the Dumps' names.

    ``kwargs`` go to :func:`logit_stats_dump` (threshold, alpha, kde_samples, kde_range, device, ...).
    """
    dumps = list(dumps)
    if not dumps:
        raise DataError("no models to compare; expected at least one Dump")
    return [logit_stats_dump(d, name=n, **kwargs) for d, n in zip(dumps, model_names(dumps, names))]


def comparison_table(results: Sequence[LogitStats]) -> list[dict]:
    """One row per model: samples, accuracy, mean near-zero fraction, mean top-1 probability, mean logit
    range, error-enhancement active fraction and loss share (for ``report.format_table``)."""
    return [r.row() for r in results]


def comparison_dict(results: Sequence[LogitStats], include_arrays: bool = False) -> dict:
    """The JSON written as ``logit_stats.json``: parameters plus each model's :meth:`LogitStats.to_dict`."""
    results = list(results)
    if not results:
        raise DataError("no LogitStats to compare; expected the result of at least one model")
    first = results[0]
    return {"analysis": "logits", "threshold": first.threshold, "alpha": first.alpha,
            "models": [r.to_dict(include_arrays=include_arrays) for r in results]}


def _released(chunks: Iterator, arrays: Sequence) -> Iterator:
    """Pass ``(start, logits, labels)`` chunks through, dropping pages of memory-mapped ``arrays`` already read."""
    return release_pages(chunks, arrays)


def logit_gap(logits, *, device=None, chunk_size: int | None = None) -> np.ndarray:
    """Mean logit gap of each sample: (1/K) sum_k d_k with d_k = max_l z_l - z_k >= 0 (FedLaS Eq. 5, from MbLS).

    logits (N, K) array, memmap or tensor -> (N,) float64; NaN for a row with a NaN or infinite logit. Streams
    row chunks (``chunk_size`` rows, default 2^22 // K). The mean over k equals max_l z_l - mean_k z_k (the
    MaxSup penalty without its alpha).

    Example::

        >>> logit_gap(np.array([[2.0, 0.0, -1.0]])).round(4)     # (0 + 2 + 3) / 3
        array([1.6667])
    """
    shape = tuple(getattr(logits, "shape", np.shape(logits)))
    if len(shape) != 2 or shape[1] == 0:
        raise DataError(f"logits must be 2-D [N, K] with K >= 1; got shape {shape}")
    rows = _chunk_rows(shape[1], chunk_size)
    dev = None if device is None else pick_device(device)
    out = np.empty(shape[0], dtype=np.float64)
    for s in range(0, shape[0], rows):
        z = _readonly_tensor(logits[s:s + rows]).to(device=dev, dtype=torch.float64)
        # FedLaS Eq. 5: d_k = max_l z_l - z_k, averaged over the K classes
        gap = (z.amax(dim=1, keepdim=True) - z).mean(dim=1)
        out[s:s + rows] = torch.where(torch.isfinite(z).all(dim=1), gap, torch.nan).cpu().numpy()
    return out

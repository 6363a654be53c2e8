"""Mergeable analyses over shards: small sufficient statistics per shard that add up to the whole run's numbers.

A large extraction (ImageNet train, 1.28M x 2048 features) may be split into shards (``repanalysis extract
--shard i/n``, or the ranks of a ``torchrun`` run): each is an ordinary complete Dump of a contiguous row range,
its ``meta.json`` naming the range (:mod:`repanalysis.dump.shards`). The analyses below have sufficient
statistics that are sums, so each machine computes the statistics of its own shard (kilobytes to a few MB:
K x D for the features, K x M for the classwise bins, K x K for the confusion counts), and the statistics of
all shards combine to the numbers the analysis gives on the merged Dump, up to float rounding (the sums are
float64 and only their order differs):

- **separation** (:class:`~repanalysis.analyze.geometry.SeparationAccumulator`): per-class sums of unit-normalised
  features and counts -> d_within, d_total, R^2, per-class d_within (a
  :class:`~repanalysis.analyze.geometry.SeparationResult`, by the same closed form). Only when the Dumps hold
  features.
- **calibration** (the per-sample pass ``_scan`` of :mod:`repanalysis.analyze.calibration`): the M equal-width
  bins' counts / confidence sums / accuracy sums, the classwise cells (K x M counts, p sums, hits), the NLL and
  Brier sums -> accuracy, mean confidence, ECE, MCE, O-ECE, U-ECE, classwise ECE, NLL, Brier and the
  equal-width bins. **Not mergeable, left out:** the adaptive (equal-mass) ECE and AUROC need the sorted
  per-sample confidences of every row, and bootstrap intervals need the per-sample values.
- **logit statistics** (``_chunk_stats`` of :mod:`repanalysis.analyze.logits`): for each of ``PER_SAMPLE_STATS``
  the count, float64 sum, sum of squared deviations (merged by Chan et al.'s pairwise update, stabler than a raw
  sum of squares), min and max -> mean, std (ddof 0), min, max; accuracy; the error-enhancement active count
  and the sums behind ``ee_mean_active`` and ``ee_loss_share``. **Not mergeable, left out:** quantiles,
  medians and the KDE of the logits (they need every value).
- **confusion counts**: K x K int64 (rows the true label, columns the prediction argmax z, first index on ties)
  -> overall and per-class accuracy and the top confusions of each class.

Rows with NaN/inf logits are excluded as each analysis does on a whole Dump: calibration drops rows with a NaN or
+inf logit or -inf at the label; the logit statistics and the confusion counts drop rows with any non-finite
logit; separation drops feature rows of zero norm or with NaN/inf.

Usage, per machine then anywhere (the command line's ``repanalysis shard-stats`` does the same)::

    from repanalysis.analyze.mergeable import shard_statistics, load_statistics, merge_statistics
    shard_statistics("runs/r50/train-shard-0").save("stats-0.npz")       # on the machine holding shard 0
    ...
    merged = merge_statistics([load_statistics(f"stats-{i}.npz") for i in range(8)])   # checks the cover
    res = merged.compute()          # MergedAnalyses: .separation, .calibration, .logits, .confusion
    res.separation.r2, res.calibration.ece, res.logits.mean("top1_prob"), res.confusion.accuracy
    res.to_frame()                  # tidy: model, analysis, metric, value, n

    $ repanalysis shard-stats --shards shard-0 --save stats-0.npz          # per machine
    $ repanalysis shard-stats --shards stats-*.npz --out results           # combine: tables + shard_stats.json

:func:`merge_statistics` refuses shards of different runs, gaps and overlaps (naming the rows:
:func:`repanalysis.dump.shards.check_cover`), and statistics made with different bins, threshold or alpha.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from repanalysis.analyze.calibration._fused import _scan, _work_dtype, single_threaded
from repanalysis.analyze.calibration.binning import (_bin_stats, _check_bins, _errors_from_sums,
                                                     equal_width_edges)
from repanalysis.analyze.calibration.metrics import _classwise_from_cells
from repanalysis.analyze.calibration.results import BinStats, _nan_to_none
from repanalysis.analyze.geometry import SeparationAccumulator, SeparationResult, check_chunk_size
from repanalysis.analyze.logits import PER_SAMPLE_STATS, LogitSummary, _chunk_stats, _nan_none, _readonly_tensor
from repanalysis.analyze.per_class import top_confusions
from repanalysis.arrays import check_logits_labels, check_number, pick_device, refuse_probabilities
from repanalysis.dump.shards import RUN_FIELDS, check_cover, whole_run
from repanalysis.errors import DataError, DumpError

FORMAT = "repanalysis-shard-statistics"
VERSION = 1
DEFAULT_CHUNK = 8192
# the scalars of MergedCalibration (those of calibration's SCALARS that are mergeable: no adaptive ECE)
CALIBRATION_SCALARS = ("accuracy", "mean_confidence", "ece", "mce", "classwise_ece", "oece", "uece", "nll",
                       "brier")
# the meta fields of a run that a refusal to merge may name (check_cover's ``metas``)
RUN_META_FIELDS = tuple(dict.fromkeys(f for f, _, _ in RUN_FIELDS))
_LOGIT_BETA = 2e-3           # Dauphin & Cubuk's logit penalty beta, as LogitStats.to_dict reports it


# --- the parts: sums of one shard -----------------------------------------------------------------------
@dataclass
class CalibrationSums:
    """Equal-width and classwise bin sums of one shard's rows (M bins, K classes), all float64 but the counts
    of rows. ``bin_counts`` / ``bin_conf`` / ``bin_acc`` (M,); ``cw_counts`` / ``cw_psum`` / ``cw_hits`` (K, M);
    ``conf_sum``, ``nll_sum``, ``brier_sum`` over the kept rows; ``num_samples`` kept, ``n_excluded``
    (NaN/+inf logits or -inf at the label), ``n_correct``."""

    n_bins: int
    bin_counts: np.ndarray
    bin_conf: np.ndarray
    bin_acc: np.ndarray
    cw_counts: np.ndarray
    cw_psum: np.ndarray
    cw_hits: np.ndarray
    conf_sum: float = 0.0
    nll_sum: float = 0.0
    brier_sum: float = 0.0
    num_samples: int = 0
    n_excluded: int = 0
    n_correct: int = 0

    @classmethod
    def zeros(cls, num_classes: int, n_bins: int) -> "CalibrationSums":
        return cls(n_bins, *(np.zeros(n_bins) for _ in range(3)),
                   *(np.zeros((num_classes, n_bins)) for _ in range(3)))

    def merge(self, other: "CalibrationSums") -> "CalibrationSums":
        """The sums of both parts (a new object)."""
        return CalibrationSums(self.n_bins, *(getattr(self, k) + getattr(other, k) for k in _CAL_ARRAYS),
                               *(getattr(self, k) + getattr(other, k) for k in _CAL_SCALARS))

    def compute(self, name: str | None = None) -> "MergedCalibration":
        """The metrics from the sums, by the formulas of :func:`calibration_report` (``_errors_from_sums``,
        ``_classwise_from_cells``, ``_bin_stats``)."""
        n = self.num_samples
        if n == 0:
            raise DataError(f"{name or 'model'}: no rows with finite logits for calibration; nothing to analyse")
        counts, cs, acs = (torch.from_numpy(getattr(self, k)) for k in ("bin_counts", "bin_conf", "bin_acc"))
        ece, oece, uece, mce = _errors_from_sums(counts, cs, acs, n)
        cw, cw_per = _classwise_from_cells(*(torch.from_numpy(getattr(self, k))
                                             for k in ("cw_counts", "cw_psum", "cw_hits")), n)
        return MergedCalibration(
            name=name or "model", num_samples=n, num_classes=self.cw_counts.shape[0], n_bins=self.n_bins,
            accuracy=self.n_correct / n, mean_confidence=self.conf_sum / n, ece=float(ece), mce=float(mce),
            classwise_ece=cw, oece=float(oece), uece=float(uece), nll=self.nll_sum / n, brier=self.brier_sum / n,
            bins=_bin_stats(equal_width_edges(self.n_bins), counts, cs, acs, n, "equal-width"),
            classwise_per_class=cw_per, n_excluded=self.n_excluded)


_CAL_ARRAYS = ("bin_counts", "bin_conf", "bin_acc", "cw_counts", "cw_psum", "cw_hits")
_CAL_SCALARS = ("conf_sum", "nll_sum", "brier_sum", "num_samples", "n_excluded", "n_correct")


@dataclass
class LogitSums:
    """Per-statistic moments of one shard's kept rows (rows with finite logits), one entry per name of
    ``PER_SAMPLE_STATS``: ``total`` (S,) float64 sum, ``m2`` (S,) sum of squared deviations from the shard mean,
    ``low`` / ``high`` (S,) min and max (+inf / -inf with no row). ``num_samples`` kept, ``n_excluded``,
    ``n_correct``, ``n_active`` (error-enhancement active: some logit strictly above z_y), ``ee_active_sum``
    (sum of the error-enhancement term over those rows), ``ee_abs_sum`` (sum of its absolute value)."""

    threshold: float
    alpha: float
    total: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray
    num_samples: int = 0
    n_excluded: int = 0
    n_correct: int = 0
    n_active: int = 0
    ee_active_sum: float = 0.0
    ee_abs_sum: float = 0.0

    @classmethod
    def zeros(cls, threshold: float, alpha: float) -> "LogitSums":
        s = len(PER_SAMPLE_STATS)
        return cls(float(threshold), float(alpha), np.zeros(s), np.zeros(s), np.full(s, np.inf), np.full(s, -np.inf))

    def merge(self, other: "LogitSums") -> "LogitSums":
        """The moments of both parts (a new object); m2 by the pairwise update of Chan, Golub & LeVeque (1979)."""
        na, nb = self.num_samples, other.num_samples
        n = na + nb
        if na == 0 or nb == 0:
            m2 = self.m2 + other.m2
        else:
            delta = other.total / nb - self.total / na
            m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        return LogitSums(self.threshold, self.alpha, self.total + other.total, m2, np.minimum(self.low, other.low),
                         np.maximum(self.high, other.high), n, self.n_excluded + other.n_excluded,
                         self.n_correct + other.n_correct, self.n_active + other.n_active,
                         self.ee_active_sum + other.ee_active_sum, self.ee_abs_sum + other.ee_abs_sum)

    def add_chunk(self, stats: dict[str, torch.Tensor]) -> "LogitSums":
        """Merge the per-sample statistics of one chunk (``_chunk_stats``' output) into these sums (new object)."""
        # float32 first: the values LogitStats holds, so the float64 sums are those of logit_stats' arrays
        v = torch.stack([stats[s].to(torch.float32) for s in PER_SAMPLE_STATS]).to(torch.float64)   # (S, n)
        n = v.shape[1]
        if n == 0:
            return self
        total = v.sum(1)
        m2 = (v - (total / n)[:, None]).square_().sum(1)
        ee = v[PER_SAMPLE_STATS.index("ls_error_enhancement")]
        active = stats["num_above_label"] > 0
        part = LogitSums(self.threshold, self.alpha, total.cpu().numpy(), m2.cpu().numpy(),
                         v.amin(1).cpu().numpy(), v.amax(1).cpu().numpy(), n, 0, int(stats["correct"].sum()),
                         int(active.sum()), float(ee[active].sum()), float(ee.abs().sum()))
        return self.merge(part)

    def compute(self, name: str | None = None, num_classes: int | None = None) -> "MergedLogitStats":
        n = self.num_samples
        if n == 0:
            raise DataError(f"{name or 'model'}: all rows of logits contain NaN or inf; nothing to analyse")
        stats = {s: {"mean": float(self.total[i] / n), "std": float(math.sqrt(max(self.m2[i], 0.0) / n)),
                     "min": float(self.low[i]), "max": float(self.high[i])} for i, s in enumerate(PER_SAMPLE_STATS)}
        reg = float(self.total[PER_SAMPLE_STATS.index("ls_regularization")])
        ee = self.ee_abs_sum
        norm = PER_SAMPLE_STATS.index("logit_norm")
        mean_sq_norm = (self.m2[norm] + self.total[norm] ** 2 / n) / n
        return MergedLogitStats(
            name=name or "model", threshold=self.threshold, alpha=self.alpha, num_classes=num_classes,
            num_samples=n, num_excluded=self.n_excluded, accuracy=self.n_correct / n, statistics=stats,
            ee_active_fraction=self.n_active / n,
            ee_mean_active=self.ee_active_sum / self.n_active if self.n_active else math.nan,
            ee_loss_share=ee / (ee + reg) if ee + reg > 0 else math.nan,
            logit_penalty_mean=float(_LOGIT_BETA * mean_sq_norm / 2))


# --- results ---------------------------------------------------------------------------------------------
@dataclass
class MergedCalibration:
    """The mergeable calibration metrics (fractions; no adaptive ECE, AUROC or intervals: see the module
    docstring). ``bins``: the equal-width :class:`BinStats`; ``classwise_per_class`` (K,)."""

    name: str
    num_samples: int
    num_classes: int
    n_bins: int
    accuracy: float
    mean_confidence: float
    ece: float
    mce: float
    classwise_ece: float
    oece: float
    uece: float
    nll: float
    brier: float
    bins: BinStats
    classwise_per_class: np.ndarray
    n_excluded: int = 0

    def scalars(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in CALIBRATION_SCALARS}

    def to_dict(self) -> dict:
        return {"name": self.name, "num_samples": self.num_samples, "num_classes": self.num_classes,
                "n_bins": self.n_bins, "n_excluded": self.n_excluded, **self.scalars(), "bins": self.bins.to_dict(),
                "classwise_per_class": _nan_to_none(self.classwise_per_class)}

    def row(self) -> dict:
        return {"model": self.name, "N": self.num_samples, **self.scalars()}


@dataclass
class MergedLogitStats(LogitSummary):
    """The mergeable logit statistics: ``statistics`` maps each name of PER_SAMPLE_STATS to its mean, std
    (ddof 0), min and max (no quantiles, median or KDE: see the module docstring); accuracy and the
    error-enhancement numbers of :class:`~repanalysis.analyze.logits.LogitStats`."""

    name: str
    threshold: float
    alpha: float
    num_classes: int | None
    num_samples: int
    num_excluded: int
    accuracy: float
    statistics: dict
    ee_active_fraction: float
    ee_mean_active: float
    ee_loss_share: float
    logit_penalty_mean: float

    def mean(self, stat: str) -> float:
        return self.summary(stat)["mean"]

    def summary(self, stat: str) -> dict[str, float]:
        """mean, std, min, max of one statistic of PER_SAMPLE_STATS."""
        if stat not in self.statistics:
            raise DataError(f"unknown logit statistic {stat!r}; expected one of {', '.join(PER_SAMPLE_STATS)}")
        return dict(self.statistics[stat])

    def to_dict(self) -> dict:
        """Like LogitStats.to_dict() without quantiles, median and KDE."""
        return {"name": self.name, "threshold": self.threshold, "alpha": self.alpha,
                "num_classes": self.num_classes, "num_samples": self.num_samples,
                "num_excluded_nonfinite": self.num_excluded, "accuracy": self.accuracy,
                "error_enhancement": {
                    "active_fraction": self.ee_active_fraction, "mean_when_active": _nan_none(self.ee_mean_active),
                    "loss_share": _nan_none(self.ee_loss_share),
                    "mean_regularization": self.mean("ls_regularization"),
                    "mean_error_enhancement": self.mean("ls_error_enhancement")},
                "logit_penalty": {"beta": _LOGIT_BETA, "mean": self.logit_penalty_mean},
                "statistics": {s: self.summary(s) for s in PER_SAMPLE_STATS}}


@dataclass
class MergedConfusion:
    """Confusion counts (K, K) int64: ``counts[t, p]`` rows of true class t predicted as p (argmax of the
    logits, first index on ties; rows with finite logits only). ``per_class_accuracy`` (K,) is NaN for a class
    without samples."""

    name: str
    counts: np.ndarray
    class_names: list[str]

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def accuracy(self) -> float:
        n = self.num_samples
        return float(np.trace(self.counts) / n) if n else math.nan

    @property
    def per_class_accuracy(self) -> np.ndarray:
        totals = self.counts.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, np.diag(self.counts) / np.maximum(totals, 1), np.nan)

    def top_confusions(self, top_k: int = 3):
        """Per true class, its ``top_k`` most frequent wrong predictions (``per_class.top_confusions``)."""
        return top_confusions(self.counts, top_k, self.class_names)

    def to_dict(self, top_k: int = 3) -> dict:
        return {"name": self.name, "num_samples": self.num_samples, "accuracy": self.accuracy,
                "per_class_accuracy": _nan_to_none(self.per_class_accuracy), "class_names": list(self.class_names),
                "counts": self.counts.tolist(),
                "top_confusions": [[{"predicted": c.predicted, "predicted_name": c.predicted_name, "count": c.count,
                                     "share": c.share, "error_share": c.error_share} for c in row]
                                   for row in self.top_confusions(top_k)]}


@dataclass
class MergedAnalyses:
    """The mergeable analyses of a whole run (its shards combined): ``separation`` (a SeparationResult, None
    without features), ``calibration`` (:class:`MergedCalibration`), ``logits`` (:class:`MergedLogitStats`),
    ``confusion`` (:class:`MergedConfusion`). ``shards``: the shard records combined."""

    name: str
    num_samples: int
    num_classes: int
    class_names: list[str]
    shards: list[dict]
    separation: SeparationResult | None
    calibration: MergedCalibration
    logits: MergedLogitStats
    confusion: MergedConfusion

    def to_dict(self) -> dict:
        return {"name": self.name, "num_samples": self.num_samples, "num_classes": self.num_classes,
                "shards": [dict(s) for s in self.shards],
                "separation": None if self.separation is None else self.separation.to_dict(),
                "calibration": self.calibration.to_dict(), "logits": self.logits.to_dict(),
                "confusion": self.confusion.to_dict()}

    def frame_values(self) -> dict[str, dict[str, float]]:
        """analysis -> {metric: value} of :meth:`to_frame`."""
        out = {}
        if self.separation is not None:
            s = self.separation
            out["separation"] = {"d_within": s.d_within, "d_total": s.d_total, "r2": s.r2}
        out["calibration"] = self.calibration.scalars()
        out["logits"] = self.logits.frame_values()
        out["confusion"] = {"accuracy": self.confusion.accuracy}
        return out

    def to_frame(self):
        """Tidy pandas DataFrame, one row per analysis and metric: columns model, analysis, metric, value, n
        (samples the analysis used)."""
        from repanalysis.frames import rows_frame, tidy_rows

        n = {"separation": None if self.separation is None else self.separation.n_samples,
             "calibration": self.calibration.num_samples, "logits": self.logits.num_samples,
             "confusion": self.confusion.num_samples}
        return rows_frame(row for analysis, values in self.frame_values().items()
                          for row in tidy_rows(self.name, values, n=n[analysis], analysis=analysis))

    def table_rows(self) -> dict[str, list[dict]]:
        """Rows for ``report.format_table``, one table per analysis: separation (d_within, d_total, R^2),
        calibration (the scalars), logits (LogitStats.row() columns), accuracy (from the confusion counts)."""
        out = {}
        if self.separation is not None:
            s = self.separation
            out["separation"] = [{"model": self.name, "N": s.n_samples, "d_within": s.d_within,
                                  "d_total": s.d_total, "R^2": s.r2}]
        out["calibration"] = [self.calibration.row()]
        out["logits"] = [self.logits.row()]
        pc = self.confusion.per_class_accuracy
        out["accuracy"] = [{"model": self.name, "N": self.confusion.num_samples,
                            "accuracy": self.confusion.accuracy,
                            "worst class": self._class_name(int(np.nanargmin(pc))) if np.isfinite(pc).any() else None,
                            "worst class accuracy": float(np.nanmin(pc)) if np.isfinite(pc).any() else None}]
        return out

    def _class_name(self, k: int) -> str:
        return self.class_names[k] if k < len(self.class_names) else str(k)


# --- the statistics of one shard ------------------------------------------------------------------------
@dataclass
class ShardStatistics:
    """The sufficient statistics of one shard (or of several merged): identity plus the four parts.

    Identity: ``name``, ``num_classes``, ``class_names``, ``shard`` (the record of
    :func:`repanalysis.dump.shards.whole_run`: index, count, start, stop, total, run), ``meta`` (the run's meta
    fields that a refusal to merge names: checkpoint, dataset, split, transform, precision, feature_layer,
    arch), ``source`` (the Dump or file they came from, for messages), ``n_bins``, ``threshold``, ``alpha``.
    Parts: ``separation`` (a SeparationAccumulator, None without features), ``calibration``
    (:class:`CalibrationSums`), ``logits`` (:class:`LogitSums`), ``confusion`` (K, K) int64.
    """

    name: str
    num_classes: int
    class_names: list[str]
    shard: dict
    meta: dict
    n_bins: int
    threshold: float
    alpha: float
    calibration: CalibrationSums
    logits: LogitSums
    confusion: np.ndarray
    separation: SeparationAccumulator | None = None
    source: str | None = None
    shards: list[dict] = field(default_factory=list)     # the shard records merged into this one

    @property
    def num_samples(self) -> int:
        """Rows of the shard (kept and excluded)."""
        return int(self.shard["stop"] - self.shard["start"])

    @property
    def label(self) -> str:
        """How messages name these statistics: the shard and its source."""
        s = self.shard
        where = f" ({self.source})" if self.source else ""
        return f"shard {s['index']}/{s['count']}{where}"

    def compute(self) -> MergedAnalyses:
        """The analyses from these sums (of a whole run after :func:`merge_statistics`, or of one shard)."""
        data = self.meta.get("dataset")
        split = self.meta.get("split") or (data.get("split") if isinstance(data, dict) else None)
        sep = None
        if self.separation is not None:
            sep = self.separation.compute(name=self.name, split=None if split is None else str(split))
        return MergedAnalyses(
            name=self.name, num_samples=self.num_samples, num_classes=self.num_classes,
            class_names=list(self.class_names), shards=[dict(s) for s in (self.shards or [self.shard])],
            separation=sep, calibration=self.calibration.compute(self.name),
            logits=self.logits.compute(self.name, self.num_classes),
            confusion=MergedConfusion(self.name, self.confusion.copy(), self._names()))

    def _names(self) -> list[str]:
        names = list(self.class_names)
        return names + [str(k) for k in range(len(names), self.num_classes)]

    def _identity(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "num_classes": self.num_classes,
                "class_names": list(self.class_names), "shard": self.shard, "shards": self.shards,
                "meta": self.meta, "n_bins": self.n_bins, "threshold": self.threshold, "alpha": self.alpha,
                "stats": list(PER_SAMPLE_STATS), "has_features": self.separation is not None}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics to one ``.npz`` (no pickle: the identity is JSON in a string array), atomically;
        returns the path."""
        from repanalysis.outputs import write_binary_atomic

        path = Path(path)
        c, g = self.calibration, self.logits
        arrays = {"identity": np.array(json.dumps(self._identity(), default=str)),
                  "cal_bins": np.stack([c.bin_counts, c.bin_conf, c.bin_acc]),
                  "cal_cells": np.stack([c.cw_counts, c.cw_psum, c.cw_hits]),
                  "cal_sums": np.array([c.conf_sum, c.nll_sum, c.brier_sum], dtype=np.float64),
                  "cal_counts": np.array([c.num_samples, c.n_excluded, c.n_correct], dtype=np.int64),
                  "logit_moments": np.stack([g.total, g.m2, g.low, g.high]),
                  "logit_sums": np.array([g.ee_active_sum, g.ee_abs_sum], dtype=np.float64),
                  "logit_counts": np.array([g.num_samples, g.n_excluded, g.n_correct, g.n_active], dtype=np.int64),
                  "confusion": self.confusion.astype(np.int64)}
        if self.separation is not None:
            st = self.separation.state()
            arrays.update(sep_values=st["values"], sep_sums=st["sums"], sep_counts=st["counts"],
                          sep_excluded=np.array([st["n_excluded"], st["n_nonfinite"]], dtype=np.int64))
        write_binary_atomic(path, lambda fh: np.savez(fh, **arrays))
        return path


def load_statistics(path: str | os.PathLike) -> ShardStatistics:
    """Read statistics written by :meth:`ShardStatistics.save` (no pickle); DumpError (one line) for a file that
    is not one."""
    path = Path(path)
    expected = "expected a .npz written by ShardStatistics.save or `repanalysis shard-stats --save`"
    if not path.is_file():
        raise DumpError(f"{path} is not a file; {expected}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        ident = json.loads(str(arrays["identity"]))
    except (OSError, ValueError, KeyError, EOFError, TypeError) as e:
        raise DumpError(f"{path} is not a shard statistics file ({type(e).__name__}); {expected}") from None
    except Exception as e:      # zipfile.BadZipFile and the like from a damaged archive
        raise DumpError(f"{path} is not a shard statistics file ({type(e).__name__}); {expected}") from None
    if not isinstance(ident, dict) or ident.get("format") != FORMAT:
        raise DumpError(f"{path} is not a shard statistics file (no {FORMAT!r} identity); {expected}")
    if ident.get("version") != VERSION:
        raise DumpError(f"{path} holds shard statistics of format version {ident.get('version')!r}; this "
                        f"repanalysis reads version {VERSION}; recompute them with this version")
    try:
        k, m = int(ident["num_classes"]), int(ident["n_bins"])
        if list(ident["stats"]) != list(PER_SAMPLE_STATS):
            raise ValueError("logit statistics differ")
        shapes = {"cal_bins": (3, m), "cal_cells": (3, k, m), "cal_sums": (3,), "cal_counts": (3,),
                  "logit_moments": (4, len(PER_SAMPLE_STATS)), "logit_sums": (2,), "logit_counts": (4,),
                  "confusion": (k, k)}
        for key, shape in shapes.items():
            if arrays[key].shape != shape:
                raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape}")
        cb, cc = arrays["cal_bins"].astype(np.float64), arrays["cal_cells"].astype(np.float64)
        cs, ci = arrays["cal_sums"].astype(np.float64), arrays["cal_counts"].astype(np.int64)
        cal = CalibrationSums(m, cb[0], cb[1], cb[2], cc[0], cc[1], cc[2], float(cs[0]), float(cs[1]), float(cs[2]),
                              int(ci[0]), int(ci[1]), int(ci[2]))
        lm, ls, lc = (arrays[key] for key in ("logit_moments", "logit_sums", "logit_counts"))
        lm = lm.astype(np.float64)
        lg = LogitSums(float(ident["threshold"]), float(ident["alpha"]), lm[0], lm[1], lm[2], lm[3], int(lc[0]),
                       int(lc[1]), int(lc[2]), int(lc[3]), float(ls[0]), float(ls[1]))
        sep = None
        if ident.get("has_features"):
            sep = SeparationAccumulator.from_state(
                {"values": arrays["sep_values"], "sums": arrays["sep_sums"], "counts": arrays["sep_counts"],
                 "n_excluded": int(arrays["sep_excluded"][0]), "n_nonfinite": int(arrays["sep_excluded"][1]),
                 "num_classes": k})
        shard = dict(ident["shard"])
        for key in ("index", "count", "start", "stop", "total"):
            if not isinstance(shard.get(key), int) or isinstance(shard.get(key), bool):
                raise ValueError(f"shard {key} is {shard.get(key)!r}")
        return ShardStatistics(name=str(ident["name"]), num_classes=k, class_names=list(ident["class_names"]),
                               shard=shard, meta=dict(ident.get("meta") or {}), n_bins=m,
                               threshold=float(ident["threshold"]), alpha=float(ident["alpha"]), calibration=cal,
                               logits=lg, confusion=arrays["confusion"].astype(np.int64), separation=sep,
                               source=str(path), shards=[dict(s) for s in ident.get("shards") or []])
    except (KeyError, ValueError, TypeError, IndexError, DataError) as e:
        raise DumpError(f"{path} is a damaged shard statistics file ({e}); {expected}") from None


@single_threaded
def _calibration_chunk(z: torch.Tensor, y: torch.Tensor, n_bins: int) -> CalibrationSums:
    """The calibration sums of one chunk of logits by the fused pass ``_scan`` (its exclusions included)."""
    k = z.shape[1]
    with warnings.catch_warnings():           # the shard's exclusions are reported once, by shard_statistics
        warnings.filterwarnings("ignore", message=r".*have NaN or inf logits")
        try:
            sc = _scan(z, y, n_bins=n_bins, want_classwise=True)
        except DataError:
            if bool(torch.isfinite(z).all(1).any()):   # _scan refuses a chunk only when every row is excluded
                raise
            out = CalibrationSums.zeros(k, n_bins)
            out.n_excluded = z.shape[0]
            return out
    np64 = lambda t: t.to(torch.float64).cpu().numpy()       # noqa: E731
    return CalibrationSums(n_bins, np64(sc.bin_counts), np64(sc.bin_conf), np64(sc.bin_acc), np64(sc.cw_counts),
                           np64(sc.cw_psum), np64(sc.cw_hits), float(sc.conf.sum()), float(sc.nll.sum()),
                           float(sc.brier.sum()), sc.num_samples, sc.n_excluded, int(sc.correct.sum()))


def shard_statistics(dump, *, n_bins: int = 15, threshold: float = 0.01, alpha: float = 0.1, device=None,
                     chunk_size: int = DEFAULT_CHUNK) -> ShardStatistics:
    """The mergeable statistics of one Dump (a shard, or any Dump: then it is shard 0/1 of itself).

    dump: a Dump or the path of one. n_bins: equal-width calibration bins M. threshold / alpha: the near-zero
    cut and the LS / MaxSup strength of the logit statistics. device: None (CPU), "auto", "cpu", "cuda[:N]".
    chunk_size: rows streamed at a time (``Dump.iter_chunks``, which releases memory-mapped pages): one pass
    over the logits for calibration, logit statistics and confusion counts, and one over the features (when
    the Dump has them) for separation. Memory: a chunk plus K x D + K x M + K x K numbers.

    Example::

        >>> st = shard_statistics(dump); st.save("stats-0.npz")
        >>> merge_statistics([st, load_statistics("stats-1.npz")]).compute().calibration.ece
    """
    from repanalysis.dump import Dump, load_dump

    if not isinstance(dump, Dump):
        dump = load_dump(dump)
    _check_bins(n_bins)
    check_number(threshold, "near-zero threshold", minimum=0)
    check_number(alpha, "alpha")
    chunk_size = check_chunk_size(chunk_size)
    dev = pick_device(device) if device is not None else torch.device("cpu")
    k = int(dump.num_classes)
    if k < 2:
        raise DataError(f"{dump.name}: the analyses need at least 2 classes; the logits have {k} column")
    n = dump.num_samples
    cal = CalibrationSums.zeros(k, n_bins)
    lg = LogitSums.zeros(threshold, alpha)
    confusion = torch.zeros(k * k, dtype=torch.int64, device=dev)
    for start, chunk in dump.iter_chunks(("logits", "labels"), chunk_size=chunk_size):
        raw = _readonly_tensor(chunk["logits"])
        if not raw.is_floating_point():
            raw = raw.to(torch.float32)
        labels = _readonly_tensor(chunk["labels"])
        # calibration: its working dtype (float64 logits stay float64), as calibration_report
        z, y = check_logits_labels(raw, labels, k, device=dev, dtype=_work_dtype(raw.dtype))
        if start == 0:
            refuse_probabilities(z, f"{dump.name}'s logits")
        cal = cal.merge(_calibration_chunk(z, y, n_bins))
        # logit statistics and confusion: float32 and finite rows, as logit_stats' _stream
        z = z.to(torch.float32)
        finite = torch.isfinite(z).all(dim=1)
        n_bad = int((~finite).sum())
        if n_bad:
            z, y = z[finite], y[finite]
            lg.n_excluded += n_bad
        if z.shape[0]:
            lg = lg.add_chunk(_chunk_stats(z, y, threshold, alpha))
            confusion += torch.bincount(y * k + z.argmax(dim=1), minlength=k * k)  # argmax: first index on ties
    if cal.n_excluded or lg.n_excluded:
        warnings.warn(f"{dump.name}: samples with NaN or inf logits are excluded: {cal.n_excluded} of {n} from "
                      f"calibration, {lg.n_excluded} from the logit statistics and confusion counts",
                      RuntimeWarning, stacklevel=2)
    sep = None
    if dump.features is not None:
        sep = SeparationAccumulator(num_classes=k, device=dev)
        for _, chunk in dump.iter_chunks(("features", "labels"), chunk_size=chunk_size):
            sep.update(chunk["features"], chunk["labels"])
    meta = dump.meta if isinstance(dump.meta, dict) else {}
    shard = whole_run(meta, n)
    if shard["stop"] - shard["start"] != n:
        raise DumpError(f"{dump.path or dump.name}: meta.json 'shard' says rows {shard['start']}-{shard['stop'] - 1}"
                        f" ({shard['stop'] - shard['start']} rows) but the Dump holds {n}; the Dump is damaged")
    run_meta = json.loads(json.dumps({f: meta.get(f) for f in RUN_META_FIELDS if meta.get(f) is not None},
                                     default=str))
    return ShardStatistics(name=dump.name, num_classes=k, class_names=list(dump.class_names or []), shard=shard,
                           meta=run_meta, n_bins=int(n_bins), threshold=float(threshold), alpha=float(alpha),
                           calibration=cal, logits=lg, confusion=confusion.view(k, k).cpu().numpy(),
                           separation=None if sep is None else _to_cpu(sep),
                           source=None if dump.path is None else str(dump.path), shards=[shard])


def _to_cpu(acc: SeparationAccumulator) -> SeparationAccumulator:
    return SeparationAccumulator.from_state(acc.state())


def merge_statistics(statistics: Sequence[ShardStatistics]) -> ShardStatistics:
    """The statistics of a whole run from those of its shards: checks that they are of one run and cover every
    row once (:func:`~repanalysis.dump.shards.check_cover`: DumpError naming gaps, overlaps or what differs),
    and were made with the same classes, bins, threshold and alpha, and all with or all without features;
    then adds the parts. The result's ``shard`` covers the whole run (0/1); ``.compute()`` gives the analyses.
    """
    stats = list(statistics)
    if not stats:
        raise DataError("no shard statistics given; expected those of every shard of one extraction")
    for s in stats:
        if not isinstance(s, ShardStatistics):
            raise DataError(f"merge_statistics takes ShardStatistics; got {type(s).__name__}")
    total = check_cover([(s.label, s.shard) for s in stats], [s.meta for s in stats])
    first = stats[0]
    for s in stats[1:]:
        for what, a, b in (("classes", first.num_classes, s.num_classes), ("bins", first.n_bins, s.n_bins),
                           ("near-zero threshold", first.threshold, s.threshold), ("alpha", first.alpha, s.alpha),
                           ("features", first.separation is not None, s.separation is not None)):
            if a != b:
                shown = (lambda v: "present" if v else "absent") if what == "features" else repr
                raise DataError(f"{s.label} and {first.label} differ in {what} ({shown(b)} vs {shown(a)}); expected "
                                "the statistics of every shard made with the same settings")
    order = sorted(stats, key=lambda s: s.shard["start"])
    cal, lg, confusion, sep = order[0].calibration, order[0].logits, order[0].confusion.copy(), None
    if first.separation is not None:
        sep = SeparationAccumulator.from_state(order[0].separation.state())
    for s in order[1:]:
        cal, lg = cal.merge(s.calibration), lg.merge(s.logits)
        confusion += s.confusion
        if sep is not None:
            sep.merge(s.separation)
    head = order[0]
    shard = {"index": 0, "count": 1, "start": 0, "stop": total, "total": total, "run": head.shard.get("run")}
    return ShardStatistics(name=head.name, num_classes=head.num_classes, class_names=list(head.class_names),
                           shard=shard, meta=dict(head.meta), n_bins=head.n_bins, threshold=head.threshold,
                           alpha=head.alpha, calibration=cal, logits=lg, confusion=confusion, separation=sep,
                           source=None, shards=[dict(r) for s in order for r in (s.shards or [s.shard])])


def analyse_shards(inputs: Sequence, **kwargs) -> MergedAnalyses:
    """The mergeable analyses of a run from its shards: each input a Dump, a Dump's path, a saved statistics
    ``.npz`` path or ShardStatistics. ``kwargs`` go to :func:`shard_statistics` (n_bins, threshold, alpha,
    device, chunk_size)."""
    return merge_statistics([statistics_of(x, **kwargs) for x in inputs]).compute()


def statistics_of(source, **kwargs) -> ShardStatistics:
    """ShardStatistics of one input: itself, a loaded ``.npz`` (a path ending in .npz), or computed from a Dump
    (a Dump or a Dump's path)."""
    if isinstance(source, ShardStatistics):
        return source
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".npz":
        st = load_statistics(source)
        for key in ("n_bins", "threshold", "alpha"):
            if key in kwargs and kwargs[key] is not None and getattr(st, key) != kwargs[key]:
                raise DataError(f"{source} holds statistics made with {key} = {getattr(st, key)!r}, not "
                                f"{kwargs[key]!r}; recompute them with the settings asked for")
        return st
    return shard_statistics(source, **kwargs)

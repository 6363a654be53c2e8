"""The results of the mergeable analyses: calibration, logit statistics, confusion counts, all four together."""
from __future__ import annotations


import math
from dataclasses import asdict, dataclass

import numpy as np

from repanalysis.analyze.calibration.results import BinStats, _nan_to_none
from repanalysis.analyze.geometry import SeparationResult
from repanalysis.analyze.logits import PER_SAMPLE_STATS, LogitSummary
from repanalysis.analyze.per_class import top_confusions
from repanalysis.errors import DataError

# the scalars of MergedCalibration (those of calibration's SCALARS that are mergeable: no adaptive ECE)
CALIBRATION_SCALARS = ("accuracy", "mean_confidence", "ece", "mce", "classwise_ece", "oece", "uece", "nll",
                       "brier")


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
        return self.summary_dict()


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
                "top_confusions": [[asdict(c) for c in row] for row in self.top_confusions(top_k)]}


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



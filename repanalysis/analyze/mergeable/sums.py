"""The sums of one shard (calibration bins, logit moments) and how two of them add up."""
from __future__ import annotations


import math
from dataclasses import dataclass

import numpy as np
import torch

from repanalysis.analyze.calibration.binning import _bin_stats, _errors_from_sums, equal_width_edges
from repanalysis.analyze.calibration.metrics import _classwise_from_cells
from repanalysis.analyze.logits import LOGIT_PENALTY_BETA, PER_SAMPLE_STATS
from repanalysis.errors import DataError
from repanalysis.analyze.mergeable.results import MergedCalibration, MergedLogitStats

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
            logit_penalty_mean=float(LOGIT_PENALTY_BETA * mean_sq_norm / 2))



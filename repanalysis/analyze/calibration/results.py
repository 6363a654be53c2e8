"""Calibration Results: :class:`BinStats`, :class:`CalibrationResult`, :class:`TemperatureResult`, and
``SCALARS``, the names of the scalar metrics (in the order of the report and the bootstrap)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SCALARS = ("accuracy", "mean_confidence", "ece", "mce", "aece", "classwise_ece", "oece", "uece", "nll",
           "brier")


# --- results ------------------------------------------------------------------------------------------
@dataclass
class BinStats:
    """Per-bin arrays of one binning (M bins).

    edges (M+1,), counts (M,) int, accuracy (M,) and confidence (M,) float (NaN for empty bins),
    ``num_samples`` N (the weights are counts / N), ``rule`` the binning ("equal-width", "adaptive-reference",
    "adaptive-corrected").
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    num_samples: int
    rule: str = "equal-width"

    @property
    def gap(self) -> np.ndarray:
        """confidence - accuracy per bin (> 0 over-confident, < 0 under-confident; NaN when empty)."""
        return self.confidence - self.accuracy

    def to_dict(self) -> dict:
        return {"rule": self.rule, "num_samples": self.num_samples, "edges": self.edges.tolist(),
                "counts": self.counts.tolist(), "accuracy": _nan_to_none(self.accuracy),
                "confidence": _nan_to_none(self.confidence)}


@dataclass
class CalibrationResult:
    """Every calibration number of one model on one split, with per-bin and per-sample arrays.

    Scalars (fractions, not %): accuracy, mean_confidence, ece, mce, aece, classwise_ece, oece, uece, nll,
    brier. ``ci`` maps each scalar name to (low, high) of the bootstrap percentile interval (empty when
    n_boot = 0). ``bins`` / ``adaptive_bins``: :class:`BinStats`. ``confidence`` (N,) and ``correct`` (N,)
    are the per-sample max-softmax and correctness (finite rows only). ``temperature`` is the T the logits
    were divided by (1.0 when untouched). ``replicates`` maps each scalar to its (n_boot,) bootstrap values.
    ``bin_band`` (2, M): the bootstrap percentile band (low, high) of each equal-width bin's accuracy (NaN for a bin
    that fewer than half of the resamples drew into), when n_boot > 0; drawn by ``plot_reliability(bands=True)``.
    ``temperature_fit`` (a "+TS" result of :func:`calibrate_dumps`): the validation Dump's name and the
    :class:`TemperatureResult` fields (T, validation NLL before / after, samples, converged).
    """

    name: str
    num_samples: int
    num_classes: int
    n_bins: int
    accuracy: float
    mean_confidence: float
    ece: float
    mce: float
    aece: float
    classwise_ece: float
    oece: float
    uece: float
    nll: float
    brier: float
    bins: BinStats
    adaptive_bins: BinStats
    classwise_per_class: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    adaptive_rule: str = "reference"
    temperature: float = 1.0
    n_excluded: int = 0
    n_boot: int = 0
    ci_level: float = 0.95
    ci: dict = field(default_factory=dict)
    seed: int | None = None
    replicates: dict = field(default_factory=dict, repr=False)
    temperature_fit: dict | None = None
    bin_band: np.ndarray | None = None          # (2, M) bootstrap band of each equal-width bin's accuracy

    def scalars(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in SCALARS}

    def to_dict(self, per_sample: bool = False) -> dict:
        out = {"name": self.name, "num_samples": self.num_samples, "num_classes": self.num_classes,
               "n_bins": self.n_bins, "adaptive_rule": self.adaptive_rule, "temperature": self.temperature,
               "n_excluded": self.n_excluded, **self.scalars(),
               "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
               "n_boot": self.n_boot, "ci_level": self.ci_level, "seed": self.seed,
               "bins": self.bins.to_dict(), "adaptive_bins": self.adaptive_bins.to_dict(),
               "classwise_per_class": self.classwise_per_class.tolist()}
        if self.bin_band is not None:
            out["bins"]["accuracy_band"] = [_nan_to_none(self.bin_band[0]), _nan_to_none(self.bin_band[1])]
        if self.temperature_fit is not None:
            out["temperature_fit"] = self.temperature_fit
        if per_sample:
            out["confidence"] = self.confidence.tolist()
            out["correct"] = self.correct.astype(int).tolist()
        return out

    def to_frame(self):
        """Tidy pandas DataFrame, one row per name of SCALARS: columns model, metric, value, ci_low, ci_high
        (the bootstrap interval of ``ci``; NaN without one, e.g. n_boot = 0), n (samples)."""
        from repanalysis.frames import tidy_frame

        return tidy_frame(self.name, self.scalars(), self.ci, n=self.num_samples)


@dataclass
class TemperatureResult:
    """A fitted temperature and the metrics it changes, before and after, on the fitting data."""

    temperature: float
    nll_before: float
    nll_after: float
    num_samples: int
    converged: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def to_frame(self, name: str | None = None):
        """Tidy pandas DataFrame, rows temperature, nll_before, nll_after: columns model (``name``; a fit has
        none of its own, so "model" by default), converged, metric, value, n (samples fitted on)."""
        from repanalysis.frames import tidy_frame

        return tidy_frame(name, {"temperature": self.temperature, "nll_before": self.nll_before,
                                 "nll_after": self.nll_after}, n=self.num_samples, converged=bool(self.converged))


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(a, dtype=float).tolist()]

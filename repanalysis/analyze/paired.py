"""Paired differences against a baseline model, with paired bootstrap intervals.

Every model of a comparison sees the same images, so the question "is LS's ECE really lower than CE's?" is
answered by resampling the *images* once and evaluating both models on the same resample: replicate r of the
difference is ``metric(model, resample r) - metric(baseline, resample r)`` (a paired bootstrap, Efron &
Tibshirani 1993, Sec. 16.2). The percentile interval of those differences (the convention of the calibration
intervals, :func:`repanalysis.analyze.calibration.bootstrap._percentile_ci`) is reported, and a difference
whose interval excludes 0 is marked. The pairing comes from :mod:`repanalysis.analyze.resample`: every
replicate producer here, and the calibration bootstrap, draw resample r from the same seeded stream for every
model of the same N.

Replicates of each analysis' scalars (each a function of arrays a Result or a Dump already holds):

- calibration: the ``replicates`` of :func:`repanalysis.analyze.calibration.calibration_report` (``n_boot``);
- logits: :func:`logit_replicates` (the means of the per-sample statistics of a LogitStats);
- class separation: :func:`separation_replicates` (d_within, d_total and R^2 on each resample);
- Grad-CAM localisation: :func:`localisation_replicates` (the NaN-aware means over the scored images).

Example::

    >>> rows = paired_differences({"CE": {"ece": 0.05}, "LS": {"ece": 0.03}},
    ...                           {"CE": {"ece": ce_reps}, "LS": {"ece": ls_reps}}, baseline="CE")
    >>> rows[0].difference, rows[0].ci_low, rows[0].ci_high, rows[0].excludes_zero
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from repanalysis.analyze.resample import bootstrap_weights, weighted_means
from repanalysis.arrays import as_labels, check_number, pick_device
from repanalysis.errors import DataError

# Columns of the paired-difference table, in order, with their display headers.
TABLE_HEADERS = {"analysis": "analysis", "split": "split", "metric": "metric", "model": "model",
                 "value": "model value", "baseline_value": "baseline value", "difference": "difference",
                 "ci_low": "CI low", "ci_high": "CI high", "excludes_zero": "excludes 0"}
# Logit-table scalars (LogitStats.row()) whose replicates logit_replicates gives.
LOGIT_METRICS = ("accuracy", "near_zero", "top1_prob", "logit_range", "ee_active", "ee_share")
SEPARATION_METRICS = ("d_within", "d_total", "r2")
LOCALISATION_METRICS = ("accuracy", "precision", "recall", "f1", "iou", "energy_pg", "pointing", "pr_area")
_SEPARATION_BLOCK_BYTES = 1 << 28     # per-class sums of a block of replicates: (b, C, D) float64 up to 256 MiB


@dataclass
class PairedDifference:
    """One metric of one model against the baseline on the same samples.

    value / baseline_value: the point estimates (the Results' own numbers); difference = value - baseline_value;
    ci_low, ci_high: the percentile interval of the paired replicate differences (NaN when fewer than half of
    the replicates are defined); n: samples resampled; n_boot: replicates.
    """

    analysis: str
    split: str | None
    metric: str
    model: str
    baseline: str
    value: float
    baseline_value: float
    difference: float
    ci_low: float
    ci_high: float
    n: int
    n_boot: int
    ci_level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or entirely below 0 (False when it is undefined). An end within
        float rounding of 0 counts as 0: a difference of two means of 0/1 values that is exactly 0 can come out
        as 1e-17."""
        tol = 1e-9 * max(1.0, abs(self.value), abs(self.baseline_value))
        return bool(self.ci_low > tol or self.ci_high < -tol)

    def row(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k not in ("n_boot", "ci_level")},
                "excludes_zero": self.excludes_zero}


@dataclass
class PairedDifferences:
    """Every paired difference of a comparison (one row per analysis, split, metric and non-baseline model)."""

    baseline: str
    n_boot: int
    ci_level: float
    seed: int
    rows: list[PairedDifference] = field(default_factory=list)

    def table_rows(self) -> list[dict]:
        return [r.row() for r in self.rows]

    def significant(self) -> list[PairedDifference]:
        """The differences whose interval excludes 0."""
        return [r for r in self.rows if r.excludes_zero]

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "n_boot": self.n_boot, "ci_level": self.ci_level, "seed": self.seed,
                "method": "paired bootstrap: the same resampled sample indices for every model; percentile "
                          "interval of the per-replicate differences",
                "differences": self.table_rows()}

    def to_frame(self):
        """Tidy pandas frame: one row per model and metric (analysis, split, metric, model, baseline, value,
        baseline_value, difference, ci_low, ci_high, n, excludes_zero)."""
        import pandas as pd

        return pd.DataFrame(self.table_rows(), columns=[*TABLE_HEADERS, "n"] if not self.rows else None)


def paired_differences(estimates: Mapping[str, Mapping[str, float]], replicates: Mapping[str, Mapping[str, np.ndarray]],
                       baseline: str, *, analysis: str = "", split: str | None = None, n: int = 0,
                       ci_level: float = 0.95, metrics: Sequence[str] | None = None) -> list[PairedDifference]:
    """Model minus baseline for every metric and every other model, with paired percentile intervals.

    estimates: model -> metric -> point value; replicates: model -> metric -> (n_boot,) values, replicate r of
    every model computed on the same resample r (raises DataError when the replicate counts differ).
    metrics: which metrics, in order (default: the baseline's estimates, in their order).
    """
    ci_level = check_number(ci_level, "ci_level", minimum=0.0, maximum=1.0)
    if baseline not in estimates:
        raise DataError(f"baseline {baseline!r} is not one of the models ({', '.join(estimates)}); "
                        "expected one of their names")
    metrics = list(metrics if metrics is not None else estimates[baseline])
    lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 - (1 - ci_level) / 2)
    out = []
    for model in estimates:
        if model == baseline:
            continue
        for metric in metrics:
            a = np.asarray(replicates[model][metric], dtype=np.float64)
            b = np.asarray(replicates[baseline][metric], dtype=np.float64)
            if a.shape != b.shape:
                raise DataError(f"{metric}: {model} has {a.size} bootstrap replicates and {baseline} {b.size}; "
                                "expected the same resamples for both (same seed, n_boot and samples)")
            diff = a - b
            diff = diff[np.isfinite(diff)]
            if diff.size and diff.size >= a.size / 2:
                lo, hi = (float(v) for v in np.percentile(diff, [lo_q, hi_q]))
            else:
                lo = hi = math.nan
            value, base = float(estimates[model][metric]), float(estimates[baseline][metric])
            out.append(PairedDifference(analysis=analysis, split=split, metric=metric, model=model, baseline=baseline,
                                        value=value, baseline_value=base, difference=value - base, ci_low=lo,
                                        ci_high=hi, n=int(n), n_boot=int(a.size), ci_level=ci_level))
    return out


def check_paired_samples(counts: Mapping[str, int], what: str) -> int:
    """The one sample count of every model (DataError naming the models when they differ: a paired bootstrap
    needs the same samples for all)."""
    values = set(counts.values())
    if len(values) != 1:
        listed = ", ".join(f"{m}: {c}" for m, c in counts.items())
        raise DataError(f"{what}: the models have different numbers of samples ({listed}); a paired comparison "
                        "needs the same samples for every model (rows with NaN/inf outputs are left out: fix or "
                        "re-extract them)")
    return values.pop()


def logit_replicates(stats, n_boot: int, seed: int = 0, device=None) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the logit table's scalars (:data:`LOGIT_METRICS`) of one LogitStats.

    accuracy, near_zero, top1_prob, logit_range and ee_active are means over samples; ee_share is the ratio
    of sums sum |EE| / (sum reg + sum |EE|) (:attr:`LogitStats.ee_loss_share`), here per resample.
    """
    dev = pick_device(device) if device is not None else torch.device("cpu")
    cols = [stats.correct, stats.near_zero_fraction, stats.top1_prob, stats.logit_range, stats.ee_active,
            np.abs(stats.ls_error_enhancement), stats.ls_regularization]
    values = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float64) for c in cols], 1)).to(dev)
    means = weighted_means(values, n_boot, seed).cpu().numpy()
    ee, reg = means[:, 5], means[:, 6]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ee + reg > 0, ee / (ee + reg), np.nan)
    return {**{key: means[:, j] for j, key in enumerate(LOGIT_METRICS[:5])}, "ee_share": share}


def localisation_replicates(result, n_boot: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the Grad-CAM table's means over images (:data:`LOCALISATION_METRICS`), NaN-aware
    as :meth:`LocalisationResult.summary` (an image where a metric is undefined does not count for it)."""
    cols = [result.preds == result.labels, result.precision, result.recall, result.f1, result.iou, result.energy,
            result.pointing_hit, result.pr_area]
    values = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float64) for c in cols], 1))
    means = weighted_means(values, n_boot, seed).numpy()
    return {key: means[:, j] for j, key in enumerate(LOCALISATION_METRICS)}


def separation_replicates(features, labels, n_boot: int, seed: int = 0, *, num_classes: int | None = None,
                          device=None) -> dict[str, np.ndarray]:
    """Bootstrap replicates of d_within, d_total and R^2 (:func:`repanalysis.analyze.geometry.class_separation`).

    features (N, D), labels (N,). Resample r weights each sample by its multiplicity: the per-class sums of
    unit vectors become ``sum_i w_ri u_i`` (one sparse (b*C, N) x (N, D) product per block of replicates) and
    the closed form :func:`repanalysis.analyze.geometry.distances_from_sums` gives the distances. Rows with zero
    norm or non-finite features take no part (as in class_separation); a class not drawn in a resample drops
    out of that resample's class averages. Memory: the N x D unit vectors (float32) plus one block's sums.
    """
    from repanalysis.analyze.geometry import _D_TOTAL_FLOOR, _read_only_tensor, distances_from_sums, r2_from_distances

    dev = pick_device(device) if device is not None else torch.device("cpu")
    h = _read_only_tensor(features).to(dev, torch.float32)
    if h.ndim != 2:
        raise DataError(f"features must be 2-D [N, D]; got shape {tuple(h.shape)}")
    n, d = h.shape
    y = as_labels(labels, n, num_classes=num_classes, device=dev)
    norms = torch.linalg.vector_norm(h, dim=1)
    keep = torch.isfinite(norms) & (norms > 0)
    u = torch.where(keep[:, None], h / norms.clamp_min(1e-30)[:, None], 0.0)
    values, y_row = torch.unique(y, return_inverse=True)                   # compact classes (sparse label values)
    c = int(values.numel())
    keep64 = keep.to(torch.float64)
    out = {key: [] for key in SEPARATION_METRICS}
    sub = max(1, _SEPARATION_BLOCK_BYTES // max(1, c * d * 8))
    cols = torch.arange(n, device=dev)
    for w in bootstrap_weights(n, n_boot, seed, dev):
        w = w * keep64                                                     # dropped rows weigh nothing
        for s in range(0, w.shape[0], sub):
            ws = w[s:s + sub]
            b = ws.shape[0]
            rows = (torch.arange(b, device=dev)[:, None] * c + y_row[None, :]).reshape(-1)
            design = torch.sparse_coo_tensor(torch.stack([rows, cols.repeat(b)]), ws.reshape(-1).to(torch.float32),
                                             (b * c, n), check_invariants=False)   # built valid
            sums = torch.sparse.mm(design, u).to(torch.float64).view(b, c, d)
            counts = torch.zeros(b, c, dtype=torch.float64, device=dev).index_add_(1, y_row, ws)
            _, d_within, d_total = distances_from_sums(sums, counts)
            out["d_within"].append(d_within)
            out["d_total"].append(d_total)
            out["r2"].append(torch.where(d_total > _D_TOTAL_FLOOR, r2_from_distances(d_within, d_total), torch.nan))
    if not out["r2"]:
        return {key: np.zeros(0) for key in SEPARATION_METRICS}
    return {key: torch.cat(parts).cpu().numpy() for key, parts in out.items()}

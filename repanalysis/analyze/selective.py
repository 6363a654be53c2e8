"""Selective prediction: risk-coverage curves, AURC and E-AURC of confidence scores.

A selective classifier answers only the ``k`` samples it is most confident about and abstains on the rest
(Geifman & El-Yaniv 2017, "Selective classification for deep neural networks"). Sorting the N samples by a
confidence score, most confident first, the *selective risk* at coverage ``k / N`` is the error rate of the
top ``k``::

    risk(k / N) = (1 / k) * sum_{i <= k} err_(i),     k = 1..N

AURC is the mean of the risk over the N coverages k / N (the area under the risk-coverage curve as a right
Riemann sum, as in Geifman et al.'s code). E-AURC (Geifman, Uziel & El-Yaniv 2019, "Bias-reduced uncertainty
estimation for deep neural classifiers", sec. 3) subtracts the AURC of the optimal ranking (every error
last), whose closed form for an error rate r* is ``r* + (1 - r*) ln(1 - r*)`` (their eq. 5; the integral of
the optimal curve, so a perfect ranking of N samples gets an E-AURC of O(log N / N), not exactly 0).

Ties. Samples with equal scores cannot be ordered by the score; any tie-break would make AURC depend on the
sample order. Here every sample of a tie group gets the group's mean error ``(errors in group) / (group
size)`` before the cumulative sum: the risk at every coverage is then the *expected* risk over uniformly
random orderings within each tie group (the cumulative error count is linear in the position inside a
group), and so is AURC. This is the convention of the risk-coverage curves with "ties broken at random, in
expectation" (e.g. Ding et al. 2020, "Revisiting the evaluation of uncertainty estimation and its
application to explore model complexity-uncertainty trade-off"); with no ties it is the plain curve.

Scores: ``max_softmax``, ``max_logit`` and ``feature_l1`` from :func:`repanalysis.analyze.confidence.
confidence_scores` (higher = more confident). An error is a wrong top-1 prediction (argmax of the logits).
Everything is one sort and one cumulative sum per score, in float64, on CPU or GPU (``device=``); on CPU with
one intra-op thread (N-sized vector work, see :func:`~repanalysis.analyze.calibration._fused.single_threaded`).

Example::

    >>> from repanalysis.analyze.selective import selective_prediction
    >>> res = selective_prediction(dump.logits, dump.labels, dump.features, name="CE")
    >>> res.aurc["max_softmax"], res.eaurc["max_softmax"]
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from repanalysis.analyze.calibration._fused import single_threaded
from repanalysis.arrays import as_tensor, check_logits_labels, model_names
from repanalysis.errors import DataError

SELECTIVE_SCORES = ("max_softmax", "max_logit", "feature_l1")
_CHUNK_ELEMENTS = 1 << 20      # logits entries per chunk of rows when computing the scores


@dataclass
class SelectiveResult:
    """Risk-coverage of each confidence score, for one model.

    aurc / eaurc: score name -> float. coverage (N,): k / N for k = 1..N. risk: score name -> (N,) selective
    risk at each coverage (tied scores averaged, see the module doc). error_rate: r*, the top-1 error rate;
    aurc_optimal: r* + (1 - r*) ln(1 - r*). n_excluded: rows dropped for NaN/inf logits or features.
    """

    name: str
    aurc: dict[str, float]
    eaurc: dict[str, float]
    error_rate: float
    aurc_optimal: float
    coverage: np.ndarray = field(repr=False)
    risk: dict[str, np.ndarray] = field(repr=False)
    n_excluded: int = 0

    @property
    def num_samples(self) -> int:
        return int(self.coverage.size)

    def to_dict(self, curves: bool = False) -> dict:
        """Plain JSON-ready dict; ``curves=True`` adds the coverage and risk arrays."""
        out = {"name": self.name, "num_samples": self.num_samples, "n_excluded": self.n_excluded,
               "error_rate": self.error_rate, "aurc_optimal": self.aurc_optimal,
               "aurc": {k: _num(v) for k, v in self.aurc.items()},
               "eaurc": {k: _num(v) for k, v in self.eaurc.items()}}
        if curves:
            out["coverage"] = self.coverage.tolist()
            out["risk"] = {k: v.tolist() for k, v in self.risk.items()}
        return out

    def to_frame(self):
        """Tidy pandas DataFrame: an ``error_rate`` and an ``aurc_optimal`` row (score None), then ``aurc`` and
        ``eaurc`` rows per score; columns model, score, metric, value, n (samples)."""
        from repanalysis.frames import rows_frame, tidy_rows

        n = self.num_samples
        rows = tidy_rows(self.name, {"error_rate": self.error_rate, "aurc_optimal": self.aurc_optimal}, n=n,
                         score=None)
        for score in self.aurc:
            rows += tidy_rows(self.name, {"aurc": self.aurc[score], "eaurc": self.eaurc[score]}, n=n, score=score)
        return rows_frame(rows)


def _num(v: float):
    return None if not math.isfinite(v) else float(v)


def risk_coverage(confidence, errors, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective risk at every coverage k / N, k = 1..N, most confident samples first.

    confidence (N,) scores (higher = more confident), errors (N,) 0/1 (or bool; any values in [0, 1] work as
    per-sample losses). Tied scores get their group's mean error (the expected curve over random orderings
    within ties). Returns (coverage (N,), risk (N,)), float64 tensors on the device of the input.
    """
    s = as_tensor(confidence, device=device).to(torch.float64)
    e = as_tensor(errors, device=device).to(device=s.device, dtype=torch.float64)
    if s.ndim != 1 or e.shape != s.shape:
        raise DataError(f"confidence and errors must be 1-D of the same length; got shapes {tuple(s.shape)} "
                        f"and {tuple(e.shape)}")
    n = s.numel()
    if n == 0:
        raise DataError("no samples: expected at least one confidence score")
    if not bool(torch.isfinite(s).all()):
        raise DataError(f"{int((~torch.isfinite(s)).sum())} of {n} confidence scores are NaN or inf; drop those "
                        "rows first")
    s_sorted, order = torch.sort(s, descending=True, stable=True)
    e_sorted = e[order]
    new_group = torch.ones(n, dtype=torch.bool, device=s.device)
    new_group[1:] = s_sorted[1:] != s_sorted[:-1]
    group = torch.cumsum(new_group.to(torch.int64), 0) - 1            # tie-group index of each sorted sample
    n_groups = int(group[-1]) + 1
    if n_groups < n:                                                   # ties: each gets its group's mean error
        sums = torch.zeros(n_groups, dtype=torch.float64, device=s.device).index_add_(0, group, e_sorted)
        counts = torch.bincount(group, minlength=n_groups).to(torch.float64)
        e_sorted = (sums / counts)[group]
    k = torch.arange(1, n + 1, dtype=torch.float64, device=s.device)
    risk = torch.cumsum(e_sorted, 0) / k                               # risk(k/N) = sum_{i<=k} err_(i) / k
    return k / n, risk


def aurc(confidence, errors, device=None) -> float:
    """AURC: the mean selective risk over the coverages k / N, k = 1..N (Geifman & El-Yaniv 2017; ties
    averaged, see :func:`risk_coverage`). confidence (N,), errors (N,) 0/1."""
    return float(risk_coverage(confidence, errors, device)[1].mean())


def optimal_aurc(error_rate: float) -> float:
    """AURC of the ideal ranking, r* + (1 - r*) ln(1 - r*) (Geifman et al. 2019, eq. 5); 1 at r* = 1."""
    r = float(error_rate)
    if not 0.0 <= r <= 1.0:
        raise DataError(f"error rate must lie in [0, 1]; got {r}")
    return r if r == 1.0 else r + (1.0 - r) * math.log1p(-r)


def eaurc(confidence, errors, device=None) -> float:
    """E-AURC = AURC - (r* + (1 - r*) ln(1 - r*)), r* the mean of ``errors`` (Geifman et al. 2019)."""
    e = as_tensor(errors, device=device).to(torch.float64)
    return aurc(confidence, e, device) - optimal_aurc(float(e.mean()))


@single_threaded
def selective_prediction(logits, labels, features=None, *, scores=SELECTIVE_SCORES, num_classes: int | None = None,
                         name: str = "model", device=None) -> SelectiveResult:
    """Risk-coverage curves, AURC and E-AURC of the top-1 prediction under each confidence score.

    logits (N, K), labels (N,), features (N, D) or None (then no ``feature_l1``). ``scores``: names among
    ``max_softmax``, ``max_logit``, ``energy``, ``feature_l1``. Rows with NaN/inf logits or features are
    excluded with a warning.
    """
    from repanalysis.analyze.confidence import SCORES, confidence_scores

    unknown = [s for s in scores if s not in SCORES]
    if unknown or not scores:
        raise DataError(f"unknown confidence score(s) {unknown}; expected some of {', '.join(SCORES)}")
    z = as_tensor(logits, device=device)
    if not z.is_floating_point():
        z = z.to(torch.float32)
    z, y = check_logits_labels(z, as_tensor(labels), num_classes, device=device, dtype=z.dtype)
    n = z.shape[0]
    if n == 0:
        raise DataError("no samples: logits have 0 rows; expected at least one sample")
    h = None
    if features is not None:
        h = as_tensor(features, device=z.device)
        if h.ndim != 2 or h.shape[0] != n:
            raise DataError(f"features must be [N, D] with N = {n} rows like the logits; got shape {tuple(h.shape)}")
    elif "feature_l1" in scores:
        warnings.warn(f"{name}: no features, so the feature_l1 score is skipped", RuntimeWarning, stacklevel=3)
    wanted = [s for s in scores if s != "feature_l1" or h is not None]
    # scores in row chunks: the float64 softmax of a chunk stays cache-sized instead of N x K
    rows = max(1, _CHUNK_ELEMENTS // max(1, z.shape[1]))
    parts, pred = {s: [] for s in wanted}, []
    ok = torch.empty(n, dtype=torch.bool, device=z.device)
    for a in range(0, n, rows):
        part = confidence_scores(z[a:a + rows], None if h is None else h[a:a + rows])
        good = torch.isfinite(part["max_softmax"]) & torch.isfinite(part["max_logit"])    # NaN / +inf logits
        for s in wanted:
            parts[s].append(part[s])
            good &= torch.isfinite(part[s])
        ok[a:a + rows] = good
        pred.append(z[a:a + rows].argmax(1))
    sc = {s: torch.cat(v) for s, v in parts.items()}
    pred = torch.cat(pred)
    n_bad = int((~ok).sum())
    if n_bad:
        if n_bad == ok.numel():
            raise DataError(f"all {n_bad} samples have NaN or inf logits/features; nothing to analyse")
        warnings.warn(f"{name}: {n_bad} of {ok.numel()} samples have NaN or inf logits or features; they are "
                      "excluded from the risk-coverage curves", RuntimeWarning, stacklevel=3)
        pred, y, sc = pred[ok], y[ok], {k: v[ok] for k, v in sc.items()}
    err = (pred != y).to(torch.float64)
    r = float(err.mean())
    best = optimal_aurc(r)
    coverage, risks, areas = None, {}, {}
    for key, v in sc.items():
        coverage, risk = risk_coverage(v, err)
        risks[key] = risk.cpu().numpy()
        areas[key] = float(risk.mean())
    return SelectiveResult(name=name, aurc=areas, eaurc={k: a - best for k, a in areas.items()}, error_rate=r,
                           aurc_optimal=best, coverage=coverage.cpu().numpy(), risk=risks, n_excluded=n_bad)


def selective_dumps(dumps, *, names=None, scores=SELECTIVE_SCORES, device=None) -> list[SelectiveResult]:
    """:func:`selective_prediction` of each Dump (its logits, labels, features and name, or ``names``)."""
    dumps = list(dumps)
    names = model_names(dumps, names)
    return [selective_prediction(d.logits, d.labels, d.features, scores=scores, num_classes=d.num_classes,
                                 name=name, device=device) for d, name in zip(dumps, names)]

"""Post-hoc calibrators beside temperature scaling: vector scaling and histogram binning.

- Vector scaling (Guo et al. 2017, sec. 4.2): z -> w * z + b with a diagonal W = diag(w) and a bias b, both
  (K,), fitted by minimising the NLL on held-out logits with LBFGS (strong Wolfe), from w = 1, b = 0.
- Histogram binning (Zadrozny & Elkan 2001), on the top-label confidence: M equal-width ``(lo, hi]`` bins on
  [0, 1] (the ECE's bins, :func:`~repanalysis.analyze.calibration.binning.equal_width_bin`; a confidence of 0
  is in the first bin); each bin's calibrated confidence is the accuracy of the validation samples in it; an
  empty bin keeps the identity map at its centre, (lo + hi) / 2.

Both are fitted on one Dump and applied to another of the same model (:func:`posthoc_dumps`), and
:func:`calibration_report` measures before and after. Histogram binning changes only the top-label
confidence q: the calibrated logits are log p' with p'_pred = q and the other classes sharing 1 - q in the
proportions of the original softmax. So that the prediction stays the same, q is raised to just above the
largest other share when it would fall below it, and q is kept in [1e-7, 1 - 1e-7] so that every log is
finite (a change of at most 1e-7 in any confidence).

Example::

    >>> from repanalysis.analyze.calibration.posthoc import fit_vector_scaling, apply_vector_scaling
    >>> vs = fit_vector_scaling(val.logits, val.labels)
    >>> calibration_report(apply_vector_scaling(test.logits, vs), test.labels)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from repanalysis.analyze.calibration._fused import _prepare
from repanalysis.analyze.calibration.binning import equal_width_bin
from repanalysis.analyze.calibration.temperature import _finite_rows, _minimise_nll
from repanalysis.arrays import as_tensor, check_number, model_names
from repanalysis.errors import DataError

POSTHOC_METHODS = ("temperature", "vector", "histogram")
_Q_CLIP = 1e-7


@dataclass
class VectorScaling:
    """A fitted vector scaling: weight (K,), bias (K,); validation NLL before / after; converged."""

    weight: np.ndarray
    bias: np.ndarray
    nll_before: float
    nll_after: float
    num_samples: int
    converged: bool

    def to_dict(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist(), "nll_before": self.nll_before,
                "nll_after": self.nll_after, "num_samples": self.num_samples, "converged": self.converged}


@dataclass
class HistogramBinning:
    """A fitted histogram binning: edges (M + 1,), values (M,) calibrated confidence per bin, counts (M,)."""

    edges: np.ndarray
    values: np.ndarray
    counts: np.ndarray

    @property
    def n_bins(self) -> int:
        return int(self.values.size)

    def to_dict(self) -> dict:
        return {"n_bins": self.n_bins, "values": self.values.tolist(), "counts": self.counts.tolist()}


# --- vector scaling ------------------------------------------------------------------------------------
def fit_vector_scaling(logits, labels, *, max_iter: int = 200, num_classes: int | None = None,
                       device=None) -> VectorScaling:
    """Fit z -> w * z + b (diagonal W, Guo et al. 2017) by the NLL on held-out logits (N, K), labels (N,)."""
    max_iter = check_number(max_iter, "max_iter", integer=True, minimum=1)
    z, y = _prepare(logits, labels, num_classes, device)
    z, y = _finite_rows(z, y, "vector scaling", "vector scaling")
    z = z.to(torch.float64)
    k = z.shape[1]
    w = torch.ones(k, dtype=torch.float64, device=z.device, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, device=z.device, requires_grad=True)
    # NLL of softmax(W z + b), W diagonal
    before, after, grad = _minimise_nll([w, b], lambda v: v * w + b, z, y, max_iter, tolerance_grad=1e-9)
    converged = grad < 1e-5
    if not converged:
        warnings.warn(f"the vector scaling fit stopped after {max_iter} iteration(s) without reaching a minimum of "
                      f"the validation NLL (max |gradient| = {grad:.2g}); with every prediction right it has none",
                      RuntimeWarning, stacklevel=2)
    return VectorScaling(weight=w.detach().cpu().numpy(), bias=b.detach().cpu().numpy(), nll_before=before,
                         nll_after=after, num_samples=int(z.shape[0]), converged=converged)


def apply_vector_scaling(logits, scaling: VectorScaling):
    """w * z + b for logits (N, K); same type as given (tensor, or float64 ndarray)."""
    if not isinstance(scaling, VectorScaling):
        raise DataError(f"expected the VectorScaling that fit_vector_scaling returns; got {type(scaling).__name__}")
    z = as_tensor(logits)
    if z.ndim != 2 or z.shape[1] != scaling.weight.size:
        raise DataError(f"logits must be [N, {scaling.weight.size}] like the ones the scaling was fitted on; got "
                        f"shape {tuple(z.shape)}")
    w = torch.as_tensor(scaling.weight, device=z.device)
    b = torch.as_tensor(scaling.bias, device=z.device)
    out = z.to(torch.float64) * w + b
    return out if isinstance(logits, torch.Tensor) else out.cpu().numpy()


# --- histogram binning ---------------------------------------------------------------------------------
def _confidence(z: torch.Tensor):
    p = torch.softmax(z.to(torch.float64), 1)
    return p, p.amax(1), p.argmax(1)


def fit_histogram_binning(logits, labels, n_bins: int = 15, *, num_classes: int | None = None,
                          device=None) -> HistogramBinning:
    """Per-bin accuracy of the top-label confidence on held-out logits (N, K), labels (N,) (Zadrozny & Elkan
    2001; M equal-width bins, an empty bin maps to its centre)."""
    n_bins = check_number(n_bins, "n_bins", integer=True, minimum=1)
    z, y = _prepare(logits, labels, num_classes, device)
    z, y = _finite_rows(z, y, "histogram binning", "histogram binning")
    _, conf, pred = _confidence(z)
    idx = equal_width_bin(conf, n_bins, close_first=True).clamp(max=n_bins - 1)
    counts = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    hits = torch.zeros(n_bins, dtype=torch.float64, device=z.device).index_add_(0, idx, (pred == y).to(torch.float64))
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=z.device)
    centres = (edges[:-1] + edges[1:]) / 2
    values = torch.where(counts > 0, hits / counts.clamp(min=1), centres)
    return HistogramBinning(edges=edges.cpu().numpy(), values=values.cpu().numpy(),
                            counts=counts.to(torch.int64).cpu().numpy())


def histogram_binning_confidence(logits, binning: HistogramBinning, device=None) -> np.ndarray:
    """The calibrated top-label confidence (N,) of each row of logits (N, K): its bin's fitted value."""
    if not isinstance(binning, HistogramBinning):
        raise DataError(f"expected the HistogramBinning that fit_histogram_binning returns; got "
                        f"{type(binning).__name__}")
    z = as_tensor(logits, device=device)
    if z.ndim != 2:
        raise DataError(f"logits must be 2-D [N, K]; got shape {tuple(z.shape)}")
    _, conf, _ = _confidence(z)
    idx = equal_width_bin(conf, binning.n_bins, close_first=True).clamp(max=binning.n_bins - 1)
    return torch.as_tensor(binning.values, device=z.device)[idx].cpu().numpy()


def apply_histogram_binning(logits, binning: HistogramBinning, device=None):
    """Logits whose softmax has the binned top-label confidence q and the other classes sharing 1 - q in their
    original proportions (see the module doc); same type as given (tensor, or float64 ndarray)."""
    z = as_tensor(logits, device=device)
    q = torch.as_tensor(histogram_binning_confidence(z, binning), device=z.device)
    p, top, pred = _confidence(z)
    rest = (1 - top).clamp(min=torch.finfo(torch.float64).tiny)
    others = p.scatter(1, pred[:, None], 0.0) / rest[:, None]            # shares of the other classes, sum 1
    r = others.amax(1)
    q = torch.maximum(q, r / (1 + r) * (1 + 1e-9)).clamp(_Q_CLIP, 1 - _Q_CLIP)   # keep the prediction and finite logs
    new = (others * (1 - q)[:, None]).scatter(1, pred[:, None], q[:, None])
    out = torch.log(new.clamp(min=torch.finfo(torch.float64).tiny))
    return out if isinstance(logits, torch.Tensor) else out.cpu().numpy()


# --- before / after on Dumps ----------------------------------------------------------------------------
@dataclass
class PosthocResult:
    """Calibration of one model's test Dump before and after each calibrator fitted on its validation Dump.

    reports: method ("none", "temperature", "vector", "histogram") -> CalibrationResult on the test Dump;
    fits: method -> the fitted calibrator's ``to_dict()``."""

    name: str
    reports: dict = field(repr=False)
    fits: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        from repanalysis.analyze.calibration.results import SCALARS

        return {"name": self.name, "fits": self.fits,
                "metrics": {m: {k: _num(getattr(r, k)) for k in SCALARS if hasattr(r, k)}
                            for m, r in self.reports.items()}}

    def to_frame(self):
        """Tidy DataFrame: columns model, method, metric, value, n (test samples)."""
        from repanalysis.frames import rows_frame, tidy_rows

        rows = []
        for method, d in self.to_dict()["metrics"].items():
            rows += tidy_rows(self.name, d, n=self.reports[method].num_samples, method=method)
        return rows_frame(rows)


def _num(v):
    v = float(v)
    return None if not np.isfinite(v) else v


def posthoc_calibration(val_logits, val_labels, test_logits, test_labels, *, methods=POSTHOC_METHODS,
                        n_bins: int = 15, name: str = "model", device=None) -> PosthocResult:
    """Fit each calibrator of ``methods`` on (val_logits, val_labels) and report calibration on the test logits
    before ("none") and after each. Arrays (N, K) and (N,), both splits of the same model."""
    from repanalysis.analyze.calibration.metrics import calibration_report
    from repanalysis.analyze.calibration.temperature import apply_temperature, fit_temperature

    unknown = [m for m in methods if m not in POSTHOC_METHODS]
    if unknown or not methods:
        raise DataError(f"unknown post-hoc method(s) {unknown}; expected some of {', '.join(POSTHOC_METHODS)}")
    zt = as_tensor(test_logits, device=device)

    def report(z):
        return calibration_report(z, test_labels, n_bins, name=name, device=device, progress=False)

    reports, fits = {"none": report(zt)}, {}
    for method in methods:
        if method == "temperature":
            t = fit_temperature(val_logits, val_labels, device=device)
            fits[method], reports[method] = {"temperature": t.temperature}, report(apply_temperature(zt, t))
        elif method == "vector":
            vs = fit_vector_scaling(val_logits, val_labels, device=device)
            fits[method], reports[method] = vs.to_dict(), report(apply_vector_scaling(zt, vs))
        else:
            hb = fit_histogram_binning(val_logits, val_labels, n_bins, device=device)
            fits[method], reports[method] = hb.to_dict(), report(apply_histogram_binning(zt, hb))
    return PosthocResult(name=name, reports=reports, fits=fits)


def posthoc_dumps(val_dumps, test_dumps, *, names=None, methods=POSTHOC_METHODS, n_bins: int = 15,
                  device=None) -> list[PosthocResult]:
    """:func:`posthoc_calibration` for pairs (validation Dump, test Dump) of the same model, in order."""
    from repanalysis.dump.pairs import check_same_model

    vals, tests = list(val_dumps), list(test_dumps)
    if len(vals) != len(tests):
        raise DataError(f"{len(vals)} validation but {len(tests)} test Dumps; expected one validation Dump per "
                        "test Dump")
    names = model_names(tests, names)
    out = []
    for v, t, name in zip(vals, tests, names):
        check_same_model(v, t, "posthoc")
        if v.num_classes != t.num_classes:
            raise DataError(f"{name}: the validation Dump has {v.num_classes} classes and the test Dump "
                            f"{t.num_classes}; expected Dumps of the same model")
        out.append(posthoc_calibration(v.logits, v.labels, t.logits, t.labels, methods=methods, n_bins=n_bins,
                                       name=name, device=device))
    return out

"""Calibration metrics of one model: ECE, MCE, adaptive ECE, classwise ECE, O-/U-ECE, NLL, Brier, each from
one fused pass over the logits, and :func:`calibration_report` (all of them, with optional bootstrap intervals)."""
from __future__ import annotations

import warnings

import torch

from repanalysis.analyze.calibration._fused import _prepare, _scan, single_threaded
from repanalysis.analyze.calibration.binning import (_adaptive_sums, _bin_stats, _bin_sums, _check_bins,
                                                     _errors_from_sums, _prefix, adaptive_edges, equal_width_edges)
from repanalysis.analyze.calibration.bootstrap import BIN_ACCURACY, _bootstrap, _percentile_ci, bin_accuracy_band
from repanalysis.analyze.calibration.results import CalibrationResult
from repanalysis.analyze.calibration.temperature import apply_temperature
from repanalysis.arrays import check_number
from repanalysis.errors import DataError

ADAPTIVE_RULES = ("reference", "corrected")
CLASSWISE_RULES = ("all", "reference")


@single_threaded
def expected_calibration_error(logits, labels, n_bins: int = 15, *, num_classes: int | None = None,
                               device=None) -> float:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| over M equal-width (lo, hi] bins (Guo et al. 2017, eq. 3).

    logits (N, K), labels (N,) -> float (a fraction; x100 for %).
    """
    _check_bins(n_bins)
    z, y = _prepare(logits, labels, num_classes, device)
    sc = _scan(z, y, n_bins=n_bins, want_nll=False, want_brier=False)
    _warn_small(sc.num_samples, n_bins)
    return float(_errors_from_sums(*sc.equal_width_sums(), sc.num_samples)[0])


@single_threaded
def max_calibration_error(logits, labels, n_bins: int = 15, *, num_classes: int | None = None,
                          device=None) -> float:
    """MCE = max_b |acc_b - conf_b| over non-empty equal-width bins (Guo et al. 2017). logits (N, K)."""
    _check_bins(n_bins)
    z, y = _prepare(logits, labels, num_classes, device)
    sc = _scan(z, y, n_bins=n_bins, want_nll=False, want_brier=False)
    return float(_errors_from_sums(*sc.equal_width_sums(), sc.num_samples)[3])


@single_threaded
def adaptive_ece(logits, labels, n_bins: int = 15, *, rule: str = "reference", num_classes: int | None = None,
                 device=None) -> float:
    """Adaptive ECE with equal-mass edges (Mukhoti et al. 2020's AdaptiveECELoss, the code MbLS/ACLS/FedLaS use;
    not Nixon et al. 2019's classwise ACE).

    rule="reference": bins (lo, hi], so samples at the lowest confidence fall in no bin but count in N;
    rule="corrected": the first bin is [lo, hi]. logits (N, K), labels (N,) -> float.
    """
    _check_rule(rule)
    _check_bins(n_bins)
    z, y = _prepare(logits, labels, num_classes, device)
    sc = _scan(z, y, n_bins=n_bins, want_nll=False, want_brier=False)
    _warn_small(sc.conf.numel(), n_bins)
    a = sc.correct.to(torch.float64)
    e = adaptive_edges(sc.conf, n_bins)
    counts, cs, acs = _bin_sums(sc.conf, a, e, close_first=(rule == "corrected"))
    return float(_errors_from_sums(counts, cs, acs, sc.conf.numel())[0])


@single_threaded
def classwise_ece(logits, labels, n_bins: int = 15, *, num_classes: int | None = None, device=None,
                  per_class: bool = False, rule: str = "all"):
    """Classwise ECE: for each class k bin p_k of all N samples against 1[y == k]; mean over the K classes.

    (Kull et al. 2019; the MbLS/FedLaS code.) logits (N, K), labels (N,) -> float, or (float, (K,) array)
    with per_class=True. ``rule="all"`` (REFERENCE.md: all N samples) puts a p_k that underflowed to exactly
    0 in the first bin, ``[0, 1/M]``; ``rule="reference"`` leaves it in no bin, as the reference code's
    ``(lo, hi]`` test does (it then drops 1[y == k] of a confidently wrong sample).
    """
    _check_bins(n_bins)
    if rule not in CLASSWISE_RULES:
        raise DataError(f"unknown classwise ECE rule {rule!r}; expected one of {', '.join(CLASSWISE_RULES)}")
    z, y = _prepare(logits, labels, num_classes, device)
    sc = _scan(z, y, n_bins=n_bins, want_nll=False, want_brier=False, want_classwise=True,
               classwise_close_first=rule == "all")
    _warn_small(sc.num_samples, n_bins)
    value, per = _classwise_from_cells(sc.cw_counts, sc.cw_psum, sc.cw_hits, sc.num_samples)
    return (value, per) if per_class else value


def _classwise_from_cells(counts, psum, hits, n):
    # classwise ECE (Kull 2019): (1/K) sum_k sum_b (n_kb/N) |acc_kb - conf_kb|
    per = (psum - hits).abs().sum(-1) / n
    return float(per.mean()), per.cpu().numpy()


@single_threaded
def over_under_ece(logits, labels, n_bins: int = 15, *, num_classes: int | None = None,
                   device=None) -> tuple[float, float]:
    """(O-ECE, U-ECE) on equal-width bins; they sum exactly to the ECE of the same bins (FedLaS)."""
    _check_bins(n_bins)
    z, y = _prepare(logits, labels, num_classes, device)
    sc = _scan(z, y, n_bins=n_bins, want_nll=False, want_brier=False)
    _, o, u, _ = _errors_from_sums(*sc.equal_width_sums(), sc.num_samples)
    return float(o), float(u)


@single_threaded
def negative_log_likelihood(logits, labels, *, num_classes: int | None = None, device=None) -> float:
    """NLL = mean_i -log softmax(z_i)_{y_i}. logits (N, K), labels (N,) -> float (nats)."""
    z, y = _prepare(logits, labels, num_classes, device)
    return float(_scan(z, y, want_brier=False).nll.mean())


@single_threaded
def brier_score(logits, labels, *, num_classes: int | None = None, device=None) -> float:
    """Brier = mean_i sum_k (p_ik - 1[y_i = k])^2 (range [0, 2]). logits (N, K), labels (N,) -> float."""
    z, y = _prepare(logits, labels, num_classes, device)
    return float(_scan(z, y, want_nll=False).brier.mean())


def _check_rule(rule: str) -> None:
    if rule not in ADAPTIVE_RULES:
        raise DataError(f"unknown adaptive ECE rule {rule!r}; expected one of {', '.join(ADAPTIVE_RULES)}")


def _warn_small(n: int, n_bins: int) -> None:
    if n < n_bins:
        warnings.warn(f"only {n} samples for {n_bins} bins; with fewer samples than bins the ECE estimates "
                      "are dominated by noise", RuntimeWarning, stacklevel=4)

@single_threaded
def calibration_report(logits, labels, n_bins: int = 15, *, n_boot: int = 0, seed: int = 0,
                       ci_level: float = 0.95, adaptive_rule: str = "reference", temperature: float = 1.0,
                       num_classes: int | None = None, name: str = "model", device=None,
                       progress: bool = True) -> CalibrationResult:
    """Every calibration metric of one model in one pass, with optional bootstrap confidence intervals.

    logits (N, K) pre-softmax, labels (N,) ints in [0, K). ``temperature``: divide the logits by T first
    (see :func:`fit_temperature`). ``n_boot`` > 0 adds percentile intervals at ``ci_level`` for every scalar
    from ``n_boot`` resamples of the N samples (seeded by ``seed``; vectorised, no loop over samples): the
    interval is ``np.percentile`` of the replicates (kept in ``replicates``) at (1 -/+ ci_level) / 2.
    ``progress``: a bar of the bootstrap replicates on stderr (replicates/s; drawn only when stderr is a
    terminal, see :func:`repanalysis.progress.progress_bar`). Bad input raises :class:`DataError`; NaN/inf rows are excluded with a warning; fewer samples than bins,
    or a single label value, warn.
    """
    _check_rule(adaptive_rule)
    _check_bins(n_bins)
    temperature = check_number(temperature, "temperature", minimum=0, above=True)
    ci_level = check_number(ci_level, "ci_level", minimum=0, maximum=1, above=True, below=True)
    n_boot = check_number(n_boot, "n_boot", integer=True, minimum=0)
    if n_boot:
        seed = check_number(seed, "seed", integer=True)          # any integer (torch takes negative seeds)
    z, y = _prepare(logits, labels, num_classes, device)
    if temperature != 1.0:
        z = apply_temperature(z, temperature)
    sc = _scan(z, y, n_bins=n_bins, want_classwise=True)
    n, k = sc.num_samples, sc.num_classes
    _warn_small(n, n_bins)
    if n > 1 and bool((sc.labels == sc.labels[0]).all()):
        warnings.warn(f"all {n} samples have label {int(sc.labels[0])}: the metrics describe one class only",
                      RuntimeWarning, stacklevel=3)
    a = sc.correct.to(torch.float64)
    ew = equal_width_edges(n_bins, z.device)
    counts, cs, acs = sc.equal_width_sums()
    ece, oece, uece, mce = _errors_from_sums(counts, cs, acs, n)
    close_first = adaptive_rule == "corrected"
    order = torch.argsort(sc.conf)
    sorted_conf = sc.conf[order]
    ones = torch.ones(1, n, dtype=torch.float64, device=z.device)
    a_edges, a_cnt, a_cs, a_as = _adaptive_sums(sorted_conf, ones, _prefix(ones, sorted_conf, a[order][None]),
                                                n_bins, close_first, n)
    aece = _errors_from_sums(a_cnt, a_cs, a_as, n)[0]
    cw, cw_per = _classwise_from_cells(sc.cw_counts, sc.cw_psum, sc.cw_hits, n)
    res = CalibrationResult(
        name=name, num_samples=n, num_classes=k, n_bins=n_bins, accuracy=float(a.mean()),
        mean_confidence=float(sc.conf.mean()), ece=float(ece), mce=float(mce), aece=float(aece[0]),
        classwise_ece=cw, oece=float(oece), uece=float(uece), nll=float(sc.nll.mean()),
        brier=float(sc.brier.mean()), bins=_bin_stats(ew, counts, cs, acs, n, "equal-width"),
        adaptive_bins=_bin_stats(a_edges[0], a_cnt[0], a_cs[0], a_as[0], n, f"adaptive-{adaptive_rule}"),
        classwise_per_class=cw_per, confidence=sc.conf.cpu().numpy(), correct=sc.correct.cpu().numpy(),
        adaptive_rule=adaptive_rule, temperature=float(temperature), n_excluded=sc.n_excluded,
        n_boot=int(n_boot), ci_level=ci_level, seed=seed if n_boot else None)
    if n_boot:
        res.replicates = _bootstrap(z, sc, order, n_bins, n_boot, seed, close_first, progress=progress, name=name)
        res.ci = _percentile_ci(res.replicates, ci_level)
        res.bin_band = bin_accuracy_band(res.replicates.pop(BIN_ACCURACY), ci_level)
    return res

"""Calibration: ECE, MCE, adaptive ECE, classwise ECE, O-/U-ECE, NLL, Brier, bootstrap CIs, temperature scaling.

Conventions (REFERENCE.md "Calibration"; Guo et al. 2017; the adaptive ECE of Mukhoti et al. 2020 that the
MbLS/ACLS/FedLaS code uses, not Nixon et al. 2019's classwise ACE):

- ``M`` bins (15 by default); a sample belongs to bin ``(lo, hi]``; empty bins are skipped. The weights are
  ``n_b / N`` with ``N`` all (finite) samples, so a sample that falls in no bin still counts in ``N``.
- Equal-width edges ``linspace(0, 1, M + 1)``: a confidence exactly on an inner edge ``j/M`` belongs to the
  lower bin; confidence 1.0 belongs to the last bin. Float32 (or float16) logits give float32 confidences, binned
  as the values they are: a row whose exact confidence lies on an edge can round above it (all K logits tied,
  conf = 1/K with K dividing M: 1/3 rounds to 0.33333334) and land in the upper bin. The reference ECELoss
  compares with float32 ``torch.linspace`` edges, themselves rounded, and keeps such a row in the lower bin;
  pass float64 logits to bin exact edge values exactly. A probability of exactly 0 (classwise ECE only: p_k
  underflowed) is in the first bin, so all N samples count (REFERENCE.md); ``rule="reference"`` leaves it
  in no bin, as the reference code's ``(lo, hi]`` test does.
- Adaptive (equal-mass) edges ``interp(linspace(0, N, M + 1), arange(N), sort(conf))``. With the same
  ``(lo, hi]`` rule the lowest confidence (and any sample tied with it) lies in no bin: ``rule="reference"``
  (default) reproduces that for comparability; ``rule="corrected"`` closes the first bin, ``[lo, hi]``.
- Classwise ECE bins ``p_k`` of all N samples against ``1[y == k]`` for every class k of the model, then
  averages the K per-class values (K from the logits' width, never ``max(label) + 1``).

How this compares with the reference libraries (read from their source, torchmetrics 1.9, netcal 1.4):

- torchmetrics ``multiclass_calibration_error`` / ``binary_calibration_error`` bin with
  ``bucketize(conf, linspace(0, 1, M + 1), right=True) - 1``: bins are ``[lo, hi)`` and confidence 1.0 gets
  an extra bin of its own; it works in float32. Same value as ours, up to float rounding of the
  probabilities, when no confidence lies exactly on an edge ``j/M`` (1.0 included), and no row has its two
  largest probabilities equal in floating point (there they take the first argmax of p, we the argmax of z).
- netcal ``ECE(bins=M)`` bins with ``numpy.histogramdd`` on ``linspace(0, 1, M + 1)``: ``[lo, hi)`` with the
  last bin closed, after clipping to ``[eps, 1 - eps]``. Same value as ours, up to float rounding of the
  probabilities, when no confidence lies exactly on an inner edge ``j/M`` (1.0 is fine, up to the eps clip).
  netcal's ``equal_intervals=False`` uses ``np.quantile`` edges with the outer edges forced to 0 and 1, a
  different rule from the adaptive ECE here.

Speed: one chunked pass over the logits (cache-sized chunks, buffers reused, float32 inputs kept in float32
for the per-entry work and promoted to float64 per sample) gives every per-sample quantity, on as many worker
threads as the caller's intra-op thread count. Per entry it takes exp(z) without the row max (see
:func:`_exp_rows`; rows outside exp's range are redone shifted), a row sum and a row max: at K ~ 100 this is
about 1.3x faster than torch's fused softmax, whose per-row passes cost three times its exps. The
confidences (and Brier's p) are therefore e / s rather than torch.softmax's output: the same values up to float
rounding (a unit or two in the last place of float32 confidences, ~1e-8 in an ECE). Classwise ECE bins torch's
softmax itself, so that the probabilities that underflow to exactly 0 are the reference code's. Binning is arithmetic,
``ceil(c M) - 1`` with an exact correction (:func:`equal_width_bin`), then ``bincount``; no binary search.
The same code runs on CPU or GPU (``device=``). The metric functions themselves run with one intra-op CPU
thread (see :func:`single_threaded`).

Layout (one job per module; every name is re-exported here, so ``repanalysis.analyze.calibration.<name>`` works):
``results`` (the Result dataclasses, ``SCALARS``), ``binning`` (edges, bin indices, per-bin sums and errors),
``_fused`` (the fused per-sample pass over the logits: :func:`_scan`, :func:`single_threaded`), ``metrics``
(ECE, MCE, AECE, classwise ECE, O-/U-ECE, NLL, Brier, :func:`calibration_report`), ``bootstrap`` (percentile
intervals), ``temperature`` (temperature scaling), ``smooth`` (smooth ECE, debiased L2 ECE), ``posthoc``
(vector scaling, histogram binning), ``compare`` (several Dumps, table rows). The tuning constants
(``_CHUNK_ELEMENTS_*`` in ``_fused``, ``BOOT_ELEMENTS`` in ``repanalysis.analyze.resample``) are read from the module that defines
them: patch them there.

Example::

    >>> from repanalysis.analyze.calibration import calibration_report
    >>> res = calibration_report(dump.logits, dump.labels, n_bins=15, n_boot=1000, seed=0)
    >>> res.ece, res.ci["ece"]
"""
from __future__ import annotations

from repanalysis.analyze.calibration._fused import (_CALLER, _CHUNK_ELEMENTS_CLASSWISE, _CHUNK_ELEMENTS_CPU,
                                                    _CHUNK_ELEMENTS_GPU, _EXP_SUM_FLOOR, _POOL, _Scan, _class_offsets,
                                                    _classwise_chunk, _exp_rows, _pool, _prepare, _scan, _work_dtype,
                                                    single_threaded)
from repanalysis.analyze.calibration.binning import (_adaptive_sums, _bin_plus_one, _bin_stats, _bin_sums, _check_bins,
                                                     _equal_width_sums, _errors_from_sums, _interp_sorted, _prefix,
                                                     _rank_positions, adaptive_edges, bin_statistics, equal_width_bin,
                                                     equal_width_edges)
from repanalysis.analyze.calibration.bootstrap import (_DENSE_DESIGN_ELEMENTS, _bootstrap, _classwise_design,
                                                       _percentile_ci)
from repanalysis.analyze.calibration.compare import _ROW_KEYS, TABLE_HEADERS, calibrate_dumps, comparison_rows
from repanalysis.analyze.calibration.metrics import (ADAPTIVE_RULES, CLASSWISE_RULES, _check_rule,
                                                     _classwise_from_cells, _warn_small, adaptive_ece, brier_score,
                                                     calibration_report, classwise_ece, expected_calibration_error,
                                                     max_calibration_error, negative_log_likelihood, over_under_ece)
from repanalysis.analyze.calibration.results import (SCALARS, BinStats, CalibrationResult, TemperatureResult,
                                                     _nan_to_none)
from repanalysis.analyze.calibration.temperature import apply_temperature, fit_temperature
from repanalysis.analyze.calibration.smooth import (debiased_l2_ece, debiased_l2_ece_binary, smooth_ece,
                                                    smooth_ece_at, smooth_ece_binary)
from repanalysis.analyze.calibration.posthoc import (POSTHOC_METHODS, HistogramBinning, PosthocResult, VectorScaling,
                                                     apply_histogram_binning, apply_vector_scaling,
                                                     fit_histogram_binning, fit_vector_scaling,
                                                     histogram_binning_confidence, posthoc_calibration, posthoc_dumps)

__all__ = ["ADAPTIVE_RULES", "CLASSWISE_RULES", "SCALARS", "TABLE_HEADERS", "BinStats", "CalibrationResult",
           "TemperatureResult", "adaptive_ece", "adaptive_edges", "apply_temperature", "bin_statistics",
           "brier_score", "calibrate_dumps", "calibration_report", "classwise_ece", "comparison_rows",
           "equal_width_bin", "equal_width_edges", "expected_calibration_error", "fit_temperature",
           "max_calibration_error", "negative_log_likelihood", "over_under_ece", "single_threaded",
           "smooth_ece", "smooth_ece_at", "smooth_ece_binary", "debiased_l2_ece", "debiased_l2_ece_binary",
           "POSTHOC_METHODS", "HistogramBinning", "PosthocResult", "VectorScaling", "apply_histogram_binning",
           "apply_vector_scaling", "fit_histogram_binning", "fit_vector_scaling", "histogram_binning_confidence",
           "posthoc_calibration", "posthoc_dumps"]

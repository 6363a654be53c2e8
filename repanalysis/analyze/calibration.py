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

Example::

    >>> from repanalysis.analyze.calibration import calibration_report
    >>> res = calibration_report(dump.logits, dump.labels, n_bins=15, n_boot=1000, seed=0)
    >>> res.ece, res.ci["ece"]
"""
from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from repanalysis.analyze._arrays import (as_tensor, check_logits_labels, check_number, model_names,
                                         refuse_probabilities)
from repanalysis.errors import DataError
from repanalysis.extract.pairs import check_same_model

ADAPTIVE_RULES = ("reference", "corrected")
CLASSWISE_RULES = ("all", "reference")
SCALARS = ("accuracy", "mean_confidence", "ece", "mce", "aece", "classwise_ece", "oece", "uece", "nll",
           "brier")
_CHUNK_ELEMENTS_CPU = 1 << 20     # 4 MiB of float32 per chunk (fewer per-chunk op dispatches; measured best)
_CHUNK_ELEMENTS_CLASSWISE = 1 << 17   # 512 KiB: the classwise binning makes several passes over the chunk
_CHUNK_ELEMENTS_GPU = 1 << 26
_EXP_SUM_FLOOR = 2.0 ** -60       # _exp_rows: a row sum of exp(z) below this is redone with the row max subtracted
_BOOT_ELEMENTS = 1 << 22          # replicate block size for the bootstrap (bsz * N entries at once)
_DENSE_DESIGN_ELEMENTS = 1 << 23  # classwise bootstrap: dense (N, 2KM) design up to 64 MiB, else sparse


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
        if self.temperature_fit is not None:
            out["temperature_fit"] = self.temperature_fit
        if per_sample:
            out["confidence"] = self.confidence.tolist()
            out["correct"] = self.correct.astype(int).tolist()
        return out


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


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(a, dtype=float).tolist()]


# --- the per-sample pass ------------------------------------------------------------------------------
@dataclass
class _Scan:
    num_samples: int            # N: rows kept (finite)
    num_classes: int
    n_excluded: int
    conf: torch.Tensor          # (N,) float64 max softmax
    correct: torch.Tensor       # (N,) bool, argmax(z) == y (first index on ties)
    labels: torch.Tensor        # (N,) int64
    bin_counts: torch.Tensor    # (M,) samples per equal-width bin
    bin_conf: torch.Tensor      # (M,) sum of conf per equal-width bin
    bin_acc: torch.Tensor       # (M,) sum of correct per equal-width bin
    nll: torch.Tensor | None = None       # (N,) float64 -log p_y
    brier: torch.Tensor | None = None     # (N,) float64 sum_k (p_k - 1[y=k])^2
    cw_counts: torch.Tensor | None = None  # (K, M) samples with p_k in bin
    cw_psum: torch.Tensor | None = None    # (K, M) sum of p_k in bin
    cw_hits: torch.Tensor | None = None    # (K, M) samples with y == k and p_k in bin
    keep: torch.Tensor | None = None   # (N_input,) bool rows kept, None when every row was kept

    def equal_width_sums(self):
        return self.bin_counts, self.bin_conf, self.bin_acc


def single_threaded(fn):
    """Run ``fn`` with one intra-op CPU thread, restoring the caller's setting afterwards.

    The analyses here work on cache-sized chunks and N-sized vectors: an OpenMP fork/join per such op costs
    more than it gains, and on a busy machine it stalls (measured on a shared 2-core machine: the same ECE
    took 500 ms with 2 threads and 90 ms with 1). ``torch.set_num_threads`` is thread-local under OpenMP,
    so other threads of the caller are not affected. GPU work is unaffected.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        _CALLER.threads = threads
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            _CALLER.threads = None
    return wrapper


_CALLER = threading.local()      # the caller's intra-op thread count while inside single_threaded


_POOL: dict = {}                 # (pid, workers) -> ThreadPoolExecutor


def _pool(workers: int) -> ThreadPoolExecutor:
    """A lasting thread pool of ``workers`` threads for the chunked scans (made once per process)."""
    key = (os.getpid(), workers)           # a forked child gets its own (threads do not survive a fork)
    if key not in _POOL:
        _POOL[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="repanalysis-scan")
    return _POOL[key]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare(logits, labels, num_classes, device) -> tuple[torch.Tensor, torch.Tensor]:
    z = as_tensor(logits, device=device)
    if not z.is_floating_point():
        z = z.to(torch.float32)
    z, y = check_logits_labels(z, as_tensor(labels, device=device), num_classes, device=device,
                               dtype=_work_dtype(z.dtype))
    n, k = z.shape
    if n == 0:
        raise DataError("no samples: logits have 0 rows; expected at least one sample")
    if k < 2:
        raise DataError(f"calibration needs at least 2 classes; the logits have {k} column")
    refuse_probabilities(z)
    return z, y


def equal_width_edges(n_bins: int = 15, device=None) -> torch.Tensor:
    """Edges j / M, j = 0..M (M+1,) float64, each the correctly rounded double of j/M."""
    _check_bins(n_bins)
    return torch.arange(n_bins + 1, dtype=torch.float64, device=device) / n_bins


def _check_bins(n_bins) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise DataError(f"number of bins must be a positive integer; got {n_bins!r}")


def _exp_rows(c: torch.Tensor, out: torch.Tensor, s_out: torch.Tensor | None = None):
    """e = exp(z) (rows, K) into ``out`` and s = sum_k e_k per row, so that softmax(z) = e / s.

    Unshifted: one exp per entry and no row max first. At K ~ 100, torch's fused softmax spends most of its
    time on per-row work (max, scale), not on the exp (measured: 24 ms against 8 ms for the exp of 200,000 x
    100 float32). The ratio e_k / s equals softmax(z)_k up to rounding whenever s is finite and not tiny.
    Rows where s overflows (a logit above about 88 in float32, 709 in float64), where s < 2^-60 (every logit
    below about -41, so terms could be subnormal), and rows holding NaN or inf, are redone as softmax does,
    with the row max m subtracted: e = exp(z - m). Returns (e, s, redone rows (local indices) or None, their m).
    """
    e = torch.exp(c, out=out)
    s = torch.sum(e, 1, out=s_out) if s_out is not None else torch.sum(e, 1)
    lo, hi = torch.aminmax(s)                                    # NaN fails both tests
    if lo.item() >= _EXP_SUM_FLOOR and hi.item() < math.inf:
        return e, s, None, None
    redo = torch.nonzero(~((s >= _EXP_SUM_FLOOR) & (s < math.inf))).squeeze(1)
    cc = c[redo]
    m = torch.amax(cc, 1, keepdim=True)                          # NaN, +inf or -inf rows stay NaN, as in softmax
    ee = torch.exp(cc - m)
    e[redo] = ee
    s[redo] = ee.sum(1)
    return e, s, redo, m.squeeze(1)


def _scan(z: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15, want_nll: bool = True,
          want_brier: bool = True, want_classwise: bool = False, classwise_close_first: bool = True,
          chunk_elements: int | None = None) -> _Scan:
    """One chunked pass over the logits: per-sample conf and correctness, the equal-width bin sums of both,
    and on request per-sample NLL / Brier and the classwise bin sums.

    Each chunk of rows goes through :func:`_exp_rows` into a reused, cache-sized buffer: e_k = exp(z_k) and
    s = sum_k e_k per row (one read of the logits). Then e_y is read off, e_y is replaced by 0 and one row max
    gives q = max_{j != y} e_j: conf = max(e_y, q) / s, and y is the prediction when e_y > q (rows where the
    two are within a few units in the last place are decided by argmax_k z_k). NLL = log(s / e_y); Brier uses
    p = e / s; the classwise sums bin torch.softmax(z) (its exact zeros are the reference code's).
    Rows with NaN or +inf logits (NaN softmax), or -inf at the label (infinite NLL), are excluded (warning
    with the count).
    """
    n, k = z.shape
    dev = z.device
    if chunk_elements is None:
        chunk_elements = _CHUNK_ELEMENTS_GPU if dev.type == "cuda" else _CHUNK_ELEMENTS_CPU
        if want_classwise and dev.type != "cuda":
            chunk_elements = min(chunk_elements, _CHUNK_ELEMENTS_CLASSWISE)
    rows = max(1, chunk_elements // k)
    f64 = torch.float64
    narrow = z.dtype != f64        # conf holds float32 values (z is float32 or float64 here)
    conf_all = torch.empty(n, dtype=f64, device=dev)
    correct_all = torch.empty(n, dtype=torch.bool, device=dev)
    ey_all = torch.empty(n, dtype=z.dtype, device=dev)
    other_all = torch.empty(n, dtype=z.dtype, device=dev)
    s_all = torch.empty(n, dtype=z.dtype, device=dev)
    zy_all = torch.empty(n, dtype=z.dtype, device=dev) if want_nll else None
    sq_all = torch.empty(n, dtype=z.dtype, device=dev) if want_brier else None
    cells = k * n_bins
    # e_y and q within this many units in the last place of q: decided by the logits (exp rounds, 1 ulp each)
    near = 8 * torch.finfo(z.dtype).eps

    def scan_rows(first: int, last: int):
        """Rows first:last; returns this range's (equal-width bin sums, classwise sums or None, redone rows)."""
        buf = torch.empty(min(rows, last - first), k, dtype=z.dtype, device=dev)
        flat_buf = buf.view(-1)
        pbuf = torch.empty_like(buf) if want_brier or want_classwise else None
        softmax_into = torch.ops.aten._softmax.out
        # flat index of (i, y_i) inside the chunk buffer: row offsets i K (made once) + y_i, per chunk
        row_offset = torch.arange(buf.shape[0], device=dev).mul_(k)
        at_buf = torch.empty_like(row_offset)
        zeros = torch.zeros(buf.shape[0], dtype=z.dtype, device=dev)
        redone = []
        if want_classwise:
            cw = torch.zeros(3, cells + k, dtype=f64, device=dev)    # counts, sum p, hits per (class, bin)
            class_offset = _class_offsets(k, n_bins, buf.shape[0], dev)
        for start in range(first, last, rows):
            stop = min(start + rows, last)
            r = stop - start
            whole = r == buf.shape[0]
            c = z[start:stop]
            b, s, redo, shift = _exp_rows(c, buf if whole else buf[:r], s_all[start:stop])
            if redo is not None:
                redone.append((redo + start, shift))
            if want_classwise:
                # torch's shifted softmax here: which tiny p_k underflow to exactly 0 decides the reference rule
                # (a p_k of 0 is in no bin), and exp(z_k) unshifted underflows where exp(z_k - m) does not
                p = softmax_into(c, 1, False, out=pbuf if whole else pbuf[:r])
                _classwise_chunk(p, y[start:stop], n_bins, class_offset, cw, classwise_close_first)
            if want_brier:
                p = torch.div(b, s[:, None], out=pbuf if whole else pbuf[:r])     # p_k = e_k / s
                torch.sum(p.square_(), 1, out=sq_all[start:stop])
            flat = flat_buf if whole else flat_buf[:r * k]
            at = torch.add(row_offset[:r], y[start:stop], out=at_buf[:r])
            torch.index_select(flat, 0, at, out=ey_all[start:stop])
            if want_nll:
                torch.index_select(c.reshape(-1), 0, at, out=zy_all[start:stop])
            flat.index_copy_(0, at, zeros[:r])          # e_y = 0 (faster than index_fill_), then max_{j != y} e_j
            torch.amax(b, 1, out=other_all[start:stop])
        # the tail of this range: conf = max_k e_k / s, correct = (first argmax of z) == y, bin sums
        ey, other = ey_all[first:last], other_all[first:last]
        conf, correct = conf_all[first:last], correct_all[first:last]
        conf.copy_(torch.maximum(ey, other).div_(s_all[first:last]))
        torch.gt(ey, other, out=correct)
        # e_y within rounding of another class's e (equal logits, logits a few ulps apart, float16 ones): the
        # prediction is argmax_k z_k (REFERENCE.md "Notation"; torch's first index on exact logit ties), so
        # distinct logits still decide. The reference code, torchmetrics and netcal take the argmax of the
        # rounded probabilities instead; only such tied rows can differ. argmax costs ~5x an amax, so it runs
        # on these rows only.
        tie = (ey - other).abs_() <= other * near
        if tie.any():
            tie = torch.nonzero(tie).squeeze(1) + first
            correct_all[tie] = z[tie].argmax(1) == y[tie]
        return (_equal_width_sums(conf, correct, n_bins, float32_values=narrow), (cw if want_classwise else None),
                redone)

    # On CPU the rows are shared out to as many pool threads as the caller had intra-op threads, each running
    # single-threaded ops on its own cache-sized buffers (no OpenMP fork/join per small op).
    workers = (getattr(_CALLER, "threads", None) or 1) if dev.type == "cpu" else 1
    n_chunks = -(-n // rows)
    workers = max(1, min(workers, n_chunks))
    if workers == 1:
        parts = [scan_rows(0, n)]
    else:
        def worker(first):
            torch.set_num_threads(1)     # a pool thread starts with the process default
            return scan_rows(first, min(first + per, n))

        per = -(-n_chunks // workers) * rows
        parts = list(_pool(workers).map(worker, range(0, n, per)))
    counts, conf_sum, acc_sum, in_no_bin = (sum(part[0][i] for part in parts) for i in range(4))
    out = _Scan(num_samples=n, num_classes=k, n_excluded=0, conf=conf_all, correct=correct_all, labels=y,
                bin_counts=counts, bin_conf=conf_sum, bin_acc=acc_sum)
    # A finite row has conf in [1/K, 1], in a bin; a conf in no bin is NaN (a NaN or +inf logit in the row).
    n_bad = n_nan = int(in_no_bin)
    finite = torch.isfinite(conf_all) if n_bad else None
    cw = sum(part[1] for part in parts) if want_classwise else None
    # -inf at the label (e_y = 0 exactly, conf finite): an infinite NLL, so the row is excluded from every
    # metric, whichever were asked for (the same N for ECE alone as for the report). e_y = 0 is necessary,
    # so only those rows' z_y are looked at.
    zero_py = torch.nonzero(ey_all == 0).squeeze(1)
    if zero_py.numel():
        idx = zero_py[torch.isneginf(z[zero_py, y[zero_py]]) & torch.isfinite(conf_all[zero_py])]
        if idx.numel():                            # conf is finite there: take those rows out of the bin sums
            finite = torch.isfinite(conf_all)
            finite[idx] = False
            drop = _equal_width_sums(conf_all[idx], correct_all[idx], n_bins, float32_values=narrow)
            out.bin_counts, out.bin_conf, out.bin_acc = (a - d for a, d in zip(out.equal_width_sums(), drop))
            if want_classwise:
                cw_drop = torch.zeros_like(cw)
                _classwise_chunk(torch.softmax(z[idx], 1), y[idx], n_bins,
                                 _class_offsets(k, n_bins, idx.numel(), dev), cw_drop, classwise_close_first)
                cw = cw - cw_drop
            n_bad += idx.numel()
    s64 = s_all.to(f64)
    if want_nll:
        # -log p_y = log(s / e_y) (Guo 2017): >= 0, as s >= e_y in any rounding order, and exact for confident rows
        # (log s - z_y cancels to +-6e-8 there). Where e_y is 0 or subnormal: log s + m - z_y, m the shift of a
        # redone row (0 otherwise)
        ey64 = ey_all.to(f64)
        out.nll = torch.log(s64 / ey64)
        tiny = ey_all < torch.finfo(z.dtype).tiny
        if bool(tiny.any()):
            shift_all = torch.zeros(n, dtype=f64, device=dev)
            for redo, shift in (item for part in parts for item in part[2]):
                shift_all[redo] = shift.to(f64)
            out.nll[tiny] = (s64.log() + shift_all - zy_all.to(f64))[tiny]
    if want_brier:
        # Brier (Brier 1950): sum_k (p_k - 1[y=k])^2 = sum_k p_k^2 - 2 p_y + 1
        out.brier = sq_all.to(f64) - 2.0 * (ey_all.to(f64) / s64) + 1.0
    if want_classwise:
        out.cw_counts, out.cw_psum, out.cw_hits = cw.view(3, k, n_bins + 1)[:, :, :n_bins]
    if n_bad:
        if n_bad == n:
            raise DataError(f"all {n} rows of logits contain NaN or inf; nothing to analyse")
        why = [f"{n_nan} with NaN or +inf logits"] if n_nan else []
        if n_bad > n_nan:
            why.append(f"{n_bad - n_nan} with a -inf logit at the label (probability 0, infinite NLL)")
        warnings.warn(f"{n_bad} of {n} samples have NaN or inf logits; they are excluded: {', '.join(why)}",
                      RuntimeWarning, stacklevel=4)
        out.num_samples, out.n_excluded, out.keep = n - n_bad, n_bad, finite
        for key in ("conf", "correct", "labels", "nll", "brier"):
            v = getattr(out, key)
            if v is not None:
                setattr(out, key, v[finite])
    return out


def _class_offsets(k: int, n_bins: int, rows: int, device) -> torch.Tensor:
    """(rows * K,) the first cell of each entry's class in the classwise cells (K blocks of M + 1), row-major."""
    return (torch.arange(k, device=device) * (n_bins + 1)).repeat(rows)


def _classwise_chunk(p: torch.Tensor, y: torch.Tensor, n_bins: int, class_offset: torch.Tensor,
                     cw: torch.Tensor, close_first: bool = True) -> None:
    """Add one chunk's classwise bin sums into cw (3, K*(M+1)): samples with p_k in bin b of class k, their
    sum of p_k, and those among them with y == k (Kull et al. 2019). Bin M of each class collects p_k in no
    bin (NaN rows, and p_k = 0 unless close_first); it is dropped at the end."""
    rows, k = p.shape
    p64 = p.reshape(-1).to(torch.float64)
    bin_id = equal_width_bin(p64, n_bins, float32_values=p.dtype != torch.float64,    # 0..M-1 a bin, M none
                             close_first=close_first)
    cell = bin_id + class_offset[:p64.numel()]
    cw[0] += torch.bincount(cell, minlength=cw.shape[1])
    cw[1] += torch.bincount(cell, weights=p64, minlength=cw.shape[1])
    # 1[y = k]: the cell of (y, bin of the same p_y value as above), so both sums bin alike
    cw[2] += torch.bincount(cell.view(rows, k).gather(1, y[:, None]).squeeze(1), minlength=cw.shape[1])


# --- binning -------------------------------------------------------------------------------------------
def _interp_sorted(sorted_vals: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """numpy.interp(positions, arange(N), sorted_vals) for positions in [0, N], batched over leading dims.

    sorted_vals (..., N), positions (..., P) -> (..., P), with numpy's formula
    slope * (x - j) + fp[j] and fp[j] returned exactly when x == j, clamped to fp[-1] past N - 1.
    """
    n = sorted_vals.shape[-1]
    x = positions.clamp(max=n - 1)
    j = x.floor()
    lo = sorted_vals.gather(-1, j.long())
    hi = sorted_vals.gather(-1, (j.long() + 1).clamp(max=n - 1))
    return torch.where(x == j, lo, (hi - lo) * (x - j) + lo)


def _rank_positions(total: int, n_bins: int, device=None) -> torch.Tensor:
    """numpy.linspace(0, total, M + 1) bit for bit: j * (total / M), the last one exactly total.

    The reference AdaptiveECELoss interpolates at numpy's positions; torch.linspace rounds some of them
    differently in the last bit (N = 164, M = 20: position 15 is 123.0, numpy's 122.99999999999999), which
    moves an edge across a sample."""
    pos = torch.arange(n_bins + 1, dtype=torch.float64, device=device).mul_(total / n_bins)
    pos[-1] = total
    return pos


def adaptive_edges(conf, n_bins: int = 15) -> torch.Tensor:
    """Equal-mass edges interp(linspace(0, N, M+1), arange(N), sort(conf)) (Mukhoti et al. 2020's AdaptiveECELoss).

    conf (N,) -> edges (M+1,) float64; edges[0] = min(conf), edges[-1] = max(conf).
    """
    _check_bins(n_bins)
    c = as_tensor(conf).to(torch.float64)
    if c.ndim != 1 or c.numel() == 0:
        raise DataError(f"adaptive edges need a 1-D array of at least one confidence; got shape {tuple(c.shape)}")
    pos = _rank_positions(c.numel(), n_bins, c.device)
    return _interp_sorted(torch.sort(c).values, pos)


def bin_statistics(conf, correct, edges, *, close_first: bool = False, rule: str = "custom") -> BinStats:
    """Bin (conf, correct) into ``(lo, hi]`` bins of the given edges (first bin ``[lo, hi]`` if close_first).

    conf (N,), correct (N,) bool/0-1, edges (M+1,) increasing -> :class:`BinStats` (weights count / N).
    """
    c = as_tensor(conf).to(torch.float64)
    a = as_tensor(correct, device=c.device).to(torch.float64)
    e = as_tensor(edges, device=c.device).to(torch.float64)
    if c.ndim != 1 or a.shape != c.shape:
        raise DataError(f"conf and correct must be 1-D of the same length; got shapes {tuple(c.shape)} and "
                        f"{tuple(a.shape)}")
    if e.ndim != 1 or e.numel() < 2 or not bool((e[1:] >= e[:-1]).all()):
        raise DataError(f"edges must be a 1-D increasing array of at least 2 values; got shape {tuple(e.shape)}")
    counts, conf_sum, acc_sum = _bin_sums(c, a, e, close_first)
    return _bin_stats(e, counts, conf_sum, acc_sum, c.numel(), rule)


def _bin_sums(c, a, e, close_first=False):
    m = e.numel() - 1
    bin_id = torch.bucketize(c, e, right=False) - 1     # (lo, hi]: j with e_j < c <= e_{j+1}
    if close_first:
        bin_id = torch.where(c == e[0], 0, bin_id)
    bin_id = torch.where((bin_id >= 0) & (bin_id < m), bin_id, m)
    counts = torch.bincount(bin_id, minlength=m + 1)[:m].to(torch.float64)
    conf_sum = torch.bincount(bin_id, weights=c, minlength=m + 1)[:m]
    acc_sum = torch.bincount(bin_id, weights=a, minlength=m + 1)[:m]
    return counts, conf_sum, acc_sum


def equal_width_bin(c: torch.Tensor, n_bins: int, *, float32_values: bool = False,
                    close_first: bool = False) -> torch.Tensor:
    """Bin index j of each value in the equal-width ``(lo, hi]`` bins: e_j < c <= e_{j+1}, e_j = fl(j / M).

    c (...) float64 -> (...) int64 in [0, M - 1], or M for a value in no bin (<= 0, > 1, NaN). Exactly what
    ``bucketize(c, equal_width_edges(M), right=False) - 1`` gives, without the binary search (see
    :func:`_bin_plus_one`). ``float32_values``: every c is a float32 (or narrower) value held in float64,
    which allows the shortest exact formula. ``close_first``: the first bin is ``[0, 1/M]``, so a value of
    exactly 0 is in bin 0 (for probabilities: values in [0, 1] or NaN).
    """
    b = _bin_plus_one(c, n_bins, float32_values=float32_values, close_first=close_first).long() - 1
    return b.masked_fill_(b < 0, n_bins)


def _bin_plus_one(c: torch.Tensor, n_bins: int, *, float32_values: bool = False,
                  close_first: bool = False) -> torch.Tensor:
    """1 + the (lo, hi] bin of c as float64: 1..M a bin, 0 for c <= 0 or NaN, M + 1 for c > 1.
    ``close_first`` (c in [0, 1] or NaN): c = 0 is in bin 1, NaN in none (M + 1).

    For float32 values c and M < 2^28 the bin is exactly ceil(c M) - 1: c M is exact in float64 (24 + 28 bits),
    and no float32 lies between j / M and its double fl(j / M) (a float32 c != j/M is at least 2^q / M away
    from j/M, where 2^q is c's unit in the last place, while |fl(j/M) - j/M| <= 2^(q - 28)), so c > fl(j/M)
    exactly when c M > j. For float64 values the candidate ceil(c M) - 1 is off by at most one (c M and
    fl(j/M) are each within half an ulp of the exact values) and one comparison with each of its two edges,
    recomputed as the same correctly rounded j / M, corrects it.
    """
    if float32_values and n_bins < 1 << 28:
        j = torch.mul(c, n_bins).nan_to_num_(nan=n_bins + 1.0 if close_first else 0.0).ceil_()
        return j.clamp_(1 if close_first else 0, n_bins + 1)       # close_first: ceil(0 M) = 0 -> bin 1
    j = torch.mul(c, n_bins).nan_to_num_(nan=0.0).ceil_().clamp_(1, n_bins)   # candidate + 1, in [1, M]
    above_lower = torch.gt(c, (j - 1).div_(n_bins))
    above_upper = torch.gt(c, j / n_bins)
    j.sub_(1).add_(above_lower).add_(above_upper)            # NaN compares False: 0
    return j.add_(c == 0) if close_first else j


def _equal_width_sums(c: torch.Tensor, correct: torch.Tensor, m: int, *, float32_values: bool = False):
    """(counts, sum of c, sum of correct) per equal-width (lo, hi] bin, each (M,) float64, and the number of
    values in no bin; c (N,) float64, correct (N,) bool. One pass of bin arithmetic and two bincounts over the
    cells (correct, bin)."""
    cell = _bin_plus_one(c, m, float32_values=float32_values).add_(correct, alpha=m + 2).long()
    counts = torch.bincount(cell, minlength=2 * (m + 2)).to(torch.float64).view(2, m + 2)   # (correct, 1 + bin)
    conf_sum = torch.bincount(cell, weights=c, minlength=2 * (m + 2)).view(2, m + 2)[:, 1:m + 1]
    in_no_bin = counts[:, 0].sum() + counts[:, m + 1].sum()
    counts = counts[:, 1:m + 1]
    return counts.sum(0), conf_sum.sum(0), counts[1], in_no_bin


def _bin_stats(e, counts, conf_sum, acc_sum, n, rule) -> BinStats:
    cnt = counts.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(cnt > 0, acc_sum.cpu().numpy() / np.maximum(cnt, 1), np.nan)
        conf = np.where(cnt > 0, conf_sum.cpu().numpy() / np.maximum(cnt, 1), np.nan)
    return BinStats(edges=e.cpu().numpy(), counts=cnt.astype(np.int64), accuracy=acc, confidence=conf,
                    num_samples=int(n), rule=rule)


def _errors_from_sums(counts, conf_sum, acc_sum, n):
    """ECE, O-ECE, U-ECE, MCE from per-bin sums (last dim = bins), batched over leading dims.

    (n_b / N) |acc_b - conf_b| = |S_acc,b - S_conf,b| / N, so no division by empty bins happens.
    """
    diff = (conf_sum - acc_sum) / n
    ece = diff.abs().sum(-1)                                   # ECE (Guo 2017, eq. 3)
    oece = diff.clamp(min=0).sum(-1)                           # O-ECE: sum_b n_b/N max(conf_b - acc_b, 0)
    uece = (-diff).clamp(min=0).sum(-1)                        # U-ECE: sum_b n_b/N max(acc_b - conf_b, 0)
    gap = (conf_sum - acc_sum).abs() / counts.clamp(min=1)
    mce = torch.where(counts > 0, gap, torch.zeros_like(gap)).amax(-1)   # MCE = max_b |acc_b - conf_b| (Guo 2017)
    return ece, oece, uece, mce


def _adaptive_sums(sorted_conf, w_sorted, cum, n_bins, close_first, total):
    """Per-bin sums for adaptive bins, batched over replicate weights.

    sorted_conf (N,) ascending; w_sorted (B, N) sample multiplicities in sorted order; cum: dict of
    prefix sums (B, N+1) of w, w*conf, w*correct. Edges come from the resample's own sorted values.
    """
    bsz, n = w_sorted.shape
    dev = sorted_conf.device
    pos = _rank_positions(total, n_bins, dev)
    # value at rank r of the resample = sorted_conf[first i with cumulative count > r]
    ranks_lo = pos.clamp(max=total - 1).floor()
    ranks = torch.stack([ranks_lo, (ranks_lo + 1).clamp(max=total - 1)], 0).expand(bsz, 2, -1).reshape(bsz, -1)
    cnt = cum["w"][:, 1:].contiguous()
    which = torch.searchsorted(cnt, ranks.contiguous(), right=True).clamp(max=n - 1)
    vals = sorted_conf[which].view(bsz, 2, -1)
    x = pos.clamp(max=total - 1)
    lo, hi = vals[:, 0], vals[:, 1]
    edges = torch.where(x == ranks_lo, lo, (hi - lo) * (x - ranks_lo) + lo)   # numpy.interp, per replicate
    upto = torch.searchsorted(sorted_conf, edges.contiguous(), right=True)    # samples with conf <= edge
    if close_first:
        below = torch.searchsorted(sorted_conf, edges[:, :1].contiguous(), right=False)
        upto = torch.cat([below, upto[:, 1:]], 1)
    sums = []
    for key in ("w", "conf", "acc"):
        c = cum[key]
        at = c.gather(1, upto)
        sums.append((at[:, 1:] - at[:, :-1]).clamp(min=0) if key == "w" else at[:, 1:] - at[:, :-1])
    return edges, sums[0], sums[1], sums[2]


def _prefix(w_sorted, conf_sorted, acc_sorted):
    zero = torch.zeros(w_sorted.shape[0], 1, dtype=torch.float64, device=w_sorted.device)
    return {"w": torch.cat([zero, w_sorted.cumsum(1)], 1),
            "conf": torch.cat([zero, (w_sorted * conf_sorted).cumsum(1)], 1),
            "acc": torch.cat([zero, (w_sorted * acc_sorted).cumsum(1)], 1)}


# --- public metrics ------------------------------------------------------------------------------------
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


# --- the full report -----------------------------------------------------------------------------------
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
    return res


def _bootstrap(z, sc: _Scan, order, n_bins, n_boot, seed, close_first, *, progress: bool = False,
               name: str = "model") -> dict[str, np.ndarray]:
    """Every scalar on n_boot resamples of the N samples -> {name: (n_boot,) array}.

    Resample r draws N indices uniformly with replacement (torch.randint, seeded generator, blocks of
    replicates in order); each is turned into multiplicity weights w (B, N) so every metric is a weighted
    sum over the original samples: no loop over samples and no copy of the logits per replicate. The progress
    bar (``progress``) advances once per block of replicates.
    """
    from repanalysis.progress import progress_bar

    n = sc.conf.numel()
    k = sc.num_classes
    dev = sc.conf.device
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    a = sc.correct.to(torch.float64)
    ew_bin = equal_width_bin(sc.conf, n_bins, float32_values=z.dtype != torch.float64)
    per_sample = torch.stack([a, sc.conf, sc.nll, sc.brier], 1)              # (N, 4)
    sorted_conf, a_sorted = sc.conf[order], a[order]
    cw_design = _classwise_design(z, sc, n_bins)                             # CSR (N, 2KM)
    if n * cw_design.shape[1] <= _DENSE_DESIGN_ELEMENTS:
        cw_dense, cw_t = cw_design.to_dense(), None                          # small: plain GEMM
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                                  # torch's sparse-beta notice
            cw_dense, cw_t = None, cw_design.to_sparse_coo().t().coalesce().to_sparse_csr()
    out = {key: [] for key in SCALARS}
    bsz = max(1, min(n_boot, _BOOT_ELEMENTS // max(n, 1)))
    with progress_bar(n_boot, desc=f"bootstrap {name}", unit="replicate", enabled=progress) as bar:
        for done in range(0, n_boot, bsz):
            b = min(bsz, n_boot - done)
            idx = torch.randint(n, (b, n), generator=gen, device=dev)
            flat = (idx + torch.arange(b, device=dev)[:, None] * n).reshape(-1)
            w = torch.bincount(flat, minlength=b * n).view(b, n).to(torch.float64)   # multiplicities
            means = (w @ per_sample) / n
            for j, key in enumerate(("accuracy", "mean_confidence", "nll", "brier")):
                out[key].append(means[:, j])
            bins = ew_bin.expand(b, n)
            sums = [torch.zeros(b, n_bins + 1, dtype=torch.float64, device=dev).scatter_add_(1, bins, v)
                    for v in (w, w * sc.conf, w * a)]
            ece, oece, uece, mce = _errors_from_sums(*(s[:, :n_bins] for s in sums), n)
            out["ece"].append(ece)
            out["oece"].append(oece)
            out["uece"].append(uece)
            out["mce"].append(mce)
            w_sorted = w[:, order]
            _, ac, acs, aas = _adaptive_sums(sorted_conf, w_sorted, _prefix(w_sorted, sorted_conf, a_sorted),
                                             n_bins, close_first, n)
            out["aece"].append(_errors_from_sums(ac, acs, aas, n)[0])
            cells = (w @ cw_dense if cw_t is None else (cw_t @ w.T).T).reshape(b, 2, k, n_bins)
            # classwise ECE (Kull 2019) per replicate: mean_k sum_b |S_hit,kb - S_p,kb| / N
            out["classwise_ece"].append(((cells[:, 1] - cells[:, 0]).abs().sum(-1) / n).mean(-1))
            bar.update(b)                                                    # once per block
    return {key: torch.cat(parts).cpu().numpy() for key, parts in out.items()}


def _percentile_ci(replicates: dict, ci_level: float) -> dict:
    lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 - (1 - ci_level) / 2)
    return {key: (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))) for key, v in replicates.items()}


def _classwise_design(z, sc: _Scan, n_bins: int) -> torch.Tensor:
    """CSR (N, 2*K*M): per sample, p_k at column (k, bin of p_k) and 1 at column K*M + (y, bin of p_y).

    ``w @ A`` then gives, per replicate, the classwise bin sums of p_k and of 1[y = k] (only these two
    enter the classwise ECE: sum_b |S_hit - S_p|). Columns are increasing within each row by construction,
    so the CSR is built directly (no sort).
    """
    n, k = sc.conf.numel(), sc.num_classes
    dev = sc.conf.device
    zz = z if sc.keep is None else z[sc.keep]
    p = torch.softmax(zz, 1)                       # the kernel and dtype of _scan's classwise pass, bit for bit
    narrow = p.dtype != torch.float64
    p = p.to(torch.float64)
    bin_id = equal_width_bin(p, n_bins, float32_values=narrow, close_first=True)   # (N, K) as in _scan; M: none
    ok = bin_id < n_bins
    km = k * n_bins
    cols_p = torch.arange(k, device=dev) * n_bins + bin_id.clamp(0, n_bins - 1)
    vals_p = torch.where(ok, p, 0.0)
    rows = torch.arange(n, device=dev)
    bin_y = bin_id[rows, sc.labels]
    col_y = km + sc.labels * n_bins + bin_y.clamp(0, n_bins - 1)
    val_y = ok[rows, sc.labels].to(torch.float64)
    cols = torch.cat([cols_p, col_y[:, None]], 1).reshape(-1)
    vals = torch.cat([vals_p, val_y[:, None]], 1).reshape(-1)
    crow = torch.arange(0, n * (k + 1) + 1, k + 1, device=dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                      # torch's sparse-beta notice
        return torch.sparse_csr_tensor(crow, cols, vals, (n, 2 * km), check_invariants=False)


# --- temperature scaling -------------------------------------------------------------------------------
def apply_temperature(logits, temperature):
    """z / T (Guo et al. 2017, temperature scaling). ``temperature``: T > 0, or the result of
    :func:`fit_temperature`. Returns the same type as given (tensor or ndarray)."""
    if isinstance(temperature, TemperatureResult):
        temperature = temperature.temperature
    temperature = check_number(temperature, "temperature", minimum=0, above=True)
    if isinstance(logits, torch.Tensor):
        return logits / temperature
    return as_tensor(logits).numpy().astype(np.float64) / temperature   # as_tensor refuses non-numbers


def fit_temperature(logits, labels, *, init: float = 1.5, max_iter: int = 100, num_classes: int | None = None,
                    device=None) -> TemperatureResult:
    """Fit one T > 0 minimising the NLL of softmax(z / T) on held-out logits (Guo et al. 2017, sec. 4.2).

    LBFGS (strong Wolfe line search) on log T from T = ``init``, float64. logits (N, K), labels (N,).
    """
    init = check_number(init, "initial temperature", minimum=0, above=True)
    max_iter = check_number(max_iter, "max_iter", integer=True, minimum=1)
    z, y = _prepare(logits, labels, num_classes, device)
    finite = torch.isfinite(z).all(1)
    n_bad = int((~finite).sum())
    if n_bad:
        warnings.warn(f"{n_bad} of {z.shape[0]} samples have NaN or inf logits; they are excluded from the "
                      "temperature fit", RuntimeWarning, stacklevel=2)
        z, y = z[finite], y[finite]
        if z.shape[0] == 0:
            raise DataError("no finite logits rows to fit a temperature on")
    errorless = bool((z.argmax(1) == y).all())
    if errorless:
        warnings.warn(f"every one of the {z.shape[0]} validation predictions is right: the NLL keeps falling as "
                      "T -> 0 and has no minimum, so the fitted temperature only sharpens the model; fit it on a "
                      "split with errors", RuntimeWarning, stacklevel=2)
    elif z.shape[0] > 1 and bool((y == y[0]).all()):
        warnings.warn(f"every validation label is {int(y[0])}: a temperature fitted on a single class only "
                      "sharpens towards it and does not calibrate the model", RuntimeWarning, stacklevel=2)
    z = z.to(torch.float64)
    log_t = torch.tensor([math.log(init)], dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(z, y))
    opt.step(closure)
    with torch.no_grad():
        t = float(log_t.exp())
        after = float(torch.nn.functional.cross_entropy(z / t, y))
        grad = log_t.grad.abs().item() if log_t.grad is not None else float("nan")
    converged = bool(grad < 1e-5) and not errorless        # errorless: a vanishing gradient is no minimum
    if not converged and not errorless:
        warnings.warn(f"the temperature fit stopped after {max_iter} iteration(s) at T = {t:.4g} without reaching "
                      f"a minimum of the validation NLL (|d NLL / d log T| = {grad:.2g})", RuntimeWarning,
                      stacklevel=2)
    return TemperatureResult(temperature=t, nll_before=before, nll_after=after, num_samples=int(z.shape[0]),
                             converged=converged)


# --- several models ------------------------------------------------------------------------------------
def calibrate_dumps(dumps, *, n_bins: int = 15, n_boot: int = 0, seed: int = 0, ci_level: float = 0.95,
                    adaptive_rule: str = "reference", val_dumps=None, names=None,
                    device=None, progress: bool = True) -> list[CalibrationResult]:
    """:func:`calibration_report` for each Dump; with ``val_dumps`` (one per Dump, same model) also fit a
    temperature on it and add the scaled result, named ``"<name> +TS"``, right after the unscaled one.
    ``names``: one per Dump (a list, or 'a,b,c'); default the Dumps' own names. ``progress``: bootstrap bars on
    stderr (only when it is a terminal)."""
    dumps = list(dumps)
    names = model_names(dumps, names)
    if val_dumps is not None and len(val_dumps) != len(dumps):
        raise DataError(f"{len(val_dumps)} validation dumps for {len(dumps)} dumps; expected one per dump")
    out = []
    for i, d in enumerate(dumps):
        kw = {"n_bins": n_bins, "n_boot": n_boot, "seed": seed, "ci_level": ci_level,
              "adaptive_rule": adaptive_rule, "num_classes": d.num_classes, "device": device, "progress": progress}
        out.append(calibration_report(d.logits, d.labels, name=names[i], **kw))
        if val_dumps is not None:
            v = val_dumps[i]
            check_same_model(v, d, "--fit-temperature (validation Dump)")
            if v.num_classes != d.num_classes:
                raise DataError(f"validation dump {v.name} has {v.num_classes} classes but {names[i]} has "
                                f"{d.num_classes}; expected the same model")
            fit = fit_temperature(v.logits, v.labels, num_classes=v.num_classes, device=device)
            scaled = calibration_report(d.logits, d.labels, name=f"{names[i]} +TS", temperature=fit.temperature,
                                        **kw)
            scaled.temperature_fit = {"validation": v.name, **fit.to_dict()}
            out.append(scaled)
    return out


_ROW_KEYS = (("accuracy", "Acc %", 100), ("ece", "ECE %", 100), ("aece", "AECE %", 100),
             ("classwise_ece", "CW-ECE %", 100), ("oece", "O-ECE %", 100), ("uece", "U-ECE %", 100),
             ("nll", "NLL", 1), ("brier", "Brier", 1))
TABLE_HEADERS = {key: header for key, header, _ in _ROW_KEYS}


def comparison_rows(results, digits: int = 2) -> list[dict]:
    """Rows in the layout of FedLaS Table 1/4: model, T, N, then accuracy, ECE, AECE, classwise ECE, O-ECE,
    U-ECE (in %), NLL and Brier; each cell "value [low, high]" when bootstrap intervals exist."""
    rows = []
    for r in results:
        row = {"model": r.name, "T": f"{r.temperature:.3f}", "N": r.num_samples}
        for key, _, scale in _ROW_KEYS:
            nd = digits if scale == 100 else digits + 2
            cell = f"{scale * getattr(r, key):.{nd}f}"
            if key in r.ci:
                lo, hi = r.ci[key]
                cell += f" [{scale * lo:.{nd}f}, {scale * hi:.{nd}f}]"
            row[key] = cell
        rows.append(row)
    return rows

"""The fused per-sample pass of calibration (:func:`_scan`): one chunked read of the logits gives every
per-sample quantity (confidence, correctness, NLL, Brier) and the equal-width and classwise bin sums, on a pool of
single-threaded worker threads (:func:`single_threaded`). Performance-critical: see the package docstring, "Speed".
"""
from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from repanalysis.analyze.calibration.binning import _equal_width_sums, equal_width_bin
from repanalysis.arrays import as_tensor, check_logits_labels, refuse_probabilities
from repanalysis.errors import DataError

_CHUNK_ELEMENTS_CPU = 1 << 20     # 4 MiB of float32 per chunk (fewer per-chunk op dispatches; measured best)
_CHUNK_ELEMENTS_CLASSWISE = 1 << 17   # 512 KiB: the classwise binning makes several passes over the chunk
_CHUNK_ELEMENTS_GPU = 1 << 26
_EXP_SUM_FLOOR = 2.0 ** -60       # _exp_rows: a row sum of exp(z) below this is redone with the row max subtracted


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

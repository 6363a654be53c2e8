"""Binning for calibration: equal-width and equal-mass (adaptive) edges, bin indices without a binary search,
per-bin sums, and the ECE / O-ECE / U-ECE / MCE from those sums (batched over bootstrap replicates)."""
from __future__ import annotations

import numpy as np
import torch

from repanalysis.analyze.calibration.results import BinStats
from repanalysis.arrays import as_tensor
from repanalysis.errors import DataError


def equal_width_edges(n_bins: int = 15, device=None) -> torch.Tensor:
    """Edges j / M, j = 0..M (M+1,) float64, each the correctly rounded double of j/M."""
    _check_bins(n_bins)
    return torch.arange(n_bins + 1, dtype=torch.float64, device=device) / n_bins


def _check_bins(n_bins) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise DataError(f"number of bins must be a positive integer; got {n_bins!r}")



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

"""Smooth ECE (Błasiok & Nakkiran 2023) and the debiased L2 calibration error (Kumar, Liang & Ma 2019).

Both measure the top-label calibration: confidence c_i = max_k softmax(z_i)_k against correct_i = 1[argmax z_i
= y_i]. The ``*_binary`` forms take any (confidence, 0/1 outcome) pairs.

Smooth ECE ("Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing", sec. 3 and 5), computed as
relplot 1.0 does (``relplot.smECE``), so that the numbers agree with theirs:

- residuals r_i = c_i - o_i are kernel-smoothed with a Gaussian kernel of width sigma reflected at 0 and 1:
  both the residuals and the ones are spread linearly onto a grid of G = max(2000, round(20 / sigma)) // 2 + 1
  points on [0, 1], convolved with the reflected kernel, and read back by linear interpolation at
  T = max(200, round(10 / sigma)) points t_j;
- smECE_sigma = sum_j |rhat(t_j)| dens(t_j) / sum_j dens(t_j), rhat = smoothed residual / (density + 1e-4);
- sigma* is the fixed point smECE_sigma = sigma (their sec. 5, "the bandwidth chosen by the fixed point"):
  sigma = 1 if smECE_1 > 1, else 10 bisection steps on [0, 1] keeping the upper end where sigma >= smECE_sigma
  (relplot's ``search_param``; widths below ``eps`` count as inside). The value returned is smECE_{sigma*}.

The convolutions are done with FFTs in float64 on CPU or GPU (relplot uses ``np.convolve``): the same sums
up to float rounding (~1e-9).

Debiased L2 calibration error ("Verified Uncertainty Calibration", sec. 5, the estimator of their
``calibration.lower_bound_scaling_ce(p=2, debias=True, mode='top-label')``): B equal-mass bins of the sorted
confidences (``np.array_split`` sizes; a bin's upper edge is the midpoint between its last and the next bin's
first value, the last edge 1; a value equal to an edge belongs to the lower bin), then::

    CE^2 = sum_b (n_b / N) * [(mean_b c - mean_b o)^2 - mean_b o (1 - mean_b o) / (n_b - 1)]

(bins with fewer than 2 samples contribute 0), and the result is sqrt(max(CE^2, 0)). The subtracted term
removes the plug-in estimate's upward bias ((mean_b o) has variance p(1-p)/n_b). ``debias=False`` gives the
plug-in L2 error without it.

Example::

    >>> from repanalysis.analyze.calibration import smooth_ece, debiased_l2_ece
    >>> smooth_ece(dump.logits, dump.labels), debiased_l2_ece(dump.logits, dump.labels, n_bins=15)
"""
from __future__ import annotations

import math

import torch

from repanalysis.analyze.calibration._fused import _prepare
from repanalysis.arrays import as_tensor, check_number
from repanalysis.errors import DataError

_MESH_POINTS = 200          # relplot.config.smECE_mesh_pts
_DENSITY_EPS = 1e-4         # relplot BaseKernelMixin.smooth eps
_REFINE = 10                # relplot search_param(refine=10)


def _top_label(logits, labels, device):
    z, y = _prepare(logits, labels, None, device)
    z = z.to(torch.float64)
    finite = torch.isfinite(z).all(1)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        if n_bad == z.shape[0]:
            raise DataError(f"all {n_bad} rows of the logits contain NaN or inf; nothing to analyse")
        import warnings
        warnings.warn(f"{n_bad} of {z.shape[0]} samples have NaN or inf logits; they are excluded",
                      RuntimeWarning, stacklevel=3)
        z, y = z[finite], y[finite]
    zmax = z.amax(1)
    conf = torch.exp(z - zmax[:, None]).sum(1).reciprocal()       # max_k softmax(z)_k
    return conf, (z.argmax(1) == y).to(torch.float64)


def _binary(confidence, outcome, device):
    c = as_tensor(confidence, device=device).to(torch.float64)
    o = as_tensor(outcome, device=device).to(device=c.device, dtype=torch.float64)
    if c.ndim != 1 or o.shape != c.shape:
        raise DataError(f"confidence and outcome must be 1-D of the same length; got shapes {tuple(c.shape)} and "
                        f"{tuple(o.shape)}")
    if c.numel() == 0:
        raise DataError("no samples: expected at least one confidence")
    if not bool(((c >= 0) & (c <= 1)).all()):
        raise DataError("confidences must lie in [0, 1] (probabilities); got values outside, or NaN")
    if not bool(((o == 0) | (o == 1)).all()):
        raise DataError("outcomes must be 0 or 1 (was the prediction right)")
    return c, o


# --- smooth ECE -----------------------------------------------------------------------------------------
def _to_grid(c: torch.Tensor, weights: torch.Tensor, g: int) -> torch.Tensor:
    """Spread each weight linearly onto the two nearest of g grid points on [0, 1] (relplot smooth_round_to_grid);
    weights (C, N) -> (C, g)."""
    pos = c * (g - 1)
    idx = pos.to(torch.int64).clamp(0, g - 2)
    frac = pos - idx
    out = torch.zeros(weights.shape[0], g, dtype=torch.float64, device=c.device)
    out.index_add_(1, idx, weights * (1 - frac))
    out.index_add_(1, idx + 1, weights * frac)
    return out


def _reflected_smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Convolve grid values (C, g) with a Gaussian of width sigma reflected at both ends (relplot
    ReflectedGaussianKernel.convolve), via FFT."""
    g = values.shape[1]
    t = torch.linspace(0, 1, g, dtype=torch.float64, device=values.device)
    ker = torch.exp(-(t - 0.5) ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    ext = torch.cat([values.flip(1)[:, :-1], values, values.flip(1)[:, 1:]], 1)      # length 3g - 2
    size = ext.shape[1] + g - 1
    nfft = 1 << (size - 1).bit_length()
    full = torch.fft.irfft(torch.fft.rfft(ext, nfft) * torch.fft.rfft(ker, nfft), nfft)[:, :size]
    start = (g - 1) + g // 2                     # np.convolve 'valid' starts at g - 1; relplot keeps [g//2, g//2 + g)
    return full[:, start:start + g]


def _interpolate(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of i / (len - 1) -> y[..., i] at t (relplot kernels.interpolate)."""
    m = y.shape[-1]
    idx = (t * (m - 1)).to(torch.int64).clamp(0, m - 2)
    res = (t - idx / (m - 1)) * (m - 1)
    return y[..., idx] * (1 - res) + y[..., idx + 1] * res


def smooth_ece_at(confidence, outcome, sigma: float, device=None) -> float:
    """smECE_sigma at a fixed kernel width sigma (relplot ``smECE_sigma``): confidence (N,) in [0, 1], outcome
    (N,) 0/1."""
    c, o = _binary(confidence, outcome, device)
    sigma = check_number(sigma, "sigma", minimum=0, above=True)
    return _smooth_ece_at(c, o, sigma)


def _smooth_ece_at(c: torch.Tensor, o: torch.Tensor, sigma: float) -> float:
    g = max(2000, round(20 / sigma)) // 2 + 1
    t = torch.linspace(0, 1, max(round(10 / sigma), _MESH_POINTS), dtype=torch.float64, device=c.device)
    grid = _to_grid(c, torch.stack([c - o, torch.ones_like(c)]), g)            # residuals and counts together
    r, dens = _interpolate(t, _reflected_smooth(grid, sigma)).unbind(0)
    dens = dens + _DENSITY_EPS
    return float((r / dens).abs().mul(dens).sum() / dens.sum())               # sum |rhat| dens / sum dens


def smooth_ece_binary(confidence, outcome, *, eps: float = 1e-3, return_bandwidth: bool = False, device=None):
    """Smooth ECE of (confidence, 0/1 outcome) pairs with the fixed-point bandwidth (relplot ``smECE``).

    confidence (N,) in [0, 1], outcome (N,) 0/1. Returns the smooth ECE, or (smooth ECE, sigma*) with
    ``return_bandwidth=True``."""
    c, o = _binary(confidence, outcome, device)
    eps = check_number(eps, "eps", minimum=0)

    def inside(sigma):                               # sigma is at or above the fixed point
        return sigma < eps or sigma < _smooth_ece_at(c, o, sigma)

    sigma = 1.0
    if not inside(1.0):
        lo_end, sigma = 0.0, 1.0                     # relplot search_param: start=1, end=0, 10 halvings
        for _ in range(_REFINE):
            mid = (sigma + lo_end) / 2
            if inside(mid):
                lo_end = mid
            else:
                sigma = mid
    value = _smooth_ece_at(c, o, sigma)
    return (value, sigma) if return_bandwidth else value


def smooth_ece(logits, labels, *, eps: float = 1e-3, return_bandwidth: bool = False, device=None):
    """Top-label smooth ECE (Błasiok & Nakkiran 2023) of logits (N, K) and labels (N,); see
    :func:`smooth_ece_binary`."""
    conf, correct = _top_label(logits, labels, device)
    return smooth_ece_binary(conf, correct, eps=eps, return_bandwidth=return_bandwidth)


# --- debiased L2 calibration error ---------------------------------------------------------------------
def debiased_l2_ece_binary(confidence, outcome, n_bins: int = 15, *, debias: bool = True, device=None) -> float:
    """Debiased (or, ``debias=False``, plug-in) L2 calibration error over equal-mass bins (Kumar et al. 2019).

    confidence (N,) in [0, 1], outcome (N,) 0/1, n_bins B (at most N bins are made)."""
    c, o = _binary(confidence, outcome, device)
    n_bins = check_number(n_bins, "n_bins", integer=True, minimum=1)
    n = c.numel()
    b = min(n_bins, n)
    s = torch.sort(c).values
    sizes = torch.full((b,), n // b, dtype=torch.int64)
    sizes[:n % b] += 1                                              # np.array_split: the first n % b get one more
    ends = torch.cumsum(sizes, 0)[:-1].to(c.device)                 # first index of bins 2..b
    edges = torch.cat([(s[ends - 1] + s[ends]) / 2, torch.ones(1, dtype=torch.float64, device=c.device)])
    edges = torch.unique(edges)                                     # sorted, duplicates merged (as set())
    idx = torch.searchsorted(edges, c, right=False)                 # numpy searchsorted side='left'
    m = edges.numel()
    cnt = torch.bincount(idx, minlength=m).to(torch.float64)
    sum_c = torch.zeros(m, dtype=torch.float64, device=c.device).index_add_(0, idx, c)
    sum_o = torch.zeros(m, dtype=torch.float64, device=c.device).index_add_(0, idx, o)
    full = cnt > 0
    mean_c, mean_o = sum_c[full] / cnt[full], sum_o[full] / cnt[full]
    err = (mean_c - mean_o) ** 2
    if debias:
        ok = cnt[full] >= 2
        var = mean_o * (1 - mean_o) / (cnt[full] - 1).clamp(min=1)
        err = torch.where(ok, err - var, torch.zeros_like(err))    # Kumar et al. sec. 5: minus p(1-p)/(n_b - 1)
    sq = float((cnt[full] / n * err).sum())
    return math.sqrt(max(sq, 0.0))


def debiased_l2_ece(logits, labels, n_bins: int = 15, *, debias: bool = True, device=None) -> float:
    """Top-label debiased L2 calibration error (Kumar, Liang & Ma 2019) of logits (N, K) and labels (N,); see
    :func:`debiased_l2_ece_binary`."""
    conf, correct = _top_label(logits, labels, device)
    return debiased_l2_ece_binary(conf, correct, n_bins, debias=debias)

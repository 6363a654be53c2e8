"""How much of a CAM falls on the object: precision / recall / F1 / IoU of the thresholded CAM against
the object region, a threshold sweep with its precision-recall area, a top-k% mode and the pointing games.

All functions take a batch: cams [N, H, W] (min-max normalised to [0, 1] per image) and regions
[N, H, W] bool (the union of the object's boxes, or a mask), as numpy arrays or torch tensors, and
compute on the whole batch at once. Undefined ratios (empty CAM mask, empty region) are NaN, never an
error, so means over a data set use ``nanmean``. Definitions: REFERENCE.md "Grad-CAM localisation".

Example::

    >>> s = localisation_scores(cams, regions, threshold=0.5)
    >>> s.precision.shape, s.sweep.area.shape      # (N,), (N,)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from repanalysis.arrays import as_tensor, check_number
from repanalysis.data.boxes import boxes_to_mask  # noqa: F401  (masks are made in data/boxes.py; part of this API)
from repanalysis.errors import DataError


def default_thresholds(n: int = 101) -> torch.Tensor:
    """The tau grid of the sweep: n evenly spaced values in [0, 1] (float32, matching the CAMs)."""
    return torch.linspace(0.0, 1.0, n, dtype=torch.float32)


def check_threshold(threshold: float, what: str = "threshold") -> float:
    t = float(threshold)
    if not 0.0 <= t <= 1.0 or math.isnan(t):
        raise DataError(f"{what} must lie in [0, 1] (CAMs are min-max normalised); got {threshold}")
    return t


def _check_cams(cams) -> torch.Tensor:
    """cams [N, H, W] (or [H, W]: one CAM) -> float tensor [N, H, W]; DataError unless non-empty, finite and
    in [0, 1] (min-max normalised)."""
    cams_t = as_tensor(cams)
    if cams_t.ndim == 2:
        cams_t = cams_t.unsqueeze(0)
    if cams_t.ndim != 3:
        raise DataError(f"cams must be [N, H, W]; got shape {tuple(cams_t.shape)}")
    if cams_t.numel() == 0:
        raise DataError(f"no CAMs: expected cams [N, H, W] with N, H, W >= 1; got shape {tuple(cams_t.shape)}")
    if not cams_t.is_floating_point():
        cams_t = cams_t.float()
    if not torch.isfinite(cams_t).all():
        raise DataError("cams contain NaN or inf; expected finite values in [0, 1]")
    lo, hi = float(cams_t.min()), float(cams_t.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"cams must be min-max normalised to [0, 1] per image; found values in [{lo:.4g}, {hi:.4g}]")
    return cams_t


def _check(cams, regions) -> tuple[torch.Tensor, torch.Tensor]:
    cams_t = _check_cams(cams)
    regions_t = as_tensor(regions, device=cams_t.device)
    if regions_t.ndim == 2:
        regions_t = regions_t.unsqueeze(0)
    if regions_t.shape != cams_t.shape:
        raise DataError(f"regions must have the CAMs' shape {tuple(cams_t.shape)}; got {tuple(regions_t.shape)}")
    return cams_t, regions_t.bool()


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den as float64, NaN where den == 0."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, math.nan))


# --- regions ---------------------------------------------------------------------------------------------

def threshold_masks(cams, threshold: float = 0.5) -> torch.Tensor:
    """M = CAM >= tau, [N, H, W] bool (REFERENCE.md; MaxSup section 5.4); [H, W] for one CAM [H, W]."""
    tau = check_threshold(threshold)
    mask = _check_cams(cams) >= tau
    return mask[0] if np.ndim(cams) == 2 else mask


def topk_masks(cams, fraction: float) -> torch.Tensor:
    """The ceil(fraction * H * W) highest-CAM pixels of each image (exactly that many; ties broken by
    position), [N, H, W] bool; [H, W] for one CAM [H, W]."""
    fraction = check_number(fraction, "top-k fraction", minimum=0, maximum=1, above=True)
    cams_t = _check_cams(cams)
    n, h, w = cams_t.shape
    k = max(1, math.ceil(fraction * h * w - 1e-9))
    flat = cams_t.reshape(n, h * w)
    idx = flat.topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return mask.reshape(h, w) if np.ndim(cams) == 2 else mask.reshape(n, h, w)


# --- scores -----------------------------------------------------------------------------------------------

@dataclass
class RegionScores:
    """Per-image overlap of a binary CAM mask M with the region B, all [N] float64, NaN where undefined."""

    precision: torch.Tensor  # |M ∩ B| / |M|
    recall: torch.Tensor     # |M ∩ B| / |B|
    f1: torch.Tensor         # 2PR / (P + R)
    iou: torch.Tensor        # |M ∩ B| / |M ∪ B|


def mask_scores(masks, regions) -> RegionScores:
    """Precision, recall, F1 and IoU of masks [N, H, W] bool against regions [N, H, W] bool."""
    m = as_tensor(masks).bool()
    b = as_tensor(regions, device=m.device).bool()
    if m.shape != b.shape:
        raise DataError(f"masks {tuple(m.shape)} and regions {tuple(b.shape)} must have the same shape")
    dims = tuple(range(1, m.ndim))
    inter = (m & b).sum(dims)
    n_m, n_b, union = m.sum(dims), b.sum(dims), (m | b).sum(dims)
    # MaxSup section 5.4: precision = |M ∩ B| / |M|, recall = |M ∩ B| / |B|
    precision, recall = _ratio(inter, n_m), _ratio(inter, n_b)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall),
                     torch.where(torch.isnan(precision + recall), precision + recall, torch.zeros_like(precision)))
    return RegionScores(precision, recall, f1, _ratio(inter, union))


def energy_pointing(cams, regions) -> torch.Tensor:
    """Energy-based pointing game (Score-CAM, Wang et al. 2020, sec. 5.2): the share of CAM energy
    inside the region, sum_{B} L / sum L, [N] float64 (NaN for an all-zero CAM)."""
    cams_t, regions_t = _check(cams, regions)
    total = cams_t.double().sum((1, 2))
    inside = (cams_t.double() * regions_t).sum((1, 2))
    return torch.where(total > 0, inside / total.clamp(min=1e-300), torch.full_like(total, math.nan))


def pointing_hit(cams, regions) -> torch.Tensor:
    """Pointing game (Zhang et al. 2018, no tolerance): whether the CAM's maximum pixel (first in
    row-major order on ties) lies in the region, [N] bool."""
    cams_t, regions_t = _check(cams, regions)
    n = cams_t.shape[0]
    idx = cams_t.reshape(n, -1).argmax(dim=1)
    return regions_t.reshape(n, -1).gather(1, idx[:, None]).squeeze(1)


@dataclass
class PRSweep:
    """Precision and recall of CAM >= tau for every tau in ``thresholds`` [T] (ascending).

    precision, recall: [N, T] float64 (NaN where the mask or region is empty); area: [N] the area under
    each image's precision-recall curve, sum_t (R_t - R_{t+1}) P_t with R_{T} = 0 (the step rule of
    average precision: with every distinct CAM value as a threshold it is the pixel-level average precision).
    """

    thresholds: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor
    area: torch.Tensor

    def mean_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean precision [T], mean recall [T]) over images, NaN-aware."""
        return (np.nanmean(self.precision.numpy(), axis=0) if self.precision.shape[0] else
                np.full(self.thresholds.shape, np.nan), np.nanmean(self.recall.numpy(), axis=0))


def threshold_sweep(cams, regions, thresholds=None) -> PRSweep:
    """Precision/recall of CAM >= tau over a grid of tau, exactly, without one mask per tau.

    Each pixel is bucketed once by how many thresholds it reaches (bucketize), and the mask sizes for
    all tau follow from a reversed cumulative count; O(N * H * W + N * T).
    """
    cams_t, regions_t = _check(cams, regions)
    thr = default_thresholds() if thresholds is None else as_tensor(thresholds).reshape(-1)
    thr = thr.to(device=cams_t.device, dtype=cams_t.dtype)
    if thr.numel() == 0 or (thr.numel() > 1 and not bool((thr[1:] > thr[:-1]).all())):
        raise DataError("thresholds must be a non-empty, strictly increasing sequence")
    n, t = cams_t.shape[0], thr.numel()
    # pixel is in the mask at tau_j (cam >= tau_j) iff j < number of thresholds <= cam
    reached = torch.bucketize(cams_t.reshape(n, -1), thr, right=True)
    ones = torch.ones_like(reached, dtype=torch.float64)
    counts = torch.zeros(n, t + 1, dtype=torch.float64, device=cams_t.device).scatter_add_(1, reached, ones)
    hits = torch.zeros_like(counts).scatter_add_(1, reached, regions_t.reshape(n, -1).double())
    mask_size = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # |M_j| = #pixels reaching more than j thresholds
    inter = hits.flip(1).cumsum(1).flip(1)[:, 1:]
    region_size = regions_t.reshape(n, -1).sum(1, dtype=torch.float64)[:, None].expand(n, t)
    precision, recall = _ratio(inter, mask_size), _ratio(inter, region_size)
    next_recall = torch.cat([recall[:, 1:], torch.zeros(n, 1, dtype=recall.dtype, device=recall.device)], 1)
    step = recall - next_recall
    # average-precision step rule: area = sum_j (R_j - R_{j+1}) P_j (steps of zero width add nothing)
    area = torch.where(step != 0, step * precision, torch.zeros_like(step)).sum(1)
    area = torch.where(region_size[:, 0] > 0, area, torch.full_like(area, math.nan))
    return PRSweep(thr.cpu(), precision.cpu(), recall.cpu(), area.cpu())


@dataclass
class LocalisationScores:
    """Everything measured on one batch: the :class:`RegionScores` fields at the chosen tau (or top-k),
    energy [N], pointing_hit [N] bool, region_fraction [N] (|B| / (H W)) and the tau sweep."""

    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor
    iou: torch.Tensor
    energy: torch.Tensor
    pointing_hit: torch.Tensor
    region_fraction: torch.Tensor
    sweep: PRSweep


def localisation_scores(cams, regions, threshold: float = 0.5, topk: float | None = None,
                        thresholds=None) -> LocalisationScores:
    """All localisation measures for cams [N, H, W] in [0, 1] against regions [N, H, W] bool.

    The binary mask is CAM >= ``threshold``, or the top ``topk`` fraction of pixels when topk is given.
    """
    cams_t, regions_t = _check(cams, regions)
    masks = topk_masks(cams_t, topk) if topk is not None else threshold_masks(cams_t, threshold)
    s = mask_scores(masks, regions_t)
    frac = regions_t.reshape(regions_t.shape[0], -1).double().mean(1)
    return LocalisationScores(s.precision.cpu(), s.recall.cpu(), s.f1.cpu(), s.iou.cpu(),
                              energy_pointing(cams_t, regions_t).cpu(), pointing_hit(cams_t, regions_t).cpu(),
                              frac.cpu(), threshold_sweep(cams_t, regions_t, thresholds))

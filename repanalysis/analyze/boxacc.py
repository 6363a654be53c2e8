"""Box accuracy of CAMs: MaxBoxAcc, MaxBoxAccV2 and Top-1 Loc (Choe et al. 2020, "Evaluating Weakly
Supervised Object Localization Methods Right", CVPR).

For each CAM threshold tau, the estimated box is the tightest box around a connected component of
CAM >= tau (8-connectivity): v1 takes the largest component, v2 the component whose box best matches a
ground-truth box. An image counts at (tau, delta) when the IoU of that box with one of its ground-truth
boxes is >= delta. MaxBoxAcc(delta) = max over tau of the fraction of images that count (v1: delta = 0.5);
MaxBoxAccV2 = the mean of v2's MaxBoxAcc over delta in {0.3, 0.5, 0.7}. Top-1 Loc: the fraction of images
with the correct class AND IoU >= 0.5 at the threshold that gives MaxBoxAcc (v1). The v1 numbers are the
default ones reported ("maxboxacc", "top1_loc"); "maxboxacc_v2" stands beside them.

Boxes are (x0, y0, x1, y1) in pixel-edge coordinates (a box [4, 4, 12, 12] covers rows/cols 4..11, as
:func:`repanalysis.data.boxes.boxes_to_mask`), so a component spanning columns 4..11 has x0 = 4, x1 = 12.
Pure functions of arrays; the components of all thresholds of one image are labelled in one
``scipy.ndimage.label`` call on the [T, H, W] stack (no connection across thresholds).

Example::

    >>> ious = box_ious(cams, boxes, thresholds)          # [N, T] (v1), cams [N, H, W], boxes: N arrays [M, 4]
    >>> max_box_acc(ious, thresholds).value
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from repanalysis.errors import DataError

V2_DELTAS = (0.3, 0.5, 0.7)
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True                           # 8-connected within a threshold's plane, none across planes


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [P, 4] with boxes b [Q, 4] (x0, y0, x1, y1; areas from the edge coordinates) -> [P, Q]."""
    a, b = np.asarray(a, dtype=np.float64)[:, None, :], np.asarray(b, dtype=np.float64)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def image_box_ious(cam, boxes, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """For one CAM [H, W] and its ground-truth boxes [M, 4]: (v1, v2) IoU per threshold, each [T] float64.
    v1: the box of the largest component of CAM >= tau (ties: the first in row-major order); v2: the best
    box over all components. Both are the max over the ground-truth boxes; 0 where CAM >= tau is empty."""
    cam = np.asarray(cam, dtype=np.float32)
    thr = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    gt = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    v1, v2 = np.zeros(thr.size), np.zeros(thr.size)
    if gt.shape[0] == 0:
        return v1, v2
    labels, n = ndimage.label(cam[None] >= thr[:, None, None], structure=_STRUCTURE)
    if n == 0:
        return v1, v2
    slices = ndimage.find_objects(labels)                        # one (t, rows, cols) slice per component
    comp = np.array([(s[0].start, s[2].start, s[1].start, s[2].stop, s[1].stop) for s in slices])
    plane, comp_boxes = comp[:, 0], comp[:, 1:].astype(np.float64)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    iou = pairwise_iou(comp_boxes, gt).max(axis=1)               # [n]: best ground-truth box per component
    np.maximum.at(v2, plane, iou)
    order = np.lexsort((np.arange(n), -sizes, plane))            # by plane, then largest, then first label
    first = order[np.unique(plane[order], return_index=True)[1]]
    v1[plane[first]] = iou[first]
    return v1, v2


def box_ious(cams, boxes: Sequence, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(v1, v2) IoU curves [N, T] of CAMs [N, H, W] (in [0, 1]) against boxes (N arrays [M_i, 4]; an image
    with None gets NaN rows) at ``thresholds`` [T]."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise DataError(f"cams must be [N, H, W]; got shape {cams.shape}")
    if len(boxes) != cams.shape[0]:
        raise DataError(f"need one box array per CAM: {cams.shape[0]} CAMs, {len(boxes)} box arrays")
    thr = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    v1, v2 = np.full((cams.shape[0], thr.size), math.nan), np.full((cams.shape[0], thr.size), math.nan)
    for i, b in enumerate(boxes):
        if b is not None:
            v1[i], v2[i] = image_box_ious(cams[i], b, thr)
    return v1, v2


@dataclass
class MaxBoxAcc:
    """MaxBoxAcc at one IoU threshold delta: value (fraction in [0, 1]), the best threshold and its index,
    and the accuracy curve over thresholds [T]."""

    value: float
    threshold: float
    index: int
    curve: np.ndarray


def max_box_acc(ious, thresholds, delta: float = 0.5) -> MaxBoxAcc:
    """max over tau of the fraction of images with IoU >= delta (rows of NaN, images without boxes, left out).
    ious [N, T], thresholds [T]. Ties: the lowest tau."""
    ious = np.asarray(ious, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    keep = np.isfinite(ious).all(axis=1) if ious.ndim == 2 else np.zeros(0, bool)
    if ious.ndim != 2 or ious.shape[1] != thr.size:
        raise DataError(f"ious must be [N, T] with T = {thr.size} thresholds; got shape {ious.shape}")
    if not keep.any():
        return MaxBoxAcc(math.nan, math.nan, -1, np.full(thr.size, math.nan))
    curve = (ious[keep] >= delta).mean(axis=0)  # Choe et al. 2020, eq. 1: BoxAcc(tau, delta)
    best = int(np.argmax(curve))
    return MaxBoxAcc(float(curve[best]), float(thr[best]), best, curve)


def max_box_acc_v2(ious_v2, thresholds, deltas: Sequence[float] = V2_DELTAS) -> float:
    """MaxBoxAccV2: the mean over delta in {0.3, 0.5, 0.7} of MaxBoxAcc on the all-components IoUs."""
    return float(np.mean([max_box_acc(ious_v2, thresholds, d).value for d in deltas]))


def top1_loc(ious, correct, index: int, delta: float = 0.5) -> float:
    """Top-1 Loc: fraction of images (with boxes) whose class is right AND whose IoU at threshold ``index``
    is >= delta."""
    ious = np.asarray(ious, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    keep = np.isfinite(ious).all(axis=1)
    if index < 0 or not keep.any():
        return math.nan
    return float(((ious[keep, index] >= delta) & correct[keep]).mean())


def box_accuracy(ious, ious_v2, thresholds, correct) -> dict:
    """The summary numbers: maxboxacc (v1, delta 0.5), box_threshold (its tau), maxboxacc_v2, top1_loc."""
    v1 = max_box_acc(ious, thresholds, 0.5)
    return {"maxboxacc": v1.value, "box_threshold": v1.threshold,
            "maxboxacc_v2": max_box_acc_v2(ious_v2, thresholds), "top1_loc": top1_loc(ious, correct, v1.index)}

"""Grad-CAM figures: heat-map overlays (rows = models, columns = images) and precision-recall curves.

Draws what a :class:`repanalysis.analyze.cam.LocalisationResult` holds (its kept ``examples`` and its
mean tau-sweep curve); computes nothing beyond it.

Example::

    >>> fig = plot_cam_grid([result_ce, result_ls, result_maxsup], max_images=5)
    >>> save_figure(fig, "figures/gradcam_grid")
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from repanalysis.plot.style import get_ax, model_colors, subplots

CAM_CMAP = "inferno"  # perceptually uniform and colour-blind-safe (jet is neither)
BOX_COLOR = "white"


def plot_cam_overlay(example, ax=None, *, class_names: Sequence[str] | None = None, alpha: float = 0.5,
                     show_scores: bool = True, title: str | None = None):
    """One image with its CAM as a heat map, the object's boxes outlined (or the mask's contour) and
    precision / recall printed under it. ``example``: a CamExample. Returns the Axes."""
    ax = get_ax(ax, figsize=(3.0, 3.3))
    cam = np.asarray(example.cam, dtype=np.float32)
    h, w = cam.shape
    if example.image is not None:
        ax.imshow(example.image, extent=(0, w, h, 0), interpolation="bilinear")
    ax.imshow(cam, cmap=CAM_CMAP, vmin=0.0, vmax=1.0, alpha=alpha if example.image is not None else 1.0,
              extent=(0, w, h, 0), interpolation="bilinear")
    if example.boxes is not None and len(example.boxes):
        for x0, y0, x1, y1 in np.asarray(example.boxes, dtype=float):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=BOX_COLOR, linewidth=1.6))
    elif example.region is not None and np.asarray(example.region).any():
        ax.contour(np.asarray(example.region, dtype=float), levels=[0.5], colors=BOX_COLOR, linewidths=1.4,
                   extent=(0, w, 0, h), origin="upper")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if show_scores:
        def name(k):
            return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)

        mark = "" if example.pred == example.label else f" (pred {name(example.pred)})"
        ax.set_xlabel(f"P = {_fmt(example.precision)}   R = {_fmt(example.recall)}{mark}", fontsize=8)
    return ax


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def plot_cam_grid(results: Sequence, max_images: int = 6, *, class_names: Sequence[str] | None = None,
                  panel_size: float = 2.3):
    """Figure of CAM overlays: one row per model (result), one column per image (the images every
    result kept, in order), a shared colour bar. Returns the Figure."""
    results = list(results)
    if not results:
        raise ValueError("plot_cam_grid needs at least one result")
    common = [e.name for e in results[0].examples if all(any(f.name == e.name for f in r.examples)
                                                          for r in results[1:])][:max_images]
    if not common:
        raise ValueError("the results kept no images in common to show")
    rows, cols = len(results), len(common)
    fig, axes = subplots(rows, cols, figsize=(panel_size * cols + 0.9, (panel_size + 0.45) * rows + 0.4))
    colors = model_colors([r.name for r in results])
    for i, result in enumerate(results):
        by_name = {e.name: e for e in result.examples}
        for j, image_name in enumerate(common):
            ex = by_name[image_name]
            title = None
            if i == 0:
                label = class_names[ex.label] if class_names is not None and ex.label < len(class_names) else ex.label
                title = f"{_short(image_name)}\n{label}"
            ax = plot_cam_overlay(ex, axes[i, j], class_names=class_names, title=title)
            if j == 0:
                ax.set_ylabel(result.name, fontsize=11, color=colors[result.name], fontweight="bold")
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CAM_CMAP)  # opaque colours, not the overlay's
    cbar = fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    cbar.set_label("CAM (min-max normalised, 0-1)")
    method = results[0].method
    fig.suptitle(f"{method} on {results[0].layer}; box = object region; "
                 f"P/R at tau = {results[0].threshold:g}" if results[0].topk is None else
                 f"{method}; P/R of the top {100 * results[0].topk:g}% pixels", fontsize=10)
    return fig


def _short(name: str, n: int = 22) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= n else "…" + name[-(n - 1):]


def plot_pr_curves(results: Sequence, ax=None):
    """Mean precision against mean recall of CAM >= tau over the tau sweep, one line per model, with
    the mean area under each image's curve in the legend. Returns the Axes."""
    ax = get_ax(ax, figsize=(4.8, 4.0))
    colors = model_colors([r.name for r in results])
    for r in results:
        area = np.nanmean(r.pr_area) if np.isfinite(r.pr_area).any() else float("nan")
        ax.plot(r.pr_recall, r.pr_precision, color=colors[r.name], label=f"{r.name} (area {area:.3f})")
        share = np.nanmean(r.region_fraction)
        ax.axhline(share, color=colors[r.name], linestyle=":", linewidth=1)
    ax.set_xlabel("recall |M ∩ B| / |B| (fraction of box pixels)")
    ax.set_ylabel("precision |M ∩ B| / |M| (fraction of CAM pixels)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("CAM >= tau swept over [0, 1] (dotted: box share of image)", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    return ax

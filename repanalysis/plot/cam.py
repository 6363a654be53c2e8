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

from repanalysis.arrays import check_number
from repanalysis.analyze.cam import CamExample, LocalisationResult
from repanalysis.errors import DataError
from repanalysis.plot.style import (ANNOTATION_FONTSIZE, NEUTRAL, check_result, check_results, get_ax, literal,
                                    model_colors, subplots, wrap_name)

ROW_LABEL_CHARS = 18      # a model's row label wraps at this many characters (a 2.3-inch row holds about 25)

CAM_CMAP = "inferno"  # perceptually uniform and colour-blind-safe (jet is neither)
BOX_COLOR = "white"


def plot_cam_overlay(example, ax=None, *, class_names: Sequence[str] | None = None, alpha: float = 0.5,
                     show_scores: bool = True, title: str | None = None):
    """One image with its CAM as a heat map, the object's boxes outlined (or the mask's contour) and
    precision / recall printed under it. ``example``: a CamExample. Returns the Axes."""
    check_result(example, CamExample, "plot_cam_overlay")
    cam = np.asarray(example.cam, dtype=np.float32)
    if cam.ndim != 2:
        raise DataError(f"plot_cam_overlay: {example.name}: cam must be 2-D [H, W]; got shape {cam.shape}")
    ax = get_ax(ax, figsize=(3.0, 3.3))
    h, w = cam.shape
    if example.image is not None:
        ax.imshow(example.image, extent=(0, w, h, 0), interpolation="bilinear")
    ax.imshow(cam, cmap=CAM_CMAP, vmin=0.0, vmax=1.0, alpha=alpha if example.image is not None else 1.0,
              extent=(0, w, h, 0), interpolation="bilinear")
    if example.boxes is not None and len(example.boxes):
        # a box reaching the crop's border (or past it) is drawn just inside the image, so that its sides there
        # show (a box round the whole crop, like a cat filling the photo, had all four edges off the image)
        boxes = np.asarray(example.boxes, dtype=float).reshape(-1, 4)
        inset = 0.01 * max(w, h)         # about half the outline's width at the grid's scale
        for (x0, x1), (y0, y1) in zip(boxes[:, [0, 2]].clip(inset, w - inset), boxes[:, [1, 3]].clip(inset, h - inset)):
            if x1 > x0 and y1 > y0:
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
        ax.set_title(title)
    if show_scores:
        def name(k):
            return literal(class_names[k]) if class_names is not None and 0 <= k < len(class_names) else str(k)

        mark = "" if example.pred == example.label else f" (pred {name(example.pred)})"
        ax.set_xlabel(f"P = {_fmt(example.precision)}   R = {_fmt(example.recall)}{mark}",
                      fontsize=ANNOTATION_FONTSIZE)
    return ax


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def plot_cam_grid(results: Sequence, max_images: int = 6, *, class_names: Sequence[str] | None = None,
                  panel_size: float = 2.3, colors: dict[str, str] | None = None):
    """Figure of CAM overlays: one row per model (result), one column per image (the images every
    result kept, in order), a shared colour bar. Row labels in the model's colour when several models
    are compared (``colors``: the run's model colours), else black. Returns the Figure."""
    results = check_results(results, LocalisationResult, "plot_cam_grid")
    max_images = check_number(max_images, "max_images", integer=True, minimum=1)
    common = [e.name for e in results[0].examples if all(any(f.name == e.name for f in r.examples)
                                                          for r in results[1:])][:max_images]
    if not common:
        raise DataError("plot_cam_grid: the results kept no images in common to show; expected examples kept "
                        "for the same images (keep > 0 in localise_dataset)")
    rows, cols = len(results), len(common)
    fig, axes = subplots(rows, cols, figsize=(panel_size * cols + 0.9, (panel_size + 0.45) * rows + 0.4),
                         layout="constrained")
    colors = model_colors([r.name for r in results], colors) if rows > 1 else {results[0].name: "black"}
    for i, result in enumerate(results):
        by_name = {e.name: e for e in result.examples}
        for j, image_name in enumerate(common):
            ex = by_name[image_name]
            title = None
            if i == 0:
                label = class_names[ex.label] if class_names is not None and ex.label < len(class_names) else ex.label
                title = f"{literal(_short(image_name))}\n{literal(label)}"
            ax = plot_cam_overlay(ex, axes[i, j], class_names=class_names, title=title)
            if j == 0:
                ax.set_ylabel(literal(wrap_name(result.name, ROW_LABEL_CHARS)), color=colors[result.name],
                              fontweight="bold")   # a long name on lines no longer than the row is tall
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CAM_CMAP)  # opaque colours, not the overlay's
    cbar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02)
    cbar.set_label("CAM (min-max normalised, 0-1)")
    method = results[0].method
    n = ", ".join(str(v) for v in dict.fromkeys(r.num_images for r in results))
    fig.suptitle(f"{method} on {results[0].layer} ({n} images, {cols} shown); box = object region; "
                 f"P/R of CAM >= $\\tau$ = {results[0].threshold:g}" if results[0].topk is None else
                 f"{method} ({n} images, {cols} shown); P/R of the top {100 * results[0].topk:g}% pixels")
    return fig


def _short(name: str, n: int = 22) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= n else "…" + name[-(n - 1):]


def plot_pr_curves(results: Sequence, ax=None, colors: dict[str, str] | None = None):
    """Mean precision against mean recall of CAM >= tau over the tau sweep, one line per model, with
    the mean area under each image's curve in the legend; dotted: the box share of the image (the
    precision of a CAM covering everything), one grey line when every model's is the same. Returns the Axes."""
    results = check_results(results, LocalisationResult, "plot_pr_curves")
    ax = get_ax(ax, figsize=(4.8, 4.0))
    colors = model_colors([r.name for r in results], colors)
    for r in results:
        area = np.nanmean(r.pr_area) if np.isfinite(r.pr_area).any() else float("nan")
        ax.plot(r.pr_recall, r.pr_precision, color=colors[r.name], label=f"{literal(r.name)} (area {area:.3f})")
    shares = [float(np.nanmean(r.region_fraction)) for r in results]
    if max(shares) - min(shares) <= 1e-9:
        ax.axhline(shares[0], color=NEUTRAL, linestyle=":", linewidth=1.2, label=f"box share ({shares[0]:.3f})")
    else:
        for r, share in zip(results, shares):
            ax.axhline(share, color=colors[r.name], linestyle=":", linewidth=1.2,
                       label=f"{literal(r.name)} box share ({share:.3f})")
    ax.set_xlabel("Recall |M ∩ B| / |B| (fraction of box pixels)")
    ax.set_ylabel("Precision |M ∩ B| / |M| (fraction of CAM pixels)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    n = ", ".join(str(v) for v in dict.fromkeys(r.num_images for r in results))
    ax.set_title(f"CAM precision-recall against boxes (CAM >= $\\tau$)\n$\\tau$ swept over [0, 1], mean of {n} images")
    ax.legend(loc="lower left")
    return ax

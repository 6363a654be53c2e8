"""Figures of per-class views (:class:`repanalysis.analyze.per_class.PerClassResult`): sorted per-class accuracy
differences against the baseline with their paired intervals, per-class accuracy per model, and the confidence
of the wrong predictions per model.

Each ``plot_*`` function draws on ``ax`` (a new styled Axes when None) and returns the Axes;
:func:`save_per_class_figures` writes ``per_class_difference``, ``per_class_accuracy`` and ``error_confidence``
(PNG + PDF). Nothing here computes a statistic the Result does not hold.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from repanalysis.analyze.per_class import PerClassResult
from repanalysis.arrays import check_number
from repanalysis.errors import DataError
from repanalysis.outputs import output_set
from repanalysis.plot.style import (NEUTRAL, check_result, get_ax, literal, model_colors, name_title, save_figure,
                                    subplots)

_FIGURE_STEMS = ("per_class_difference", "per_class_accuracy", "error_confidence")
MAX_LABELLED_CLASSES = 40     # beyond this many classes, bars are drawn by rank without class names


def _check(result, what: str) -> PerClassResult:
    return check_result(result, PerClassResult, what)


def _colors(result, colors) -> dict[str, str]:
    return model_colors(result.models, colors)


def _pct(level: float) -> str:
    return f"{100 * level:g}%"


# --- sorted differences -----------------------------------------------------------------------------------------
def plot_class_differences(result, model: str | None = None, ax=None, color: str | None = None,
                           max_labels: int = MAX_LABELLED_CLASSES, title: bool = True):
    """Per-class accuracy of ``model`` minus the baseline's (percentage points), sorted, with the paired
    bootstrap interval as whiskers; classes whose interval excludes 0 in the model's colour, the others grey.
    Up to ``max_labels`` classes: horizontal bars named by class (largest gain on top); beyond: vertical bars by
    rank. ``model`` defaults to the first model compared with the baseline."""
    result = _check(result, "plot_class_differences")
    if not result.differences:
        raise DataError("plot_class_differences: the result compares no model with the baseline; expected at least "
                        "two models")
    model = next(iter(result.differences)) if model is None else model
    rows = [r for r in result.sorted_differences(model) if not math.isnan(r.difference)]
    check_number(max_labels, "max_labels", integer=True, minimum=0)
    color = color or _colors(result, None)[model]
    labelled = len(rows) <= max_labels
    ax = get_ax(ax, figsize=(7.0, max(3.0, 0.22 * len(rows) + 1.2)) if labelled else (9.0, 3.8))
    diff = np.array([100 * r.difference for r in rows])
    lo = np.array([100 * r.ci_low for r in rows])
    hi = np.array([100 * r.ci_high for r in rows])
    sig = np.array([r.excludes_zero for r in rows], dtype=bool)
    pos = np.arange(len(rows))[::-1] if labelled else np.arange(len(rows))     # largest gain on top / at left
    bar_colors = [color if s else NEUTRAL for s in sig]
    level = _pct(result.ci_level)
    n_sig = int(sig.sum())
    bar = ax.barh if labelled else ax.bar
    bar(pos, diff, color=bar_colors, **({"height": 0.7} if labelled else {"width": 0.85}))
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    if has_ci.any():
        err = np.vstack([diff - lo, hi - diff])[:, has_ci]
        kw = {"xerr": err} if labelled else {"yerr": err}
        xy = (diff[has_ci], pos[has_ci]) if labelled else (pos[has_ci], diff[has_ci])
        ax.errorbar(*xy, **kw, fmt="none", ecolor="black", elinewidth=0.8 if labelled else 0.6,
                    alpha=1.0 if labelled else 0.5, capsize=2 if labelled else 0,
                    label=f"{level} paired bootstrap interval")
    (ax.axvline if labelled else ax.axhline)(0.0, color="black", lw=0.8)
    from matplotlib.patches import Patch

    handles = [Patch(color=color, label=f"interval excludes 0 ({n_sig} of {len(rows)} classes)"),
               Patch(color=NEUTRAL, label="interval includes 0 (or none)")]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], loc="upper left", bbox_to_anchor=(1.02, 1.0))
    value_label = "Accuracy difference (percentage points)"
    if labelled:
        ax.set_yticks(pos, [literal(r.metric) for r in rows])
        ax.set_xlabel(value_label)
        ax.set_ylabel("Class")
        ax.grid(axis="y", visible=False)
    else:
        ax.set_xlabel("Classes, ranked by the difference")
        ax.set_ylabel(value_label)
        ax.set_xlim(-1, len(rows))
    if title:
        ax.set_title(name_title(model, f"per-class accuracy minus {literal(result.baseline)}'s "
                                       f"(N={result.num_samples}, {result.n_boot} paired resamples)"))
    return ax


def difference_figure(result, colors: dict[str, str] | None = None, max_labels: int = MAX_LABELLED_CLASSES):
    """One :func:`plot_class_differences` panel per model compared with the baseline, stacked."""
    result = _check(result, "difference_figure")
    models = list(result.differences)
    if not models:
        raise DataError("difference_figure: the result compares no model with the baseline; expected at least two "
                        "models")
    colors = _colors(result, colors)
    k = sum(1 for r in result.differences[models[0]] if not math.isnan(r.difference))
    height = max(3.0, 0.22 * k + 1.2) if k <= max_labels else 3.8
    fig, axes = subplots(len(models), 1, figsize=(7.0 if k <= max_labels else 9.0, height * len(models)))
    for ax, m in zip(axes[:, 0], models):
        plot_class_differences(result, m, ax=ax, color=colors[m], max_labels=max_labels)
    fig.tight_layout()
    return fig


# --- accuracy per class ------------------------------------------------------------------------------------------
def plot_class_accuracy(result, ax=None, colors: dict[str, str] | None = None, max_bars: int = 30):
    """Per-class accuracy (%) of every model. Up to ``max_bars`` classes: grouped bars with each model's own
    bootstrap interval; beyond: one line per model over the classes ranked by the baseline's accuracy."""
    result = _check(result, "plot_class_accuracy")
    check_number(max_bars, "max_bars", integer=True, minimum=0)
    colors = _colors(result, colors)
    k, models = result.num_classes, result.models
    bars = k <= max_bars
    ax = get_ax(ax, figsize=(max(5.0, 0.25 * k * len(models) + 2.0), 4.0) if bars else (7.0, 4.0))
    if bars:
        width = 0.8 / len(models)
        x = np.arange(k)
        for j, m in enumerate(models):
            acc = 100 * result.accuracy[m]
            ci = 100 * result.accuracy_ci[m]
            ok = np.isfinite(ci).all(axis=1) & np.isfinite(acc)
            err = np.vstack([acc - ci[:, 0], ci[:, 1] - acc])
            err[:, ~ok] = 0.0
            ax.bar(x + (j - (len(models) - 1) / 2) * width, np.nan_to_num(acc), width=width, color=colors[m],
                   yerr=err if result.n_boot else None, error_kw={"elinewidth": 0.7, "capsize": 1.5},
                   label=literal(m))
        long = max((len(c) for c in result.classes), default=0) > 3
        ax.set_xticks(x, [literal(c) for c in result.classes], rotation=45 if long else 0,
                      ha="right" if long else "center")
        ax.set_xlabel("Class")
        ax.grid(axis="x", visible=False)
    else:
        base = result.accuracy[result.baseline]
        order = np.argsort(-np.nan_to_num(base, nan=-1.0), kind="stable")
        for m in models:
            ax.plot(np.arange(k), 100 * result.accuracy[m][order], color=colors[m], lw=1.2, label=literal(m))
        ax.set_xlabel(f"Classes, ranked by {literal(result.baseline)}'s accuracy")
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 105)
    suffix = f", {_pct(result.ci_level)} bootstrap intervals" if bars and result.n_boot else ""
    ax.set_title(f"Per-class accuracy (N={result.num_samples}{suffix})")
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


# --- confidence of the errors --------------------------------------------------------------------------------------
def plot_error_confidence(result, ax=None, colors: dict[str, str] | None = None):
    """Histogram (share of each model's errors per bin, %) of the max softmax of the misclassified samples,
    one step curve per model, its mean (dashed) and bootstrap interval in the legend."""
    result = _check(result, "plot_error_confidence")
    colors = _colors(result, colors)
    ax = get_ax(ax, figsize=(6.5, 4.0))
    level = _pct(result.ci_level)
    for m in result.models:
        e = result.error_confidence[m]
        if not e.num_errors:
            ax.plot([], [], color=colors[m], label=f"{literal(m)} (no errors)")
            continue
        share = 100 * e.hist_counts / e.num_errors
        ci = f" [{e.ci_low:.3f}, {e.ci_high:.3f}]" if math.isfinite(e.ci_low) else ""
        ax.stairs(share, e.hist_edges, color=colors[m], lw=1.8,
                  label=f"{literal(m)}: mean {e.mean:.3f}{ci}, {e.num_errors} errors")
        ax.axvline(e.mean, color=colors[m], ls="--", lw=1.0)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Confidence of the wrong prediction (max softmax)")
    ax.set_ylabel("Share of the model's errors (%)")
    ax.set_title(f"Confidence on misclassified samples (dashed: means; {level} bootstrap intervals)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def save_per_class_figures(result, out: str | os.PathLike, colors: dict[str, str] | None = None) -> list[Path]:
    """Write ``per_class_difference`` (when a model is compared with the baseline), ``per_class_accuracy`` and
    ``error_confidence`` (PNG + PDF) under ``out``; a failure leaves none of this call's files, and a difference
    figure of an earlier run is removed when this result has none."""
    result = _check(result, "save_per_class_figures")
    out = Path(out)
    colors = _colors(result, colors)
    written: list[Path] = []
    with output_set() as outputs:
        stem = out / _FIGURE_STEMS[0]
        if result.differences:
            written += save_figure(difference_figure(result, colors=colors), stem)
        else:
            outputs.discard(stem.with_suffix(".png"), stem.with_suffix(".pdf"))
        written += save_figure(plot_class_accuracy(result, colors=colors).figure, out / _FIGURE_STEMS[1])
        written += save_figure(plot_error_confidence(result, colors=colors).figure, out / _FIGURE_STEMS[2])
    return written


__all__ = ["plot_class_differences", "difference_figure", "plot_class_accuracy", "plot_error_confidence",
           "save_per_class_figures", "MAX_LABELLED_CLASSES"]

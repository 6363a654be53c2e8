"""Training-dynamics figures: one panel per quantity against the epoch, a line per run; forgetting counts.

Input: a :class:`repanalysis.analyze.dynamics.DynamicsResult`. :func:`plot_dynamics_metric` draws one quantity on
an Axes, :func:`dynamics_figure` composes the panels (the runs named in one legend, a caption saying how the
calibration states and forgetting events are measured), :func:`plot_forgetting_counts` draws the per-sample
forgetting-count distribution and :func:`save_dynamics_figures` writes both figures as PNG + PDF.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from repanalysis.analyze.dynamics import METRICS, DynamicsResult
from repanalysis.errors import DataError
from repanalysis.outputs import output_set
from repanalysis.plot.style import (ANNOTATION_FONTSIZE, check_result, get_ax, literal, model_colors, save_figure,
                                    subplots)

# metric -> (panel title, y-axis label with its unit, display scale)
PANELS = {
    "accuracy": ("Accuracy", "accuracy (%)", 100),
    "nll": ("NLL", "NLL (nats)", 1),
    "ece": ("ECE", "ECE (%)", 100),
    "oece": ("O-ECE (over-confidence)", "O-ECE (%)", 100),
    "uece": ("U-ECE (under-confidence)", "U-ECE (%)", 100),
    "near_zero_fraction": ("Near-zero logits", r"logits with $|z_k| < t$ (%)", 100),
    "logit_gap": ("Logit gap (FedLaS Eq. 5)", r"mean $z_{\max} - z_k$ (logit units)", 1),
    "feature_l1_norm": ("Feature L1 norm", r"mean $\|h\|_1$ (feature units)", 1),
    "d_within": ("Within-class distance", r"$d_{within}$ (cosine distance)", 1),
    "d_total": ("Total distance", r"$d_{total}$ (cosine distance)", 1),
    "r2": (r"Class separation $R^2$", r"$R^2 = 1 - d_{within} / d_{total}$", 1),
    "over_confident": ("Over-confident samples", "samples in over-confident bins (%)", 100),
    "under_confident": ("Under-confident samples", "samples in under-confident bins (%)", 100),
    "state_flip_rate": ("Calibration-state flips", "samples changing state (%)", 100),
    "prediction_flip_rate": ("Prediction flips", "samples changing prediction (%)", 100),
    "forgetting_events": ("Forgetting events", "samples forgotten (count)", 1),
    "learning_events": ("Learning events", "samples learned (count)", 1),
}
# the default panels of dynamics_figure (under_confident = 100% - over_confident, d_total and learning events are
# in the JSON and the frame)
DEFAULT_PANELS = ("accuracy", "nll", "ece", "oece", "uece", "near_zero_fraction", "logit_gap", "feature_l1_norm",
                  "d_within", "r2", "over_confident", "state_flip_rate", "prediction_flip_rate", "forgetting_events")
CAPTION = ("Each checkpoint of a run is one point. Calibration state: a sample is over-confident when its "
           "equal-width confidence bin ({n_bins} bins) has mean confidence above its accuracy, else under-confident; "
           "measured from the model's outputs, not from a gating network as in FedLaS Fig. 3. A state or prediction "
           "flip, and a forgetting event (Toneva et al. 2019: correct at the previous checkpoint, wrong at this "
           "one), compare consecutive checkpoints. $d_{{within}}$ and $R^2$ on the {geometry} data.")


def _check_metric(metric: str) -> None:
    if metric not in PANELS:
        raise DataError(f"unknown dynamics metric {metric!r}; expected one of {', '.join(METRICS)}")


def plot_dynamics_metric(result, metric: str, ax=None, colors: dict[str, str] | None = None, title: bool = True):
    """One quantity against the epoch, a line (with a marker per checkpoint) per run; returns the Axes.

    result: a DynamicsResult; metric: a name of METRICS (shown in its unit: % for fractions). NaN values (a
    transition at the first checkpoint, a feature metric without features) are left out of the line."""
    check_result(result, DynamicsResult, "plot_dynamics_metric")
    _check_metric(metric)
    ax = get_ax(ax)
    colors = model_colors(result.names, colors)
    label, ylabel, scale = PANELS[metric]
    for run in result.runs:
        y = run.metric(metric) * scale
        ok = np.isfinite(y)
        ax.plot(run.epochs[ok], y[ok], marker="o", ms=3, lw=1.6, color=colors[run.name], label=literal(run.name))
    values = np.concatenate([r.metric(metric) for r in result.runs]) * scale
    values = values[np.isfinite(values)]
    if values.size and values.min() == values.max() == 0:    # all zero (no over-confident sample): 0 at the bottom
        ax.set_ylim(0, 1 if scale == 1 else 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax.set_title(label)
    return ax


def _has_values(result, metric: str) -> bool:
    return any(np.isfinite(r.metric(metric)).any() for r in result.runs)


def dynamics_figure(result, metrics: Sequence[str] | None = None, max_cols: int = 4,
                    colors: dict[str, str] | None = None):
    """The panels of ``metrics`` (default DEFAULT_PANELS, less those with no value in any run) in rows of at most
    ``max_cols``, one legend naming the runs, a caption below; returns the Figure."""
    check_result(result, DynamicsResult, "dynamics_figure")
    metrics = list(DEFAULT_PANELS if metrics is None else metrics)
    for m in metrics:
        _check_metric(m)
    shown = [m for m in metrics if _has_values(result, m)]
    if not shown:
        raise DataError("dynamics_figure: none of the metrics has a value in any run; expected at least one")
    colors = model_colors(result.names, colors)
    ncols = min(len(shown) + 1, max_cols)             # + 1: a cell for the legend when the grid has one free
    nrows = -(-len(shown) // ncols)                   # no free cell left: the legend goes above the panels
    fig, axes = subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows + 0.8), sharex=True, layout="constrained")
    flat = axes.ravel()
    for ax, metric in zip(flat, shown):
        plot_dynamics_metric(result, metric, ax=ax, colors=colors)
    for ax in flat[:len(shown)]:
        ax.tick_params(labelbottom=True)
    handles, labels = flat[0].get_legend_handles_labels()
    free = flat[len(shown):]
    for ax in free:
        ax.set_visible(False)
    if len(free):
        free[0].set_visible(True)
        free[0].axis("off")
        free[0].legend(handles, labels, title="run", loc="center")
    else:
        fig.legend(handles, labels, title="run", loc="outside upper center", ncols=min(len(labels), 6))
    split = {r.split for r in result.runs}
    where = f" ({split.pop()} split)" if len(split) == 1 and None not in split else ""
    fig.suptitle(f"Training dynamics{where}: {', '.join(literal(n) for n in result.names)}")
    geometry = {r.separation_data for r in result.runs}
    caption = CAPTION.format(n_bins=result.n_bins, geometry=" / ".join(sorted(geometry)))
    fig.text(0.5, 0, "\n".join(textwrap.wrap(caption, 40 * ncols)), ha="center", va="top", fontsize=ANNOTATION_FONTSIZE)
    return fig


def plot_forgetting_counts(result, ax=None, colors: dict[str, str] | None = None):
    """Per run, how many samples were forgotten 0, 1, 2, ... times over the run (grouped bars), the never-learned
    samples (correct at no checkpoint) in a group of their own on the left; returns the Axes."""
    check_result(result, DynamicsResult, "plot_forgetting_counts")
    ax = get_ax(ax, figsize=(6.0, 3.8))
    colors = model_colors(result.names, colors)
    dists = [r.forgetting_distribution() for r in result.runs]
    top = max(max(d["counts"]) for d in dists)
    groups = ["never\nlearned", *[str(k) for k in range(top + 1)]]
    width = 0.8 / len(result.runs)
    x = np.arange(len(groups))
    for i, (run, d) in enumerate(zip(result.runs, dists)):
        values = [d["never_learned"], *[d["counts"].get(k, 0) for k in range(top + 1)]]
        ax.bar(x - 0.4 + width * (i + 0.5), values, width, color=colors[run.name], label=literal(run.name))
    ax.set_xticks(x, groups)
    ax.set_xlabel("forgetting events per sample over the run")
    ax.set_ylabel("samples (count)")
    ax.axvline(0.5, color="black", lw=0.8, ls=":")
    ax.set_title(f"Forgetting events per sample (Toneva et al. 2019), N = {result.runs[0].num_samples}")
    ax.legend(title="run")
    return ax


def save_dynamics_figures(out_dir: str | os.PathLike, result, colors: dict[str, str] | None = None) -> list[Path]:
    """Write ``dynamics`` (the panels) and ``forgetting`` (the per-sample counts) as PNG + PDF; returns the paths.
    A failure leaves none of this call's files."""
    check_result(result, DynamicsResult, "save_dynamics_figures")
    out = Path(out_dir)
    colors = model_colors(result.names, colors)
    written: list[Path] = []
    with output_set():
        written += save_figure(dynamics_figure(result, colors=colors), out / "dynamics")
        written += save_figure(plot_forgetting_counts(result, colors=colors).figure, out / "forgetting")
    return written

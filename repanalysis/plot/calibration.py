"""Calibration and confidence figures: reliability diagrams, confidence histograms, NCI scatter, ROC curves.

Each ``plot_*`` function draws one Result on ``ax`` (a new styled Axes when None) and returns the Axes; the
``*_figure`` functions compose them (one panel per model, shared axes) and :func:`save_calibration_figures`
writes them as PNG + PDF. Inputs are :class:`repanalysis.analyze.calibration.CalibrationResult`,
:class:`repanalysis.analyze.confidence.MisclassificationResult` and :class:`~.confidence.OODResult`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from repanalysis.errors import DataError
from repanalysis.plot.style import NEUTRAL, get_ax, model_colors, save_figure, subplots

OVER_COLOR = "#D55E00"    # vermillion, hatched "//": confidence above accuracy
UNDER_COLOR = "#7F7F7F"   # grey, hatched "\\": accuracy above confidence (never a model colour)
TS_SUFFIX = " +TS"
SCORE_LABELS = {"max_softmax": "max softmax", "max_logit": "max logit", "energy": "energy (logsumexp z)",
                "feature_l1": "feature L1 norm"}
SCORE_STYLES = {"max_softmax": "-", "max_logit": "--", "energy": "-.", "feature_l1": ":"}


def _as_list(results) -> list:
    return list(results) if isinstance(results, (list, tuple)) else [results]


def _colors(results) -> dict[str, str]:
    """Model colours keyed by result name; a temperature-scaled "<name> +TS" keeps its model's colour."""
    base = {r.name: r.name.removesuffix(TS_SUFFIX) for r in results}
    palette = model_colors(list(base.values()))
    return {name: palette[b] for name, b in base.items()}


# --- reliability diagram ------------------------------------------------------------------------------
def plot_reliability(result, ax=None, count_ax=None, color: str | None = None, adaptive: bool = False,
                     title: bool = True):
    """Per-bin accuracy bars against the diagonal; the gap to the bin's mean confidence shaded (over- and
    under-confidence in two hatched colours); ECE in the legend. ``count_ax`` gets the samples per bin."""
    ax = get_ax(ax)
    color = color or _colors([result])[result.name]
    bins = result.adaptive_bins if adaptive else result.bins
    lo, hi = bins.edges[:-1], bins.edges[1:]
    width, left = hi - lo, lo
    filled = bins.counts > 0
    acc, conf = bins.accuracy, bins.confidence
    ax.bar(left[filled], acc[filled], width=width[filled], align="edge", color=color, edgecolor="black",
           linewidth=0.6, label="accuracy")
    over = filled & (conf > acc)
    under = filled & (conf < acc)
    ax.bar(left[over], (conf - acc)[over], bottom=acc[over], width=width[over], align="edge",
           color=OVER_COLOR, alpha=0.45, hatch="//", edgecolor=OVER_COLOR, linewidth=0.6)
    ax.bar(left[under], (acc - conf)[under], bottom=conf[under], width=width[under], align="edge",
           color=UNDER_COLOR, alpha=0.35, hatch="\\\\", edgecolor="black", linewidth=0.6)
    ax.plot([0, 1], [0, 1], ls="--", color="black", lw=1)
    which = "AECE" if adaptive else "ECE"
    value = result.aece if adaptive else result.ece
    handles = [Patch(facecolor=color, edgecolor="black", label=f"{result.name}: accuracy ({which} "
                     f"{100 * value:.2f}%)"),
               Patch(facecolor=OVER_COLOR, alpha=0.45, hatch="//", edgecolor=OVER_COLOR,
                     label=f"over-confident gap (O-ECE {100 * result.oece:.2f}%)"),
               Patch(facecolor=UNDER_COLOR, alpha=0.35, hatch="\\\\", edgecolor="black",
                     label=f"under-confident gap (U-ECE {100 * result.uece:.2f}%)")]
    if adaptive:   # O-/U-ECE are defined on the equal-width bins: name the gaps without numbers
        handles[1].set_label("over-confident gap")
        handles[2].set_label("under-confident gap")
    ax.plot([], [], ls="--", color="black", label="perfect calibration")
    # bars can fill any corner (under-confident models reach above the diagonal): a white box keeps it legible
    ax.legend(handles=handles + [ax.lines[-1]], loc="best", fontsize=8, frameon=True, framealpha=0.9,
              facecolor="white", edgecolor="0.8")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy in bin (fraction)")
    if title:
        kind = "adaptive bins" if adaptive else f"{result.n_bins} equal-width bins"
        ax.set_title(f"{result.name} ({kind}, N={result.num_samples})")
    if count_ax is not None:
        count_ax.bar(left, bins.counts, width=width, align="edge", color=color, edgecolor="black", linewidth=0.6)
        if adaptive:       # equal-mass bins: counts are (nearly) equal, a linear axis from 0 shows that
            count_ax.set_ylim(0, 1.15 * max(int(bins.counts.max()), 1))
            count_ax.set_ylabel("Samples per bin")
        else:
            count_ax.set_yscale("log")
            count_ax.set_ylabel("Samples per bin (log)")
        count_ax.set_xlabel("Confidence (max softmax)")
        count_ax.set_xlim(0, 1)
    else:
        ax.set_xlabel("Confidence (max softmax)")
    return ax


def reliability_figure(results, adaptive: bool = False, max_cols: int = 3):
    """One panel per model (rows of at most ``max_cols``): reliability diagram on top of its bin counts; all
    diagrams share their axes, all count panels theirs."""
    results = _as_list(results)
    colors = _colors(results)
    n = len(results)
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig, axes = subplots(2 * nrows, ncols, figsize=(4.4 * ncols, 5.4 * nrows), sharex=True,
                         gridspec_kw={"height_ratios": [3, 1] * nrows})
    top, bottom = axes[0::2].ravel(), axes[1::2].ravel()
    for ax in top[1:]:
        ax.sharey(top[0])
    for ax in bottom[1:]:
        ax.sharey(bottom[0])
    for j, r in enumerate(results):
        plot_reliability(r, ax=top[j], count_ax=bottom[j], color=colors[r.name], adaptive=adaptive)
        if j % ncols:
            top[j].set_ylabel("")
            bottom[j].set_ylabel("")
    for j in range(n, nrows * ncols):
        top[j].set_visible(False)
        bottom[j].set_visible(False)
    fig.tight_layout()
    return fig


# --- confidence histograms -------------------------------------------------------------------------------
def plot_confidence_histograms(results, ax=None, bins: int = 30):
    """Step histograms (density) of the per-sample max softmax of each model, mean confidence and accuracy
    marked in the legend."""
    results = _as_list(results)
    ax = get_ax(ax)
    colors = _colors(results)
    edges = np.linspace(0, 1, bins + 1)
    for r in results:
        ax.hist(r.confidence, bins=edges, density=True, histtype="step", lw=1.8, color=colors[r.name],
                ls="--" if r.name.endswith(TS_SUFFIX) else "-",
                label=f"{r.name} (mean conf {100 * r.mean_confidence:.1f}%, acc {100 * r.accuracy:.1f}%)")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Confidence (max softmax)")
    ax.set_ylabel("Density (log scale)")
    ax.set_title("Confidence distribution")
    ax.legend(loc="best", fontsize=8)
    return ax


# --- NCI scatter -----------------------------------------------------------------------------------------
def plot_nci_scatter(result, ax=None, max_points: int = 20_000, seed: int = 0, title: bool = True):
    """FedLaS-style scatter: standardised L1 feature norm (x) against max softmax (y), coloured by correctness.

    Plots at most ``max_points`` samples (a seeded random subset, wrong predictions drawn on top)."""
    ax = get_ax(ax)
    if result.nci is None:
        raise DataError(f"{result.name}: the result has no NCI; pass features to misclassification_scores")
    idx = np.arange(result.nci.size)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    x, y, ok = result.nci[idx], result.scores["max_softmax"][idx], result.correct[idx]
    small = idx.size > 3000
    ax.scatter(x[ok], y[ok], s=4 if small else 10, alpha=0.4, color="#009E73", rasterized=small,
               label=f"correct ({ok.sum()})")
    ax.scatter(x[~ok], y[~ok], s=6 if small else 14, alpha=0.7, color=OVER_COLOR, marker="x", rasterized=small,
               label=f"wrong ({(~ok).sum()})")
    auc = result.auroc.get("feature_l1", float("nan"))
    ax.set_xlabel("Standardised feature L1 norm (NCI, std units)")
    ax.set_ylabel("Max softmax probability")
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(f"{result.name}: AUROC(norm) {auc:.3f}, AUROC(softmax) "
                     f"{result.auroc['max_softmax']:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def nci_figure(results):
    """One NCI scatter panel per model, shared axes."""
    results = [r for r in _as_list(results) if r.nci is not None]
    fig, axes = subplots(1, max(len(results), 1), figsize=(4.4 * max(len(results), 1), 4.0), sharex=True,
                         sharey=True)
    for j, r in enumerate(results):
        plot_nci_scatter(r, ax=axes[0, j])
        if j:
            axes[0, j].set_ylabel("")
    fig.tight_layout()
    return fig


# --- ROC curves -------------------------------------------------------------------------------------------
def plot_roc(result, ax=None, color: str | None = None, title: bool = True):
    """ROC curves (in-distribution positive) of each score of one model; AUROC and FPR@95%TPR in the legend."""
    ax = get_ax(ax)
    color = color or model_colors([result.name])[result.name]
    for key, (fpr, tpr) in result.roc.items():
        ax.plot(fpr, tpr, ls=SCORE_STYLES.get(key, "-"), color=color, lw=1.6,
                label=f"{SCORE_LABELS.get(key, key)}: AUROC {result.auroc[key]:.3f}, "
                      f"FPR95 {result.fpr_at_95_tpr[key]:.3f}")
    ax.plot([0, 1], [0, 1], color=NEUTRAL, lw=0.8, ls=(0, (1, 2)), label="chance")
    ax.axhline(0.95, color=NEUTRAL, lw=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate (OOD accepted, fraction)")
    ax.set_ylabel("True positive rate (in-distribution kept)")
    if title:
        ax.set_title(f"{result.name}: in ({result.num_in}) vs OOD ({result.num_ood})")
    ax.legend(loc="best", fontsize=7)
    return ax


def roc_figure(results):
    """One ROC panel per model, shared axes, the model's colour, one line style per score."""
    results = _as_list(results)
    colors = model_colors([r.name for r in results])
    fig, axes = subplots(1, len(results), figsize=(4.6 * len(results), 4.3), sharex=True, sharey=True)
    for j, r in enumerate(results):
        plot_roc(r, ax=axes[0, j], color=colors[r.name])
        if j:
            axes[0, j].set_ylabel("")
    fig.tight_layout()
    return fig


def save_calibration_figures(out_dir: str | os.PathLike, calibration=None, misclassification=None,
                             ood=None) -> list[Path]:
    """Write ``reliability``, ``reliability_adaptive``, ``confidence_hist``, ``nci_scatter``, ``ood_roc``
    (PNG + PDF) for whichever result lists are given; returns the written paths."""
    out = Path(out_dir)
    written: list[Path] = []
    if calibration:
        written += save_figure(reliability_figure(calibration), out / "reliability")
        written += save_figure(reliability_figure(calibration, adaptive=True), out / "reliability_adaptive")
        ax = plot_confidence_histograms(calibration)
        written += save_figure(ax.figure, out / "confidence_hist")
    if misclassification and any(r.nci is not None for r in _as_list(misclassification)):
        written += save_figure(nci_figure(misclassification), out / "nci_scatter")
    if ood:
        written += save_figure(roc_figure(ood), out / "ood_roc")
    return written

"""Calibration and confidence figures: reliability diagrams, confidence histograms, NCI scatter, ROC curves.

Each ``plot_*`` function draws one Result on ``ax`` (a new styled Axes when None) and returns the Axes; the
``*_figure`` functions compose them (one panel per model, shared axes) and :func:`save_calibration_figures`
writes them as PNG + PDF. Inputs are :class:`repanalysis.analyze.calibration.CalibrationResult`,
:class:`repanalysis.analyze.confidence.MisclassificationResult` and :class:`~.confidence.OODResult`.
``colors``: a model-name -> colour map made once for the run (:func:`~repanalysis.plot.style.model_colors`),
so that a model keeps its colour in every figure, whichever subset of models a figure shows.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch

from repanalysis.arrays import check_number
from repanalysis.analyze.calibration import CalibrationResult
from repanalysis.analyze.confidence import MisclassificationResult, OODResult
from repanalysis.errors import DataError
from repanalysis.outputs import output_set
from repanalysis.plot.style import (NEUTRAL, TITLE_CHARS, check_ax, check_result, check_results, get_ax,
                                    literal, model_colors, name_title, save_figure, subplots, wrap_name)

OVER_COLOR = "#D55E00"    # vermillion (not a model colour), hatched "//": confidence above accuracy
CORRECT_COLOR = NEUTRAL   # NCI scatter: right predictions grey dots, wrong ones vermillion crosses
WRONG_COLOR = OVER_COLOR
TS_SUFFIX = " +TS"
SCORE_LABELS = {"max_softmax": "max softmax", "max_logit": "max logit", "energy": "energy (logsumexp z)",
                "feature_l1": "feature L1 norm", "mahalanobis": "Mahalanobis",
                "relative_mahalanobis": "relative Mahalanobis", "knn": "KNN (k-th neighbour)", "vim": "ViM",
                "react_energy": "ReAct energy"}
SCORE_STYLES = {"max_softmax": "-", "max_logit": "--", "energy": "-.", "feature_l1": ":",
                "mahalanobis": (0, (5, 1, 1, 1, 1, 1)), "relative_mahalanobis": (0, (8, 2)),
                "knn": (0, (1, 1)), "vim": (0, (3, 1, 1, 1)), "react_energy": (0, (6, 2, 2, 2))}


# gap patches, the same in the diagram and in its legend. Over-confidence (above the accuracy bar): white with
# vermillion hatching, so that it reads as no bar and never as an orange model's bar. Under-confidence (the top
# of the accuracy bar, from confidence up to accuracy): "\\" hatching drawn over the model's colour, so that the
# coloured bar still reaches the accuracy it is labelled with; black on light colours, white on dark ones.
OVER_STYLE = {"facecolor": "white", "hatch": "//", "edgecolor": OVER_COLOR, "linewidth": 0.8}


def _under_style(color) -> dict:
    """The under-confident gap over a bar of ``color``: hatching in black or white, whichever stands out."""
    r, g, b = to_rgb(color)
    dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.4            # luminance of the (sRGB) colour
    return {"facecolor": "none", "hatch": "\\\\", "edgecolor": "white" if dark else "black", "linewidth": 0}


def _colors(results, colors: dict[str, str] | None = None) -> dict[str, str]:
    """Model colours keyed by result name; a temperature-scaled "<name> +TS" keeps its model's colour."""
    base = {r.name: r.name.removesuffix(TS_SUFFIX) for r in results}
    palette = model_colors(list(base.values()), colors)
    return {name: palette[b] for name, b in base.items()}


def _height_pt(artist) -> float:
    """Height of a drawn artist (a legend) in points."""
    return artist.get_window_extent().height * 72 / artist.get_figure(root=True).dpi


# --- reliability diagram ------------------------------------------------------------------------------
def plot_reliability(result, ax=None, count_ax=None, color: str | None = None, adaptive: bool = False,
                     title: bool = True, bands: bool = False):
    """Per-bin accuracy bars against the diagonal; the gap to the bin's mean confidence hatched (over-confidence
    above the bar, white with vermillion hatching; under-confidence on the bar's top, hatching over its
    colour); ECE in the legend, above the axes (never on the bars). ``count_ax`` gets the samples per bin.

    ``adaptive``: the equal-mass bins, which crowd against confidence 1 for a confident model, are laid out
    side by side on the samples ranked by confidence (each bin as wide as its share of the samples), each
    bin's mean confidence drawn as a black line over its bar (on the diagonal's stead); ``count_ax`` then shows
    the confidence range [lo, hi] that each bin covers.

    ``bands``: each equal-width bin's accuracy with its bootstrap percentile band as a black whisker (the
    result's ``bin_band``, from ``calibration_report(n_boot > 0)``; DataError without one).
    """
    check_result(result, CalibrationResult, "plot_reliability")
    check_ax(count_ax, "count_ax")
    ax = get_ax(ax)
    color = color or _colors([result])[result.name]
    bins = result.adaptive_bins if adaptive else result.bins
    lo, hi = bins.edges[:-1], bins.edges[1:]
    if adaptive:     # x: share of the samples, ranked by confidence; the samples in no bin come first
        share = bins.counts / max(bins.num_samples, 1)
        right = 1.0 - np.cumsum(share[::-1])[::-1] + share
        width, left = share, right - share
    else:
        width, left = hi - lo, lo
    filled = bins.counts > 0
    acc, conf = bins.accuracy, bins.confidence
    ax.bar(left[filled], acc[filled], width=width[filled], align="edge", color=color, edgecolor="black",
           linewidth=0.6, label="accuracy")
    band_handle = None
    if bands and not adaptive:
        if result.bin_band is None:
            raise DataError(f"{result.name}: no bootstrap band per bin (calibrated with n_boot = 0); expected a "
                            "result of calibration_report(..., n_boot > 0) for bands=True")
        low, high = result.bin_band
        show = filled & np.isfinite(low) & np.isfinite(high)
        mid = (left + width / 2)[show]
        band_handle = ax.errorbar(mid, acc[show], yerr=[np.maximum(acc - low, 0)[show],
                                                        np.maximum(high - acc, 0)[show]],
                    fmt="none", ecolor="black", elinewidth=0.9, capsize=2.5,
                    label=f"{100 * result.ci_level:g}% bootstrap band ({result.n_boot} resamples)")
    over = filled & (conf > acc)
    under = filled & (conf < acc)
    ax.bar(left[over], (conf - acc)[over], bottom=acc[over], width=width[over], align="edge", **OVER_STYLE)
    ax.bar(left[under], (acc - conf)[under], bottom=conf[under], width=width[under], align="edge",
           **_under_style(color))
    if adaptive:
        ax.hlines(conf[filled], left[filled], (left + width)[filled], colors="black", linewidth=1.6, zorder=3)
        ax.plot([], [], color="black", linewidth=1.6, label="mean confidence in bin")
    else:
        ax.plot([0, 1], [0, 1], ls="--", color="black", lw=1, zorder=3)   # visible over the gaps
        ax.plot([], [], ls="--", color="black", label="perfect calibration")
    which = "AECE" if adaptive else "ECE"
    value = result.aece if adaptive else result.ece
    handles = [Patch(facecolor=color, edgecolor="black", label=name_title(result.name, f"accuracy ({which} "
                     f"{100 * value:.2f}%)")),
               Patch(**OVER_STYLE, label=f"over-confident gap (O-ECE {100 * result.oece:.2f}%)"),
               Patch(**{**_under_style(color), "facecolor": color},
                     label=f"under-confident gap (U-ECE {100 * result.uece:.2f}%)")]
    if adaptive:   # O-/U-ECE are defined on the equal-width bins: name the gaps without numbers
        handles[1].set_label("over-confident gap")
        handles[2].set_label("under-confident gap")
    # bars can fill any corner: the legend sits above the axes, between the plot and its title
    diagonal = [line for line in ax.lines if line.get_label() in ("perfect calibration", "mean confidence in bin")]
    legend = ax.legend(handles=handles + diagonal[-1:] + ([band_handle] if band_handle is not None else []),
                       loc="lower left", bbox_to_anchor=(0, 1.02), borderaxespad=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy in bin (fraction)")
    if title:
        kind = "adaptive bins" if adaptive else f"{result.n_bins} equal-width bins"
        name = str(result.name)
        title = (f"{literal(name)} ({kind}, N={result.num_samples})" if len(name) <= TITLE_CHARS else
                 f"{literal(wrap_name(name, TITLE_CHARS))}\n({kind}, N={result.num_samples})")
        ax.set_title(title, pad=_height_pt(legend) + 8)
    xlabel = "Share of samples, ranked by confidence" if adaptive else "Confidence (max softmax)"
    if count_ax is not None:
        if adaptive:       # where each equal-mass bin lies in confidence
            count_ax.bar(left[filled], (hi - lo)[filled], bottom=lo[filled], width=width[filled], align="edge",
                         color=color, edgecolor="black", linewidth=0.6)
            count_ax.set_ylim(_range_floor([bins]), 1.0)
            count_ax.set_ylabel("Confidence range\nof bin")
        else:
            count_ax.bar(left, bins.counts, width=width, align="edge", color=color, edgecolor="black",
                         linewidth=0.6)
            count_ax.set_yscale("log")
            count_ax.set_ylabel("Samples per bin (log)")
        count_ax.set_xlabel(xlabel)
        count_ax.set_xlim(0, 1)
    else:
        ax.set_xlabel(xlabel)
    return ax


def _range_floor(all_bins) -> float:
    """Lower limit of the confidence-range axis: a little below the lowest non-empty bin of any of ``all_bins``."""
    lows = [float(b.edges[:-1][b.counts > 0].min()) for b in all_bins if b.counts.any()]
    return max(0.0, min(lows) - 0.05) if lows else 0.0


def reliability_figure(results, adaptive: bool = False, max_cols: int = 3, colors: dict[str, str] | None = None,
                       bands: bool = False):
    """Reliability diagrams, each on top of its bin counts; all diagrams share their axes, all count panels
    theirs. With temperature-scaled results ("<name> +TS") a grid of models (columns) x (before, after TS)
    (rows), each +TS panel under its model's; otherwise one panel per model in rows of at most ``max_cols``."""
    results = check_results(results, CalibrationResult, "reliability_figure")
    check_number(max_cols, "max_cols", integer=True, minimum=1)
    colors = _colors(results, colors)
    bases = list(dict.fromkeys(r.name.removesuffix(TS_SUFFIX) for r in results))
    if any(r.name.endswith(TS_SUFFIX) for r in results):
        ncols, nrows = len(bases), 2
        cells = [(int(r.name.endswith(TS_SUFFIX)), bases.index(r.name.removesuffix(TS_SUFFIX))) for r in results]
    else:
        ncols = min(len(results), max_cols)
        nrows = -(-len(results) // ncols)
        cells = [divmod(j, ncols) for j in range(len(results))]
    fig, axes = subplots(2 * nrows, ncols, figsize=(4.4 * ncols, 6.2 * nrows), sharex=True,
                         gridspec_kw={"height_ratios": [3, 1] * nrows}, layout="constrained")
    top, bottom = axes[0::2], axes[1::2]
    for ax in top.ravel()[1:]:
        ax.sharey(top[0, 0])
    for ax in bottom.ravel()[1:]:
        ax.sharey(bottom[0, 0])
    for r, (i, j) in zip(results, cells):
        plot_reliability(r, ax=top[i, j], count_ax=bottom[i, j], color=colors[r.name], adaptive=adaptive,
                         bands=bands)
        bottom[i, j].tick_params(labelbottom=True)   # every count panel shows the confidence axis it labels
        if any(c == i and k < j for c, k in cells):  # y labels on the first panel of a row only
            top[i, j].set_ylabel("")
            bottom[i, j].set_ylabel("")
    if adaptive:     # the shared confidence-range axis reaches down to the lowest bin of any model
        bottom[0, 0].set_ylim(_range_floor([r.adaptive_bins for r in results]), 1.0)
    for i in range(nrows):
        for j in range(ncols):
            if (i, j) not in cells:
                top[i, j].set_visible(False)
                bottom[i, j].set_visible(False)
    return fig


# --- confidence histograms -------------------------------------------------------------------------------
def plot_confidence_histograms(results, ax=None, bins: int = 30, colors: dict[str, str] | None = None):
    """Step histograms (density) of the per-sample max softmax of each model, mean confidence and accuracy
    marked in the legend (beside the axes)."""
    results = check_results(results, CalibrationResult, "plot_confidence_histograms")
    check_number(bins, "bins", integer=True, minimum=1)
    ax = get_ax(ax)
    colors = _colors(results, colors)
    edges = np.linspace(0, 1, bins + 1)
    for r in results:
        ax.hist(r.confidence, bins=edges, density=True, histtype="step", lw=1.8, color=colors[r.name],
                ls="--" if r.name.endswith(TS_SUFFIX) else "-",
                label=f"{literal(r.name)} (mean conf {100 * r.mean_confidence:.1f}%, acc {100 * r.accuracy:.1f}%)")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Confidence (max softmax)")
    ax.set_ylabel("Density (log scale)")
    sizes = ", ".join(str(n) for n in dict.fromkeys(r.num_samples for r in results))
    ax.set_title(f"Confidence distribution (N = {sizes} evaluation samples)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


# --- NCI scatter -----------------------------------------------------------------------------------------
def plot_nci_scatter(result, ax=None, max_points: int = 20_000, seed: int = 0, title: bool = True):
    """FedLaS-style scatter: standardised L1 feature norm (x) against max softmax (y), correct predictions grey
    dots, wrong ones vermillion crosses (neither a model colour); the legend under the axes.

    Plots at most ``max_points`` samples (a seeded random subset, wrong predictions drawn on top)."""
    check_result(result, MisclassificationResult, "plot_nci_scatter")
    if result.nci is None:
        raise DataError(f"{result.name}: the result has no NCI; pass features to misclassification_scores")
    ax = get_ax(ax)
    idx = np.arange(result.nci.size)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    x, y, ok = result.nci[idx], result.scores["max_softmax"][idx], result.correct[idx]
    small = idx.size > 3000
    ax.scatter(x[ok], y[ok], s=4 if small else 10, alpha=0.4, color=CORRECT_COLOR, marker="o", linewidths=0,
               rasterized=small, label=f"correct ({ok.sum()})")
    ax.scatter(x[~ok], y[~ok], s=8 if small else 18, alpha=0.9, color=WRONG_COLOR, marker="x", rasterized=small,
               label=f"wrong ({(~ok).sum()})")
    auc = result.auroc.get("feature_l1", float("nan"))
    ax.set_xlabel("Standardised feature L1 norm (NCI, std units)")
    ax.set_ylabel("Max softmax probability")
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(name_title(result.name, f"AUROC(norm) {auc:.3f}, AUROC(softmax) "
                                            f"{result.auroc['max_softmax']:.3f}"))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, markerscale=1.5)
    return ax


def nci_figure(results):
    """One NCI scatter panel per model, shared axes."""
    results = [r for r in check_results(results, MisclassificationResult, "nci_figure") if r.nci is not None]
    if not results:
        raise DataError("nci_figure: no result has NCI; pass features to misclassification_scores")
    fig, axes = subplots(1, max(len(results), 1), figsize=(4.4 * max(len(results), 1), 4.4), sharex=True,
                         sharey=True, layout="constrained")
    for j, r in enumerate(results):
        plot_nci_scatter(r, ax=axes[0, j])
        if j:
            axes[0, j].set_ylabel("")
    n = ", ".join(str(v) for v in dict.fromkeys(r.correct.size for r in results))
    fig.suptitle(f"Feature-norm confidence (NCI) vs max softmax per sample, correct vs wrong predictions "
                 f"(N = {n})")
    return fig


# --- ROC curves -------------------------------------------------------------------------------------------
def plot_roc(result, ax=None, color: str | None = None, title: bool = True):
    """OOD-detection ROC curves (in-distribution positive) of each score of one model; AUROC and FPR@95%TPR
    in the legend, under the axes."""
    check_result(result, OODResult, "plot_roc")
    ax = get_ax(ax)
    color = color or model_colors([result.name])[result.name]
    for key, (fpr, tpr) in result.roc.items():
        ax.plot(fpr, tpr, ls=SCORE_STYLES.get(key, "-"), color=color, lw=1.6,
                label=f"{SCORE_LABELS.get(key, key)}: AUROC {result.auroc[key]:.3f}, "
                      f"FPR95 {result.fpr_at_95_tpr[key]:.3f}")
    ax.plot([0, 1], [0, 1], color=NEUTRAL, lw=0.8, ls=(0, (1, 2)), label="chance")
    ax.axhline(0.95, color=NEUTRAL, lw=0.8, label="TPR = 0.95 (where FPR95 is read)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate (fraction)")
    ax.set_ylabel("True positive rate (fraction)")
    if title:
        ax.set_title(f"{literal(result.name)}: OOD detection ROC\nin-distribution (n={result.num_in}, positive) vs "
                     f"OOD set (n={result.num_ood})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13))
    return ax


def roc_figure(results, colors: dict[str, str] | None = None):
    """One ROC panel per model, shared axes, the model's colour, one line style per score."""
    results = check_results(results, OODResult, "roc_figure")
    colors = model_colors([r.name for r in results], colors)
    fig, axes = subplots(1, len(results), figsize=(4.6 * len(results), 5.6), sharex=True, sharey=True,
                         layout="constrained")
    for j, r in enumerate(results):
        plot_roc(r, ax=axes[0, j], color=colors[r.name])
        if j:
            axes[0, j].set_ylabel("")
    return fig


def save_calibration_figures(out_dir: str | os.PathLike, calibration=None, misclassification=None,
                             ood=None, bands: bool = False) -> list[Path]:
    """Write ``reliability``, ``reliability_adaptive``, ``confidence_hist``, ``nci_scatter``, ``ood_roc``
    (PNG + PDF) for whichever result lists are given (None or [] skips one); returns the written paths.
    ``bands``: the equal-width reliability diagrams with each bin's bootstrap band (results with n_boot > 0).
    Every list is checked before anything is drawn, and a failure leaves none of this call's files."""
    out = Path(out_dir)
    given = {}
    for key, group, kind in (("calibration", calibration, CalibrationResult),
                             ("misclassification", misclassification, MisclassificationResult),
                             ("ood", ood, OODResult)):
        if group is not None and not (isinstance(group, (list, tuple)) and not group):
            given[key] = check_results(group, kind, f"save_calibration_figures {key}")
    calibration, misclassification, ood = (given.get(k) for k in ("calibration", "misclassification", "ood"))
    # one colour map for every figure, from every model given: a figure of a subset keeps the colours
    colors = model_colors([r.name.removesuffix(TS_SUFFIX) for group in given.values() for r in group])
    written: list[Path] = []
    with output_set() as outputs:            # all of them or none, with the caller's JSON when it opened a set
        if calibration:
            written += save_figure(reliability_figure(calibration, colors=colors, bands=bands), out / "reliability")
            written += save_figure(reliability_figure(calibration, adaptive=True, colors=colors),
                                   out / "reliability_adaptive")
            ax = plot_confidence_histograms(calibration, colors=colors)
            written += save_figure(ax.figure, out / "confidence_hist")
        if misclassification and any(r.nci is not None for r in misclassification):
            written += save_figure(nci_figure(misclassification), out / "nci_scatter")
        elif misclassification:              # no NCI this time: an earlier run's scatter would be mistaken for it
            outputs.discard(out / "nci_scatter.png", out / "nci_scatter.pdf")
        if ood:
            written += save_figure(roc_figure(ood, colors=colors), out / "ood_roc")
    return written

"""Figures of logit statistics (MaxSup Fig. 2/3): near-zero histograms, confidence scatter, logit KDEs, LS split.

Each ``plot_*`` function draws :class:`repanalysis.analyze.logits.LogitStats` (one or a list) on ``ax``
(a new styled Axes when None) and returns the Axes; the ``*_figure`` functions compose them and
:func:`save_logit_figures` writes ``logit_analysis``, ``logit_comparison`` and ``ls_split`` (PNG + PDF).
Nothing here computes a statistic the Result does not hold (the KDE curves are in the Result).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from repanalysis.arrays import check_number
from repanalysis.analyze.logits import LogitStats
from repanalysis.outputs import output_set
from repanalysis.plot.style import (ANNOTATION_FONTSIZE, check_result, check_results, finite, get_ax,
                                    literal, model_colors, name_title, save_figure, subplots)

_FIGURE_STEMS = ("logit_analysis", "logit_comparison", "ls_split")


def _as_list(results, what: str) -> list:
    return check_results(results, LogitStats, what)


def _near_zero_values(result) -> np.ndarray:
    """The finite per-sample near-zero fractions (NaN ones left out; DataError when none is finite)."""
    return finite(result.near_zero_fraction, "near_zero_fraction", result.name)


# --- the seed tool's figure ----------------------------------------------------------------------------
def _near_zero(result) -> str:
    return f"Fraction of logits with |z| < {result.threshold:g}"


def plot_near_zero_hist(result, ax=None, bins=50, color: str | None = None, title: bool = True):
    """Histogram of per-sample near-zero fractions: ``bins`` bins (a count, or edges shared across models),
    black edges (left panel of the seed)."""
    check_result(result, LogitStats, "plot_near_zero_hist")
    values = _near_zero_values(result)
    ax = get_ax(ax)
    color = color or model_colors([result.name])[result.name]
    ax.hist(values, bins=bins, edgecolor="black", color=color, label=literal(result.name))
    if title:
        ax.set_title(name_title(result.name, f"{_near_zero(result)} (N={values.size})"))
    ax.set_xlabel(f"{_near_zero(result)} (of K={result.num_classes})")
    ax.set_ylabel("Count (samples)")
    return ax


def plot_top1_vs_near_zero(result, ax=None, color: str | None = None, alpha: float = 0.6, title: bool = True):
    """Scatter of top-1 softmax probability (x) against near-zero fraction (y) (right panel of the seed)."""
    check_result(result, LogitStats, "plot_top1_vs_near_zero")
    ax = get_ax(ax)
    color = color or model_colors([result.name])[result.name]
    size = None if result.num_samples <= 20_000 else 4
    ax.scatter(result.top1_prob, result.near_zero_fraction, alpha=alpha, color=color, s=size,
               rasterized=result.num_samples > 5_000, label=literal(result.name))
    if title:
        ax.set_title(name_title(result.name, "top-1 probability vs near-zero logits"))
    ax.set_xlabel("Top-1 probability (max softmax)")
    ax.set_ylabel(_near_zero(result))
    ax.grid(True)
    return ax


def logit_analysis_figure(results, bins: int = 50, colors: dict[str, str] | None = None):
    """The seed's ``logit_analysis.png``: per model a row of [near-zero histogram | top-1 prob scatter]; the
    histograms share their bins and x axis, the scatters both axes."""
    results = _as_list(results, "logit_analysis_figure")
    check_number(bins, "bins", integer=True, minimum=1)
    values = [_near_zero_values(r) for r in results]
    colors = model_colors([r.name for r in results], colors)
    fig, axes = subplots(len(results), 2, figsize=(12, 5 * len(results)), sharex="col")
    for ax in axes[1:, 1]:
        ax.sharey(axes[0, 1])
    top = max(float(v.max()) for v in values)
    edges = np.linspace(0.0, max(top, 1.0 / max(r.num_classes for r in results)), bins + 1)
    for row, r in zip(axes, results):
        plot_near_zero_hist(r, ax=row[0], bins=edges, color=colors[r.name])
        plot_top1_vs_near_zero(r, ax=row[1], color=colors[r.name])
        for ax in row:
            ax.tick_params(labelbottom=True)   # each row reads on its own (titles name the model)
    fig.tight_layout()
    return fig


# --- comparison of several models ----------------------------------------------------------------------
def plot_near_zero_comparison(results, ax=None, bins: int = 50, colors: dict[str, str] | None = None):
    """Overlaid step histograms of near-zero fractions, as a share of each model's samples.

    When K + 1 <= ``bins`` the fractions take only the values j/K, and each gets its own bin.
    """
    results = _as_list(results, "plot_near_zero_comparison")
    check_number(bins, "bins", integer=True, minimum=1)
    values = [_near_zero_values(r) for r in results]
    ax = get_ax(ax)
    colors = model_colors([r.name for r in results], colors)
    k = max(r.num_classes for r in results)
    top = max(float(v.max()) for v in values)
    discrete = all(r.num_classes == k for r in results) and k + 1 <= bins
    none = top == 0.0       # no logit of any sample in the band: every fraction is 0
    if discrete:     # a bin centred on each value j/K (edges half-way between, so rounding cannot move a value);
        last = k if none else int(round(top * k))          # all of 0..K in view when nothing but 0 occurs
        edges = (np.arange(last + 2) - 0.5) / k
    else:
        edges = np.linspace(0.0, max(top, 1.0 / k), bins + 1)
    for r, v in zip(results, values):
        ax.hist(v, bins=edges, histtype="step", linewidth=1.8, color=colors[r.name],
                weights=np.full(v.size, 1.0 / v.size),
                label=f"{literal(r.name)} (mean {float(v.astype(np.float64).mean()):.3f})")
    thresholds = sorted({f"{r.threshold:g}" for r in results})
    sizes = ", ".join(str(n) for n in dict.fromkeys(v.size for v in values))
    ax.set_title(f"Per-sample fraction of logits with |z| < {', '.join(thresholds)} (N = {sizes})")
    ax.set_xlabel(f"Fraction of logits with |z| < {', '.join(thresholds)} (of K)")
    ax.set_ylabel("Share of samples")
    if discrete:            # the whole first bin (centred on 0) in view, ticks on the values j/K only
        centres = np.arange(edges.size - 1) / k
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xticks(centres[::-(-centres.size // 10)])
    else:
        ax.set_xlim(left=0.0)
    if none:
        ax.set_ylim(0.0, 1.05)
        ax.text(0.5, 0.55, f"No logits with |z| < {', '.join(thresholds)} in any sample:\n"
                f"every sample's fraction is 0", transform=ax.transAxes, ha="center", va="center",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9})
    ax.legend(loc="upper right" if none else "best")
    return ax


def plot_logit_kde(results, ax=None, colors: dict[str, str] | None = None):
    """KDE curves of the flattened logits held in each Result (first ``kde_samples`` rows)."""
    results = _as_list(results, "plot_logit_kde")
    names = ", ".join(str(r.name) for r in results)
    lo = float(finite([r.kde_range[0] for r in results], "kde_range", names).min())
    hi = float(finite([r.kde_range[1] for r in results], "kde_range", names).max())
    ax = get_ax(ax)
    colors = model_colors([r.name for r in results], colors)
    for r in results:
        if r.kde_density.size:
            ax.plot(r.kde_x, r.kde_density, color=colors[r.name], linewidth=1.8,
                    label=f"{literal(r.name)} ({r.kde_samples:,} samples, h={r.kde_bandwidth:.3g})")
        else:
            ax.plot([], [], color=colors[r.name], label=f"{literal(r.name)} (no spread: no KDE)")
    ax.set_xlim(lo, hi)
    dens = [d for d in (r.kde_density[np.isfinite(r.kde_density)] for r in results) if d.size]
    peak = max([float(d.max()) for d in dens] + [0.0])
    ax.set_ylim(0, peak * 1.35 if peak > 0 else 1.0)  # head-room for the legend
    ax.set_title("Density of flattened logits")
    ax.set_xlabel("Logit value z (logit units)")
    ax.set_ylabel("Density (per logit unit)")
    ax.legend(loc="upper right")
    return ax


def comparison_figure(results, bins: int = 50, colors: dict[str, str] | None = None):
    """[overlaid near-zero histograms | logit KDEs] for any number of models."""
    results = _as_list(results, "comparison_figure")
    fig, axes = subplots(1, 2, figsize=(12, 4.8))
    plot_near_zero_comparison(results, ax=axes[0, 0], bins=bins, colors=colors)
    plot_logit_kde(results, ax=axes[0, 1], colors=colors)
    fig.tight_layout()
    return fig


# --- the LS split ---------------------------------------------------------------------------------------
def plot_error_enhancement(results, ax=None, bins: int = 30, colors: dict[str, str] | None = None):
    """Distribution of the LS error-enhancement term over each model's misclassified samples.

    Step histograms on shared bins (density) with a seaborn KDE per model where it has >= 2 distinct values.
    """
    import seaborn as sns

    results = _as_list(results, "plot_error_enhancement")
    check_number(bins, "bins", integer=True, minimum=1)
    wrong = {r.name: r.ls_error_enhancement[~r.correct].astype(np.float64) for r in results}
    wrong = {r.name: finite(wrong[r.name], "ls_error_enhancement", r.name) for r in results}
    ax = get_ax(ax)
    colors = model_colors([r.name for r in results], colors)
    kde = False
    pooled = np.concatenate([v for v in wrong.values()] + [np.zeros(1)])
    edges = np.linspace(pooled.min(), 0.0, bins + 1) if pooled.min() < 0 else np.linspace(-1e-3, 0.0, bins + 1)
    for r in results:
        v = wrong[r.name]
        if v.size == 0:
            ax.plot([], [], color=colors[r.name], label=f"{literal(r.name)} (no misclassified samples)")
            continue
        ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.5, color=colors[r.name],
                label=f"{literal(r.name)} (n={v.size}, mean {v.mean():.3g})")
        if v.size >= 2 and np.unique(v).size >= 2:
            sns.kdeplot(x=v, ax=ax, color=colors[r.name], linewidth=1.2, linestyle="--", cut=0)
            kde = True
    alphas = sorted({f"{r.alpha:g}" for r in results})
    ax.set_title(f"LS error-enhancement on misclassified samples (α = {', '.join(alphas)})")
    ax.set_xlabel(r"Error-enhancement $(\alpha/K)\,\Sigma_{z_k > z_y}(z_y - z_k)$ (logit units)")
    ax.set_ylabel("Density (per logit unit)")
    if kde:
        ax.plot([], [], color="black", linewidth=1.2, linestyle="--", label="dashed: KDE of the same values")
    ax.legend()
    return ax


def plot_ls_split(results, ax=None, colors: dict[str, str] | None = None):
    """Grouped bars: mean LS regularization, error-enhancement, their sum L_LS, and the MaxSup penalty, each
    bar's value printed on it (the error-enhancement mean is tiny next to the others)."""
    results = _as_list(results, "plot_ls_split")
    ax = get_ax(ax)
    colors = model_colors([r.name for r in results], colors)
    terms = [("ls_regularization", "regularization"), ("ls_error_enhancement", "error-enhancement"),
             ("ls_loss", r"$L_{LS}$ = sum"), ("maxsup_penalty", "MaxSup penalty")]
    width = 0.8 / len(results)
    x = np.arange(len(terms))
    for i, r in enumerate(results):
        means = [r.mean(key) for key, _ in terms]
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, means, width=width, color=colors[r.name], label=literal(r.name))
        for xi, v in zip(pos, means):   # above the bar, or above 0 for a negative one (clear of the tick labels)
            ax.annotate(f"{v:.3g}", (xi, max(v, 0.0)), xytext=(0, 2), textcoords="offset points", rotation=90,
                        ha="center", va="bottom", fontsize=ANNOTATION_FONTSIZE)
    ax.axhline(0.0, color="black", linewidth=0.8)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.45 * (hi - lo))  # room for the values and the legend
    ax.set_xticks(x, [label for _, label in terms])
    ax.set_title(f"Mean LS split per sample (α = {', '.join(sorted({f'{r.alpha:g}' for r in results}))}; "
                 "values on the bars)")
    ax.set_xlabel("Loss term (Corollary 3.4)")
    ax.set_ylabel("Mean over samples (logit units)")
    ax.legend(loc="upper right", ncols=min(len(results), 4))
    return ax


def ls_split_figure(results, bins: int = 30, colors: dict[str, str] | None = None):
    """[error-enhancement distribution on misclassified samples | mean LS split and MaxSup penalty]."""
    results = _as_list(results, "ls_split_figure")
    fig, axes = subplots(1, 2, figsize=(12, 4.8))
    plot_error_enhancement(results, ax=axes[0, 0], bins=bins, colors=colors)
    plot_ls_split(results, ax=axes[0, 1], colors=colors)
    fig.tight_layout()
    return fig


def save_logit_figures(results, out: str | os.PathLike, bins: int = 50) -> list[Path]:
    """Write ``logit_analysis``, ``logit_comparison`` and ``ls_split`` (.png and .pdf) under ``out``; a failure
    leaves none of this call's files."""
    results = _as_list(results, "save_logit_figures")
    out = Path(out)
    colors = model_colors([r.name for r in results])   # once, for all three figures
    written: list[Path] = []
    with output_set():                       # all three or none (with the caller's JSON when it opened a set)
        for stem, make in zip(_FIGURE_STEMS, (lambda: logit_analysis_figure(results, bins=bins, colors=colors),
                                              lambda: comparison_figure(results, bins=bins, colors=colors),
                                              lambda: ls_split_figure(results, colors=colors))):
            written += save_figure(make(), out / stem)
    return written


__all__ = ["plot_near_zero_hist", "plot_top1_vs_near_zero", "logit_analysis_figure", "plot_near_zero_comparison",
           "plot_logit_kde", "comparison_figure", "plot_error_enhancement", "plot_ls_split", "ls_split_figure",
           "save_logit_figures"]

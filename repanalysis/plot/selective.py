"""Risk-coverage curves (Geifman & El-Yaniv 2017): selective risk against coverage, a curve per model, one panel
per confidence score; the legend names each model with its AURC."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from repanalysis.analyze.selective import SelectiveResult
from repanalysis.plot.style import check_results, get_ax, literal, model_colors, save_figure, subplots

SCORE_TITLES = {"max_softmax": "max softmax", "max_logit": "max logit", "energy": "energy (logsumexp)",
                "feature_l1": "feature L1 norm"}
_MAX_POINTS = 2000      # a curve is drawn through at most this many coverages (evenly spaced ranks, the last kept)


def plot_risk_coverage(results, score: str = "max_softmax", ax=None, colors: dict[str, str] | None = None):
    """One panel: the risk-coverage curve of ``score`` for each SelectiveResult; returns the Axes."""
    results = check_results(results, SelectiveResult, "plot_risk_coverage")
    ax = get_ax(ax, figsize=(5.0, 4.0))
    colors = model_colors([r.name for r in results], colors)
    for r in results:
        if score not in r.risk:
            continue
        n = r.coverage.size
        idx = np.unique(np.r_[np.linspace(0, n - 1, min(n, _MAX_POINTS)).astype(np.int64), n - 1])
        ax.plot(100 * r.coverage[idx], 100 * r.risk[score][idx], color=colors[r.name], lw=1.5,
                label=f"{literal(r.name)} (AURC {1000 * r.aurc[score]:.1f}‰)")
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (% of samples answered)")
    ax.set_ylabel("selective risk (% errors among answered)")
    ax.set_title(f"risk-coverage: {SCORE_TITLES.get(score, score)}")
    ax.legend(loc="best")
    return ax


def risk_coverage_figure(results, colors: dict[str, str] | None = None):
    """One panel per score present in any result, side by side, each with its own risk axis (a poor score's
    risk at low coverage is far above a good one's); returns the Figure."""
    results = check_results(results, SelectiveResult, "risk_coverage_figure")
    scores = list(dict.fromkeys(s for r in results for s in r.risk))
    colors = model_colors([r.name for r in results], colors)
    fig, axes = subplots(1, len(scores), figsize=(4.8 * len(scores), 4.2), layout="constrained")
    for j, score in enumerate(scores):
        plot_risk_coverage(results, score, ax=axes[0, j], colors=colors)
    return fig


def save_selective_figures(out_dir: str | os.PathLike, results) -> list[Path]:
    """Write ``risk_coverage`` (PNG + PDF) to out_dir; returns the written paths."""
    return save_figure(risk_coverage_figure(results), Path(out_dir) / "risk_coverage")

"""Figure defects found by the figure audit: each test measures the drawn figure (tick labels, bounding boxes,
colours, titles), never only that it was drawn."""
from __future__ import annotations

import dataclasses
import warnings

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

import repanalysis  # noqa: F401  (compat fix before torchvision)
from repanalysis.errors import DataError


def _overlap(a, b) -> bool:
    """Whether two window extents (Bbox) overlap by more than a pixel."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1


def _renderer(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


# --- 1. separation: the figure shows the table's de-duplicated model names ---------------------------------
def test_separation_figure_draws_two_models_of_the_same_name_apart():
    from repanalysis.analyze.geometry import class_separation, separation_table
    from repanalysis.plot.geometry import plot_separation_bars

    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(60, 4)), np.repeat(np.arange(3), 20)
    results = [dataclasses.replace(class_separation(h * s, y), name="best", split="test", r2=r2)
               for s, r2 in ((1.0, 0.2), (2.0, 0.6))]
    assert [row["model"] for row in separation_table(results)] == ["best", "best (2)"]
    axes = plot_separation_bars(results)
    for ax in axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["best", "best (2)"]
        xs = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
        assert xs == pytest.approx([0.0, 1.0])                 # one bar per tick, not both on "best"
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["best", "best (2)"]
    bars = axes[-1].patches
    assert mcolors.to_hex(bars[0].get_facecolor()) != mcolors.to_hex(bars[1].get_facecolor())
    assert [b.get_height() for b in bars] == pytest.approx([0.2, 0.6])
    plt.close("all")

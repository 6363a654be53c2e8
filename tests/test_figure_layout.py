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


# --- 2. the split named in titles is every Dump's, by split_of --------------------------------------------
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five"]


def _saved_dump(path, seed, meta, name, n=180, d=8, k=6):
    from repanalysis.extract.store import Dump

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    h = np.maximum(rng.normal(size=(k, d))[y] * 2 + rng.normal(size=(n, d)), 0).astype(np.float32)
    w, b = rng.normal(size=(k, d)).astype(np.float32), rng.normal(size=k).astype(np.float32)
    return str(Dump.from_arrays(h @ w.T + b, y, h, class_names=CLASS_NAMES, name=name, meta=meta,
                                classifier_weight=w, classifier_bias=b).save(path).path)


def _titles(fig) -> str:
    return " | ".join([fig.get_suptitle()] + [ax.get_title() for ax in fig.axes])


@pytest.mark.parametrize("command, args", [
    ("features", ["--classes", "zero,one,two", "--samples-per-class", "10"]),
    ("embed", ["--classes", "zero,one,two", "--method", "tsne", "--samples-per-class", "10"]),
    ("collapse", ["--device", "cpu"]),
])
def test_titles_name_the_split_all_dumps_share_and_no_split_when_they_differ(tmp_path, capsys, monkeypatch,
                                                                              command, args):
    from _cli import run_cli

    from repanalysis.plot import style

    figures = []
    monkeypatch.setattr(style, "save_figure", lambda fig, stem: figures.append(fig) or [])
    # the split recorded only in the data set's meta (as split_of reads it): both Dumps are of "test"
    same = [_saved_dump(tmp_path / f"{n}_a", i, {"dataset": {"split": "test"}}, n) for i, n in enumerate(("CE", "LS"))]
    # mixed: the first Dump of "train", the second of "test"; before, the title said "train" for both
    mixed = [_saved_dump(tmp_path / f"{n}_b", i, {"split": s}, n) for i, (n, s) in enumerate((("CE", "train"),
                                                                                               ("LS", "test")))]
    for paths in (same, mixed):
        flag = ["--dump", paths[0], "--dump", paths[1]] if command == "features" else paths
        code, _, stderr = run_cli([command, *flag, *args, "--out", str(tmp_path / "o")], capsys)
        assert code == 0, stderr
    assert "test" in _titles(figures[0])
    assert "train" not in _titles(figures[1]) and "test" not in _titles(figures[1])
    plt.close("all")

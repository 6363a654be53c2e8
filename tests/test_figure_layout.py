"""Figure defects found by the figure audit: each test measures the drawn figure (tick labels, bounding boxes,
colours, titles), never only that it was drawn."""
from __future__ import annotations

import dataclasses
import warnings

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from _figures import label_outlines
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


# --- 4. feature norms read at any number of classes -------------------------------------------------------
def _assert_tick_labels_apart(ax, gap_px: float = 2.0):
    outlines = label_outlines(ax)
    assert len(outlines) >= 2
    for i, a in enumerate(outlines):
        for b in outlines[i + 1:]:
            assert not a.intersects_path(b, filled=True), [t.get_text() for t in ax.get_xticklabels()]
    if gap_px:   # level labels: their boxes stand at least gap_px apart
        level = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text() and not t.get_rotation()]
        level.sort(key=lambda b: b.x0)
        assert all(b.x0 - a.x1 >= gap_px for a, b in zip(level[:-1], level[1:]))


def _collapse(name, k, seed=0, names=None):
    from repanalysis.analyze.collapse import CollapseResult

    rng = np.random.default_rng(seed)
    mean = rng.uniform(5, 8, k)
    return CollapseResult(nc1=0.1, nc2_equinorm=0.1, nc2_equiangular=0.1, nc2_max_angle=0.1, nc3=None, nc4=None,
                          vci=0.1, rank_sb=k - 1, classes=np.arange(k), counts=np.full(k, 10),
                          norm_l1_mean=mean * 3, norm_l1_std=np.full(k, 0.5), norm_l2_mean=mean,
                          norm_l2_std=np.full(k, 0.3), n_samples=10 * k, name=name)


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize("models", [1, 3])
def test_feature_norm_class_names_never_touch(models):
    from repanalysis.plot.geometry import plot_feature_norms

    # before: one model, 10 digits on a 5-inch figure printed "seveneight" (labels touching)
    ax = plot_feature_norms([_collapse(f"m{i}", 10, i) for i in range(models)], class_names=DIGITS)
    assert [t.get_text() for t in ax.get_xticklabels()] == DIGITS     # every class named
    _assert_tick_labels_apart(ax)
    plt.close("all")


def test_feature_norms_on_a_small_caller_axes_slant_and_thin_the_class_names():
    from repanalysis.plot.geometry import plot_feature_norms

    fig, ax = plt.subplots(figsize=(4, 3))
    names = [f"class_{i:03d}_name" for i in range(20)]
    plot_feature_norms([_collapse("CE", 20)], ax=ax, class_names=names)
    assert tuple(fig.get_size_inches()) == (4.0, 3.0)                  # the caller's figure keeps its size
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert shown and shown[0] == names[0] and set(shown) <= set(names)
    _assert_tick_labels_apart(ax, gap_px=0)
    plt.close("all")


def test_feature_norms_of_many_classes_draw_one_sorted_curve_per_model():
    from repanalysis.plot.geometry import plot_feature_norms

    results = [_collapse(n, 100, i) for i, n in enumerate(("CE", "LS", "MaxSup"))]
    ax = plot_feature_norms(results, class_names=[f"class_{i:03d}_name" for i in range(100)])
    # before: 300 bars and 100 overprinted class names
    assert len(ax.patches) == 0 and len(ax.get_lines()) == 3
    for line, r in zip(ax.get_lines(), results):
        assert np.allclose(line.get_ydata(), np.sort(r.norm_l2_mean)[::-1])     # largest class mean first
        assert np.array_equal(line.get_xdata(), np.arange(1, 101))
    assert len({mcolors.to_hex(line.get_color()) for line in ax.get_lines()}) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CE", "LS", "MaxSup"]
    assert "Class rank" in ax.get_xlabel() and "feature units" in ax.get_ylabel()
    _assert_tick_labels_apart(ax)
    plt.close("all")


# --- 5. distinct model colours beyond seven models ----------------------------------------------------------
def test_eight_to_thirteen_models_get_distinct_colours_and_only_more_warn():
    from repanalysis.analyze.geometry import class_separation
    from repanalysis.plot.geometry import plot_separation_bars
    from repanalysis.plot.style import CLASS_COLORS, OKABE_ITO, model_colors

    names = [f"M{i}" for i in range(13)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # 13 models: no warning
        colours = model_colors(names)
    assert len({c.lower() for c in colours.values()}) == 13   # before: M7 got M0's blue
    assert not {c.lower() for c in colours.values()} & {c.lower() for c in CLASS_COLORS + [OKABE_ITO[3]]}
    with pytest.warns(RuntimeWarning, match="14 models but 13 distinct model colours"):
        model_colors(names + ["M13"])
    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(60, 4)), np.repeat(np.arange(3), 20)
    base = class_separation(h, y)
    axes = plot_separation_bars([dataclasses.replace(base, name=f"model{i}", split="test") for i in range(8)])
    bars = {mcolors.to_hex(p.get_facecolor()) for p in axes[0].patches}
    assert len(bars) == 8
    plt.close("all")


# --- 8. one set of classes per projection / embedding figure --------------------------------------------------
def test_projection_and_embedding_figures_refuse_panels_of_different_classes():
    from repanalysis.analyze.embed import EmbeddingResult
    from repanalysis.analyze.projection import project_classes
    from repanalysis.plot.geometry import plot_embeddings, plot_projections

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 30)
    h = rng.normal(size=(5, 9))[y] * 2 + rng.normal(size=(150, 9))
    w, b = rng.normal(size=(5, 9)), rng.normal(size=5)
    names = ["a", "b", "c", "d", "e"]

    def proj(classes, name):
        return project_classes(h, y, classes, classifier_weight=w, classifier_bias=b, class_names=names, name=name)

    # before: titled "a, b, c" (the first panel's) with the legend of "a, b, d" (the last panel's)
    with pytest.raises(DataError) as err:
        plot_projections([proj([0, 1, 2], "CE"), proj([0, 1, 3], "LS")])
    assert str(err.value) == ("plot_projections: the panels show different classes (CE: a, b, c; LS: a, b, d); "
                              "expected the same classes for every model (choose them once for all models)")
    fig = plot_projections([proj([0, 1, 2], "CE"), proj([0, 1, 2], "LS")])            # the same: drawn
    assert "template method: a, b, c" in fig.get_suptitle()

    def emb(classes, name):
        keep = np.isin(y, classes)
        return EmbeddingResult(coords=rng.normal(size=(keep.sum(), 2)), labels=y[keep],
                               sample_index=np.arange(keep.sum()), classes=list(classes), class_names=[names[c] for c in classes], method="tsne", seed=0,
                               name=name)

    with pytest.raises(DataError, match=r"plot_embeddings: the panels show different classes \(CE: a, b, c; "
                                        r"LS: b, c, e\)") as err:
        plot_embeddings([emb([0, 1, 2], "CE"), emb([1, 2, 4], "LS")])
    assert "\n" not in str(err.value)
    plt.close("all")


# --- 6. an embedding of many classes keeps its panels' size ---------------------------------------------------
def _embedding(k, name, seed=0, n=8):
    from repanalysis.analyze.embed import EmbeddingResult

    labels = np.repeat(np.arange(k), n)
    return EmbeddingResult(coords=np.random.default_rng(seed).normal(size=(k * n, 2)), labels=labels,
                           sample_index=np.arange(k * n), classes=list(range(k)),
                           class_names=[f"class_{i:03d}_name" for i in range(k)], method="tsne", seed=0, name=name)


def test_embedding_of_25_classes_keys_them_under_panels_of_full_size():
    from repanalysis.plot.geometry import plot_embeddings

    def panel_heights(fig):
        renderer = _renderer(fig)
        return [ax.get_window_extent(renderer).height / fig.dpi for ax in fig.axes]

    few = plot_embeddings([_embedding(3, "CE"), _embedding(3, "LS", 1)])
    reference = min(panel_heights(few))
    fig = plot_embeddings([_embedding(25, "CE"), _embedding(25, "LS", 1)])
    heights = panel_heights(fig)
    # before: the 25-row legend beside the last panel squeezed both panels to a fraction of their height
    assert min(heights) >= 0.9 * reference
    legend = fig.legends[0] if fig.legends else fig.axes[-1].get_legend()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert len(legend.get_texts()) == 25 and legend.get_texts()[0].get_text() == "class_000_name (n=8)"
    for ax in fig.axes:
        assert not _overlap(box, ax.get_tightbbox(renderer))           # the key never on a panel or its labels
    assert box.height / fig.dpi < min(heights)                          # in columns: shorter than a panel
    plt.close("all")


# --- 7. a near-zero panel with no near-zero logits says so ----------------------------------------------------
def test_near_zero_panel_without_near_zero_logits_says_so_on_full_axes():
    from repanalysis.analyze.logits import logit_stats
    from repanalysis.plot.logits import comparison_figure

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    results = []
    for name in ("A", "B"):       # K = 2, every |z| >= 0.5: no logit within the 0.01 band
        z = rng.choice([-1.0, 1.0], size=(200, 2)) * rng.uniform(0.5, 3.0, size=(200, 2))
        results.append(logit_stats(z.astype(np.float32), y, name=name))
    assert all(float(np.max(r.near_zero_fraction)) == 0.0 for r in results)
    fig = comparison_figure(results)
    ax = fig.axes[0]
    renderer = _renderer(fig)
    notes = [t for t in ax.texts if "No logits with |z| < 0.01" in t.get_text()]
    # before: a bare frame with the single tick "0" and nothing saying why
    assert len(notes) == 1
    assert list(ax.get_xticks()) == pytest.approx([0.0, 0.5, 1.0])           # every value j/K in view
    lo, hi = ax.get_xlim()
    assert lo < 0.0 and hi > 1.0
    note = notes[0].get_window_extent(renderer)
    assert ax.get_window_extent(renderer).contains(note.x0, note.y0)
    assert not _overlap(note, ax.get_legend().get_window_extent(renderer))
    plt.close("all")


# --- 3. long model names never run into a neighbour ---------------------------------------------------------
LN = "label_smoothing_alpha0.1_resnet50_seed0_epoch90_final"


def _figure(kind):
    import torch

    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.analyze.confidence import misclassification_scores
    from repanalysis.analyze.logits import logit_stats
    from repanalysis.plot import calibration as C, logits as L
    from repanalysis.plot.cam import plot_cam_grid

    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (300,), generator=g)
    h = torch.rand(300, 6, generator=g, dtype=torch.float64)
    names = ["CE", LN]
    if kind == "reliability":
        return C.reliability_figure([calibration_report(z * s, y, name=n) for n, s in zip(names, (1.0, 0.5))])
    if kind == "nci":
        return C.nci_figure([misclassification_scores(z * s, y, h, num_classes=4, name=n)
                             for n, s in zip(names, (1.0, 0.5))])
    if kind == "logit_analysis":
        return L.logit_analysis_figure([logit_stats(z.float() * s, y, name=n) for n, s in zip(names, (1.0, 0.5))])
    from test_plot_badinput import _loc

    return plot_cam_grid([_loc(n, i) for i, n in enumerate(["CE", LN, "maxsup_e8_n4000_s0_with_long_suffix"])])


def _texts_apart(boxes):
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlap(a, b)


@pytest.mark.parametrize("kind", ["reliability", "nci", "logit_analysis", "cam_grid"])
def test_long_model_names_never_overlap_titles_legends_or_row_labels(kind):
    fig = _figure(kind)
    renderer = _renderer(fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.title.get_window_extent(renderer) for ax in shown if ax.get_title()]
    _texts_apart(titles)           # before: "label_smoothing_..._final (15 equal-width bins ...)" ran into CE's
    for ax, box in zip([ax for ax in shown if ax.get_title()], titles):
        assert box.width <= 1.3 * ax.get_window_extent(renderer).width      # a title about as wide as its panel
    legends = [ax.get_legend().get_window_extent(renderer) for ax in shown if ax.get_legend()]
    _texts_apart(legends)
    if kind == "cam_grid":         # row labels: within their row, never into the next one's
        rows = [ax for ax in shown if ax.get_ylabel() and ax.get_label() != "<colorbar>"]
        assert len(rows) == 3
        boxes = [ax.yaxis.label.get_window_extent(renderer) for ax in rows]
        _texts_apart(boxes)
        for ax, box in zip(rows, boxes):
            assert box.height <= ax.get_window_extent(renderer).height
        assert "\n" in rows[1].get_ylabel() and rows[0].get_ylabel() == "CE"
    text = " ".join(t.get_text() for ax in shown for t in [ax.title, ax.yaxis.label] +
                    (ax.get_legend().get_texts() if ax.get_legend() else []))
    assert "label_smoothing_" in text and "epoch90_final" in text           # the name is still all there
    plt.close("all")

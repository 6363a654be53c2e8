"""Feature-geometry figures: 3-class projections (MaxSup Fig. 4-5 / App. G), UMAP/t-SNE scatters, and
d_within / R^2 bars per model with train and val side by side (MaxSup Table 2 as a figure)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from repanalysis.arrays import check_number
from repanalysis.analyze.collapse import CollapseResult
from repanalysis.analyze.embed import EmbeddingResult
from repanalysis.analyze.geometry import SeparationResult, separation_models
from repanalysis.analyze.projection import ProjectionResult
from repanalysis.errors import DataError
from repanalysis.plot.style import (ANNOTATION_FONTSIZE, check_ax, check_result, check_results, class_styles, describe,
                                    finite, get_ax, literal, model_colors, subplots, wrap_name)

UNKNOWN_SPLIT = "unknown split"   # the key label of results whose split is None (not recorded)
MAX_PANEL_INCHES = 7.0            # a separation panel widens up to this for level model labels, then rotates them
ROTATION = 45                     # degrees of rotated model tick labels
LEGEND_MARGIN_INCHES = 1.6        # figure height beyond a separation legend's (titles, axis labels)
NORMS = ("l2", "l1")
MAX_SIDE_LEGEND_CLASSES = 12      # an embedding keys more classes than this under its panels, not beside them
LEGEND_COLUMN_INCHES = 1.8        # width of a column of that key
MAX_BAR_CLASSES = 20              # feature norms: bars per class up to this many classes, sorted curves beyond
MAX_NORM_INCHES = 11.0            # a feature-norm bar chart widens up to this for level class names
MODEL_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_METRIC_LABELS = {"d_within": r"$d_{within}$ (mean cosine distance)", "d_total": r"$d_{total}$ (mean cosine distance)",
                  "r2": r"$R^2 = 1 - d_{within}\,/\,d_{total}$ (unitless)"}


def _points(result) -> np.ndarray:
    """The finite points (rows of ``coords``) of a projection or embedding; DataError when none is finite."""
    return finite(result.coords, "coords", result.name or "result")


def shared_limits(results, margin: float = 0.06) -> tuple[tuple[float, float], tuple[float, float]]:
    """((xmin, xmax), (ymin, ymax)) covering the (finite) points of every result, with a relative margin."""
    results = check_results(results, (ProjectionResult, EmbeddingResult), "shared_limits")
    check_number(margin, "shared_limits: margin", minimum=0)
    pts = np.vstack([_points(r) for r in results])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = (hi - lo) * margin + 1e-12
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _check_limits(limits):
    """``limits`` itself when it is ((xmin, xmax), (ymin, ymax)) of finite numbers; DataError otherwise."""
    try:
        (x0, x1), (y0, y1) = limits
    except (TypeError, ValueError):
        raise DataError(f"plot_projection: limits must be ((xmin, xmax), (ymin, ymax)); got {describe(limits)}") \
            from None
    for v in (x0, x1, y0, y1):
        check_number(v, "plot_projection: each of limits")
    return limits


def _scatter_classes(ax, result, styles, point_size: float, **scatter_kw) -> None:
    """The points of each class of a projection or embedding result (``coords``, ``labels``, ``classes``,
    ``class_names``) in the class's colour and marker, labelled with its name and count."""
    keep = np.isfinite(result.coords).all(axis=1)   # NaN points left out (and not counted)
    for k, label in zip(result.classes, result.class_names):
        pts = result.coords[result.labels == k] if keep.all() else result.coords[(result.labels == k) & keep]
        ax.scatter(pts[:, 0], pts[:, 1], s=point_size, color=styles[k][0], marker=styles[k][1], alpha=0.75,
                   label=f"{literal(label)} (n={len(pts)})", **scatter_kw)


def plot_projection(result, ax=None, *, limits=None, decision_regions: bool = False, show_anchors: bool = True,
                    point_size: float = 14, legend: bool = True, resolution: int = 300):
    """Scatter of a :class:`~repanalysis.analyze.projection.ProjectionResult`, one colour per class.

    limits: ((xmin, xmax), (ymin, ymax)) to share axes across models. decision_regions: shade the plane by
    the class the model predicts among the three (template method only; exact there). Returns the Axes.
    """
    check_result(result, ProjectionResult, "plot_projection")
    (x0, x1), (y0, y1) = _check_limits(limits) if limits is not None else shared_limits([result])
    ax = get_ax(ax)
    styles = class_styles(result.classes)
    colors = {k: c for k, (c, _) in styles.items()}
    if decision_regions and result.decision_weights is not None:
        gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
        pred = result.predict(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
        index = np.searchsorted(np.asarray(sorted(result.classes)), pred)
        cmap = ListedColormap([colors[c] for c in sorted(result.classes)])
        ax.imshow(index, extent=(x0, x1, y0, y1), origin="lower", cmap=cmap, alpha=0.13, aspect="auto",
                  interpolation="nearest", vmin=0, vmax=2, zorder=0)
    _scatter_classes(ax, result, styles, point_size, linewidths=0.3, edgecolors="white", zorder=2)
    if show_anchors and result.method == "centroid":
        ax.scatter(result.anchors[:, 0], result.anchors[:, 1], marker="X", s=90, c=[colors[k] for k in result.classes],
                   edgecolors="black", linewidths=0.8, zorder=3)
        ax.scatter([], [], marker="X", s=60, c="white", edgecolors="black", linewidths=0.8, label="class mean")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    kind = "template plane" if result.method == "template" else "centroid plane"
    ax.set_xlabel(f"{kind} axis 1 (feature units)")
    ax.set_ylabel(f"{kind} axis 2 (feature units)")
    if result.name:
        ax.set_title(literal(result.name))
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=1.3)
    return ax


def _same_classes(results, what: str) -> None:
    """DataError (one line) unless every result shows the same classes in the same order: a figure titles and
    keys its panels with one set of classes (resolve the classes once for all models, not per model)."""
    def shown(i, r) -> str:
        return f"{r.name or f'result {i}'}: {', '.join(str(n) for n in r.class_names)}"

    first = [int(c) for c in results[0].classes]
    for i, r in enumerate(results[1:], 1):
        if [int(c) for c in r.classes] != first:
            raise DataError(f"{what}: the panels show different classes ({shown(0, results[0])}; {shown(i, r)}); "
                            "expected the same classes for every model (choose them once for all models)")


def plot_projections(results, *, decision_regions: bool = False, split: str | None = None, panel_size=(4.2, 4.0)):
    """One panel per model with the same axis limits; returns the Figure."""
    results = check_results(results, ProjectionResult, "plot_projections")
    _same_classes(results, "plot_projections")
    limits = shared_limits(results)
    fig, axes = subplots(1, len(results), figsize=(panel_size[0] * len(results), panel_size[1]),
                         sharex=True, sharey=True, layout="constrained")
    for i, (r, ax) in enumerate(zip(results, axes[0])):
        plot_projection(r, ax, limits=limits, decision_regions=decision_regions, legend=(i == len(results) - 1))
        if i:
            ax.set_ylabel("")
    method = results[0].method
    extra = ", shaded: predicted class" if decision_regions and method == "template" else ""
    where = f" ({literal(split)})" if split else ""
    names = ", ".join(literal(c) for c in results[0].class_names)
    fig.suptitle(f"3-class projection, {method} method{where}: {names}{extra}")
    return fig


def plot_embedding(result, ax=None, *, point_size: float = 10, legend: bool = True):
    """Scatter of an :class:`~repanalysis.analyze.embed.EmbeddingResult`, one colour and marker per class;
    returns the Axes."""
    check_result(result, EmbeddingResult, "plot_embedding")
    _points(result)
    ax = get_ax(ax)
    _scatter_classes(ax, result, class_styles(result.classes), point_size, linewidths=0)
    name = "UMAP" if result.method == "umap" else "t-SNE"
    ax.set_xlabel(f"{name} 1 (a.u.)")
    ax.set_ylabel(f"{name} 2 (a.u.)")
    if result.name:
        ax.set_title(literal(result.name))
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=1.5)
    return ax


def plot_embeddings(results, panel_size=(4.2, 4.0), split: str | None = None):
    """One embedding panel per model (each with its own axes: UMAP/t-SNE scales are not comparable).
    split: the data split, named in the title when given."""
    results = check_results(results, EmbeddingResult, "plot_embeddings")
    _same_classes(results, "plot_embeddings")
    for r in results:
        _points(r)
    below = len(results[0].classes) > MAX_SIDE_LEGEND_CLASSES
    fig, axes = subplots(1, len(results), figsize=(panel_size[0] * len(results), panel_size[1]),
                         layout="constrained")
    for i, (r, ax) in enumerate(zip(results, axes[0])):
        plot_embedding(r, ax, legend=not below and i == len(results) - 1)
    if below:   # many classes: the key in columns under the panels, which keep their size
        handles = axes[0, 0].collections
        counts = [[int((r.labels == k).sum()) for k in r.classes] for r in results]
        labels = [f"{literal(name)} (n={', '.join(dict.fromkeys(str(c[j]) for c in counts))})"
                  for j, name in enumerate(results[0].class_names)]
        ncols = max(1, min(len(labels), int(panel_size[0] * len(results) // LEGEND_COLUMN_INCHES)))
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, markerscale=1.5)
        fig.set_size_inches(fig.get_size_inches()[0],
                            panel_size[1] + 0.2 * -(-len(labels) // ncols) + 0.3)   # room for the key's rows
    name = "UMAP" if results[0].method == "umap" else "t-SNE"
    where = f" ({literal(split)})" if split else ""
    fig.suptitle(f"{name} of penultimate features{where}, {len(results[0].labels)} samples of "
                 f"{len(results[0].classes)} classes (seed {results[0].seed})")
    return fig


def _split_label(split) -> str:
    """How a split is named in keys and titles: the split itself, or "unknown split" when it is None."""
    return UNKNOWN_SPLIT if split is None else str(split)


def _separation_title(splits: Sequence[str]) -> str:
    """Title of a separation figure: the splits and how they are drawn; no split named when it is unknown."""
    head = "Class separation of penultimate features per model"
    if len(splits) > 1:
        return head + ": " + " vs ".join(f"{literal(s)} ({'hatched' if j else 'plain'})" for j, s in enumerate(splits))
    return head if splits[0] == UNKNOWN_SPLIT else f"{head}: {literal(splits[0])} split"


def _spacing_need(ax, renderer, rotated: bool) -> float:
    """Inches by which ``ax`` must widen so that its x tick labels (one per unit of x) stand 4 points apart
    (level labels side by side, or labels rotated by ROTATION degrees, parallel slanted lines, one line height
    apart), and so do its value annotations; <= 0 when they already do."""
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    dpi = ax.figure.dpi
    gap = 4.0 * dpi / 72
    span = abs(np.diff(ax.get_xlim())[0])                     # x units (tick spacings) across the axes
    per_unit = ax.get_window_extent(renderer).width / span    # pixels between neighbouring ticks
    need = [_annotation_need(ax, renderer, gap, per_unit)]
    if len(labels) > 1 and rotated:
        line = 1.2 * max(t.get_fontsize() for t in labels) * dpi / 72
        need.append((line + gap) / np.sin(np.radians(ROTATION)) - per_unit)
    elif len(labels) > 1:
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        need.append(max(a.x1 + gap - b.x0 for a, b in zip(boxes[:-1], boxes[1:])))
    return max(need) * span / dpi


def _annotation_need(ax, renderer, gap: float, per_unit: float) -> float:
    """Pixels per x unit that ``ax`` lacks for its value annotations (one per bar) to stand ``gap`` apart."""
    notes = [t for t in ax.texts if t.get_text()]
    xs = np.unique([t.xy[0] for t in notes if hasattr(t, "xy")])
    if len(xs) < 2:
        return 0.0
    widest = max(t.get_window_extent(renderer).width for t in notes)
    return (widest + gap) / np.diff(xs).min() - per_unit


def _widen(fig, axes, renderer, rotated: bool, limit: float | None) -> None:
    """Widen a figure made here until the tick labels of every axes fit (:func:`_spacing_need`), but not past
    ``limit`` inches (None: no limit); tight_layout moves the axes, so each step is re-measured."""
    for _ in range(4):
        need = max(_spacing_need(ax, renderer, rotated) for ax in axes)
        width, height = fig.get_size_inches()
        if need <= 0 or (limit is not None and width + need * len(axes) > limit):
            return
        fig.set_size_inches(width + need * len(axes) + 0.1, height)
        fig.tight_layout()


def _fit_model_ticks(fig, axes, models: Sequence[str], own: bool) -> None:
    """Keep the model tick labels from overlapping, trying in turn: the names as they are; the names wrapped
    (:func:`wrap_name`), a figure made here widening up to MAX_PANEL_INCHES per panel for them; the names on
    one line rotated by ROTATION degrees in every panel, a figure made here growing until they stand apart.
    On the caller's axes nothing is resized: the caller sizes the figure."""
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    if own:
        legend = axes[-1].get_legend().get_window_extent(renderer).height / fig.dpi
        width, height = fig.get_size_inches()
        if legend + LEGEND_MARGIN_INCHES > height:   # many models: a figure as tall as the legend of their names
            fig.set_size_inches(width, legend + LEGEND_MARGIN_INCHES)
        fig.tight_layout()
    if max(_spacing_need(ax, renderer, rotated=False) for ax in axes) <= 0:
        return
    for ax in axes:
        ax.set_xticklabels([literal(wrap_name(m)) for m in models])
    if own:
        fig.tight_layout()
        _widen(fig, axes, renderer, rotated=False, limit=MAX_PANEL_INCHES * len(axes))
    if max(_spacing_need(ax, renderer, rotated=False) for ax in axes) <= 0:
        return
    level = _label_height(axes, renderer)
    for ax in axes:
        ax.set_xticklabels([literal(m) for m in models], rotation=ROTATION, ha="right", rotation_mode="anchor")
    if own:   # taller by what the slanted names add below the axes, then wide enough to keep them apart
        width, height = fig.get_size_inches()
        fig.set_size_inches(width, height + max(0.0, _label_height(axes, renderer) - level))
        fig.tight_layout()
        _widen(fig, axes, renderer, rotated=True, limit=None)


def _label_height(axes, renderer) -> float:
    """Height in inches of the tallest x tick label of ``axes``."""
    return max(t.get_window_extent(renderer).height for ax in axes for t in ax.get_xticklabels()) / axes[0].figure.dpi


def plot_separation_bars(results, axes=None, metrics: Sequence[str] = ("d_within", "r2"),
                         colors: dict[str, str] | None = None):
    """Bars of d_within and R^2 per model, train and val side by side (val hatched).

    results: SeparationResults with ``name`` (model) and ``split`` ("train", "val"/"test"); a second result of
    the same name and split is drawn as the model "<name> (2)", as in the table (:func:`separation_models`). axes: a
    sequence of one Axes per metric (None: a new figure). colors: the run's model colours. Returns the list
    of Axes.
    """
    results = check_results(results, SeparationResult, "plot_separation_bars")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise DataError("plot_separation_bars: no metric given; expected d_within, d_total or r2")
    for metric in metrics:
        if metric not in _METRIC_LABELS:
            raise DataError(f"plot_separation_bars: unknown metric {metric!r}; expected d_within, d_total or r2")
    if axes is not None:
        axes = [axes] if isinstance(axes, Axes) else axes
        many = isinstance(axes, (list, tuple, np.ndarray))
        if not many or len(axes) != len(metrics) or not all(isinstance(a, Axes) for a in axes):
            raise DataError(f"axes must be one matplotlib Axes per metric ({len(metrics)}); got "
                            f"{len(axes) if many else describe(axes)}")
    own = axes is None
    if own:
        fig, grid = subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8))
        axes = list(grid[0])
    shown = separation_models(results)     # the table's names: the same name and split twice is two models
    models = list(dict.fromkeys(shown))
    rank = {"train": 0, "val": 1, "test": 2}
    splits = sorted(dict.fromkeys(_split_label(r.split) for r in results), key=lambda s: rank.get(s, 3))
    colors = model_colors(models, colors)
    width = 0.8 / len(splits)
    labels = _METRIC_LABELS
    titles = {"d_within": r"Within-class distance $d_{within}$", "d_total": r"Total distance $d_{total}$",
              "r2": r"Class separation $R^2$"}
    for metric, ax in zip(metrics, axes):
        for r, m in zip(results, shown):
            i, j = models.index(m), splits.index(_split_label(r.split))
            x = i + (j - (len(splits) - 1) / 2) * width
            value = getattr(r, metric)
            ax.bar(x, value, width=width * 0.95, color=colors[m], edgecolor="black", linewidth=0.6,
                   hatch="//" if j else None, alpha=1.0 if j == 0 else 0.7)
            ax.annotate(f"{value:.3f}", (x, value), ha="center", va="bottom", fontsize=ANNOTATION_FONTSIZE,
                        xytext=(0, 1), textcoords="offset points")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([literal(m) for m in models])
        ax.set_ylabel(labels.get(metric, metric))
        ax.set_title(f"{titles.get(metric, metric)} per model")
        ax.set_xlabel("Model")
        ax.margins(y=0.12)
    handles = [Patch(facecolor=colors[m], edgecolor="black", label=literal(m)) for m in models]
    if len(splits) > 1:     # the plain / hatched key
        handles += [Patch(facecolor="white", edgecolor="black", hatch="//" if j else None, label=literal(s))
                    for j, s in enumerate(splits)]
    elif not own and splits[0] != UNKNOWN_SPLIT:   # one known split: in the title of a figure made here, else
        handles.append(Patch(facecolor="none", edgecolor="none", label=f"{literal(splits[0])} split"))  # legend
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if own:
        fig.suptitle(_separation_title(splits))
    _fit_model_ticks(axes[0].figure, axes, models, own)
    return axes


def plot_feature_norms(results, ax=None, norm: str = "l2", class_names: Sequence[str] | None = None,
                       split: str | None = None, colors: dict[str, str] | None = None):
    """Feature norm per class of each model (colour per model), from CollapseResults; returns the Axes.

    Up to MAX_BAR_CLASSES classes: mean (+/- std) bars per class, the class names level, or slanted and
    thinned where they would touch. More classes: per model its class means sorted from largest to smallest
    (a curve over the class rank, +/- std shaded), which reads the same at K = 100 or 1000.
    norm: "l2" or "l1". class_names: labels of the class indices (default: the indices). split: the data
    split, named in the title when given. colors: the run's model colours.
    """
    results = check_results(results, CollapseResult, "plot_feature_norms")
    if norm not in NORMS:
        raise DataError(f"plot_feature_norms: norm must be 'l2' or 'l1'; got {describe(norm)}")
    if isinstance(class_names, str):
        raise DataError(f"plot_feature_norms: class_names must be a list of names; got {describe(class_names)}")
    classes = sorted(set().union(*(r.classes.tolist() for r in results)))
    bars = len(classes) <= MAX_BAR_CLASSES
    own = check_ax(ax) is None
    size = (min(MAX_NORM_INCHES, max(5.0, 0.3 * len(classes) * len(results) + 2)), 3.8) if bars else (8.0, 3.8)
    ax = get_ax(ax, figsize=size)
    models = [r.name or f"model {i}" for i, r in enumerate(results)]
    colors = model_colors(models, colors)
    stats = [(r.norm_l2_mean, r.norm_l2_std) if norm == "l2" else (r.norm_l1_mean, r.norm_l1_std) for r in results]
    sizes = sorted({r.n_samples for r in results})
    where = f"{literal(split)} split, " if split else ""
    if bars:
        width = 0.8 / len(results)
        pos = {c: i for i, c in enumerate(classes)}
        for j, (r, m, (mean, std)) in enumerate(zip(results, models, stats)):
            x = np.array([pos[c] for c in r.classes.tolist()]) + (j - (len(results) - 1) / 2) * width
            ax.bar(x, mean, width=width * 0.95, yerr=std, color=colors[m], edgecolor="black", linewidth=0.5,
                   error_kw={"elinewidth": 0.8, "capsize": 2}, label=literal(m))
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels([literal(class_names[c]) if class_names and c < len(class_names) else str(c)
                            for c in classes])
        ax.set_xlabel("Class")
        ax.set_title(f"{norm.upper()} norm of penultimate features per class (mean ± std; {where}"
                     f"N = {', '.join(map(str, sizes))} samples)")
    else:
        for j, (m, (mean, std)) in enumerate(zip(models, stats)):
            mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
            order = np.argsort(-mean, kind="stable")
            rank = np.arange(1, mean.size + 1)
            ax.fill_between(rank, (mean - std)[order], (mean + std)[order], color=colors[m], alpha=0.12,
                            linewidth=0)
            ax.plot(rank, mean[order], color=colors[m], linewidth=1.6, label=literal(m),
                    marker=MODEL_MARKERS[j % len(MODEL_MARKERS)], markevery=max(1, mean.size // 10), markersize=4)
        ax.set_xlim(1, max(len(r.classes) for r in results))
        ax.set_xlabel(f"Class rank (classes sorted by mean {norm.upper()} norm, per model)")
        ax.set_title(f"{norm.upper()} norm of penultimate features, {len(classes)} classes sorted per model "
                     f"(mean ± std shaded; {where}N = {', '.join(map(str, sizes))} samples)")
    ax.set_ylabel(f"{norm.upper()} feature norm (feature units)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if bars:
        _fit_class_ticks(ax, own)
    return ax


def _fit_class_ticks(ax, own: bool) -> None:
    """Keep the class tick labels of a feature-norm bar chart apart: level when they fit (a figure made here
    widening up to MAX_NORM_INCHES for them), else slanted by ROTATION degrees, every n-th one shown when
    even slanted neighbours would touch."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    dpi, gap = fig.dpi, 4.0 * fig.dpi / 72
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    if len(labels) < 2:
        return

    def lacking() -> float:       # pixels by which the closest two level labels overlap (with the gap)
        fig.draw_without_rendering()                       # tick labels placed for the current size
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        return max(a.x1 + gap - b.x0 for a, b in zip(boxes[:-1], boxes[1:]))

    for _ in range(4):            # the axes take a share of the figure's width: widen, re-measure
        need = lacking()
        if need <= 0:
            return
        width, height = fig.get_size_inches()
        grow = need * len(labels) / (dpi * ax.get_position().width)
        if not own or width + grow > MAX_NORM_INCHES:
            break
        fig.set_size_inches(width + grow + 0.1, height)
    fig.draw_without_rendering()
    ticks = list(ax.get_xticks())
    texts = [t.get_text() for t in ax.get_xticklabels()]
    per_tick = ax.get_window_extent(renderer).width / abs(np.diff(ax.get_xlim())[0])
    line = 1.2 * max(t.get_fontsize() for t in labels) * dpi / 72
    step = max(1, int(np.ceil((line + gap) / (per_tick * np.sin(np.radians(ROTATION))))))
    ax.set_xticks(ticks[::step])
    ax.set_xticklabels(texts[::step], rotation=ROTATION, ha="right", rotation_mode="anchor")


__all__ = ["plot_feature_norms", "plot_projection", "plot_projections", "plot_embedding", "plot_embeddings",
           "plot_separation_bars", "shared_limits", "wrap_name"]

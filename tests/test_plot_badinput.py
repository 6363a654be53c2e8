"""Bad input to the plotting layer: one-line DataErrors naming what was wrong, never a raw matplotlib / numpy
exception, a silently mislabelled figure or a half-written set of figure files."""
from __future__ import annotations

import dataclasses

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from repanalysis.analyze.calibration import calibration_report
from repanalysis.analyze.cam import CamExample, LocalisationResult
from repanalysis.analyze.collapse import neural_collapse
from repanalysis.analyze.confidence import misclassification_scores, ood_detection
from repanalysis.analyze.embed import EmbeddingResult
from repanalysis.analyze.geometry import class_separation
from repanalysis.analyze.logits import logit_stats
from repanalysis.analyze.projection import project_classes
from repanalysis.errors import DataError
from repanalysis.plot import calibration as C
from repanalysis.plot import cam as M
from repanalysis.plot import geometry as G
from repanalysis.plot import logits as L
from repanalysis.plot.style import save_figure

K, D, N = 4, 8, 240
NAMES = ("CE", "LS")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _data(seed: int):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), N // K)
    means = rng.normal(0, 3, (K, D))
    h = (means[y] + rng.normal(0, 1, (N, D))).astype(np.float32)
    w = rng.normal(0, 1, (K, D)).astype(np.float32)
    b = rng.normal(0, 0.1, K).astype(np.float32)
    return h, y, w, b, h @ w.T + b


def _loc(name: str, seed: int) -> LocalisationResult:
    rng = np.random.default_rng(seed)
    region = np.zeros((8, 8), bool)
    region[2:6, 2:6] = True
    ex = [CamExample(name=f"img{i}.png", image=(rng.random((8, 8, 3)) * 255).astype(np.uint8),
                     cam=rng.random((8, 8)).astype(np.float16), region=region, boxes=np.array([[2, 2, 6, 6]]),
                     label=i, target=i, pred=i, precision=0.5, recall=0.5) for i in range(2)]
    n = 3
    return LocalisationResult(name=name, method="GradCAM", layer="conv", target_mode="label", threshold=0.5,
                              topk=None, sample_names=[f"img{i}.png" for i in range(n)], labels=np.arange(n),
                              targets=np.arange(n), preds=np.arange(n), precision=rng.random(n),
                              recall=rng.random(n), f1=rng.random(n), iou=rng.random(n), energy=rng.random(n),
                              pointing_hit=np.ones(n, bool), pr_area=rng.random(n), region_fraction=np.full(n, 0.25),
                              thresholds=np.linspace(0, 1, 5), pr_precision=np.linspace(1, 0.25, 5),
                              pr_recall=np.linspace(1, 0, 5), examples=ex)


@pytest.fixture(scope="module")
def R():
    """One list of valid Results of every kind (two models)."""
    out = {k: [] for k in ("cal", "mis", "ood", "log", "sep", "proj", "emb", "col", "loc")}
    for i, name in enumerate(NAMES):
        h, y, w, b, z = _data(i)
        out["cal"].append(calibration_report(z, y, name=name))
        out["mis"].append(misclassification_scores(z, y, h, name=name))
        out["ood"].append(ood_detection(z, z[:60] / 4, h, h[:60] / 4, name=name))
        out["log"].append(logit_stats(z, y, name=name))
        out["sep"].append(class_separation(h, y, name=name, split="test"))
        out["proj"].append(project_classes(h, y, [0, 1, 2], classifier_weight=w, classifier_bias=b,
                                           samples_per_class=20, class_names=["a", "b", "c", "d"], name=name))
        pick = np.arange(0, N, 4)
        out["emb"].append(EmbeddingResult(coords=h[pick, :2].astype(np.float64), labels=y[pick], sample_index=pick,
                                          classes=list(range(K)), class_names=list("abcd"), method="tsne", seed=0,
                                          name=name))
        out["col"].append(neural_collapse(h, y, classifier_weight=w, classifier_bias=b, name=name))
        out["loc"].append(_loc(name, i))
    return out


def _files(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _one_line(err) -> str:
    text = str(err.value)
    assert text and "\n" not in text, repr(text)
    return text


# --- 1, 2: save_figure and the figure sets -------------------------------------------------------------
def test_save_figure_removes_its_png_when_the_pdf_cannot_be_written(tmp_path):
    (tmp_path / "f.pdf").mkdir()
    fig = plt.figure()
    with pytest.raises(DataError, match=r"cannot write figure .*f\.pdf"):
        save_figure(fig, tmp_path / "f")
    assert _files(tmp_path) == ["f.pdf"]                 # the directory that was there; no f.png, no temp file


def test_save_figure_checks_formats_before_writing(tmp_path):
    fig = plt.figure()
    with pytest.raises(DataError, match=r"unsupported figure format 'bogus'.*expected one of .*png") as err:
        save_figure(fig, tmp_path / "f", formats=("png", "bogus"), close=False)
    _one_line(err)
    assert _files(tmp_path) == []
    assert [p.name for p in save_figure(fig, tmp_path / "f", formats="png")] == ["f.png"]   # one format, not p, n, g


def test_save_figure_into_an_unwritable_place_names_the_path(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    fig = plt.figure()
    for stem in (tmp_path / "file" / "f", tmp_path / "file" / "sub" / "f"):   # parent / grandparent a file
        with pytest.raises(DataError, match=r"cannot write figure .*file.*f\.png: ") as err:
            save_figure(fig, stem, close=False)
        _one_line(err)
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)               # a read-only folder (root ignores chmod)
    with pytest.raises(DataError, match=r"cannot write figure .*ro.*f\.png: Permission denied"):
        save_figure(fig, tmp_path / "ro" / "f")
    assert _files(tmp_path / "ro") == []


def test_save_figure_refuses_an_axes(tmp_path):
    ax = plt.figure().add_subplot()
    with pytest.raises(DataError, match=r"save_figure needs a matplotlib Figure; got an Axes \(pass ax.figure\)"):
        save_figure(ax, tmp_path / "f")
    assert _files(tmp_path) == []


def test_figure_sets_check_every_input_before_writing(R, tmp_path):
    out = tmp_path / "cal"
    with pytest.raises(DataError, match=r"ood: expected a list of OODResult .*CalibrationResult"):
        C.save_calibration_figures(out, calibration=R["cal"], ood=R["cal"])
    assert _files(out) == []
    with pytest.raises(DataError, match=r"expected a list of LogitStats .*item 1 is a CalibrationResult"):
        L.save_logit_figures([R["log"][0], R["cal"][0]], tmp_path / "log")
    with pytest.raises(DataError, match=r"no results to plot; expected one LogitStats per model"):
        L.save_logit_figures([], tmp_path / "log")
    assert _files(tmp_path / "log") == []


def test_figure_sets_remove_their_files_when_a_later_figure_fails(R, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise DataError("broken on purpose")

    monkeypatch.setattr(L, "ls_split_figure", broken)             # the third of three figures
    with pytest.raises(DataError, match="broken on purpose"):
        L.save_logit_figures(R["log"], tmp_path / "log")
    assert _files(tmp_path / "log") == []
    monkeypatch.setattr(C, "roc_figure", broken)                  # the last of five figures
    with pytest.raises(DataError, match="broken on purpose"):
        C.save_calibration_figures(tmp_path / "cal", calibration=R["cal"], ood=R["ood"])
    assert _files(tmp_path / "cal") == []


# --- 3: empty lists -----------------------------------------------------------------------------------------
EMPTY = [
    (C.reliability_figure, "CalibrationResult"), (C.plot_confidence_histograms, "CalibrationResult"),
    (C.nci_figure, "MisclassificationResult"), (C.roc_figure, "OODResult"),
    (L.logit_analysis_figure, "LogitStats"), (L.plot_near_zero_comparison, "LogitStats"),
    (L.plot_logit_kde, "LogitStats"), (L.comparison_figure, "LogitStats"), (L.plot_error_enhancement, "LogitStats"),
    (L.plot_ls_split, "LogitStats"), (L.ls_split_figure, "LogitStats"),
    (G.plot_projections, "ProjectionResult"), (G.plot_embeddings, "EmbeddingResult"),
    (G.plot_separation_bars, "SeparationResult"), (G.plot_feature_norms, "CollapseResult"),
    (G.shared_limits, "ProjectionResult"), (M.plot_cam_grid, "LocalisationResult"),
    (M.plot_pr_curves, "LocalisationResult"),
]


@pytest.mark.parametrize("fn, kind", EMPTY, ids=[f.__name__ for f, _ in EMPTY])
def test_empty_result_lists_are_refused(fn, kind):
    with pytest.raises(DataError, match=rf"no results to plot; expected one {kind}") as err:
        fn([])
    _one_line(err)
    assert not plt.get_fignums()                                    # no figure drawn before the check


# --- 4: wrong kinds, containers and axes ---------------------------------------------------------------------
WRONG = [  # (function, key of the wrong results, expected kind)
    (C.reliability_figure, "log", "CalibrationResult"), (C.plot_reliability, "ood", "CalibrationResult"),
    (C.plot_confidence_histograms, "mis", "CalibrationResult"), (C.plot_nci_scatter, "cal", "MisclassificationResult"),
    (C.nci_figure, "ood", "MisclassificationResult"), (C.plot_roc, "mis", "OODResult"),
    (C.roc_figure, "cal", "OODResult"),
    (L.plot_near_zero_hist, "cal", "LogitStats"), (L.plot_top1_vs_near_zero, "cal", "LogitStats"),
    (L.logit_analysis_figure, "cal", "LogitStats"), (L.plot_near_zero_comparison, "cal", "LogitStats"),
    (L.plot_logit_kde, "cal", "LogitStats"), (L.plot_error_enhancement, "cal", "LogitStats"),
    (L.plot_ls_split, "cal", "LogitStats"), (L.save_logit_figures, "cal", "LogitStats"),
    (G.plot_projection, "emb", "ProjectionResult"), (G.plot_projections, "emb", "ProjectionResult"),
    (G.plot_embedding, "proj", "EmbeddingResult"), (G.plot_embeddings, "proj", "EmbeddingResult"),
    (G.plot_separation_bars, "col", "SeparationResult"), (G.plot_feature_norms, "sep", "CollapseResult"),
    (M.plot_cam_grid, "cal", "LocalisationResult"), (M.plot_pr_curves, "proj", "LocalisationResult"),
    (M.plot_cam_overlay, "loc", "CamExample"),
]


@pytest.mark.parametrize("fn, key, kind", WRONG, ids=[f"{f.__name__}-{k}" for f, k, _ in WRONG])
def test_a_result_of_another_kind_is_refused(R, tmp_path, fn, key, kind):
    arg = R[key][0] if fn.__name__.startswith("plot_") and not fn.__name__.endswith("s") else R[key]
    args = (tmp_path,) if fn is L.save_logit_figures else ()
    with pytest.raises(DataError, match=rf"expected (a|an|a list of) {kind}") as err:
        fn(arg, *args)
    _one_line(err)
    assert _files(tmp_path) == []


def test_a_generator_or_other_container_is_refused(R):
    with pytest.raises(DataError, match=r"expected a list of LogitStats .*got a generator"):
        L.plot_logit_kde(r for r in R["log"])
    with pytest.raises(DataError, match=r"expected a list of ProjectionResult .*got a dict"):
        G.plot_projections({"CE": R["proj"][0]})
    with pytest.raises(DataError, match=r"expected a ProjectionResult; got a list"):
        G.plot_projection(R["proj"])


SINGLE = [(G.plot_projections, "proj"), (G.plot_embeddings, "emb"), (G.plot_separation_bars, "sep"),
          (G.plot_feature_norms, "col"), (M.plot_pr_curves, "loc"), (M.plot_cam_grid, "loc")]


@pytest.mark.parametrize("fn, key", SINGLE, ids=[f.__name__ for f, _ in SINGLE])
def test_a_single_result_is_a_one_element_list(R, fn, key):
    def texts(out):
        fig = out if isinstance(out, matplotlib.figure.Figure) else np.ravel(out)[0].figure
        return sorted(t.get_text() for t in fig.findobj(matplotlib.text.Text))

    assert texts(fn(R[key][0])) == texts(fn([R[key][0]]))


@pytest.mark.parametrize("ax", ["x", 5, "figure"])
def test_ax_of_the_wrong_type_is_refused(R, ax):
    if ax == "figure":
        ax = plt.figure()
    calls = [lambda: C.plot_reliability(R["cal"][0], ax=ax), lambda: C.plot_reliability(R["cal"][0], count_ax=ax),
             lambda: C.plot_confidence_histograms(R["cal"], ax=ax), lambda: L.plot_logit_kde(R["log"], ax=ax),
             lambda: G.plot_projection(R["proj"][0], ax), lambda: G.plot_feature_norms(R["col"], ax=ax),
             lambda: G.plot_separation_bars(R["sep"], axes=ax), lambda: M.plot_pr_curves(R["loc"], ax=ax),
             lambda: M.plot_cam_overlay(R["loc"][0].examples[0], ax)]
    for call in calls:
        with pytest.raises(DataError, match=r"ax(es)? must be (a matplotlib Axes|one matplotlib Axes)") as err:
            call()
        _one_line(err)


def test_separation_bars_need_one_axes_per_known_metric(R):
    _, axes = plt.subplots(1, 1)
    with pytest.raises(DataError, match=r"axes must be one matplotlib Axes per metric \(2\); got 1"):
        G.plot_separation_bars(R["sep"], axes=[axes])
    with pytest.raises(DataError, match=r"unknown metric 'nc1'; expected d_within, d_total or r2"):
        G.plot_separation_bars(R["sep"], metrics=("d_within", "nc1"))


# --- 5: options --------------------------------------------------------------------------------------------
def test_feature_norms_refuse_an_unknown_norm(R):
    with pytest.raises(DataError, match=r"norm must be 'l2' or 'l1'; got 'l3'") as err:
        G.plot_feature_norms(R["col"], norm="l3")
    _one_line(err)
    assert not plt.get_fignums()


def test_limits_bins_and_cam_shapes_are_checked(R):
    with pytest.raises(DataError, match=r"plot_projection: each of limits must be a finite number; got nan"):
        G.plot_projection(R["proj"][0], limits=((0, 1), (0, float("nan"))))
    with pytest.raises(DataError, match=r"plot_projection: limits must be \(\(xmin, xmax\), \(ymin, ymax\)\)"):
        G.plot_projection(R["proj"][0], limits=(0, 1))
    for fn in (L.plot_near_zero_comparison, L.plot_error_enhancement, L.logit_analysis_figure):
        with pytest.raises(DataError, match=r"bins must be an integer >= 1; got 0"):
            fn(R["log"], bins=0)
    flat = dataclasses.replace(R["loc"][0].examples[0], cam=np.zeros(8))
    with pytest.raises(DataError, match=r"img0.png: cam must be 2-D \[H, W\]; got shape \(8,\)"):
        M.plot_cam_overlay(flat)
    assert not plt.get_fignums()


# --- 6: NaN values -----------------------------------------------------------------------------------------
def _with_nan(result, field, index=0):
    value = np.array(getattr(result, field), dtype=np.float64, copy=True)
    value.reshape(-1)[index] = np.nan
    return dataclasses.replace(result, **{field: value})


def test_near_zero_histograms_draw_the_finite_values(R):
    r = _with_nan(R["log"][0], "near_zero_fraction")
    ax = L.plot_near_zero_hist(r)
    assert sum(p.get_height() for p in ax.patches) == r.num_samples - 1
    ax = L.plot_near_zero_comparison([r, R["log"][1]])
    assert all(np.isfinite(ax.get_xlim()))
    L.logit_analysis_figure([r, R["log"][1]])
    nan = dataclasses.replace(r, near_zero_fraction=np.full(r.num_samples, np.nan))
    for fn in (L.plot_near_zero_hist, L.plot_near_zero_comparison):
        with pytest.raises(DataError, match=r"CE: every near_zero_fraction value is NaN or infinite") as err:
            fn(nan)
        _one_line(err)


def test_logit_kde_with_a_nan_range_uses_the_finite_ranges(R):
    r = dataclasses.replace(R["log"][0], kde_range=(float("nan"), 4.0))
    ax = L.plot_logit_kde([r, R["log"][1]])
    assert ax.get_xlim() == (R["log"][1].kde_range[0], max(4.0, R["log"][1].kde_range[1]))
    with pytest.raises(DataError, match=r"CE: every kde_range value is NaN or infinite"):
        L.plot_logit_kde([dataclasses.replace(r, kde_range=(float("nan"), float("nan")))])


def test_error_enhancement_ignores_nan_values(R):
    r = R["log"][0]
    wrong = np.flatnonzero(~r.correct)
    r = _with_nan(r, "ls_error_enhancement", wrong[0])
    ax = L.plot_error_enhancement([r])
    assert f"(n={wrong.size - 1}," in ax.get_legend().get_texts()[0].get_text()


def test_projection_with_a_nan_point_draws_the_others(R):
    r = _with_nan(R["proj"][0], "coords", 0)
    (x0, x1), (y0, y1) = G.shared_limits([r, R["proj"][1]])
    assert np.isfinite([x0, x1, y0, y1]).all()
    ax = G.plot_projection(r, decision_regions=True)
    assert np.isfinite(ax.get_xlim()).all() and np.isfinite(ax.get_ylim()).all()
    first = r.class_names[0]
    assert f"{first} (n=19)" in [t.get_text() for t in ax.get_legend().get_texts()]
    G.plot_projections([r, R["proj"][1]])
    nan = dataclasses.replace(r, coords=np.full_like(r.coords, np.nan))
    with pytest.raises(DataError, match=r"CE: every coords value is NaN or infinite") as err:
        G.plot_projection(nan)
    _one_line(err)


# --- 7: names are text, never mathtext -----------------------------------------------------------------------
def _literal(text_artist, expected):
    shown, is_math = text_artist._preprocess_math(text_artist.get_text())
    assert not is_math and shown == expected, (shown, is_math)


def test_dollar_signs_in_names_are_drawn_literally(R, tmp_path):
    name = "cost $5 and $6"
    log = [dataclasses.replace(r, name=name if i == 0 else r"a$\frac$b") for i, r in enumerate(R["log"])]
    ax = L.plot_near_zero_hist(log[0])
    _literal(ax.title, f"{name}: Fraction of logits with |z| < 0.01 (N={log[0].num_samples})")
    written = L.save_logit_figures(log, tmp_path)                     # 'a$\frac$b' made mathtext fail
    assert len(written) == 6
    ax = C.plot_reliability(dataclasses.replace(R["cal"][0], name=name))
    _literal(ax.get_legend().get_texts()[0], f"{name}: accuracy (ECE {100 * R['cal'][0].ece:.2f}%)")
    proj = dataclasses.replace(R["proj"][0], name=name, class_names=["$x$", "b", "c"])
    ax = G.plot_projection(proj)
    _literal(ax.title, name)
    _literal(ax.get_legend().get_texts()[0], "$x$ (n=20)")
    axes = G.plot_separation_bars([dataclasses.replace(R["sep"][0], name=name)])
    _literal(axes[0].get_xticklabels()[0], name)
    ax = G.plot_feature_norms([dataclasses.replace(R["col"][0], name=name)], class_names=["$a$", "b", "c", "d"])
    _literal(ax.get_xticklabels()[0], "$a$")
    fig = M.plot_cam_grid([dataclasses.replace(R["loc"][0], name=name)], class_names=["$a$", "b"])
    _literal(fig.axes[0].yaxis.label, name)
    save_figure(fig, tmp_path / "cam")


# --- 8: Grad-CAM grid -----------------------------------------------------------------------------------------
def test_cam_grid_bad_input_is_a_data_error(R):
    with pytest.raises(DataError, match=r"no results to plot"):
        M.plot_cam_grid([])
    none_kept = dataclasses.replace(R["loc"][0], examples=[])
    with pytest.raises(DataError, match=r"the results kept no images in common") as err:
        M.plot_cam_grid([none_kept])
    _one_line(err)
    with pytest.raises(DataError, match=r"max_images must be an integer >= 1; got 0"):
        M.plot_cam_grid(R["loc"], max_images=0)

"""Figure style: PNG + PDF written atomically, PDFs without a creation date (same figure, same bytes); model
colours fixed by name for a run, class and gap colours outside the model palette, legends off the data."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from repanalysis.plot.style import save_figure


def test_save_figure_writes_png_and_reproducible_pdf(tmp_path):
    digests = []
    for _ in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0], label="CE")
        ax.legend()
        png, pdf = save_figure(fig, tmp_path / "f")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
        assert b"/CreationDate" not in pdf.read_bytes()
        digests.append((png.read_bytes(), pdf.read_bytes()))
    assert digests[0] == digests[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]     # no temporary files left


# --- colours -------------------------------------------------------------------------------------------
def test_model_colours_are_stable_by_name_across_a_subset(monkeypatch, tmp_path):
    import matplotlib.colors as mcolors
    import torch

    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.analyze.confidence import ood_detection
    from repanalysis.plot import calibration as P
    from repanalysis.plot.style import MODEL_COLORS, model_colors

    run = model_colors(["CE", "LS", "MaxSup", "LogitPenalty"])
    assert model_colors(["MaxSup"], run)["MaxSup"] == run["MaxSup"] == MODEL_COLORS[2]
    assert model_colors(["LS", "new"], run)["new"] not in run.values()          # a newcomer gets a free colour
    assert len(set(run.values())) == 4

    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (300,), generator=g)
    cal = [calibration_report(z * s, y, name=n) for n, s in (("CE", 1.0), ("LS", 0.5), ("MaxSup", 0.3))]
    cal.insert(2, calibration_report(z, y, name="LS +TS"))
    ood = [ood_detection(z * s, z[:100] / 3, name=n) for n, s in (("LS", 0.5), ("MaxSup", 0.3))]  # no CE
    figures = {}
    monkeypatch.setattr(P, "save_figure", lambda fig, stem: figures.setdefault(stem.name, fig) and [])
    P.save_calibration_figures(tmp_path, calibration=cal, ood=ood)
    for ax, name in zip([a for a in figures["ood_roc"].axes if a.get_lines()], ("LS", "MaxSup")):
        assert mcolors.to_hex(ax.get_lines()[0].get_color()) == run[name].lower(), name   # not CE's blue for LS
    hist = figures["confidence_hist"].axes[0]
    labels = [t.get_text().split(" (")[0] for t in hist.get_legend().get_texts()]
    assert mcolors.to_hex(hist.patches[labels.index("LS +TS")].get_edgecolor()) == run["LS"].lower()


def test_class_and_gap_colours_are_not_model_colours():
    from repanalysis.plot import calibration as P
    from repanalysis.plot.style import CLASS_COLORS, MODEL_COLORS, class_styles

    models = {c.lower() for c in MODEL_COLORS}
    assert not models & {c.lower() for c in CLASS_COLORS}
    assert not models & {P.OVER_COLOR.lower(), P.WRONG_COLOR.lower(), P.CORRECT_COLOR.lower()}
    styles = class_styles(range(40))
    assert len(set(styles.values())) == 40                                          # (colour, marker) unique
    assert len({m for _, m in list(styles.values())[:10]}) == 10                   # 10 digits: 10 markers


def test_embedding_marks_each_class_with_its_own_marker_and_colour():
    import numpy as np

    from repanalysis.analyze.embed import EmbeddingResult
    from repanalysis.plot.geometry import plot_embedding

    labels = np.repeat(np.arange(10), 5)
    r = EmbeddingResult(coords=np.random.default_rng(0).normal(size=(50, 2)), labels=labels,
                        sample_index=np.arange(50), classes=list(range(10)), class_names=[str(i) for i in range(10)],
                        method="umap", seed=0, name="CE")
    ax = plot_embedding(r)
    paths = {c.get_paths()[0].vertices.tobytes() for c in ax.collections}
    colours = {tuple(c.get_facecolor()[0][:3].round(3)) for c in ax.collections}
    assert len(paths) == 10 and len(colours) == 10
    assert {f"{i} (n=5)" for i in range(10)} == {t.get_text() for t in ax.get_legend().get_texts()}
    plt.close(ax.figure)


# --- layout --------------------------------------------------------------------------------------------
def test_reliability_legend_above_the_data_and_ts_panel_under_its_model():
    import torch

    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.plot import calibration as P

    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (300,), generator=g)
    cal = [calibration_report(z * s, y, name=n) for n, s in (("CE", 3), ("CE +TS", 2), ("LS", 1), ("LS +TS", 2))]
    fig = P.reliability_figure(cal)
    fig.canvas.draw()
    diagrams = {a.get_title().split(" (")[0]: a for a in fig.axes if a.get_legend() is not None}
    assert set(diagrams) == {"CE", "CE +TS", "LS", "LS +TS"}
    for ax in diagrams.values():
        assert ax.get_legend().get_window_extent().y0 >= ax.get_window_extent().y1   # never on the bars
        assert "ECE" in ax.get_legend().get_texts()[0].get_text()
        assert ax.get_xlabel() == ""                                                  # on the count panel
    for name in ("CE", "LS"):   # +TS straight under its own model
        assert diagrams[name + " +TS"].get_position().x0 == pytest.approx(diagrams[name].get_position().x0)
        assert diagrams[name + " +TS"].get_position().y0 < diagrams[name].get_position().y0
    counts = [a for a in fig.axes if a.get_legend() is None and a.get_visible()]
    assert all(a.get_xlabel() and any(t.get_visible() and t.get_text() for t in a.get_xticklabels())
               for a in counts)
    plt.close(fig)


def test_pr_curves_draw_one_grey_baseline_when_box_shares_agree():
    import numpy as np

    from repanalysis.analyze.cam import LocalisationResult
    from repanalysis.plot.cam import plot_pr_curves
    from repanalysis.plot.style import NEUTRAL

    def res(name, share):
        one, t = np.array([0.5]), np.linspace(0, 1, 5)
        return LocalisationResult(name=name, method="GradCAM", layer="conv", target_mode="label", threshold=0.5,
                                  topk=None, sample_names=["a.png"], labels=np.zeros(1, int), targets=np.zeros(1, int),
                                  preds=np.zeros(1, int), precision=one, recall=one, f1=one, iou=one, energy=one,
                                  pointing_hit=np.ones(1, bool), pr_area=one, region_fraction=np.array([share]),
                                  thresholds=t, pr_precision=np.linspace(1, share, 5), pr_recall=t)

    ax = plot_pr_curves([res("CE", 0.3), res("LS", 0.3), res("MaxSup", 0.3)])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1] == "box share (0.300)" and len(labels) == 4
    assert ax.get_lines()[-1].get_color() == NEUTRAL and "CAM precision-recall" in ax.get_title()
    plt.close(ax.figure)
    ax = plot_pr_curves([res("CE", 0.3), res("LS", 0.4)])
    assert [t.get_text() for t in ax.get_legend().get_texts()][2:] == ["CE box share (0.300)", "LS box share (0.400)"]
    plt.close(ax.figure)


def test_one_font_size_per_role_across_families():
    from repanalysis.plot.style import STYLE, apply_style

    apply_style()
    import matplotlib

    for key in ("axes.titlesize", "legend.fontsize", "axes.labelsize", "figure.titlesize"):
        assert matplotlib.rcParams[key] == STYLE[key]
    from pathlib import Path

    for path in (Path(__file__).parents[1] / "repanalysis" / "plot").glob("*.py"):   # no per-call overrides
        text = path.read_text()
        assert 'fontsize="small"' not in text and "fontsize=7" not in text and "fontsize=9" not in text, path

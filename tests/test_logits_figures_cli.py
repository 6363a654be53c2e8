"""Logit figures, the `analyze-logits` command and the demo step."""
from __future__ import annotations

import json
import warnings

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch

import repanalysis  # noqa: F401  (compat fix before anything else)
from repanalysis.analyze.logits import logit_stats
from repanalysis.extract.store import Dump
from repanalysis.plot import logits as plots
from _cli import run_cli as _cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _toy(seed: int, scale: float, n: int = 400, k: int = 8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(0, scale, (n, k))
    z[np.arange(n), y] += 2 * scale
    z[rng.random((n, k)) < 0.2] *= 1e-3
    return z.astype(np.float32), y


@pytest.fixture(scope="module")
def results():
    out = []
    for name, seed, scale in (("CE", 0, 3.0), ("LS", 1, 1.0)):
        z, y = _toy(seed, scale)
        out.append(logit_stats(z, y, name=name))
    return out


def test_seed_figure_panels(results):
    fig = plots.logit_analysis_figure(results)
    axes = fig.axes
    assert len(axes) == 4
    for row, r in enumerate(results):
        hist_ax, scatter_ax = axes[2 * row], axes[2 * row + 1]
        bars = hist_ax.patches
        assert len(bars) == 50
        assert all(mcolors.to_hex(b.get_edgecolor()) == "#000000" for b in bars)
        assert sum(b.get_height() for b in bars) == r.num_samples
        np.testing.assert_allclose(scatter_ax.collections[0].get_offsets(),
                                   np.column_stack([r.top1_prob, r.near_zero_fraction]))
        assert r.name in hist_ax.get_title() and "0.01" in hist_ax.get_title()
        assert scatter_ax.get_xlabel().startswith("Top-1 probability")
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_comparison_and_ls_split_axes(results):
    import matplotlib.pyplot as plt

    ax = plots.plot_near_zero_comparison(results)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("CE (mean") and labels[1].startswith("LS (mean")
    # K = 8 < 50 bins: one bin per value j/K, heights are shares of samples summing to 1
    heights = ax.patches[0].get_path().vertices[:, 1]
    assert heights.max() <= 1 and ax.get_ylabel() == "Share of samples"
    # the bin of 0 is whole ([-1/2K, 1/2K] in view), the ticks sit on values j/K >= 0
    xs = ax.patches[0].get_path().vertices[:, 0]
    assert ax.get_xlim()[0] == pytest.approx(-0.5 / 8) and xs.min() == pytest.approx(-0.5 / 8)
    ticks = ax.get_xticks()
    assert ticks.min() == 0 and np.allclose(ticks * 8, np.round(ticks * 8))
    plt.close(ax.figure)

    ax = plots.plot_logit_kde(results)
    for line, r in zip(ax.get_lines(), results):
        np.testing.assert_allclose(line.get_xdata(), r.kde_x)
        np.testing.assert_allclose(line.get_ydata(), r.kde_density)
    assert ax.get_xlim() == (-4.0, 4.0)
    plt.close(ax.figure)

    ax = plots.plot_error_enhancement(results)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for r, label in zip(results, labels):
        assert label.startswith(f"{r.name} (n={int((~r.correct).sum())},")
    plt.close(ax.figure)

    ax = plots.plot_ls_split(results)
    heights = [p.get_height() for p in ax.patches]
    assert heights[:4] == pytest.approx([results[0].mean(k) for k in
                                         ("ls_regularization", "ls_error_enhancement", "ls_loss", "maxsup_penalty")])
    plt.close(ax.figure)


def test_error_enhancement_without_errors():
    import matplotlib.pyplot as plt

    z = np.eye(4) * 5
    r = logit_stats(z, np.arange(4), name="perfect")
    ax = plots.plot_error_enhancement([r])
    assert "no misclassified samples" in ax.get_legend().get_texts()[0].get_text()
    plt.close(ax.figure)


# --- CLI --------------------------------------------------------------------------------------------


@pytest.fixture()
def seed_files(tmp_path):
    paths = []
    for name, seed, scale in (("ce", 0, 3.0), ("ls", 1, 1.0)):
        z, y = _toy(seed, scale, n=300, k=6)
        paths.append(str(Dump.from_arrays(z, y, name=name).save(tmp_path / f"{name}.pt").path))
    return paths


def test_cli_table_json_and_files(tmp_path, seed_files, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    out = tmp_path / "out"
    code, stdout, stderr = _cli(["analyze-logits", *seed_files, "--names", "CE,LS", "--out", str(out),
                                 "--threshold", "0.001", "--alpha", "0.2"], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split() == ["model", "N", "accuracy", "near-zero", "top-1", "prob", "logit", "range", "EE",
                                "active", "EE", "share"]
    assert lines[2].startswith("CE") and lines[3].startswith("LS")
    data = json.loads((out / "logit_stats.json").read_text())
    assert data["threshold"] == 0.001 and data["alpha"] == 0.2
    z, y = _toy(0, 3.0, n=300, k=6)
    ref = logit_stats(z, y, threshold=0.001, alpha=0.2)
    assert data["models"][0]["accuracy"] == pytest.approx(ref.accuracy)
    assert data["models"][0]["statistics"]["near_zero_fraction"]["mean"] == pytest.approx(
        ref.mean("near_zero_fraction"))
    for stem in ("logit_analysis", "logit_comparison", "ls_split"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
        assert f"wrote {out / stem}.png" in stderr
    # figures are checked above; skip drawing them again
    monkeypatch.setattr(plots, "save_logit_figures", lambda results, out: [])
    code, stdout, _ = _cli(["analyze-logits", seed_files[0], "--out", str(out), "--json",
                            "--kde-range=-2,2", "--kde-samples", "50"], capsys)
    assert code == 0
    payload = json.loads(stdout)
    assert payload["models"][0]["name"] == "ce" and payload["models"][0]["kde"]["range"] == [-2.0, 2.0]
    assert payload["models"][0]["kde"]["samples"] == 50


def test_cli_bad_input(tmp_path, seed_files, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    nologits = tmp_path / "nologits.pt"
    torch.save({"labels": torch.zeros(3, dtype=torch.long)}, nologits)
    out = str(tmp_path / "o")
    cases = [
        ([str(nologits)], "has no 'logits' entry"),
        ([seed_files[0], "--threshold", "-0.5"], "near-zero threshold must be a finite number >= 0; got -0.5"),
        ([seed_files[0], "--names", "a,b"], "--names has 2 names but 1 inputs"),
        ([seed_files[0], "--kde-range", "x"], "--kde-range must be two numbers LO,HI"),
        ([seed_files[0], seed_files[0]], "two inputs are named 'ce'"),
    ]
    bad_labels = Dump.from_arrays(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 3])).save(tmp_path / "bl.pt")
    cases.append(([str(bad_labels.path)], "labels must lie in [0, 2] for 3 classes; found values in [0, 3]"))
    for args, message in cases:
        code, _, stderr = _cli(["analyze-logits", *args, "--out", out], capsys)
        assert code == 2, (args, stderr)
        assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1, stderr


def test_cli_nan_rows_warn_and_continue(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(plots, "save_logit_figures", lambda results, out: [])  # drawn in other tests
    z, y = _toy(2, 2.0, n=50, k=5)
    z[[3, 7]] = np.nan
    path = Dump.from_arrays(z, y, name="nan").save(tmp_path / "nan.pt").path
    with pytest.warns(RuntimeWarning, match="nan: 2 of 50 samples have NaN or inf logits; they are excluded"):
        code, stdout, stderr = _cli(["analyze-logits", str(path), "--out", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0, stderr
    assert json.loads(stdout)["models"][0]["num_excluded_nonfinite"] == 2


# --- demo step ---------------------------------------------------------------------------------------
def test_demo_step(tmp_path):
    from repanalysis.demo import DemoContext, discover_steps
    from repanalysis.demo.steps import logits as step

    assert step in discover_steps() and step.ORDER == 20
    dumps = {}
    for name, seed, scale in (("CE", 0, 3.0), ("LS", 1, 1.0), ("MaxSup", 2, 2.0)):
        z, y = _toy(seed, scale, n=200, k=10)
        dumps[name] = {"train": Dump.from_arrays(z, y, name=name), "test": Dump.from_arrays(z, y, name=name)}
    logs = []
    ctx = DemoContext(out=tmp_path, checkpoints={n: tmp_path / n for n in dumps}, dumps=dumps, data={},
                      class_names=[str(i) for i in range(10)], device="cpu", log=logs.append)
    step.run(ctx)
    assert (tmp_path / "logits" / "logit_analysis.png").exists()
    data = json.loads((tmp_path / "logits" / "logit_stats.json").read_text())
    assert [m["name"] for m in data["models"]] == ["CE", "LS", "MaxSup"]
    assert any("MaxSup" in line for line in logs)

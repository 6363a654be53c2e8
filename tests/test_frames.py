"""``.to_frame()`` of every Result and ``results_frame``: tidy rows whose values are the Result's own numbers,
on real small CNNs trained on MNIST digits (tests/conftest.py)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import repanalysis as ra
from repanalysis.analyze.frames import results_frame
from repanalysis.errors import DataError
from repanalysis.frames import tidy_frame

MODELS = ("CE", "LS", "MaxSup")


def _value(frame, metric, **where):
    """The single value of ``metric`` (and the context columns in ``where``) in a tidy frame."""
    sel = frame[frame["metric"] == metric]
    for col, val in where.items():
        sel = sel[sel[col].isna()] if val is None else sel[sel[col] == val]
    assert len(sel) == 1, (metric, where, sel)
    return sel.iloc[0]


def _same(a, b):
    """Equal floats, NaN equal to NaN (a metric that does not apply)."""
    a, b = (math.nan if a is None else float(a)), (math.nan if b is None else float(b))
    return (math.isnan(a) and math.isnan(b)) or a == b


def _check_stacked(results, frames, per_model: int):
    """results_frame stacks the frames in order: models x metrics rows, one model block after the other."""
    df = results_frame(results)
    assert len(df) == len(results) * per_model
    assert df["model"].tolist() == [m for f in frames for m in f["model"]]
    assert list(df.index) == list(range(len(df)))
    np.testing.assert_array_equal(df["value"].to_numpy(), np.concatenate([f["value"].to_numpy() for f in frames]))
    return df


def test_logit_stats_frame(real_dumps):
    from repanalysis.analyze.logits import PER_SAMPLE_STATS, compare_logits

    results = compare_logits([real_dumps[m]["test"] for m in MODELS], kde_samples=100)
    frames = [r.to_frame() for r in results]
    metrics = ["accuracy", *PER_SAMPLE_STATS, "ee_active_fraction", "ee_mean_active", "ee_loss_share"]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "metric", "value", "n"]
        assert f["metric"].tolist() == metrics and set(f["model"]) == {r.name}
        assert (f["n"] == r.num_samples).all() and r.num_samples == real_dumps[r.name]["test"].num_samples
        assert _value(f, "accuracy")["value"] == r.accuracy
        assert _value(f, "ee_active_fraction")["value"] == r.ee_active_fraction
        assert _same(_value(f, "ee_mean_active")["value"], r.ee_mean_active)
        assert _same(_value(f, "ee_loss_share")["value"], r.ee_loss_share)
        for s in PER_SAMPLE_STATS:
            assert _value(f, s)["value"] == pytest.approx(np.mean(getattr(r, s), dtype=np.float64), rel=1e-12)
        # the accuracy is the model's own: argmax of the Dump's logits against its labels
        d = real_dumps[r.name]["test"]
        assert _value(f, "accuracy")["value"] == pytest.approx(float((d.logits.argmax(1) == d.labels).mean()))
    df = _check_stacked(results, frames, len(metrics))
    assert df.groupby("model", sort=False).size().to_dict() == {m: len(metrics) for m in MODELS}


def test_separation_frame_keeps_split(real_dumps):
    from repanalysis.analyze.geometry import class_separation

    results = [class_separation(real_dumps[m][split], name=m, split=split) for m in MODELS
               for split in ("train", "test")]
    frames = [r.to_frame() for r in results]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "split", "metric", "value", "n"]
        assert f["metric"].tolist() == ["d_within", "d_total", "r2"]
        assert set(f["split"]) == {r.split} and (f["n"] == r.n_samples).all()
        for key in ("d_within", "d_total", "r2"):
            assert _value(f, key)["value"] == getattr(r, key)
        assert 0 < r.d_within < r.d_total and r.r2 == pytest.approx(1 - r.d_within / r.d_total)
    df = _check_stacked(results, frames, 3)
    wide = df.pivot_table(index="model", columns=["metric", "split"], values="value")
    assert wide.loc["LS", ("r2", "test")] == results[3].r2


def test_calibration_frame_has_the_bootstrap_intervals(real_dumps):
    from repanalysis.analyze.calibration import SCALARS, calibrate_dumps

    results = calibrate_dumps([real_dumps[m]["test"] for m in MODELS], n_boot=50, seed=0, progress=False,
                              val_dumps=[real_dumps[m]["train"] for m in MODELS])
    assert [r.name for r in results] == ["CE", "CE +TS", "LS", "LS +TS", "MaxSup", "MaxSup +TS"]
    frames = [r.to_frame() for r in results]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "metric", "value", "ci_low", "ci_high", "n"]
        assert f["metric"].tolist() == list(SCALARS) and (f["n"] == r.num_samples).all()
        for key in SCALARS:
            row = _value(f, key)
            assert row["value"] == getattr(r, key)
            assert (row["ci_low"], row["ci_high"]) == tuple(float(v) for v in r.ci[key])
            assert row["ci_low"] <= row["ci_high"]
        assert _value(f, "ece")["value"] == r.ece and r.ece > 0
    df = _check_stacked(results, frames, len(SCALARS))
    assert df.loc[df["metric"] == "ece", "model"].tolist() == [r.name for r in results]

    # without a bootstrap there is no interval: the ci columns are there, NaN
    plain = calibrate_dumps([real_dumps["CE"]["test"]], n_boot=0, progress=False)[0]
    f = plain.to_frame()
    assert plain.ci == {} and f["ci_low"].isna().all() and f["ci_high"].isna().all()
    assert _value(f, "nll")["value"] == plain.nll


def test_temperature_frame(real_dumps):
    from repanalysis.analyze.calibration import fit_temperature

    d = real_dumps["LS"]["train"]
    fit = fit_temperature(d.logits, d.labels, num_classes=d.num_classes)
    f = fit.to_frame(name="LS")
    assert list(f.columns) == ["model", "converged", "metric", "value", "n"]
    assert f["metric"].tolist() == ["temperature", "nll_before", "nll_after"]
    assert f["model"].tolist() == ["LS"] * 3 and (f["n"] == fit.num_samples).all() and fit.num_samples == len(d.labels)
    assert set(f["converged"]) == {fit.converged}
    assert _value(f, "temperature")["value"] == fit.temperature
    assert _value(f, "nll_after")["value"] == fit.nll_after <= fit.nll_before == _value(f, "nll_before")["value"]
    assert fit.to_frame()["model"].tolist() == ["model"] * 3


def test_misclassification_frame_one_row_per_score(real_dumps):
    from repanalysis.analyze.confidence import SCORES, confidence_dumps

    results = confidence_dumps([real_dumps[m]["test"] for m in MODELS])
    frames = [r.to_frame() for r in results]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "score", "metric", "value", "n"]
        assert f["metric"].tolist() == ["accuracy"] + ["auroc"] * len(SCORES)
        assert f["score"].tolist()[1:] == list(SCORES) and pd.isna(f["score"].iloc[0])
        assert _value(f, "accuracy", score=None)["value"] == r.accuracy
        for s in SCORES:
            assert _value(f, "auroc", score=s)["value"] == r.auroc[s]
            assert 0 <= r.auroc[s] <= 1
        assert r.auroc["max_softmax"] > 0.5
        assert (f["n"] == r.correct.size).all() and r.correct.size == real_dumps[r.name]["test"].num_samples
    df = _check_stacked(results, frames, 1 + len(SCORES))
    auroc = df[df["metric"] == "auroc"].pivot(index="model", columns="score", values="value")
    assert auroc.loc["MaxSup", "feature_l1"] == results[2].auroc["feature_l1"]


@pytest.fixture(scope="module")
def ood_logits(real_checkpoints, tmp_path_factory):
    """{model: (ood logits, ood features)} of real photo patches (out of distribution for digit models)."""
    from repanalysis.demo.build import ood_patches
    from repanalysis.train import DIGIT_NAMES
    from repanalysis.train.trainer import write_npz

    folder = tmp_path_factory.mktemp("frames_ood")
    npz = folder / "ood.npz"
    write_npz(npz, ood_patches(n=200, seed=2), np.zeros(200, dtype=np.int64), DIGIT_NAMES)
    out = {}
    for name in MODELS:
        d = ra.extract(ra.load_model(real_checkpoints[name]), npz, folder / name, progress=False, workers=0,
                       batch_size=256, name=name)
        out[name] = (np.asarray(d.logits), np.asarray(d.features))
    return out


def test_ood_frame_auroc_and_fpr_per_score(real_dumps, ood_logits):
    from repanalysis.analyze.confidence import SCORES, ood_detection

    results = []
    for m in MODELS:
        d = real_dumps[m]["test"]
        zo, ho = ood_logits[m]
        results.append(ood_detection(d.logits, zo, d.features, ho, name=m))
    frames = [r.to_frame() for r in results]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "score", "n_in", "n_ood", "metric", "value", "n"]
        assert len(f) == 2 * len(SCORES) and set(f["score"]) == set(SCORES)
        for s in SCORES:
            assert _value(f, "auroc", score=s)["value"] == r.auroc[s]
            assert _same(_value(f, "fpr_at_95_tpr", score=s)["value"], r.fpr_at_95_tpr[s])
        assert (f["n"] == r.num_in + r.num_ood).all() and (f["n_ood"] == 200).all()
        assert (f["n_in"] == real_dumps[r.name]["test"].num_samples).all()
    _check_stacked(results, frames, 2 * len(SCORES))


def test_collapse_frame(real_dumps):
    from repanalysis.analyze.collapse import neural_collapse

    results = [neural_collapse(real_dumps[m]["train"], name=m) for m in MODELS]
    frames = [r.to_frame() for r in results]
    metrics = ["nc1", "nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "nc3", "nc4", "vci", "mean_l2_norm"]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "metric", "value", "n"]
        assert f["metric"].tolist() == metrics and (f["n"] == r.n_samples).all()
        for key in metrics[:-1]:
            assert _value(f, key)["value"] == getattr(r, key)
        assert r.nc3 is not None and r.nc4 is not None      # the Dumps hold W and b
        assert _value(f, "mean_l2_norm")["value"] == pytest.approx(
            np.average(r.norm_l2_mean, weights=r.counts), rel=1e-12)
        assert _value(f, "mean_l2_norm")["value"] == r.summary()["mean L2 norm"]
    _check_stacked(results, frames, len(metrics))

    # without classifier weights NC3 / NC4 do not apply: their rows stay, NaN
    d = real_dumps["CE"]["train"]
    bare = neural_collapse(d.features, d.labels, name="CE").to_frame()
    assert len(bare) == len(metrics)
    assert bare.loc[bare["metric"].isin(["nc3", "nc4"]), "value"].isna().all()


def test_transfer_frame(real_dumps):
    from repanalysis.analyze.transfer import probe_dumps

    results = [probe_dumps(real_dumps[m]["train"], real_dumps[m]["test"], l2=1e-3, device="cpu", name=m,
                           progress=False) for m in MODELS[:2]]
    frames = [r.to_frame() for r in results]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "l2", "n_train", "metric", "value", "n"]
        assert f["metric"].tolist() == ["test_accuracy", "train_accuracy", "test_nll"]
        for key in ("test_accuracy", "train_accuracy", "test_nll"):
            assert _value(f, key)["value"] == getattr(r, key)
        assert r.test_accuracy > 0.8
        assert (f["l2"] == 1e-3).all() and (f["n_train"] == r.n_train).all() and (f["n"] == r.n_test).all()
        assert r.n_test == real_dumps[r.name]["test"].num_samples
    _check_stacked(results, frames, 3)


def test_localisation_frame(real_checkpoints, real_data):
    from repanalysis.analyze.cam import localise_dataset
    from repanalysis.data.boxes import BoxRegions, foreground_boxes

    results = []
    for m in MODELS[:2]:
        lm = ra.load_model(real_checkpoints[m])
        ds = ra.open_dataset(real_data["test"], transform=lm.transform)
        with np.load(real_data["test"]) as npz:
            images = npz["images"][:12]
        regions = BoxRegions(foreground_boxes(images, ds.samples[:12]), lm.transform)
        results.append(localise_dataset(lm.model, ds, regions, lm.transform, limit=12, keep=0, batch_size=12,
                                        name=m))
    frames = [r.to_frame() for r in results]
    metrics = ["accuracy", "precision", "recall", "f1", "iou", "energy_pg", "pointing", "pr_area", "box_share",
               "maxboxacc", "maxboxacc_v2", "top1_loc"]
    for r, f in zip(results, frames):
        assert list(f.columns) == ["model", "metric", "value", "n"]
        assert f["metric"].tolist() == metrics and (f["n"] == r.num_images).all() and r.num_images == 12
        assert _value(f, "precision")["value"] == pytest.approx(np.nanmean(r.precision), rel=1e-12)
        assert _value(f, "iou")["value"] == pytest.approx(np.nanmean(r.iou), rel=1e-12)
        assert _value(f, "pointing")["value"] == pytest.approx(np.mean(r.pointing_hit))
        assert _value(f, "accuracy")["value"] == pytest.approx(np.mean(r.preds == r.labels))
        for key, value in r.summary().items():
            if key in metrics:
                assert _same(_value(f, key)["value"], value)
    _check_stacked(results, frames, len(metrics))


def test_projection_and_embedding_frames_are_coordinates(real_dumps):
    from repanalysis.analyze.embed import embed_dump
    from repanalysis.analyze.projection import project_dumps

    projs = project_dumps([real_dumps[m]["test"] for m in MODELS], [3, 5, 8], samples_per_class=20, seed=0)
    frames = [p.to_frame() for p in projs]
    for p, f in zip(projs, frames):
        assert list(f.columns) == ["model", "sample", "label", "class", "x", "y"]
        assert len(f) == len(p.coords) == 60 and set(f["model"]) == {p.name}
        np.testing.assert_array_equal(f[["x", "y"]].to_numpy(), p.coords)
        np.testing.assert_array_equal(f["sample"].to_numpy(), p.sample_index)
        np.testing.assert_array_equal(f["label"].to_numpy(), p.labels)
        assert f.to_dict("records") == p.to_rows()
        names = dict(zip(p.classes, p.class_names))
        assert f["class"].tolist() == [names[int(y)] for y in p.labels]
    df = results_frame(projs)
    assert len(df) == 3 * 60 and df["model"].tolist() == [m for m in MODELS for _ in range(60)]

    emb = embed_dump(real_dumps["CE"]["test"], [0, 1, 7], method="tsne", samples_per_class=15, seed=0,
                     perplexity=10)
    f = emb.to_frame()
    assert list(f.columns) == ["model", "sample", "label", "class", "x", "y"] and len(f) == 45
    np.testing.assert_array_equal(f[["x", "y"]].to_numpy(), emb.coords)
    assert f.to_dict("records") == emb.to_rows()


def test_results_frame_mixes_analyses_and_refuses_non_results(real_dumps):
    from repanalysis.analyze.calibration import calibrate_dumps
    from repanalysis.analyze.geometry import class_separation

    cal = calibrate_dumps([real_dumps["CE"]["test"]], n_boot=20, progress=False)[0]
    sep = class_separation(real_dumps["CE"]["test"], name="CE", split="test")
    df = results_frame([cal, sep])
    assert list(df.columns) == ["model", "metric", "value", "ci_low", "ci_high", "n", "split"]
    assert len(df) == 10 + 3
    assert df.loc[df["metric"] == "r2", "value"].item() == sep.r2
    assert df.loc[df["metric"] == "r2", "ci_low"].isna().all() and df["split"].iloc[:10].isna().all()
    assert df.loc[df["metric"] == "ece", "ci_high"].item() == cal.ci["ece"][1]
    # a single Result works as a list of one
    assert results_frame(sep).equals(sep.to_frame())
    with pytest.raises(DataError, match="expected at least one Result"):
        results_frame([])
    with pytest.raises(DataError, match="to_frame"):
        results_frame([sep, {"ece": 0.1}])


def test_tidy_frame_helper():
    f = tidy_frame(None, {"ece": 0.031, "nc3": None}, {"ece": (0.02, 0.04)}, n=1000, split="val")
    assert list(f.columns) == ["model", "split", "metric", "value", "ci_low", "ci_high", "n"]
    assert f["model"].tolist() == ["model", "model"]
    assert f["value"].iloc[0] == 0.031 and math.isnan(f["value"].iloc[1])
    assert (f["ci_low"].iloc[0], f["ci_high"].iloc[0]) == (0.02, 0.04) and math.isnan(f["ci_low"].iloc[1])
    assert f["n"].tolist() == [1000, 1000]


def test_pandas_is_not_imported_with_repanalysis():
    import subprocess
    import sys

    code = ("import sys, repanalysis, repanalysis.analyze.calibration, repanalysis.analyze.geometry, "
            "repanalysis.analyze.frames; print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

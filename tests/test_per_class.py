"""Per-class views: accuracy, paired per-class differences, top confusions and error confidence against numpy brute
force on the resampled indices; the `per-class` command on real MNIST Dumps and on bad input."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import repanalysis.analyze.resample as R
from repanalysis.analyze.per_class import HIST_BINS, _accuracy_replicates, per_class_report
from repanalysis.dump import Dump
from repanalysis.errors import DataError
from _cli import run_cli
from test_paired import resample_indices


def _models(n=90, k=4, seed=0, strengths=(2.0, 1.0, 1.5), absent=()):
    """Dumps of the same labelled samples with logits of differing quality (classes in ``absent`` get none)."""
    rng = np.random.default_rng(seed)
    allowed = [c for c in range(k) if c not in absent]
    y = rng.choice(allowed, size=n)
    dumps = [Dump.from_arrays(logits=(rng.normal(size=(n, k)) + s * np.eye(k)[y]).astype(np.float32), labels=y,
                              name=f"m{j}", meta={"class_names": [f"c{c}" for c in range(k)]})
             for j, s in enumerate(strengths)]
    return dumps, y


def _numpy(dump):
    z = np.asarray(dump.logits, dtype=np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return z.argmax(1), p.max(1)


def _pct(values, level=0.95):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])


def test_per_class_accuracy_equals_numpy():
    dumps, y = _models(n=200, k=5)
    res = per_class_report(dumps, n_boot=0)
    assert res.classes == [f"c{c}" for c in range(5)] and res.baseline == "m0" and res.models == ["m0", "m1", "m2"]
    for d in dumps:
        pred, _ = _numpy(d)
        for c in range(5):
            rows = y == c
            assert res.class_counts[d.name][c] == rows.sum()
            assert res.correct_counts[d.name][c] == (pred[rows] == c).sum()
            assert res.accuracy[d.name][c] == pytest.approx((pred[rows] == c).mean(), abs=1e-15)
    assert np.isnan(res.accuracy_ci["m0"]).all()                        # no resamples, no intervals
    d = res.differences["m2"][3]
    assert d.analysis == "per_class" and d.metric == "c3" and d.model == "m2" and d.baseline == "m0"
    assert d.difference == pytest.approx(res.accuracy["m2"][3] - res.accuracy["m0"][3])
    assert math.isnan(d.ci_low) and not d.excludes_zero


def test_paired_interval_equals_percentile_of_brute_force_replicates(monkeypatch):
    monkeypatch.setattr(R, "BOOT_ELEMENTS", 13 * 90)                  # 13 replicates per block: several blocks
    dumps, y = _models(n=90, k=4, seed=1)
    n_boot, seed, level = 60, 7, 0.9
    res = per_class_report(dumps, baseline="m1", n_boot=n_boot, seed=seed, ci_level=level)
    idx = resample_indices(90, n_boot, seed)
    correct = {d.name: _numpy(d)[0] == y for d in dumps}

    def replicates(model, c):
        out = np.full(n_boot, np.nan)
        for r in range(n_boot):
            rows = idx[r][y[idx[r]] == c]
            if rows.size:
                out[r] = correct[model][rows].mean()
        return out

    assert set(res.differences) == {"m0", "m2"}
    for model in ("m0", "m2"):
        for c, row in enumerate(res.differences[model]):
            diff = replicates(model, c) - replicates("m1", c)
            lo, hi = _pct(diff, level)
            assert (row.ci_low, row.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
            assert row.excludes_zero == (lo > 1e-9 or hi < -1e-9)
            assert row.n == 90 and row.ci_level == level
    # each model's own interval of its per-class accuracy: the same replicates
    for c in range(4):
        lo, hi = _pct(replicates("m2", c), level)
        np.testing.assert_allclose(res.accuracy_ci["m2"][c], [lo, hi], atol=1e-12)
    # sorted: largest gain first; the significant ones are those whose interval excludes 0
    diffs = [r.difference for r in res.sorted_differences("m2")]
    assert diffs == sorted(diffs, reverse=True)
    assert res.significant("m2") == [r for r in res.sorted_differences("m2") if r.excludes_zero]


def test_class_missing_from_a_replicate_gives_a_nan_replicate():
    """A class of one sample is absent from about 37% of resamples: those replicates are NaN and left out of the
    interval; a class without any sample has NaN accuracy, difference and interval (never 'excludes 0')."""
    import torch

    rng = np.random.default_rng(2)
    n, k = 40, 4
    y = np.r_[0, rng.choice([1, 2], size=n - 1)]                  # class 0: one sample; class 3: none
    dumps = [Dump.from_arrays(logits=(rng.normal(size=(n, k)) + s * np.eye(k)[y]).astype(np.float32), labels=y,
                              name=name) for name, s in (("CE", 2.0), ("LS", 0.5))]
    n_boot, seed = 200, 3
    idx = resample_indices(n, n_boot, seed)
    drawn = (idx == 0).any(axis=1)                                # replicates that drew the one class-0 sample
    assert 0 < (~drawn).sum() < n_boot / 2
    correct = [_numpy(d)[0] == y for d in dumps]
    reps = _accuracy_replicates(torch.from_numpy(y), correct, [np.ones(n, bool)] * 2, k, n_boot, seed,
                                torch.device("cpu"))
    np.testing.assert_array_equal(np.isnan(reps[0][:, 0]), ~drawn)
    assert np.isnan(reps[0][:, 3]).all()
    res = per_class_report(dumps, n_boot=n_boot, seed=seed)
    row0, row3 = res.differences["LS"][0], res.differences["LS"][3]
    diff = np.where(drawn, float(correct[1][0]) - float(correct[0][0]), np.nan)
    lo, hi = _pct(diff)
    assert (row0.ci_low, row0.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert res.class_counts["CE"][3] == 0 and math.isnan(res.accuracy["CE"][3])
    assert math.isnan(row3.difference) and math.isnan(row3.ci_low) and not row3.excludes_zero
    assert res.sorted_differences("LS")[-1] is row3                # undefined differences sort last


def test_top_confusions_equal_numpy_confusion_matrix():
    dumps, y = _models(n=300, k=6, seed=4, strengths=(0.8, 0.3))
    res = per_class_report(dumps, n_boot=0, top_k=2)
    for d in dumps:
        pred, _ = _numpy(d)
        cm = np.zeros((6, 6), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        np.testing.assert_array_equal(res.confusion[d.name], cm)
        for c in range(6):
            off = cm[c].copy()
            off[c] = 0
            want = sorted(((-off[j], j) for j in range(6) if off[j] > 0))[:2]
            got = res.top_confusions[d.name][c]
            assert [(t.predicted, t.count) for t in got] == [(j, -negc) for negc, j in want]
            for t in got:
                assert t.predicted_name == f"c{t.predicted}"
                assert t.share == pytest.approx(t.count / cm[c].sum())
                assert t.error_share == pytest.approx(t.count / off.sum())
    frame = res.confusions_frame()
    assert list(frame.columns) == ["model", "class", "rank", "predicted", "count", "share", "error_share"]


def test_error_confidence_equals_numpy_softmax_on_the_errors():
    dumps, y = _models(n=150, k=5, seed=5)
    n_boot, seed = 80, 11
    res = per_class_report(dumps, n_boot=n_boot, seed=seed)
    idx = resample_indices(150, n_boot, seed)
    for d in dumps:
        pred, conf = _numpy(d)
        wrong = pred != y
        e = res.error_confidence[d.name]
        assert e.num_errors == wrong.sum() and e.num_samples == 150
        assert e.mean == pytest.approx(conf[wrong].mean(), rel=1e-12)
        assert e.median == pytest.approx(np.median(conf[wrong]), rel=1e-12)
        assert e.quantiles["q25"] == pytest.approx(np.quantile(conf[wrong], 0.25), rel=1e-12)
        assert e.mean_correct == pytest.approx(conf[~wrong].mean(), rel=1e-12)
        np.testing.assert_array_equal(e.hist_counts, np.histogram(conf[wrong], bins=HIST_BINS, range=(0, 1))[0])
        # plain bootstrap over the images: the mean over the errors each resample draws
        reps = [conf[i][wrong[i]].mean() if wrong[i].any() else np.nan for i in idx]
        lo, hi = _pct(reps)
        assert (e.ci_low, e.ci_high) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    frame = res.to_frame()
    assert list(frame.columns) == ["model", "class", "metric", "value", "ci_low", "ci_high", "n"]
    row = frame[(frame.model == "m1") & (frame.metric == "error_confidence_mean")].iloc[0]
    assert row.value == res.error_confidence["m1"].mean and row.n == res.error_confidence["m1"].num_errors
    diff_rows = frame[frame.metric == "accuracy_difference"]
    assert set(diff_rows.model) == {"m1", "m2"} and len(diff_rows) == 2 * 5


def test_nonfinite_rows_are_left_out_with_a_warning():
    dumps, y = _models(n=60, k=3, seed=6, strengths=(2.0, 2.0))
    z = np.asarray(dumps[1].logits).copy()
    z[5, 1] = np.nan
    bad = Dump.from_arrays(logits=z, labels=y, name="m1")
    with pytest.warns(RuntimeWarning, match="1 of 60 samples have NaN or inf logits"):
        res = per_class_report([dumps[0], bad], n_boot=20)
    assert res.num_excluded == {"m0": 0, "m1": 1}
    assert res.class_counts["m1"][y[5]] == (y == y[5]).sum() - 1
    assert res.class_counts["m0"][y[5]] == (y == y[5]).sum()


def test_library_refuses_bad_input():
    dumps, _ = _models(n=60, k=3)
    with pytest.raises(DataError, match="baseline 'XX' is not one of the models"):
        per_class_report(dumps, baseline="XX")
    other, _ = _models(n=60, k=3, seed=9)
    with pytest.raises(DataError, match="per-class: sample .* has label"):
        per_class_report([dumps[0], other[1]])


# --- the command on real Dumps ------------------------------------------------------------------------------------
def test_per_class_cli_on_real_dumps(real_dumps, tmp_path, capsys):
    names = list(real_dumps)
    paths = [str(real_dumps[n]["test"].path) for n in names]
    code, out, err = run_cli(["per-class", *paths, "--names", ",".join(names), "--baseline", "LS", "--bootstrap", "50",
                              "--top-k", "2", "--show", "0", "--out", str(tmp_path)], capsys)
    assert code in (0, None), err
    assert "CE - LS: per-class accuracy" in out and "MaxSup - LS" in out and "excludes 0" in out
    assert "Confidence (max softmax) on misclassified samples" in out
    payload = json.loads((tmp_path / "per_class.json").read_text())
    assert payload["baseline"] == "LS" and payload["models"] == names and payload["n_boot"] == 50
    assert "provenance" in payload
    d = real_dumps["CE"]["test"]
    y = np.asarray(d.labels)
    pred, conf = _numpy(d)
    k = d.num_classes
    acc = [float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(k)]
    assert payload["per_model"]["CE"]["accuracy"] == pytest.approx(acc, abs=1e-12)
    e = payload["per_model"]["CE"]["error_confidence"]
    assert e["num_errors"] == int((pred != y).sum())
    assert e["mean"] == pytest.approx(float(conf[pred != y].mean()), rel=1e-9)
    rows = payload["differences"]
    assert len(rows) == 2 * k and {r["model"] for r in rows} == {"CE", "MaxSup"}
    ce_rows = [r for r in rows if r["model"] == "CE"]
    assert [r["difference"] for r in ce_rows] == sorted((r["difference"] for r in ce_rows), reverse=True)
    for r in ce_rows:
        assert r["difference"] == pytest.approx(acc[r["class_index"]] - payload["per_model"]["LS"]["accuracy"][
            r["class_index"]], abs=1e-12)
    # the printed table lists every class of each compared model
    block = out.split("CE - LS: per-class accuracy", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[2].startswith("-----") and len(block[3:]) == k and all(line.startswith("CE ") for line in block[3:])
    with open(tmp_path / "per_class.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["model", "class", "metric", "value", "ci_low", "ci_high", "n"]
    assert sum(1 for r in table if r["metric"] == "accuracy") == 3 * k
    for stem in ("per_class_difference", "per_class_accuracy", "error_confidence"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 10_000 and (tmp_path / f"{stem}.pdf").exists()
    # --json prints the payload
    code, out, err = run_cli(["per-class", *paths[:2], "--names", ",".join(names[:2]), "--bootstrap", "0", "--json",
                              "--out", str(tmp_path / "j")], capsys)
    assert code in (0, None), err
    assert json.loads(out)["baseline"] == names[0]


def _one_line_error(code, stderr, *needles):
    assert code == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr


def test_per_class_cli_bad_input(real_dumps, tmp_path, capsys):
    ce_test, ls_train = real_dumps["CE"]["test"].path, real_dumps["LS"]["train"].path
    code, _, err = run_cli(["per-class", str(ce_test), str(ls_train), "--names", "CE,LS", "--out", str(tmp_path / "a")],
                           capsys)
    _one_line_error(code, err, "per-class:", "expected Dumps of the same images")
    assert not (tmp_path / "a" / "per_class.json").exists()
    ls_test = real_dumps["LS"]["test"].path
    code, _, err = run_cli(["per-class", str(ce_test), str(ls_test), "--names", "CE,LS", "--baseline", "MaxSup",
                            "--out", str(tmp_path / "b")], capsys)
    _one_line_error(code, err, "baseline 'MaxSup' is not one of the models (CE, LS)")
    assert not (tmp_path / "b" / "per_class.json").exists()

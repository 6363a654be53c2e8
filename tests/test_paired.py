"""Paired bootstrap: the shared resample stream, each analysis' replicates against the analysis itself run on the
resampled rows (brute force), and the paired differences against numpy percentiles."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from repanalysis.analyze import paired as P
from repanalysis.analyze.resample import block_size, bootstrap_weights, weighted_means
from repanalysis.errors import DataError


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) the indices each replicate drew, re-drawn independently of the library: torch.randint from a
    generator seeded alike, in blocks of block_size(n, n_boot) replicates."""
    gen = torch.Generator().manual_seed(seed)
    bsz = block_size(n, n_boot)
    parts = [torch.randint(n, (min(bsz, n_boot - s), n), generator=gen) for s in range(0, n_boot, bsz)]
    return torch.cat(parts).numpy()


def test_weights_are_the_multiplicities_of_the_drawn_indices(monkeypatch):
    import repanalysis.analyze.resample as R

    monkeypatch.setattr(R, "BOOT_ELEMENTS", 7 * 40)                 # 7 replicates per block of N = 40: 3 blocks
    w = torch.cat(list(bootstrap_weights(40, 17, seed=5)))
    idx = resample_indices(40, 17, 5)
    assert w.shape == (17, 40) and w.dtype == torch.float64
    for r in range(17):
        np.testing.assert_array_equal(w[r].numpy(), np.bincount(idx[r], minlength=40))
    assert torch.equal(w, torch.cat(list(bootstrap_weights(40, 17, seed=5))))      # seeded: the same again
    assert not torch.equal(w, torch.cat(list(bootstrap_weights(40, 17, seed=6))))


def test_weighted_means_equal_nanmean_of_resampled_rows():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3))
    v[rng.random((50, 3)) < 0.2] = np.nan                            # undefined for some samples (NaN-aware)
    reps = weighted_means(torch.from_numpy(v), 30, seed=2).numpy()
    idx = resample_indices(50, 30, 2)
    expected = np.stack([np.nanmean(v[i], axis=0) for i in idx])
    np.testing.assert_allclose(reps, expected, rtol=1e-12)


def test_separation_replicates_equal_class_separation_of_the_resampled_rows():
    from repanalysis.analyze.geometry import class_separation

    rng = np.random.default_rng(1)
    n, d = 120, 6
    labels = rng.integers(0, 4, n)
    labels[0] = 7                                                    # a one-sample class, absent from many resamples
    feats = (rng.normal(size=(n, d)) + 2 * np.eye(8)[labels][:, :d]).astype(np.float32)
    feats[5] = 0                                                     # zero norm: no cosine, takes no part
    reps = P.separation_replicates(feats, labels, 25, seed=3)
    idx = resample_indices(n, 25, 3)
    absent = 0
    for r, i in enumerate(idx):
        with warnings.catch_warnings():                 # the zero-norm row, the one-sample class: warned, known
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = class_separation(feats[i], labels[i])
        absent += 0 not in i
        assert reps["d_within"][r] == pytest.approx(ref.d_within, abs=1e-6)
        assert reps["d_total"][r] == pytest.approx(ref.d_total, abs=1e-6)
        assert reps["r2"][r] == pytest.approx(ref.r2, abs=1e-6)
    assert absent > 0                                                # the one-sample class did drop out somewhere


def test_logit_replicates_equal_logit_stats_of_the_resampled_rows():
    from repanalysis.analyze.logits import logit_stats

    rng = np.random.default_rng(2)
    z = rng.normal(size=(200, 5)).astype(np.float32) * 3
    y = rng.integers(0, 5, 200)
    stats = logit_stats(z, y)
    reps = P.logit_replicates(stats, 20, seed=4)
    for r, i in enumerate(resample_indices(200, 20, 4)):
        row = logit_stats(z[i], y[i]).row()
        for key in P.LOGIT_METRICS:
            assert reps[key][r] == pytest.approx(row[key], rel=1e-6, abs=1e-9), key


def test_localisation_replicates_equal_nan_aware_means_of_the_resampled_images():
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    n = 60
    arrays = {k: rng.random(n) for k in ("precision", "recall", "f1", "iou", "energy", "pr_area")}
    arrays["precision"][:10] = np.nan                               # an empty CAM region: precision undefined
    res = SimpleNamespace(preds=rng.integers(0, 3, n), labels=rng.integers(0, 3, n), pointing_hit=rng.random(n) < 0.5,
                          **arrays)
    reps = P.localisation_replicates(res, 15, seed=1)
    for r, i in enumerate(resample_indices(n, 15, 1)):
        assert reps["accuracy"][r] == pytest.approx(np.mean(res.preds[i] == res.labels[i]))
        assert reps["precision"][r] == pytest.approx(np.nanmean(arrays["precision"][i]))
        assert reps["energy_pg"][r] == pytest.approx(np.mean(arrays["energy"][i]))
        assert reps["pointing"][r] == pytest.approx(np.mean(res.pointing_hit[i]))


def test_calibration_bootstrap_draws_the_same_resamples_as_every_other_analysis():
    """Pairing across analyses: the calibration bootstrap's replicate r is the ECE of the rows resample r drew."""
    from repanalysis.analyze.calibration import calibration_report, expected_calibration_error

    rng = np.random.default_rng(4)
    z = rng.normal(size=(300, 4)) * 2
    y = rng.integers(0, 4, 300)
    res = calibration_report(z, y, n_boot=12, seed=9)
    for r, i in enumerate(resample_indices(300, 12, 9)):
        assert res.replicates["ece"][r] == pytest.approx(expected_calibration_error(z[i], y[i]), abs=1e-12)
        assert res.replicates["accuracy"][r] == pytest.approx(np.mean(z[i].argmax(1) == y[i]), abs=1e-12)


def test_paired_interval_is_the_percentile_of_per_replicate_differences():
    a, b = np.array([0.1, 0.3, 0.2, 0.5, 0.4]), np.array([0.0, 0.1, 0.1, 0.2, 0.2])
    rows = P.paired_differences({"base": {"m": 0.1}, "x": {"m": 0.35}}, {"base": {"m": b}, "x": {"m": a}}, "base",
                                analysis="t", split="val", n=5, ci_level=0.9)
    (row,) = rows
    lo, hi = np.percentile(a - b, [5, 95])
    assert (row.model, row.baseline, row.metric, row.analysis, row.split) == ("x", "base", "m", "t", "val")
    assert row.difference == pytest.approx(0.25) and (row.ci_low, row.ci_high) == (lo, hi)
    assert row.excludes_zero                                         # every difference is > 0
    flat = P.paired_differences({"base": {"m": 0.0}, "x": {"m": 0.0}}, {"base": {"m": b}, "x": {"m": b[::-1]}},
                                "base")[0]
    assert flat.ci_low < 0 < flat.ci_high and not flat.excludes_zero


def test_a_rounding_speck_is_not_a_difference():
    base = np.full(100, 0.97)
    other = base + np.where(np.arange(100) % 2, 1e-17, 0.0)        # 0.97 - 0.97 computed two ways
    row = P.paired_differences({"a": {"acc": 0.97}, "b": {"acc": 0.97}}, {"a": {"acc": base}, "b": {"acc": other}},
                               "a")[0]
    assert row.ci_low >= 0 and not row.excludes_zero


def test_paired_beats_unpaired_on_correlated_models():
    """Two models wrong on nearly the same samples: their accuracy intervals overlap, the paired one excludes 0."""
    rng = np.random.default_rng(5)
    n = 1000
    base_correct = rng.random(n) < 0.9
    better = base_correct.copy()
    better[np.flatnonzero(~base_correct)[:12]] = True              # fixes 12 of the baseline's errors, breaks none
    vals = {m: torch.from_numpy(c[:, None].astype(np.float64)) for m, c in (("base", base_correct), ("b", better))}
    reps = {m: {"acc": weighted_means(v, 500, seed=0)[:, 0].numpy()} for m, v in vals.items()}
    row = P.paired_differences({"base": {"acc": base_correct.mean()}, "b": {"acc": better.mean()}}, reps, "base")[0]
    assert row.difference == pytest.approx(0.012) and row.excludes_zero
    lo_b, hi_base = np.percentile(reps["b"]["acc"], 2.5), np.percentile(reps["base"]["acc"], 97.5)
    assert lo_b < hi_base                                           # unpaired, the two intervals overlap


def test_bad_paired_inputs():
    reps = {"a": {"m": np.zeros(5)}, "b": {"m": np.zeros(4)}}
    with pytest.raises(DataError, match="baseline 'c' is not one of the models"):
        P.paired_differences({"a": {"m": 0}, "b": {"m": 0}}, reps, "c")
    with pytest.raises(DataError, match="same resamples"):
        P.paired_differences({"a": {"m": 0}, "b": {"m": 0}}, reps, "a")
    with pytest.raises(DataError, match="different numbers of samples.*a: 5, b: 4"):
        P.check_paired_samples({"a": 5, "b": 4}, "logits")


def test_reliability_bin_bands_are_percentiles_of_the_resampled_bin_accuracies():
    from repanalysis.analyze.calibration import calibration_report, equal_width_bin

    rng = np.random.default_rng(6)
    z = rng.normal(size=(400, 5)) * 2
    y = rng.integers(0, 5, 400)
    res = calibration_report(z, y, n_bins=10, n_boot=60, seed=2, ci_level=0.9)
    p = np.exp(z - z.max(1, keepdims=True))
    conf = (p / p.sum(1, keepdims=True)).max(1)
    correct = (z.argmax(1) == y).astype(float)
    bins = equal_width_bin(torch.from_numpy(conf), 10, float32_values=False).numpy()
    per_rep = np.full((60, 10), np.nan)
    for r, i in enumerate(resample_indices(400, 60, 2)):
        for b in range(10):                                  # brute force: a loop over bins in the test
            inside = bins[i] == b
            if inside.any():
                per_rep[r, b] = correct[i][inside].mean()
    drawn = np.isfinite(per_rep).sum(0) >= 30
    want = np.nanpercentile(per_rep[:, drawn], [5, 95], axis=0)
    np.testing.assert_allclose(res.bin_band[:, drawn], want, atol=1e-12)
    assert np.isnan(res.bin_band[:, ~drawn]).all()
    assert "bin_accuracy" not in res.replicates and set(res.ci) == set(res.replicates)
    assert res.to_dict()["bins"]["accuracy_band"][0][int(np.flatnonzero(drawn)[0])] == pytest.approx(want[0, 0])


def test_reliability_diagram_draws_the_bands_and_refuses_without_them():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.container import ErrorbarContainer

    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.plot.calibration import plot_reliability

    rng = np.random.default_rng(7)
    z, y = rng.normal(size=(500, 4)) * 2, rng.integers(0, 4, 500)
    res = calibration_report(z, y, n_bins=10, n_boot=80, seed=0)
    ax = plot_reliability(res, bands=True)
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = bars.lines[2][0].get_segments()               # one vertical whisker per bin shown
    shown = np.flatnonzero((res.bins.counts > 0) & np.isfinite(res.bin_band).all(0))
    assert len(segments) == len(shown)
    for seg, b in zip(segments, shown):
        lo, hi = sorted(seg[:, 1])
        assert (lo, hi) == pytest.approx((min(res.bin_band[0, b], res.bins.accuracy[b]),
                                          max(res.bin_band[1, b], res.bins.accuracy[b])))
    with pytest.raises(DataError, match="no bootstrap band per bin"):
        plot_reliability(calibration_report(z, y, n_bins=10), bands=True)

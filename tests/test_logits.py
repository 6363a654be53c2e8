"""Logit statistics: hand-worked values, identities of the LS split, streaming == in-memory, bad input."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import repanalysis  # noqa: F401  (compat fix before anything else)
from repanalysis.analyze.logits import (PER_SAMPLE_STATS, compare_logits, comparison_dict, comparison_table,
                                        logit_stats, logit_stats_dump)
from repanalysis.errors import DataError
from repanalysis.extract.store import Dump, DumpWriter, load_dump

# Hand-worked 4-class example, alpha = 0.1, t = 0.01.
# row 0: z = [3, 1, 0.005, -2], y = 1 -> mean 0.50125, L_LS = 0.1 * (1 - 0.50125) = 0.049875,
#        reg = 0.1/4 * ((1 - 0.005) + (1 + 2)) = 0.099875, EE = 0.1/4 * (1 - 3) = -0.05,
#        MaxSup = 0.1 * (3 - 0.50125) = 0.249875, one near-zero logit of 4, wrong (pred 0); Corollary 3.4's
#        counts: M = 2 logits below z_y (0.005, -2), N = 1 above (3).
# row 1: z = [0, 4, 0, 1], y = 1 -> correct; reg = 0.1/4 * (4 + 4 + 3) = 0.275 = L_LS; EE = 0; 2 near-zero;
#        M = 3, N = 0.
# row 2: z = [2, 2, 0, 0], y = 1 -> tie with the max: pred = 0 (first max) so wrong, but no logit is
#        strictly above z_y: EE = 0, N = 0, M = 2 (the tied z_0 counts on neither side, so M + N = 2 < K - 1);
#        reg = 0.1/4 * (2 + 2) = 0.1 = L_LS; MaxSup = 0.1 * (2 - 1) = 0.1.
HAND_Z = np.array([[3.0, 1.0, 0.005, -2.0], [0.0, 4.0, 0.0, 1.0], [2.0, 2.0, 0.0, 0.0]])
HAND_Y = np.array([1, 1, 1])


def test_hand_worked_4_class_example():
    r = logit_stats(HAND_Z, HAND_Y, threshold=0.01, alpha=0.1, dtype=torch.float64)
    np.testing.assert_allclose(r.near_zero_fraction, [0.25, 0.5, 0.5])
    np.testing.assert_allclose(r.ls_loss, [0.049875, 0.275, 0.1], rtol=1e-6)
    np.testing.assert_allclose(r.ls_regularization, [0.099875, 0.275, 0.1], rtol=1e-6)
    np.testing.assert_allclose(r.ls_error_enhancement, [-0.05, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(r.maxsup_penalty, [0.249875, 0.275, 0.1], rtol=1e-6)
    np.testing.assert_allclose(r.logit_range, [5.0, 4.0, 2.0])
    np.testing.assert_allclose(r.logit_norm, [math.sqrt(14.000025), math.sqrt(17.0), math.sqrt(8.0)], rtol=1e-6)
    top0 = 1 / (1 + math.exp(-2) + math.exp(-2.995) + math.exp(-5))
    top2 = 1 / (2 + 2 * math.exp(-2))
    assert r.top1_prob[0] == pytest.approx(top0, rel=1e-6)
    assert r.top1_prob[2] == pytest.approx(top2, rel=1e-6)
    assert r.correct.tolist() == [False, True, False]
    assert r.num_above_label.tolist() == [1, 0, 0]
    assert r.num_below_label.tolist() == [2, 3, 2]
    assert r.accuracy == pytest.approx(1 / 3)
    assert r.ee_active_fraction == pytest.approx(1 / 3)
    assert r.ee_mean_active == pytest.approx(-0.05, rel=1e-6)
    assert r.ee_loss_share == pytest.approx(0.05 / (0.05 + 0.099875 + 0.275 + 0.1), rel=1e-6)
    # strict inequality: with t = 0.005 the 0.005 logit no longer counts
    r2 = logit_stats(HAND_Z, HAND_Y, threshold=0.005)
    np.testing.assert_allclose(r2.near_zero_fraction, [0.0, 0.5, 0.5])


def test_threshold_zero_counts_nothing_even_exact_zeros():
    r = logit_stats(np.zeros((3, 5)), np.array([0, 1, 2]), threshold=0.0)
    assert (r.near_zero_fraction == 0).all()
    # all logits equal: no spread, so no KDE; everything else still defined
    assert r.kde_density.size == 0 and (r.top1_prob == pytest.approx(0.2))


def _brute_force(z: np.ndarray, y: np.ndarray, t: float, alpha: float) -> dict[str, np.ndarray]:
    """Per-sample loops in float64 straight from REFERENCE.md, independent of the vectorised code."""
    n, k = z.shape
    out = {key: np.zeros(n) for key in PER_SAMPLE_STATS}
    out["correct"] = np.zeros(n, dtype=bool)
    out["num_below_label"] = np.zeros(n, dtype=int)
    out["num_above_label"] = np.zeros(n, dtype=int)
    for i in range(n):
        row, zy = z[i].astype(np.float64), float(z[i, y[i]])
        out["near_zero_fraction"][i] = sum(abs(v) < t for v in row) / k
        p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        out["top1_prob"][i] = p.max()
        out["logit_range"][i] = row.max() - row.min()
        out["logit_norm"][i] = math.sqrt(sum(v * v for v in row))
        out["ls_loss"][i] = alpha * (zy - row.mean())
        out["ls_regularization"][i] = alpha / k * sum(zy - v for v in row if v < zy)
        out["ls_error_enhancement"][i] = alpha / k * sum(zy - v for v in row if v > zy)
        out["maxsup_penalty"][i] = alpha * (row.max() - row.mean())
        out["correct"][i] = int(np.argmax(row)) == y[i]
        out["num_below_label"][i] = sum(v < zy for v in row)
        out["num_above_label"][i] = sum(v > zy for v in row)
    return out


@pytest.fixture(scope="module")
def random_logits():
    rng = np.random.default_rng(3)
    n, k = 700, 13
    z = rng.normal(0, 2.5, (n, k))
    y = rng.integers(0, k, n)
    z[np.arange(n), y] += rng.normal(2.0, 2.0, n)  # some right, some wrong
    z[rng.random((n, k)) < 0.15] *= 1e-3  # plenty of near-zero logits
    return z, y


def test_random_logits_match_brute_force_and_identities(random_logits):
    z, y = random_logits
    alpha = 0.2
    r = logit_stats(z, y, threshold=0.01, alpha=alpha, dtype=torch.float64, chunk_size=97)
    ref = _brute_force(z, y, 0.01, alpha)
    for key in PER_SAMPLE_STATS:
        np.testing.assert_allclose(getattr(r, key), ref[key], rtol=2e-6, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(r.correct, ref["correct"])
    np.testing.assert_array_equal(r.num_above_label, ref["num_above_label"])
    np.testing.assert_array_equal(r.num_below_label, ref["num_below_label"])
    # no ties in random logits: M + N = K - 1
    assert (r.num_below_label + r.num_above_label == z.shape[1] - 1).all()
    assert 0 < r.accuracy < 1
    # Corollary 3.4: regularization + error-enhancement == L_LS; EE <= 0; regularization >= 0.
    np.testing.assert_allclose(r.ls_regularization + r.ls_error_enhancement, r.ls_loss, rtol=1e-5, atol=1e-6)
    assert (r.ls_error_enhancement <= 0).all() and (r.ls_regularization >= 0).all()
    # EE is exactly 0 on every correct prediction and active on every wrong one (no exact ties here).
    assert (r.ls_error_enhancement[r.correct] == 0).all()
    assert (r.ls_error_enhancement[~r.correct] < 0).all()
    # MaxSup - L_LS = alpha * (z_max - z_y) >= 0, equal on correct predictions.
    gap = alpha * (z.max(1) - z[np.arange(len(y)), y])
    np.testing.assert_allclose(r.maxsup_penalty - r.ls_loss, gap, rtol=1e-5, atol=1e-6)


def test_ls_split_names_follow_corollary_3_4_order():
    """Corollary 3.4 takes the M logits below z_y first (regularization), then the N above (error-enhancement):
    the Result's fields and the JSON arrays list them in that order."""
    from dataclasses import fields

    from repanalysis.analyze.logits import LogitStats

    names = [f.name for f in fields(LogitStats)]
    assert names.index("ls_regularization") < names.index("ls_error_enhancement")
    assert names.index("num_below_label") + 1 == names.index("num_above_label")
    r = logit_stats(HAND_Z, HAND_Y, dtype=torch.float64)
    arrays = r.to_dict(include_arrays=True)["arrays"]
    assert list(arrays) == [*PER_SAMPLE_STATS, "num_below_label", "num_above_label", "correct", "excluded"]
    assert arrays["num_below_label"] == [2, 3, 2] and arrays["num_above_label"] == [1, 0, 0]
    assert list(PER_SAMPLE_STATS).index("ls_regularization") + 1 == list(PER_SAMPLE_STATS).index("ls_error_enhancement")


def test_float32_default_close_to_float64(random_logits):
    z, y = random_logits
    a = logit_stats(z, y)
    b = logit_stats(z, y, dtype=torch.float64)
    for key in PER_SAMPLE_STATS:
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-4, atol=1e-5, err_msg=key)


def test_summary_quantiles_and_json(random_logits):
    z, y = random_logits
    r = logit_stats(z, y, name="m")
    s = r.summary("logit_range")
    v = r.logit_range.astype(np.float64)
    assert s["median"] == pytest.approx(np.median(v))
    assert s["q05"] == pytest.approx(np.quantile(v, 0.05)) and s["q95"] == pytest.approx(np.quantile(v, 0.95))
    assert s["mean"] == pytest.approx(v.mean()) and s["max"] == pytest.approx(v.max())
    d = json.loads(json.dumps(r.to_dict(include_arrays=True)))
    assert d["statistics"]["top1_prob"]["mean"] == pytest.approx(float(r.top1_prob.mean()), rel=1e-6)
    assert len(d["arrays"]["near_zero_fraction"]) == len(y)
    assert d["error_enhancement"]["active_fraction"] == pytest.approx(1 - r.accuracy)
    assert d["logit_penalty"]["mean"] == pytest.approx(float((2e-3 * (z ** 2).sum(1) / 2).mean()), rel=1e-5)
    with pytest.raises(DataError, match="unknown logit statistic"):
        r.summary("nope")


def test_kde_matches_scipy_gaussian_kde():
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-1, 0.7, (400, 6)), rng.normal(1.5, 1.2, (400, 6))])
    y = rng.integers(0, 6, len(z))
    r = logit_stats(z, y, kde_samples=500, kde_range=(-3, 3))
    assert r.kde_samples == 500
    flat = z[:500].astype(np.float32).astype(np.float64).ravel()
    ref = gaussian_kde(flat)  # Scott's rule, as seaborn.kdeplot uses
    assert r.kde_bandwidth == pytest.approx(ref.factor * flat.std(ddof=1), rel=1e-6)
    np.testing.assert_allclose(r.kde_density, ref(r.kde_x), rtol=2e-3, atol=1e-5)
    assert r.kde_x[0] == -3 and r.kde_x[-1] == 3


def _write_dump(path, z, y, dtype=np.float16, name="m"):
    w = DumpWriter(path, len(y), {"logits": ((z.shape[1],), dtype), "labels": ((), np.int64)}, {"name": name})
    for s in range(0, len(y), 128):
        w.write(s, {"logits": z[s:s + 128].astype(dtype), "labels": y[s:s + 128]})
    w.finalize()
    return load_dump(path)


def test_streaming_float16_dump_equals_in_memory(tmp_path, random_logits):
    z, y = random_logits
    dump = _write_dump(tmp_path / "d", z, y)
    assert isinstance(dump.logits, np.memmap) and dump.logits.dtype == np.float16
    a = logit_stats_dump(dump, chunk_size=50)
    b = logit_stats(z.astype(np.float16).astype(np.float32), y, name="m")
    ref = _brute_force(z.astype(np.float16).astype(np.float64), y, 0.01, 0.1)
    assert a.name == "m" and a.num_samples == len(y)
    for key in PER_SAMPLE_STATS:
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-6, atol=1e-7, err_msg=key)
        np.testing.assert_allclose(getattr(a, key), ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(a.kde_density, b.kde_density, rtol=1e-6, atol=1e-9)


def test_nonfinite_rows_are_counted_and_excluded(random_logits):
    z, y = random_logits
    bad = z.copy()
    bad[[5, 100, 650], 2] = [np.nan, np.inf, -np.inf]
    with pytest.warns(RuntimeWarning, match="3 of 700 samples have NaN or inf"):
        r = logit_stats(bad, y, chunk_size=64)
    keep = np.ones(len(y), dtype=bool)
    keep[[5, 100, 650]] = False
    clean = logit_stats(z[keep], y[keep])
    assert r.num_samples == 697 and r.excluded.tolist() == [5, 100, 650]
    for key in PER_SAMPLE_STATS:
        np.testing.assert_allclose(getattr(r, key), getattr(clean, key), rtol=1e-6, err_msg=key)
    assert r.to_dict()["num_excluded_nonfinite"] == 3
    with pytest.raises(DataError, match="all 2 rows of logits contain NaN"):
        logit_stats(np.full((2, 3), np.nan), np.array([0, 1]))


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": -0.1}, "threshold must be a finite number >= 0"),
    ({"threshold": float("nan")}, "threshold must be a finite number >= 0"),
    ({"threshold": float("inf")}, "threshold must be a finite number >= 0"),
    ({"alpha": float("inf")}, "alpha must be a finite number"),
    ({"kde_range": (2, -2)}, "KDE range must be two finite numbers lo < hi"),
    ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ({"quantiles": (0.5, 1.5)}, r"quantiles must lie in \[0, 1\]"),
    ({"kde_samples": -1}, "kde_samples must be an integer >= 0"),
    ({"kde_samples": 2.5}, "kde_samples must be an integer >= 0; got 2.5"),
    ({"quantiles": None}, r"quantiles must lie in \[0, 1\], a non-empty sequence"),
    ({"kde_range": None}, "KDE range must be two finite numbers lo < hi; got None"),
    ({"kde_range": (0,)}, r"KDE range must be two finite numbers lo < hi; got \(0,\)"),
    ({"dtype": torch.int64}, "dtype must be a torch floating-point dtype"),
    ({"threshold": "0.1"}, "near-zero threshold must be a finite number >= 0; got '0.1'"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(DataError, match=message):
        logit_stats(HAND_Z, HAND_Y, **kwargs)


def test_bad_arrays():
    with pytest.raises(DataError, match=r"labels must be 1-D with one entry per logits row \(3\)"):
        logit_stats(HAND_Z, np.array([0, 1]))
    with pytest.raises(DataError, match="logits must be 2-D"):
        logit_stats(np.zeros(4), np.zeros(4, dtype=int))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\] for 4 classes; found values in \[1, 4\]"):
        logit_stats(HAND_Z, np.array([1, 4, 2]))
    with pytest.raises(DataError, match="no samples"):
        logit_stats(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(DataError, match="model has 5 classes"):
        logit_stats(HAND_Z, HAND_Y, num_classes=5)


def test_torch_input_and_compare(random_logits):
    z, y = random_logits
    r = logit_stats(torch.from_numpy(z), torch.from_numpy(y), dtype=torch.float64)
    ref = logit_stats(z, y, dtype=torch.float64)
    np.testing.assert_array_equal(r.ls_loss, ref.ls_loss)
    d1 = Dump.from_arrays(z, y, name="a")
    d2 = Dump.from_arrays(z * 0.5, y, name="b")
    results = compare_logits([d1, d2], names=["CE", "LS"], alpha=0.3)
    assert [r.name for r in results] == ["CE", "LS"]
    # halving the logits halves every LS term
    np.testing.assert_allclose(results[1].ls_loss, results[0].ls_loss / 2, rtol=1e-5, atol=1e-7)
    rows = comparison_table(results)
    assert rows[0]["model"] == "CE" and rows[0]["accuracy"] == pytest.approx(results[0].accuracy)
    assert set(rows[0]) == {"model", "samples", "accuracy", "near_zero", "top1_prob", "logit_range",
                            "ee_active", "ee_share"}
    payload = comparison_dict(results)
    assert payload["alpha"] == 0.3 and [m["name"] for m in payload["models"]] == ["CE", "LS"]
    with pytest.raises(DataError, match="names must be distinct"):
        compare_logits([d1, d2], names=["x", "x"])
    with pytest.raises(DataError, match="2 names for 1 models"):
        compare_logits([d1], names=["x", "y"])
    with pytest.raises(DataError, match="no models"):
        compare_logits([])


def test_no_warning_on_clean_readonly_memmap(tmp_path, random_logits):
    z, y = random_logits
    dump = _write_dump(tmp_path / "d", z, y, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logit_stats_dump(dump)


def test_real_mnist_dumps(request):
    """On the session's real CE / LS / MaxSup MNIST models: brute-force agreement and the LS identities."""
    try:
        real = request.getfixturevalue("real_dumps")
    except pytest.FixtureLookupError:
        pytest.skip("real_dumps fixture not available")
    names = list(real)
    dumps = [real[n]["test"] for n in names]
    results = compare_logits(dumps, names=names)
    for r, d in zip(results, dumps):
        z = np.asarray(d.logits, dtype=np.float64)
        y = np.asarray(d.labels)
        assert r.num_samples == len(y) and r.num_classes == d.num_classes
        assert r.accuracy == pytest.approx(float((z.argmax(1) == y).mean()))
        assert r.mean("near_zero_fraction") == pytest.approx(float((np.abs(z) < 0.01).mean()), abs=1e-9)
        assert r.mean("logit_range") == pytest.approx(float((z.max(1) - z.min(1)).mean()), rel=1e-5)
        np.testing.assert_allclose(r.ls_regularization + r.ls_error_enhancement, r.ls_loss, rtol=1e-4, atol=1e-5)
        assert (r.ls_error_enhancement[r.correct] == 0).all()
        print(r.row())


def test_numpy_scalar_threshold_is_a_number_and_an_empty_comparison_is_refused():
    r = logit_stats(HAND_Z, HAND_Y, threshold=np.float32(0.5))
    np.testing.assert_array_equal(r.near_zero_fraction, logit_stats(HAND_Z, HAND_Y, threshold=0.5).near_zero_fraction)
    from repanalysis.analyze.logits import comparison_dict
    with pytest.raises(DataError, match="no LogitStats to compare"):
        comparison_dict([])


def test_text_tables_show_every_rows_columns_and_format_numpy_numbers():
    # a logits-only model first used to hide the feature_l1 column of the models after it
    from repanalysis.report.tables import format_table

    text = format_table([{"model": "nofeat", "softmax": np.float32(0.123456789)},
                         {"model": "base", "softmax": -0.00001, "feature_l1": 0.3759}])
    assert text.splitlines() == ["model   softmax  feature_l1",
                                 "------  -------  ----------",
                                 "nofeat   0.1235           -",
                                 "base     0.0000      0.3759"]


def test_table_cells_of_0d_tensors_and_arrays_are_numbers():
    import torch

    from repanalysis.report.tables import format_value

    assert [format_value(v) for v in (torch.tensor(0.5), np.array(2.5), np.float32(-1e-6), torch.tensor(3),
                                      np.int64(4), True, "x", None)] == \
        ["0.5000", "2.5000", "0.0000", "3", "4", "True", "x", "-"]

"""Calibration metrics: hand-worked cases, brute-force loops, the reference adaptive-ECE code, torchmetrics/netcal."""
import math
import warnings

import numpy as np
import pytest
import torch

import repanalysis as ra  # (compat fix before torchmetrics imports torchvision)
from repanalysis.analyze import calibration as C
from repanalysis.analyze.calibration import _fused
from repanalysis.errors import DataError

from _bars import record_bars


# --- independent references ---------------------------------------------------------------------------
def loop_ece(conf, correct, edges, n_total=None, first_closed=False):
    """The MbLS/focal-loss reference loop: bins (lo, hi] (gt/le), weights in_bin.mean() over all samples."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    n = n_total or len(conf)
    ece = o = u = 0.0
    gaps = []
    for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        in_bin = (conf > lo) & (conf <= hi)
        if first_closed and j == 0:
            in_bin |= conf == lo
        if in_bin.sum() == 0:
            continue
        gap = conf[in_bin].mean() - correct[in_bin].mean()
        w = in_bin.sum() / n
        ece += w * abs(gap)
        o += w * max(gap, 0)
        u += w * max(-gap, 0)
        gaps.append(abs(gap))
    return ece, o, u, max(gaps)


def reference_adaptive_ece(logits, labels, n_bins=15):
    """A copy of AdaptiveECELoss.forward (Mukhoti et al. 2020 code, used by MbLS/ACLS/FedLaS), in float64."""
    soft = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1)
    conf, pred = soft.max(1)
    acc = pred.eq(torch.as_tensor(labels))
    x = conf.numpy()
    edges = np.interp(np.linspace(0, len(x), n_bins + 1), np.arange(len(x)), np.sort(x))
    _, bounds = np.histogram(x, edges)
    ece = 0.0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        in_bin = conf.gt(lo.item()) * conf.le(hi.item())
        prop = in_bin.double().mean()
        if prop.item() > 0:
            ece += float(torch.abs(conf[in_bin].mean() - acc[in_bin].double().mean()) * prop)
    return ece


def loop_classwise(logits, labels, n_bins=15):
    p = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1).numpy()
    labels = np.asarray(labels)
    edges = np.linspace(0, 1, n_bins + 1)
    per = [loop_ece(p[:, k], labels == k, edges)[0] for k in range(p.shape[1])]
    return float(np.mean(per)), np.array(per)


def random_logits(n=3000, k=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, k, (n,), generator=g)
    z[torch.arange(n)[: n // 2], y[: n // 2]] += 4.0      # half the samples lean to the right class
    return z, y


# --- hand-worked -------------------------------------------------------------------------------------------
# M = 10 bins. a, b: logits (0, 0) -> conf exactly 0.5, ON the edge 5/10 -> bin (0.4, 0.5]; the tie makes
# the prediction class 0, so a (label 0) is right and b (label 1) wrong. c, d: logits (0, -200) -> conf
# exactly 1.0 (last bin), c right, d wrong. e: logits (log 3, 0) -> conf 0.75, right.
HAND_Z = np.array([[0, 0], [0, 0], [0, -200], [0, -200], [math.log(3), 0]], dtype=np.float64)
HAND_Y = np.array([0, 1, 0, 1, 0])


@pytest.mark.filterwarnings("ignore:only 5 samples")
def test_hand_worked_bins_and_errors():
    res = C.calibration_report(HAND_Z, HAND_Y, n_bins=10)
    # bin 4: n=2, acc 0.5, conf 0.5 -> 0;  bin 7: n=1, acc 1, conf .75;  bin 9: n=2, acc .5, conf 1.0
    assert res.bins.counts.tolist() == [0, 0, 0, 0, 2, 0, 0, 1, 0, 2]
    assert res.bins.accuracy[[4, 7, 9]] == pytest.approx([0.5, 1.0, 0.5])
    assert res.bins.confidence[[4, 7, 9]] == pytest.approx([0.5, 0.75, 1.0])
    assert np.isnan(res.bins.accuracy[0])
    assert res.ece == pytest.approx(2 / 5 * 0.5 + 1 / 5 * 0.25)
    assert res.oece == pytest.approx(0.2)
    assert res.uece == pytest.approx(0.05)
    assert res.mce == pytest.approx(0.5)
    assert res.accuracy == pytest.approx(3 / 5)
    assert res.mean_confidence == pytest.approx((0.5 + 0.5 + 1 + 1 + 0.75) / 5)
    assert res.nll == pytest.approx((2 * math.log(2) + 200 + math.log(4 / 3)) / 5)
    # Brier: a, b: .25 + .25; c: 0; d: 1 + 1; e: 2 * .25^2
    assert res.brier == pytest.approx((0.5 + 0.5 + 0 + 2 + 0.125) / 5)
    assert C.expected_calibration_error(HAND_Z, HAND_Y, n_bins=10) == pytest.approx(res.ece, abs=0)
    assert C.max_calibration_error(HAND_Z, HAND_Y, n_bins=10) == pytest.approx(0.5)
    assert C.over_under_ece(HAND_Z, HAND_Y, n_bins=10) == pytest.approx((0.2, 0.05))


def test_edge_sample_goes_to_lower_bin():
    # conf exactly 0.25 (4 equal logits) lies on the edge 5/20: bin (0.2, 0.25], index 4, not 5
    z = np.zeros((1, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = C.calibration_report(z, np.array([0]), n_bins=20)
    assert st.bins.counts[4] == 1 and st.bins.counts.sum() == 1
    # binning core on hand-set values: 0.2 == 3/15 is an inner edge -> bin 2; 1.0 -> bin 14; 0 -> no bin
    b = C.bin_statistics(np.array([0.2, 1.0, 0.0, 0.2000001]), np.array([1, 0, 1, 1]), C.equal_width_edges(15))
    assert b.counts[2] == 1 and b.counts[3] == 1 and b.counts[14] == 1 and b.counts.sum() == 3


@pytest.mark.filterwarnings("ignore:only 5 samples")
def test_hand_worked_classwise():
    # K = 2, M = 2 bins (0, .5], (.5, 1]. p_0 = [.5, .5, 1, 1, .75]; y==0: [1, 0, 1, 0, 1]
    # class 0: bin0 {.5,.5} acc .5 conf .5 -> 0; bin1 {1,1,.75}: acc 2/3, conf 2.75/3 -> 3/5*|2/3-2.75/3|
    # class 1: p_1 = [.5, .5, ~0, ~0, .25]; y==1: [0,1,0,1,0]; bin0 all five: acc 2/5, conf 1.25/5 -> .15
    value, per = C.classwise_ece(HAND_Z, HAND_Y, n_bins=2, per_class=True)
    c0 = 3 / 5 * abs(2 / 3 - 2.75 / 3)
    c1 = abs(2 / 5 - (1.25 + 2 * math.exp(-200)) / 5)
    assert per == pytest.approx([c0, c1])
    assert value == pytest.approx((c0 + c1) / 2)


@pytest.mark.filterwarnings("ignore:only 6 samples")
def test_hand_worked_adaptive():
    # conf sorted .55 .6 .65 .7 .8 .9 (K = 2 logits), M = 3: positions 0, 2, 4, 6 -> edges .55 .65 .8 .9
    c = np.array([0.7, 0.55, 0.9, 0.6, 0.8, 0.65])
    z = np.stack([np.log(c / (1 - c)), np.zeros(6)], 1)
    y = np.array([0, 0, 1, 0, 0, 1])                         # right, right, wrong, right, right, wrong
    conf = torch.softmax(torch.tensor(z), 1).max(1).values.numpy()
    edges = C.adaptive_edges(conf, 3).numpy()
    assert edges == pytest.approx([0.55, 0.65, 0.8, 0.9])
    np.testing.assert_array_equal(edges, np.interp(np.linspace(0, 6, 4), np.arange(6), np.sort(conf)))
    right = np.array([1, 1, 0, 1, 1, 0])
    ref = loop_ece(conf, right, edges, n_total=6)[0]           # .55 is in no bin but counts in N
    hand = (2 / 6) * abs(np.mean(conf[[3, 5]]) - 0.5) + (2 / 6) * abs(np.mean(conf[[0, 4]]) - 1) \
        + (1 / 6) * abs(conf[2] - 0)
    assert ref == pytest.approx(hand)
    assert C.adaptive_ece(z, y, 3) == pytest.approx(hand)
    corrected = (3 / 6) * abs(np.mean(conf[[1, 3, 5]]) - 2 / 3) + (2 / 6) * abs(np.mean(conf[[0, 4]]) - 1) \
        + (1 / 6) * abs(conf[2] - 0)
    assert C.adaptive_ece(z, y, 3, rule="corrected") == pytest.approx(corrected)
    res = C.calibration_report(z, y, 3)
    assert res.adaptive_bins.counts.tolist() == [2, 2, 1]
    assert C.calibration_report(z, y, 3, adaptive_rule="corrected").adaptive_bins.counts.tolist() == [3, 2, 1]


@pytest.mark.filterwarnings("ignore:only")
def test_adaptive_positions_are_numpys_linspace_bit_for_bit():
    # N = 164, M = 20: numpy's position 15 is 122.99999999999999 (torch.linspace gives 123.0), so the
    # reference edge lies just below the sample at rank 123 and that sample moves up a bin
    n, m = 164, 20
    conf = np.r_[np.linspace(0.55, 0.6, 123), np.linspace(0.95, 0.99, 41)]
    z = np.c_[np.log(conf / (1 - conf)), np.zeros(n)]
    y = np.zeros(n, int)
    y[::3] = 1
    c = torch.softmax(torch.tensor(z), 1).amax(1).numpy()
    np.testing.assert_array_equal(C.adaptive_edges(c, m).numpy(),
                                  np.interp(np.linspace(0, n, m + 1), np.arange(n), np.sort(c)))
    ref = reference_adaptive_ece(z, y, m)
    assert ref == pytest.approx(0.149970, abs=1e-6)            # 0.138384 with torch.linspace's positions
    assert C.adaptive_ece(z, y, m) == pytest.approx(ref, abs=1e-15)
    assert C.calibration_report(z, y, m).aece == pytest.approx(ref, abs=1e-15)
    for size in range(1, 400):                                 # every position, several M
        for bins in (7, 15, 20, 30):
            np.testing.assert_array_equal(C._rank_positions(size, bins).numpy(), np.linspace(0, size, bins + 1))


# --- brute force and reference code -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_against_loops_on_random_logits(dtype):
    z, y = random_logits()
    z = z.to(dtype)
    res = C.calibration_report(z, y)
    p = torch.softmax(z.double(), 1)
    conf, pred = p.max(1)
    right = (pred == y).numpy()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    ece, o, u, mce = loop_ece(conf.numpy(), right, np.linspace(0, 1, 16))
    assert res.ece == pytest.approx(ece, abs=tol)
    assert res.oece == pytest.approx(o, abs=tol) and res.uece == pytest.approx(u, abs=tol)
    assert res.mce == pytest.approx(mce, abs=tol)
    assert res.aece == pytest.approx(reference_adaptive_ece(z, y), abs=tol)
    cw, per = loop_classwise(z, y)
    assert res.classwise_ece == pytest.approx(cw, abs=tol)
    np.testing.assert_allclose(res.classwise_per_class, per, atol=tol)
    nll = torch.nn.functional.cross_entropy(z.double(), y).item()
    assert res.nll == pytest.approx(nll, rel=1e-6 if dtype == torch.float32 else 1e-12)
    brier = ((p - torch.nn.functional.one_hot(y, 10)) ** 2).sum(1).mean().item()
    assert res.brier == pytest.approx(brier, abs=tol)
    assert res.accuracy == pytest.approx(right.mean())
    assert res.bins.counts.sum() == len(y)
    assert res.ece == pytest.approx(res.oece + res.uece, abs=1e-15)       # identity ECE = O-ECE + U-ECE


def test_chunking_does_not_change_values(monkeypatch):
    z, y = random_logits(n=1000, k=7, seed=3)
    whole = C.calibration_report(z, y)
    monkeypatch.setattr(_fused, "_CHUNK_ELEMENTS_CPU", 50)      # 7 rows per chunk
    chunked = C.calibration_report(z, y)
    for key in C.SCALARS:
        assert getattr(chunked, key) == pytest.approx(getattr(whole, key), abs=1e-13), key


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 10, 15, 100, 1000, 65537])
def test_equal_width_bin_matches_bucketize_at_every_edge(n_bins):
    # the arithmetic binning against the binary search it replaces, on values right at, just below and just
    # above every edge j/M (in float32 and in float64 steps), plus 0, 1, out-of-range, NaN and inf
    e = C.equal_width_edges(n_bins)
    e32 = e.float()
    steps = torch.arange(-40, 41, dtype=torch.int32)
    f32 = (e32.view(torch.int32)[:, None] + steps).view(torch.float32).reshape(-1)
    f32 = f32[torch.isfinite(f32)]
    g = torch.Generator().manual_seed(n_bins)
    f32 = torch.cat([f32, torch.rand(20000, generator=g),
                     torch.tensor([0.0, -0.0, 1.0, -1.0, 2.0, 1e-45, float("nan"), float("inf"), -float("inf")])])
    up, down = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    f64 = torch.cat([e, torch.nextafter(e, up), torch.nextafter(e, down), torch.nextafter(torch.nextafter(e, up), up),
                     torch.rand(20000, generator=g, dtype=torch.float64), f32.double()])
    for values, narrow in ((f32.double(), True), (f32.double(), False), (f64, False)):
        expected = torch.bucketize(values, e, right=False) - 1
        expected = torch.where((expected >= 0) & (expected < n_bins), expected, n_bins)
        got = C.equal_width_bin(values, n_bins, float32_values=narrow)
        assert torch.equal(got, expected), (narrow, values[got != expected][:5])
        # close_first (classwise ECE on probabilities): the first bin is [0, 1/M]; NaN still in no bin
        prob = values[(values >= 0) & (values <= 1) | torch.isnan(values)]
        closed = torch.bucketize(prob, e, right=False) - 1
        closed = torch.where(prob == 0, 0, torch.where(closed >= 0, closed, n_bins))
        got = C.equal_width_bin(prob, n_bins, float32_values=narrow, close_first=True)
        assert torch.equal(got, closed), (narrow, prob[got != closed][:5])


def test_parallel_scan_equals_one_thread(monkeypatch):
    # rows shared out to 3 worker threads in small chunks (the last one short) give the same numbers and
    # per-sample arrays
    z, y = random_logits(n=2003, k=9, seed=4)
    z = z.float()
    one = C.calibration_report(z, y)
    monkeypatch.setattr(_fused, "_CHUNK_ELEMENTS_CPU", 90)              # 10 rows per chunk, 200 chunks
    monkeypatch.setattr(_fused, "_CHUNK_ELEMENTS_CLASSWISE", 90)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        many = C.calibration_report(z, y)
        ece = C.expected_calibration_error(z, y)
    finally:
        torch.set_num_threads(before)
    for key in C.SCALARS:
        assert getattr(many, key) == pytest.approx(getattr(one, key), abs=1e-13), key
    assert ece == pytest.approx(one.ece, abs=1e-15)
    np.testing.assert_array_equal(many.confidence, one.confidence)
    np.testing.assert_array_equal(many.correct, one.correct)
    np.testing.assert_array_equal(many.bins.counts, one.bins.counts)


@pytest.mark.filterwarnings("ignore:only 3 samples")
def test_ties_use_first_argmax():
    z = torch.tensor([[1.0, 3.0, 3.0], [1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([1, 2, 0])                                  # argmax is 1, 1, 0
    res = C.calibration_report(z, y, n_bins=4)
    np.testing.assert_array_equal(res.correct, [True, False, True])


def test_identity_many_bin_counts():
    z, y = random_logits(n=500, k=5, seed=7)
    for m in (1, 2, 7, 15, 40):
        r = C.calibration_report(z, y, n_bins=m)
        assert r.ece == pytest.approx(r.oece + r.uece, abs=1e-15)
        assert r.bins.edges.shape == (m + 1,) and r.bins.counts.shape == (m,)


def test_reference_rule_leaves_out_lowest_sample():
    z, y = random_logits(n=300, k=4, seed=11)
    ref = C.calibration_report(z, y, n_bins=10)
    cor = C.calibration_report(z, y, n_bins=10, adaptive_rule="corrected")
    assert ref.adaptive_bins.counts.sum() == 299 and cor.adaptive_bins.counts.sum() == 300
    assert ref.adaptive_bins.num_samples == 300


# --- reference libraries --------------------------------------------------------------------------------
def _no_edge_values(conf, n_bins=15):
    scaled = np.asarray(conf, dtype=np.float64) * n_bins
    return not np.any(np.isclose(scaled, np.round(scaled), rtol=0, atol=1e-9))


@pytest.mark.filterwarnings("ignore:torch.searchsorted")
def test_agrees_with_torchmetrics_when_no_confidence_on_an_edge():
    # torchmetrics bins [lo, hi) and gives conf == 1.0 its own bin: identical to ours when no conf is j/M
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    z, y = random_logits(n=4000, k=10, seed=5)
    z = z.float()
    res = C.calibration_report(z, y)
    assert _no_edge_values(res.confidence)
    tm = multiclass_calibration_error(z, y, num_classes=10, n_bins=15, norm="l1").item()
    assert res.ece == pytest.approx(tm, abs=1e-6)
    tm_max = multiclass_calibration_error(z, y, num_classes=10, n_bins=15, norm="max").item()
    assert res.mce == pytest.approx(tm_max, abs=1e-6)
    p = torch.softmax(z, 1)
    per = [binary_calibration_error(p[:, k], (y == k).long(), n_bins=15).item() for k in range(10)]
    assert res.classwise_ece == pytest.approx(np.mean(per), abs=1e-6)


def test_differs_from_torchmetrics_on_edge_as_documented():
    from torchmetrics.functional.classification import binary_calibration_error

    # conf 0.5 (right) and 0.45 (wrong), M = 10: ours puts both in (0.4, 0.5]; torchmetrics splits them
    conf = torch.tensor([0.5, 0.45], dtype=torch.float64)
    ours = C.bin_statistics(conf, torch.tensor([1, 0]), C.equal_width_edges(10))
    assert ours.counts[4] == 2
    ours_ece = abs(0.475 - 0.5)
    tm = binary_calibration_error(conf.float(), torch.tensor([1, 0]), n_bins=10).item()
    assert tm == pytest.approx(0.5 * 0.5 + 0.5 * 0.45, abs=1e-6)
    assert ours_ece != pytest.approx(tm)


def test_agrees_with_netcal_when_no_confidence_on_an_inner_edge():
    from netcal.metrics import ECE, MCE

    z, y = random_logits(n=4000, k=10, seed=6)
    res = C.calibration_report(z, y)
    assert _no_edge_values(res.confidence)
    p = torch.softmax(z, 1).numpy()
    assert res.ece == pytest.approx(ECE(bins=15).measure(p, y.numpy()), abs=1e-9)
    assert res.mce == pytest.approx(MCE(bins=15).measure(p, y.numpy()), abs=1e-9)


# --- bootstrap ---------------------------------------------------------------------------------------
def test_bootstrap_replicates_equal_metrics_on_resamples():
    z, y = random_logits(n=200, k=4, seed=2)
    res = C.calibration_report(z, y, n_bins=6, n_boot=4, seed=123, adaptive_rule="reference")
    gen = torch.Generator().manual_seed(123)
    idx = torch.randint(200, (4, 200), generator=gen)            # one block: same draws as the library
    for r in range(4):
        again = C.calibration_report(z[idx[r]], y[idx[r]], n_bins=6)
        for key in C.SCALARS:
            assert res.replicates[key][r] == pytest.approx(getattr(again, key), abs=1e-12), (key, r)


def test_bootstrap_is_seeded_and_brackets_estimate():
    z, y = random_logits(n=800, k=5, seed=4)
    a = C.calibration_report(z, y, n_boot=300, seed=1)
    b = C.calibration_report(z, y, n_boot=300, seed=1)
    c = C.calibration_report(z, y, n_boot=300, seed=2)
    assert a.ci == b.ci and a.ci != c.ci
    for key in ("accuracy", "ece", "nll", "brier", "classwise_ece"):
        lo, hi = a.ci[key]
        assert lo <= getattr(a, key) <= hi, key
    # the accuracy interval matches the binomial standard error
    se = math.sqrt(a.accuracy * (1 - a.accuracy) / 800)
    assert a.ci["accuracy"][1] - a.ci["accuracy"][0] == pytest.approx(2 * 1.96 * se, rel=0.2)
    d = a.to_dict()
    assert set(d["ci"]) == set(C.SCALARS) and d["n_boot"] == 300


@pytest.mark.parametrize("ci_level", [0.9, 0.95])
def test_bootstrap_intervals_are_numpys_percentile_of_the_replicates(ci_level):
    z, y = random_logits(n=500, k=6, seed=9)
    res = C.calibration_report(z, y, n_bins=10, n_boot=257, seed=5, ci_level=ci_level)
    assert set(res.ci) == set(C.SCALARS) and all(len(v) == 257 for v in res.replicates.values())
    for key in C.SCALARS:
        lo, hi = np.percentile(res.replicates[key], [100 * (1 - ci_level) / 2, 100 * (1 + ci_level) / 2])
        assert res.ci[key] == (lo, hi), key                      # exactly, numpy's default (linear) percentile
    # and through calibrate_dumps, on a Dump: same replicates for the same seed, same rule
    d = ra.Dump.from_arrays(z.numpy(), y.numpy(), name="m")
    (dres,) = C.calibrate_dumps([d], n_bins=10, n_boot=257, seed=5, ci_level=ci_level, progress=False)
    for key in C.SCALARS:
        np.testing.assert_array_equal(dres.replicates[key], res.replicates[key])
        lo, hi = np.percentile(dres.replicates[key], [100 * (1 - ci_level) / 2, 100 * (1 + ci_level) / 2])
        assert dres.ci[key] == (lo, hi), key
    assert dres.to_dict()["ci"]["ece"] == list(res.ci["ece"]) and dres.to_dict()["ci_level"] == ci_level


def test_bootstrap_intervals_of_two_levels_nest():
    z, y = random_logits(n=400, k=5, seed=3)
    r90 = C.calibration_report(z, y, n_boot=200, seed=7, ci_level=0.9)
    r95 = C.calibration_report(z, y, n_boot=200, seed=7, ci_level=0.95)
    for key in C.SCALARS:
        np.testing.assert_array_equal(r90.replicates[key], r95.replicates[key])
        assert r95.ci[key][0] <= r90.ci[key][0] <= r90.ci[key][1] <= r95.ci[key][1], key
    assert r95.ci["ece"] != r90.ci["ece"]


@pytest.mark.parametrize("progress", [True, False])
def test_bootstrap_progress_bar_counts_replicates_per_block(monkeypatch, progress):
    import repanalysis.progress

    calls = record_bars(monkeypatch, repanalysis.progress)
    import repanalysis.analyze.resample as resample

    monkeypatch.setattr(resample, "BOOT_ELEMENTS", 300 * 64)              # 64 replicates per block of N = 300
    z, y = random_logits(n=300, k=4, seed=1)
    res = C.calibration_report(z, y, n_boot=150, seed=0, name="CE", progress=progress)
    assert len(res.replicates["ece"]) == 150
    assert len(calls) == 1 and calls[0].total == 150 and calls[0].kw.get("enabled", True) is progress
    assert calls[0].kw["unit"] == "replicate" and "CE" in calls[0].kw["desc"]
    assert calls[0].updates == [64, 64, 22]                   # one update per block, not per replicate
    calls.clear()
    C.calibration_report(z, y, n_boot=0, progress=progress)     # no bootstrap, no bar
    assert calls == []


# --- temperature scaling -----------------------------------------------------------------------------
def test_temperature_scaling_recovers_known_temperature():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 10, generator=g, dtype=torch.float64) * 4
    t_true = 2.5
    y = torch.multinomial(torch.softmax(z / t_true, 1), 1, generator=g).squeeze(1)   # labels drawn with T
    fit = C.fit_temperature(z, y)
    assert fit.temperature == pytest.approx(t_true, rel=0.03)
    assert fit.nll_after < fit.nll_before
    # the fitted T is the NLL minimiser: a brute-force grid does not beat it
    grid = torch.linspace(2.0, 3.0, 201, dtype=torch.float64)
    nll = torch.stack([torch.nn.functional.cross_entropy(z / t, y) for t in grid])
    assert fit.nll_after <= nll.min().item() + 1e-9
    before = C.calibration_report(z, y)
    after = C.calibration_report(z, y, temperature=fit.temperature)
    assert after.ece < before.ece and after.nll == pytest.approx(fit.nll_after, rel=1e-9)
    np.testing.assert_allclose(C.apply_temperature(z.numpy(), 2.0), z.numpy() / 2)
    assert torch.equal(C.apply_temperature(z, fit), z / fit.temperature)        # the fit itself is accepted


def test_temperature_fit_on_errorless_validation_warns_that_there_is_no_minimum():
    # every validation prediction right: NLL(T) falls monotonically as T -> 0, so "the fitted T" is only where
    # the optimiser stopped; a user must be told instead of getting a silently sharpened model
    g = torch.Generator().manual_seed(5)
    z = torch.randn(200, 4, generator=g, dtype=torch.float64)
    y = z.argmax(1)
    with pytest.warns(RuntimeWarning, match="every one of the 200 validation predictions is right: the NLL"):
        fit = C.fit_temperature(z, y)
    grid = torch.tensor([0.5, 0.1, 0.02], dtype=torch.float64)
    nll = [float(torch.nn.functional.cross_entropy(z / t, y)) for t in grid]
    assert nll[0] > nll[1] > nll[2] and fit.temperature < 0.5      # no minimum to find: it only sharpens
    assert not fit.converged and not fit.to_dict()["converged"]
    with pytest.warns(RuntimeWarning, match=r"stopped after 1 iteration\(s\) at T = .* without reaching a minimum"):
        C.fit_temperature(z[:, :3] * 0.3, torch.randint(0, 3, (200,), generator=g), max_iter=1)


def test_scaled_result_records_its_temperature_fit():
    z, y = random_logits(n=400, k=5, seed=21)
    d = ra.Dump.from_arrays(z * 2, y, name="CE")
    val = ra.Dump.from_arrays(z[:200] * 2, y[:200], name="val")
    plain, scaled = C.calibrate_dumps([d], val_dumps=[val])
    fit = C.fit_temperature(z[:200] * 2, y[:200])
    assert plain.temperature_fit is None and "temperature_fit" not in plain.to_dict()
    rec = scaled.to_dict()["temperature_fit"]
    assert rec["validation"] == "val" and rec["temperature"] == fit.temperature == scaled.temperature
    assert rec["nll_before"] == pytest.approx(float(torch.nn.functional.cross_entropy(z[:200] * 2, y[:200])))
    assert rec["nll_after"] == pytest.approx(fit.nll_after) and rec["num_samples"] == 200 and rec["converged"]


# --- bad input ------------------------------------------------------------------------------------------
def test_probabilities_are_refused():
    z, y = random_logits(n=100, k=5)
    with pytest.raises(DataError, match="look like probabilities"):
        C.calibration_report(torch.softmax(z, 1), y)
    with pytest.raises(DataError, match="look like probabilities"):
        C.expected_calibration_error(torch.softmax(z, 1).numpy(), y.numpy())
    C.calibration_report(torch.log_softmax(z, 1), y)             # log-probabilities are fine logits


def test_nan_rows_are_excluded_with_a_warning():
    z, y = random_logits(n=300, k=5, seed=9)
    z[20, (y[20] + 1) % 5] = float("-inf")    # -inf off the label is a valid zero probability: row kept
    bad = z.clone()
    bad[[3, 50, 77], 1] = float("nan")
    bad[10, 0] = float("inf")
    bad[[40, 41], y[[40, 41]]] = float("-inf")       # and two rows with probability 0 at the label
    with pytest.warns(RuntimeWarning, match=r"6 of 300 samples .*excluded: 4 with NaN or \+inf logits, 2 with a "
                      r"-inf logit at the label \(probability 0, infinite NLL\)$"):
        res = C.calibration_report(bad, y, n_boot=20)
    keep = torch.ones(300, dtype=torch.bool)
    keep[[3, 10, 50, 77, 40, 41]] = False
    ref = C.calibration_report(z[keep], y[keep])
    assert res.n_excluded == 6 and res.num_samples == 294
    for key in C.SCALARS:
        assert getattr(res, key) == pytest.approx(getattr(ref, key), abs=1e-13), key


def test_each_metric_excludes_nan_rows_like_the_report():
    z, y = random_logits(n=400, k=6, seed=12)
    z = z.float()
    bad = z.clone()
    bad[[5, 99], 2] = float("nan")
    bad[200] = float("-inf")                  # every logit -inf: NaN softmax
    keep = torch.ones(400, dtype=torch.bool)
    keep[[5, 99, 200]] = False
    for fn in (C.expected_calibration_error, C.max_calibration_error, C.adaptive_ece, C.classwise_ece,
               C.over_under_ece, C.negative_log_likelihood, C.brier_score):
        with pytest.warns(RuntimeWarning, match="3 of 400 samples"):
            got = fn(bad, y)
        assert got == pytest.approx(fn(z[keep], y[keep]), abs=1e-15), fn.__name__


def test_minus_inf_at_the_label_is_excluded_from_the_report():
    # p_y = 0 exactly: the NLL is infinite, so the row leaves every metric of the report (and is counted), the
    # classwise cells included, and the metric functions called alone leave it out too (the same N)
    z, y = random_logits(n=300, k=5, seed=13)
    bad = z.clone()
    bad[[7, 8], y[[7, 8]]] = float("-inf")
    keep = torch.ones(300, dtype=torch.bool)
    keep[[7, 8]] = False
    for dtype in (torch.float64, torch.float32):
        with pytest.warns(RuntimeWarning, match="2 of 300 samples"):
            res = C.calibration_report(bad.to(dtype), y)
        ref = C.calibration_report(z[keep].to(dtype), y[keep])
        assert res.n_excluded == 2 and res.bins.counts.sum() == 298
        for key in C.SCALARS:
            assert getattr(res, key) == pytest.approx(getattr(ref, key), abs=1e-13), key
        assert ref.classwise_ece == pytest.approx(loop_classwise(z[keep].to(dtype), y[keep])[0], abs=1e-6)
        for fn, key in ((C.expected_calibration_error, "ece"), (C.max_calibration_error, "mce"),
                        (C.adaptive_ece, "aece"), (C.classwise_ece, "classwise_ece")):
            with pytest.warns(RuntimeWarning, match="2 of 300 samples"):
                assert fn(bad.to(dtype), y) == pytest.approx(getattr(ref, key), abs=1e-13), fn.__name__


@pytest.mark.parametrize("z, y, match", [
    (np.zeros((4, 1)), np.zeros(4, int), "at least 2 classes"),
    (np.zeros((4, 3)), np.array([0, 1, 3, 0]), r"labels must lie in \[0, 2\]"),
    (np.zeros((0, 3)), np.zeros(0, int), "no samples"),
    (np.zeros((4, 3)), np.zeros(3, int), "one entry per logits row"),
])
def test_bad_input_raises_one_line(z, y, match):
    with pytest.raises(DataError, match=match) as info:
        C.calibration_report(z, y)
    assert "\n" not in str(info.value)


def test_bad_options():
    z, y = random_logits(n=50, k=3)
    with pytest.raises(DataError, match="number of bins"):
        C.calibration_report(z, y, n_bins=0)
    with pytest.raises(DataError, match="adaptive ECE rule"):
        C.adaptive_ece(z, y, rule="mine")
    with pytest.raises(DataError, match="temperature"):
        C.apply_temperature(z, -1.0)


def test_warnings_for_few_samples_and_single_label():
    z, y = random_logits(n=10, k=3)
    with pytest.warns(RuntimeWarning, match="only 10 samples for 15 bins"):
        C.calibration_report(z, y)
    with pytest.warns(RuntimeWarning, match="all 40 samples have label 2"):
        C.calibration_report(torch.randn(40, 3), torch.full((40,), 2))


def test_num_classes_from_model_not_labels():
    # labels only use classes 0..2 of a 6-class model: classwise ECE averages over all 6 classes
    z, y = random_logits(n=400, k=6, seed=8)
    y = y % 3
    res = C.calibration_report(z, y)
    assert res.num_classes == 6 and res.classwise_per_class.shape == (6,)
    assert res.classwise_ece == pytest.approx(loop_classwise(z, y)[0], abs=1e-12)


def test_single_threaded_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    seen = []
    C.single_threaded(lambda: seen.append(torch.get_num_threads()))()
    assert seen == [1] and torch.get_num_threads() == before


def test_correctness_on_tied_float16_logits_matches_first_index_argmax():
    # float16 logits on a coarse grid: many rows tie at the max; the prediction is the first maximal index
    g = torch.Generator().manual_seed(5)
    z = (torch.randint(0, 4, (3000, 6), generator=g).float() / 2).half()
    y = torch.randint(0, 6, (3000,), generator=g)
    expected = (z.argmax(1) == y).numpy()
    assert (torch.softmax(z.double(), 1).amax(1) <= 0.5).float().mean() > 0.3   # ties are common here
    res = C.calibration_report(z, y)
    np.testing.assert_array_equal(res.correct, expected)
    assert res.accuracy == pytest.approx(expected.mean(), abs=1e-15)


@pytest.mark.filterwarnings("ignore:only")
def test_prediction_is_argmax_of_logits_when_probabilities_tie():
    # REFERENCE.md: pred = argmax_k z_k. Logits 0 and 1e-8 give equal float32 probabilities (0.5, 0.5); the
    # prediction is still class 1, so the sample is correct and the model under-confident (conf 0.5, acc 1)
    from repanalysis.analyze.logits import logit_stats
    z = np.array([[0.0, 1e-8], [1e-8, 0.0], [3.0, 0.0]], np.float32)
    y = np.array([1, 1, 0])
    assert torch.softmax(torch.from_numpy(z), 1)[0, 0] == torch.softmax(torch.from_numpy(z), 1)[0, 1]
    res = C.calibration_report(z, y, n_bins=2)
    np.testing.assert_array_equal(res.correct, [True, False, True])
    np.testing.assert_array_equal(res.correct, logit_stats(z, y).correct)
    conf = torch.softmax(torch.from_numpy(z).double(), 1).amax(1).numpy()
    ece, o, u, _ = loop_ece(conf, np.array([1.0, 0.0, 1.0]), np.linspace(0, 1, 3))
    assert (res.ece, res.oece, res.uece) == pytest.approx((ece, o, u), abs=1e-7)
    assert res.accuracy == pytest.approx(2 / 3, abs=1e-15)


@pytest.mark.filterwarnings("ignore:only")
def test_classwise_counts_probabilities_that_underflow_to_zero():
    # p_1 of the first sample is exp(-120) -> exactly 0 in float32; its label is 1, so 1[y == 1] must count
    # (REFERENCE.md: all N samples). rule="reference" leaves p = 0 in no bin, as the reference code does.
    z = np.array([[0.0, -120.0], [3.0, 0.0]], np.float32)
    y = np.array([1, 0])
    p = torch.softmax(torch.from_numpy(z), 1)
    assert p[0, 1] == 0
    expected = loop_classwise(z.astype(np.float64), y, n_bins=15)[0]       # float64: p_1 = 7.7e-53 > 0
    assert C.classwise_ece(z, y) == pytest.approx(expected, abs=1e-7)
    assert C.classwise_ece(z.astype(np.float64), y) == pytest.approx(expected, abs=1e-12)
    assert C.calibration_report(z, y).classwise_ece == pytest.approx(expected, abs=1e-7)
    # by hand, reference rule: class 0 bins {1.0 (y=1: miss), 0.9526 (hit)} in the last bin -> |1.9526 - 1| / 2;
    # class 1 keeps only p = 0.0474 (a miss) in bin 0 -> 0.0474 / 2
    p0 = float(p[1, 0])
    hand = ((1.0 + p0 - 1) / 2 + (1 - p0) / 2) / 2
    assert C.classwise_ece(z, y, rule="reference") == pytest.approx(hand, abs=1e-7)
    with pytest.raises(DataError, match="classwise ECE rule"):
        C.classwise_ece(z, y, rule="nope")


def test_bootstrap_classwise_bins_zero_probabilities_like_the_point_estimate():
    # each bootstrap replicate equals the classwise ECE of its resample, underflowed zeros included
    g = torch.Generator().manual_seed(8)
    z = torch.randn(300, 4, generator=g) * 3
    y = torch.randint(0, 4, (300,), generator=g)
    z[:40, 0] = 150.0                                     # p_k of the other classes underflow to 0
    res = C.calibration_report(z, y, n_boot=3, seed=1)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(300, (3, 300), generator=gen)
    for r in range(3):
        assert res.replicates["classwise_ece"][r] == pytest.approx(
            C.classwise_ece(z[idx[r]], y[idx[r]]), abs=1e-12)


# --- options and arrays of the wrong kind: one-line DataErrors, not numpy/torch exceptions ---------------

_Z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.2, 0.1, 3.0], [1.0, 1.5, 0.0]])
_Y = np.array([0, 1, 2, 0])


@pytest.mark.parametrize("call, message", [
    (lambda: C.calibration_report(_Z, _Y, n_boot=2.5), "n_boot must be an integer >= 0; got 2.5"),
    (lambda: C.calibration_report(_Z, _Y, n_boot="5"), "n_boot must be an integer >= 0; got '5'"),
    (lambda: C.calibration_report(_Z, _Y, n_boot=None), "n_boot must be an integer >= 0; got None"),
    (lambda: C.calibration_report(_Z, _Y, n_boot=2, seed=None), "seed must be an integer; got None"),
    (lambda: C.calibration_report(_Z, _Y, temperature="2"), "temperature must be a finite number > 0"),
    (lambda: C.calibration_report(_Z, _Y, ci_level=1.0), r"ci_level must be a finite number > 0 and < 1"),
    (lambda: C.fit_temperature(_Z, _Y, init=float("nan")), "initial temperature must be a finite number > 0"),
    (lambda: C.fit_temperature(_Z, _Y, init=0), "initial temperature must be a finite number > 0; got 0"),
    (lambda: C.fit_temperature(_Z, _Y, max_iter=0), "max_iter must be an integer >= 1; got 0"),
    (lambda: C.apply_temperature("a", 2.0), "expected an array of numbers; got text"),
    (lambda: C.apply_temperature(_Z, -1), "temperature must be a finite number > 0; got -1"),
    (lambda: C.adaptive_edges([]), "adaptive edges need a 1-D array of at least one confidence"),
    (lambda: C.bin_statistics([0.5, 0.6], [1], C.equal_width_edges(15)), "conf and correct must be 1-D of the same"),
    (lambda: C.bin_statistics([0.5], [1], [0.5, 0.2]), "edges must be a 1-D increasing array"),
    (lambda: C.expected_calibration_error(_Z, np.array(["a", "b", "c", "a"])), "expected an array of numbers"),
    (lambda: C.expected_calibration_error(_Z, _Y, num_classes=0), "num_classes must be an integer >= 1; got 0"),
    (lambda: C.expected_calibration_error(_Z, _Y, num_classes=4.5), "num_classes must be an integer >= 1"),
])
def test_bad_options_and_arrays_are_one_line_data_errors(call, message):
    with pytest.raises(DataError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_numpy_scalar_options_are_numbers():
    ref = C.calibration_report(_Z, _Y, 2, n_boot=3, seed=1, temperature=2.0)
    res = C.calibration_report(_Z, _Y, np.int64(2), n_boot=np.int64(3), seed=np.int32(1),
                               temperature=np.float32(2.0))
    assert res.ece == ref.ece and res.ci == ref.ci
    np.testing.assert_array_equal(C.apply_temperature(_Z.tolist(), 2), _Z / 2)


def test_tensor_and_whole_float_options_and_any_seed():
    ref = C.calibration_report(_Z, _Y, 2, n_boot=5, seed=3, temperature=1.5)
    res = C.calibration_report(_Z, _Y, 2, n_boot=5.0, seed=torch.tensor(3), temperature=torch.tensor(1.5))
    assert res.ece == ref.ece and res.ci == ref.ci and res.n_bins == 2
    assert C.calibration_report(_Z, _Y, 2, seed=None).seed is None          # no bootstrap: the seed is unused
    neg = C.calibration_report(_Z, _Y, 2, n_boot=5, seed=-1)                 # torch takes negative seeds
    assert neg.seed == -1 and neg.ci == C.calibration_report(_Z, _Y, 2, n_boot=5, seed=-1).ci
    np.testing.assert_array_equal(C.apply_temperature(_Z, torch.tensor(2.0)), _Z / 2)
    with pytest.raises(DataError, match="n_boot must be an integer >= 0; got 2.5"):
        C.calibration_report(_Z, _Y, 2, n_boot=2.5)


# --- the unshifted exp pass and its redone rows ---------------------------------------------------------
@pytest.mark.parametrize("dtype, big", [(torch.float32, 150.0), (torch.float64, 800.0)])
def test_rows_beyond_the_exp_range_agree_with_float64_brute_force(dtype, big):
    # _scan takes exp(z) without the row max; rows whose sum overflows (logits above ~88 in float32, ~709 in
    # float64) or is tiny (every logit below ~-41) are redone with the max subtracted. Mixed in one chunk with
    # ordinary rows, every metric must equal the float64 softmax brute force.
    z, y = random_logits(n=1200, k=7, seed=21)
    z[0::4] += big                                      # overflow unshifted
    z[1::4] -= 3 * big                                  # every exp(z) underflows
    z[2::8] -= 45.0                                     # tiny but representable row sums
    z = z.to(dtype)
    zd = z.double()
    p = torch.softmax(zd, 1)
    conf, pred = p.max(1)
    right = (pred == y).numpy()
    res = C.calibration_report(z, y)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(res.confidence, conf.numpy(), rtol=tol, atol=0)
    np.testing.assert_array_equal(res.correct, right)
    ece, o, u, mce = loop_ece(conf.numpy(), right, np.linspace(0, 1, 16))
    assert (res.ece, res.oece, res.uece, res.mce) == pytest.approx((ece, o, u, mce), abs=tol)
    assert res.classwise_ece == pytest.approx(loop_classwise(zd, y)[0], abs=tol)
    nll = torch.nn.functional.cross_entropy(zd, y).item()
    assert res.nll == pytest.approx(nll, rel=tol)
    brier = ((p - torch.nn.functional.one_hot(y, 7)) ** 2).sum(1).mean().item()
    assert res.brier == pytest.approx(brier, abs=tol)
    assert res.n_excluded == 0
    assert C.expected_calibration_error(z, y) == res.ece
    assert C.negative_log_likelihood(z, y) == pytest.approx(res.nll, rel=1e-15)
    assert C.brier_score(z, y) == pytest.approx(res.brier, rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_a_few_ulps_apart_are_decided_by_the_logits(dtype):
    # Two top logits 1 to 3 units in the last place apart: exp rounds them to equal or even swapped values;
    # the prediction is still argmax_k z_k (REFERENCE.md "Notation")
    g = torch.Generator().manual_seed(8)
    n, k = 4000, 5
    z = torch.randn(n, k, generator=g, dtype=torch.float64).to(dtype) - 20
    top = (torch.rand(n, generator=g, dtype=torch.float64) * 40 - 20).to(dtype)
    a = torch.randint(0, k, (n,), generator=g)
    b = (a + torch.randint(1, k, (n,), generator=g)) % k
    steps = torch.randint(1, 4, (n,), generator=g)
    other = top.clone()
    for _ in range(3):                                  # nextafter 1..3 times, per row
        other = torch.where(steps > 0, torch.nextafter(other, torch.full_like(other, math.inf)), other)
        steps -= 1
    rows = torch.arange(n)
    z[rows, a] = top
    z[rows, b] = other
    y = torch.where(torch.rand(n, generator=g) < 0.5, a, b)
    expected = (z.argmax(1) == y).numpy()
    assert 0.3 < expected.mean() < 0.7
    res = C.calibration_report(z, y)
    np.testing.assert_array_equal(res.correct, expected)
    assert C.over_under_ece(z, y) == pytest.approx((res.oece, res.uece), abs=0)


@pytest.mark.filterwarnings("ignore:only")
def test_bootstrap_classwise_design_uses_the_scans_probabilities_bit_for_bit():
    # the classwise bootstrap bins p from its own pass over the logits (_probabilities); with float32 logits,
    # redone rows among them, each replicate must equal the report on that resample to the last bit of p
    z, y = random_logits(n=300, k=6, seed=30)
    z[::5] += 120.0
    z = z.float()
    res = C.calibration_report(z, y, n_bins=8, n_boot=3, seed=4)
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(300, (3, 300), generator=gen)
    for r in range(3):
        again = C.calibration_report(z[idx[r]], y[idx[r]], n_bins=8)
        assert res.replicates["classwise_ece"][r] == pytest.approx(again.classwise_ece, abs=1e-13), r


def test_classwise_reference_rule_keeps_probabilities_that_only_an_unshifted_exp_would_zero():
    # max logit -20: exp(-110) is 0 in float32, exp(-110 + 20) = 8e-40 is not, and softmax gives the latter; the
    # reference rule leaves only p_k = 0 in no bin, so the float32 value must equal the float64 one
    z = torch.tensor([[-20.0, -110.0], [0.0, -3.0]])
    y = torch.tensor([1, 0])
    expected = C.classwise_ece(z.double(), y, rule="reference")
    assert expected == pytest.approx(0.4762870634, abs=1e-9)
    assert C.classwise_ece(z, y, rule="reference") == pytest.approx(expected, abs=1e-7)
    assert C.calibration_report(z, y).classwise_ece == pytest.approx(C.classwise_ece(z.double(), y), abs=1e-7)


@pytest.mark.parametrize("top", [17.0, 20.0, 30.0, 80.0])
def test_nll_of_confident_rows_is_never_negative(top):
    # log s - z_y cancels to +-6e-8 in float32 for a confident row; log(s / e_y) >= 0 always
    z = torch.tensor([[top, 0.0, -1.0]] * 3)
    y = torch.tensor([0, 0, 0])
    exact = torch.nn.functional.cross_entropy(z.double(), y).item()
    for nll in (C.negative_log_likelihood(z, y), C.calibration_report(z, y).nll):
        assert 0.0 <= nll and nll == pytest.approx(exact, abs=2e-7)
    # a label logit whose exp underflows, unshifted or after the shift of a redone row: log s + m - z_y
    z = torch.tensor([[0.0, -100.0], [200.0, 50.0]])
    y = torch.tensor([1, 1])
    assert C.negative_log_likelihood(z, y) == pytest.approx(
        torch.nn.functional.cross_entropy(z.double(), y).item(), rel=1e-6)

"""Confidence scores, NCI, misclassification AUROC and OOD detection against hand-worked and brute-force values."""
import math

import numpy as np
import pytest
import torch

import repanalysis  # noqa: F401
from repanalysis.analyze import confidence as F
from repanalysis.errors import DataError


def pairwise_auroc(pos, neg):
    """Mann-Whitney: P(score_pos > score_neg) + 0.5 P(equal), by brute force over all pairs."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def brute_fpr_at_tpr(pos, neg, level=0.95):
    """Smallest FPR over thresholds t (score >= t is 'positive') whose TPR reaches the level."""
    best = 1.0
    for t in np.unique(np.r_[pos, neg, np.inf]):
        tpr, fpr = np.mean(pos >= t), np.mean(neg >= t)
        if tpr >= level:
            best = min(best, fpr)
    return best


def test_scores_hand_worked():
    z = np.array([[0.0, math.log(3.0)], [2.0, 2.0]])
    h = np.array([[1.0, -2.0, 3.0], [0.0, 0.5, -0.5]])
    s = F.confidence_scores(z, h)
    assert s["max_softmax"].tolist() == pytest.approx([0.75, 0.5])
    assert s["max_logit"].tolist() == pytest.approx([math.log(3), 2.0])
    assert s["energy"].tolist() == pytest.approx([math.log(4), 2 + math.log(2)])
    assert s["feature_l1"].tolist() == pytest.approx([6.0, 1.0])


def test_nci_is_standardised_l1_with_population_std():
    h = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, -6.0], [0.5, 0.5]])   # L1 = 2, 2, 6, 1
    l1 = np.array([2.0, 2.0, 6.0, 1.0])
    expected = (l1 - l1.mean()) / l1.std()                              # numpy std is ddof=0
    np.testing.assert_allclose(F.feature_norm_confidence(h), expected)
    with pytest.raises(DataError, match="same feature L1 norm"):
        F.feature_norm_confidence(np.ones((3, 2)))


def test_misclassification_auroc_matches_pairwise_count():
    g = torch.Generator().manual_seed(0)
    n, k = 600, 5
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, k, generator=g, dtype=torch.float64)
    z[torch.arange(n), y] += torch.rand(n, generator=g, dtype=torch.float64) * 3
    h = torch.randn(n, 8, generator=g, dtype=torch.float64) * (1 + z.amax(1, keepdim=True).abs())
    res = F.misclassification_scores(z, y, h, name="m")
    correct = (z.argmax(1) == y).numpy()
    np.testing.assert_array_equal(res.correct, correct)
    p = torch.softmax(z, 1).amax(1).numpy()
    assert res.auroc["max_softmax"] == pytest.approx(pairwise_auroc(p[correct], p[~correct]))
    l1 = h.abs().sum(1).numpy()
    assert res.auroc["feature_l1"] == pytest.approx(pairwise_auroc(l1[correct], l1[~correct]))
    e = torch.logsumexp(z, 1).numpy()
    assert res.auroc["energy"] == pytest.approx(pairwise_auroc(e[correct], e[~correct]))
    np.testing.assert_allclose(res.nci, (l1 - l1.mean()) / l1.std())
    assert res.accuracy == pytest.approx(correct.mean())
    assert set(res.to_dict()["auroc"]) == set(F.SCORES)


def test_without_features_has_three_scores():
    z = torch.randn(50, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (50,))
    res = F.misclassification_scores(z, y)
    assert set(res.auroc) == {"max_softmax", "max_logit", "energy"} and res.nci is None


def test_fpr_at_95_hand_worked_and_brute_force():
    # 20 positives 1..20, negatives at 0.5, 1.5, 2.5, 30: TPR >= .95 needs t <= 2 -> FPR = 2/4 (1.5 and 30)
    pos = np.arange(1, 21, dtype=float)
    neg = np.array([0.5, 1.5, 2.5, 30.0])
    assert F.fpr_at_tpr(pos, neg)[0] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pos, neg = rng.normal(1, 1, 137), rng.normal(0, 1, 91)
        assert F.fpr_at_tpr(pos, neg)[0] == pytest.approx(brute_fpr_at_tpr(pos, neg))


def test_ood_detection_against_brute_force():
    g = torch.Generator().manual_seed(1)
    zi = torch.randn(300, 6, generator=g, dtype=torch.float64) * 3
    zo = torch.randn(200, 6, generator=g, dtype=torch.float64)
    hi = torch.rand(300, 4, generator=g, dtype=torch.float64) + 0.5
    ho = torch.rand(200, 4, generator=g, dtype=torch.float64)
    res = F.ood_detection(zi, zo, hi, ho, name="CE")
    for key, (a, b) in {"max_logit": (zi.amax(1), zo.amax(1)), "feature_l1": (hi.sum(1), ho.sum(1)),
                        "max_softmax": (torch.softmax(zi, 1).amax(1), torch.softmax(zo, 1).amax(1))}.items():
        a, b = a.numpy(), b.numpy()
        assert res.auroc[key] == pytest.approx(pairwise_auroc(a, b)), key
        assert res.fpr_at_95_tpr[key] == pytest.approx(brute_fpr_at_tpr(a, b)), key
    fpr, tpr = res.roc["energy"]
    assert fpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(tpr) >= 0)
    assert res.num_in == 300 and res.num_ood == 200
    assert res.to_dict()["auroc"]["max_logit"] == pytest.approx(res.auroc["max_logit"])


def test_energy_ood_auroc_counts_pairs_with_ties_as_half():
    """Energy = logsumexp z (Liu et al. 2020). In- and OOD rows drawn from a pool of 5 logit rows, so many
    (in, out) pairs have exactly the same energy; AUROC = share of pairs with the in-distribution energy
    higher, a tie counting 1/2, counted pair by pair."""
    pool = np.array([[2.0, 0.0, -1.0, 0.5], [0.3, 0.2, 0.1, 0.0], [5.0, 1.0, 1.0, 1.0], [-1.0, -2.0, -3.0, -4.0],
                     [1.0, 1.0, 1.0, 1.0]])
    rng = np.random.default_rng(11)
    zi = pool[rng.choice(5, 41, p=[0.3, 0.1, 0.3, 0.1, 0.2])]
    zo = pool[rng.choice(5, 29, p=[0.1, 0.4, 0.1, 0.2, 0.2])]
    energy = [math.log(sum(math.exp(v) for v in row)) for row in pool]   # distinct, well apart
    assert min(np.diff(np.sort(energy))) > 0.01
    e_in = [energy[int(np.flatnonzero((pool == row).all(1))[0])] for row in zi]
    e_out = [energy[int(np.flatnonzero((pool == row).all(1))[0])] for row in zo]
    wins = ties = 0
    for a in e_in:
        for b in e_out:
            wins += a > b
            ties += a == b
    assert ties > 100                                                    # the case under test
    expected = (wins + 0.5 * ties) / (len(e_in) * len(e_out))
    res = F.ood_detection(zi, zo, name="CE")
    assert res.auroc["energy"] == pytest.approx(expected, abs=1e-12)
    assert res.auroc["energy"] != pytest.approx(wins / (len(e_in) * len(e_out)), abs=1e-6)   # ties do count


def test_nan_rows_excluded_with_count():
    z = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    z[[2, 9], 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="^CE: 2 of 40 samples have NaN or inf logits; they are excluded from"):
        res = F.misclassification_scores(z, y, name="CE")
    assert res.correct.size == 38 and res.n_excluded == 2
    with pytest.warns(RuntimeWarning, match="^2 of 40 in-distribution samples have NaN or inf"):
        F.ood_detection(z, torch.randn(10, 3))
    zo = torch.randn(10, 3, dtype=torch.float64)
    zo[4, 1] = float("inf")
    with pytest.warns(RuntimeWarning, match="^2 of 40 in-distribution, 1 of 10 OOD samples have NaN or inf"):
        res = F.ood_detection(z, zo)
    assert (res.num_in, res.num_ood, res.n_excluded) == (38, 9, 3)


def test_bad_input():
    with pytest.raises(DataError, match="same K"):
        F.ood_detection(np.zeros((4, 3)), np.zeros((4, 5)))
    with pytest.raises(DataError, match="features must be"):
        F.confidence_scores(np.zeros((4, 3)), np.zeros((5, 2)))
    with pytest.raises(DataError, match=r"labels must lie in"):
        F.misclassification_scores(np.zeros((4, 3)), np.array([0, 1, 2, 7]))


def test_figures_label_axes_and_name_models(tmp_path):
    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.plot import calibration as P

    g = torch.Generator().manual_seed(3)
    z = torch.randn(400, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (400,), generator=g)
    h = torch.rand(400, 6, generator=g, dtype=torch.float64)
    cal = [calibration_report(z, y, name="CE"), calibration_report(z / 2, y, name="CE +TS")]
    ax = P.plot_reliability(cal[0])
    assert ax.get_xlabel().startswith("Confidence") and "ECE" in ax.get_legend().get_texts()[0].get_text()
    fig = P.reliability_figure(cal)
    assert len([a for a in fig.axes if a.get_visible()]) == 4
    ax = P.plot_confidence_histograms(cal)
    assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()] == ["CE", "CE +TS"]
    mis = F.misclassification_scores(z, y, h, name="CE")
    assert P.plot_nci_scatter(mis).get_xlabel().startswith("Standardised feature L1 norm")
    with pytest.raises(DataError, match="no NCI"):
        P.plot_nci_scatter(F.misclassification_scores(z, y, name="CE"))
    ood = F.ood_detection(z, z[:100] / 3, h, h[:100] / 2, name="CE")
    assert P.plot_roc(ood).get_ylabel().startswith("True positive rate")
    written = P.save_calibration_figures(tmp_path, cal, [mis], [ood])
    assert {p.name for p in written} >= {"reliability.png", "nci_scatter.pdf", "ood_roc.png", "confidence_hist.png"}


def test_max_softmax_is_shift_invariant_so_equal_softmaxes_tie():
    # logits that differ by a constant have identical softmaxes: their max-softmax scores must tie exactly,
    # so separating them is chance (AUROC 0.5) whichever the offset (exp(z_max - logsumexp z) broke this)
    zi = np.array([[0.0, 1.0, 2.0], [0.5, -1.0, 3.0]])
    for offset in (20.0, 100.0, -64.0):
        zo = zi + offset
        s_in, s_out = (F.confidence_scores(z)["max_softmax"] for z in (zi, zo))
        assert torch.equal(s_in, s_out), offset
        res = F.ood_detection(zi, zo)
        assert res.auroc["max_softmax"] == 0.5, offset
        assert res.auroc["max_logit"] == (0.0 if offset > 0 else 1.0)
    s = F.confidence_scores(zi)
    np.testing.assert_allclose(s["max_softmax"], torch.softmax(torch.tensor(zi), 1).amax(1), rtol=1e-15)
    np.testing.assert_allclose(s["energy"], torch.logsumexp(torch.tensor(zi), 1), rtol=1e-15)


def test_empty_or_too_small_inputs_name_the_real_problem():
    with pytest.raises(DataError, match="no samples: logits have 0 rows"):
        F.misclassification_scores(np.zeros((0, 2)), np.zeros(0, int))
    with pytest.raises(DataError, match="needs positive and negative scores; got 0 positive and 2 negative"):
        F.fpr_at_tpr(np.zeros(0), np.array([0.3, 0.4]))
    with pytest.raises(DataError, match=r"logits must be 2-D \[N, K\] with K >= 1; got shape \(2, 0\)"):
        F.confidence_scores(np.zeros((2, 0)))
    with pytest.raises(DataError, match="1 of 3 samples have NaN or inf features"):
        F.feature_norm_confidence(np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 3.0]]))
    with pytest.raises(DataError, match="needs at least 2 samples; got 1"):
        F.feature_norm_confidence(np.ones((1, 3)))
    with pytest.raises(DataError, match="all samples have the same feature L1 norm"):
        F.feature_norm_confidence(np.ones((4, 3)))


def test_reliability_bars_reach_accuracy_and_gaps_span_to_confidence():
    # the model-coloured bar of every non-empty bin ends at the bin's accuracy, under-confident bins included
    # (their gap is hatching over the bar's top, from confidence up to accuracy); over-confident gaps sit on top
    from matplotlib.colors import to_rgba

    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.plot import calibration as P

    g = torch.Generator().manual_seed(5)
    z = torch.randn(3000, 4, generator=g, dtype=torch.float64) * 1.5
    y = torch.where(torch.rand(3000, generator=g) < 0.6, z.argmax(1), torch.randint(0, 4, (3000,), generator=g))
    res = calibration_report(z, y, n_bins=10, name="m")
    b = res.bins
    filled = b.counts > 0
    over, under = filled & (b.confidence > b.accuracy), filled & (b.confidence < b.accuracy)
    assert over.any() and under.any()
    ax = P.plot_reliability(res, color="#E69F00")
    rects = [r for r in ax.patches]
    bars = [r for r in rects if r.get_facecolor() == to_rgba("#E69F00")]
    np.testing.assert_allclose(sorted((r.get_x(), r.get_height()) for r in bars),
                               list(zip(b.edges[:-1][filled], b.accuracy[filled])), atol=1e-12)
    hatched = [r for r in rects if r.get_hatch()]
    got = sorted((r.get_x(), r.get_y(), r.get_y() + r.get_height(), r.get_hatch()) for r in hatched)
    want = sorted([(x, a, c, "//") for x, a, c in zip(b.edges[:-1][over], b.accuracy[over], b.confidence[over])]
                  + [(x, c, a, "\\\\") for x, a, c in zip(b.edges[:-1][under], b.accuracy[under], b.confidence[under])])
    assert [w[3] for w in want] == [g_[3] for g_ in got]
    np.testing.assert_allclose([g_[:3] for g_ in got], [w[:3] for w in want], atol=1e-12)
    assert all(r.get_facecolor()[3] == 0 for r in hatched if r.get_hatch() == "\\\\")   # the bar shows through


def test_adaptive_reliability_lays_bins_out_by_their_share_of_samples():
    # equal-mass bins side by side on the ranked samples: each bar as wide as n_b / N, ending at x = 1, its
    # height the bin's accuracy, a black line at its mean confidence; below, the bin's confidence range
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.plot import calibration as P

    g = torch.Generator().manual_seed(8)
    z = torch.randn(1000, 5, generator=g, dtype=torch.float64) * 4           # confident: bins crowd near 1
    y = torch.where(torch.rand(1000, generator=g) < 0.7, z.argmax(1), torch.randint(0, 5, (1000,), generator=g))
    res = calibration_report(z, y, n_bins=10, name="m")
    b = res.adaptive_bins
    fig, (ax, low) = plt.subplots(2, 1)
    P.plot_reliability(res, ax=ax, count_ax=low, color="#0072B2", adaptive=True)
    bars = sorted((r.get_x(), r.get_width(), r.get_height()) for r in ax.patches
                  if r.get_facecolor() == to_rgba("#0072B2"))
    filled = b.counts > 0
    share = b.counts[filled] / 1000
    np.testing.assert_allclose([w for _, w, _ in bars], share, atol=1e-12)
    np.testing.assert_allclose([x for x, _, _ in bars], 1 - np.cumsum(share[::-1])[::-1], atol=1e-12)
    np.testing.assert_allclose([h for _, _, h in bars], b.accuracy[filled], atol=1e-12)
    segments = ax.collections[0].get_segments()
    np.testing.assert_allclose(sorted(s[0][1] for s in segments), sorted(b.confidence[filled]), atol=1e-12)
    ranges = sorted((r.get_y(), r.get_y() + r.get_height()) for r in low.patches)
    np.testing.assert_allclose(ranges, sorted(zip(b.edges[:-1][filled], b.edges[1:][filled])), atol=1e-12)
    assert ax.get_xlabel() == "" and low.get_xlabel() == "Share of samples, ranked by confidence"
    plt.close(fig)
    # in a figure the range panels share their y axis: it reaches the lowest bin of every model
    weak = calibration_report(z / 8, y, n_bins=10, name="weak")
    fig = P.reliability_figure([weak, res], adaptive=True)
    lowest = min(float(r.adaptive_bins.edges[0]) for r in (weak, res))
    assert fig.axes[2].get_ylim()[0] <= lowest and fig.axes[3].get_ylim()[0] <= lowest
    plt.close(fig)


def test_ood_refuses_probabilities_and_a_single_class():
    # the same checks as calibration: softmaxed rows would give a meaningless AUROC without a word
    z = torch.randn(30, 4, dtype=torch.float64)
    p = torch.softmax(z, 1)
    with pytest.raises(DataError, match="^the OOD logits look like probabilities"):
        F.ood_detection(z, p)
    with pytest.raises(DataError, match="^the in-distribution logits look like probabilities"):
        F.ood_detection(p, z)
    with pytest.raises(DataError, match="need at least 2 classes; the logits have 1 column"):
        F.ood_detection(z[:, :1], z[:, :1])


def test_one_sided_features_are_named_when_feature_l1_is_skipped():
    z = torch.randn(30, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="^CE: features given for the OOD samples only; the feature_l1"):
        res = F.ood_detection(z, z[:10] * 2, None, torch.rand(10, 5), name="CE")
    assert set(res.auroc) == {"max_softmax", "max_logit", "energy"}


@pytest.mark.parametrize("h, why", [(np.ones((1, 3)), "needs at least 2 samples; got 1"),
                                    (np.ones((6, 3)), "all samples have the same feature L1 norm")])
def test_an_undefined_nci_is_skipped_and_the_aurocs_stand(h, why):
    n = h.shape[0]
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5], [1.0, 0.0], [0.2, 0.0]])[:n]
    y = torch.tensor([0, 0, 0, 1, 1, 0])[:n]
    with pytest.warns(RuntimeWarning, match=f"^CE: .*{why}.*; the NCI is skipped"):
        res = F.misclassification_scores(z, y, h, name="CE")
    assert res.nci is None and "feature_l1" in res.auroc
    if n > 1:    # the AUROCs are the brute-force pair counts on the same scores
        correct = (z.argmax(1) == y).numpy()
        ms = res.scores["max_softmax"]
        assert res.auroc["max_softmax"] == pytest.approx(pairwise_auroc(ms[correct], ms[~correct]))
        assert res.auroc["feature_l1"] == 0.5          # one norm for all: chance

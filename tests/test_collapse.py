"""Neural collapse NC1-NC4 and VCI against a direct numpy computation and a perfectly collapsed case."""
import numpy as np
import pytest

import repanalysis  # noqa: F401
from repanalysis.analyze.collapse import neural_collapse
from repanalysis.errors import DataError
from repanalysis.extract.store import Dump


def numpy_reference(h, y, w, b):
    classes = np.unique(y)
    c = len(classes)
    mu = np.stack([h[y == k].mean(0) for k in classes])
    mu_g = mu.mean(0)
    m = mu - mu_g
    centred = h - mu[np.searchsorted(classes, y)]
    s_w = centred.T @ centred / len(h)
    s_b = m.T @ m / c
    nc1 = np.trace(s_w @ np.linalg.pinv(s_b, hermitian=True)) / c
    norms = np.linalg.norm(m, axis=1)
    equinorm = norms.std(ddof=1) / norms.mean()
    cos = (m / norms[:, None]) @ (m / norms[:, None]).T
    off = cos[~np.eye(c, dtype=bool)]
    wc = w[classes]
    nc3 = np.sum((wc / np.linalg.norm(wc) - m / np.linalg.norm(m)) ** 2)
    pred = (h @ w.T + b).argmax(1)
    ncc = classes[((h[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1)]
    # Xu & Liu 2023: S_T the sample total covariance (1/N), written independently with np.cov
    s_t = np.cov(h, rowvar=False, bias=True)
    vci = 1 - np.trace(np.linalg.pinv(s_t, hermitian=True) @ s_b) / np.linalg.matrix_rank(s_b)
    vci_balanced = 1 - np.trace(np.linalg.pinv(s_w + s_b, hermitian=True) @ s_b) / np.linalg.matrix_rank(s_b)
    l2 = np.linalg.norm(h, axis=1)
    return dict(nc1=nc1, nc2_equinorm=equinorm, nc2_equiangular=off.std(ddof=1),
                nc2_max_angle=np.abs(off + 1 / (c - 1)).mean(), nc3=nc3, nc4=np.mean(pred != ncc), vci=vci,
                vci_balanced=vci_balanced,
                l2_mean=np.array([l2[y == k].mean() for k in classes]),
                l1_std=np.array([np.abs(h[y == k]).sum(1).std(ddof=1) for k in classes]))


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    k, d, n = 6, 10, 400
    y = rng.integers(0, k, n)
    h = rng.normal(size=(k, d))[y] * 1.5 + rng.normal(size=(n, d))
    w, b = rng.normal(size=(k, d)), rng.normal(size=k)
    r = neural_collapse(h, y, classifier_weight=w, classifier_bias=b, chunk_size=37)
    ref = numpy_reference(h, y, w, b)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "nc3", "nc4", "vci"):
        assert getattr(r, key) == pytest.approx(ref[key], rel=1e-8, abs=1e-10), key
    np.testing.assert_allclose(r.norm_l2_mean, ref["l2_mean"], rtol=1e-10)
    np.testing.assert_allclose(r.norm_l1_std, ref["l1_std"], rtol=1e-8)
    assert r.rank_sb == k - 1
    # NC4 from logits equals NC4 from W, b
    r2 = neural_collapse(h, y, logits=h @ w.T + b)
    assert r2.nc4 == r.nc4 and r2.nc3 is None


def _imbalanced(counts, d=8, seed=5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    h = rng.normal(size=(len(counts), d))[y] * 2.0 + rng.normal(size=(len(y), d)) * rng.uniform(0.5, 2, d)
    return h + 3.0, y


def test_vci_uses_the_sample_total_covariance_on_imbalanced_classes():
    """Xu & Liu 2023: S_T is the sample total covariance; with 200/100/50/25 samples per class it is not S_W + S_B."""
    h, y = _imbalanced([200, 100, 50, 25])
    s_b_rank = 3
    mu = np.stack([h[y == k].mean(0) for k in range(4)])
    m = mu - mu.mean(0)
    s_b = m.T @ m / 4
    s_t = np.cov(h.T, bias=True)                               # (1/N) sum (h - mean h)(h - mean h)^T
    expected = 1 - np.trace(np.linalg.pinv(s_t) @ s_b) / np.linalg.matrix_rank(s_b)
    assert np.linalg.matrix_rank(s_b) == s_b_rank
    r = neural_collapse(h, y, chunk_size=53)
    assert r.vci_total == "sample" and r.to_dict()["vci_total"] == "sample"
    assert r.vci == pytest.approx(expected, rel=1e-9)
    # the old, class-balanced total S_W + S_B is still offered and differs clearly on these classes
    centred = h - mu[y]
    s_w = centred.T @ centred / len(h)
    balanced = 1 - np.trace(np.linalg.pinv(s_w + s_b) @ s_b) / s_b_rank
    rb = neural_collapse(h, y, vci_total="balanced")
    assert rb.vci == pytest.approx(balanced, rel=1e-9) and rb.vci_total == "balanced"
    assert abs(expected - balanced) > 0.1                        # 0.048 against 0.231 here
    assert rb.nc1 == pytest.approx(r.nc1, rel=1e-12)            # only the VCI depends on the option


def test_vci_on_balanced_classes_equals_the_within_plus_between_formula():
    h, y = _imbalanced([50, 50, 50, 50, 50], seed=7)
    ref = numpy_reference(h, y, np.eye(5, 8), np.zeros(5))
    assert ref["vci"] == pytest.approx(ref["vci_balanced"], rel=1e-10)   # S_T = S_W + S_B when balanced
    r, rb = neural_collapse(h, y), neural_collapse(h, y, vci_total="balanced")
    assert r.vci == pytest.approx(ref["vci"], rel=1e-9) and rb.vci == pytest.approx(ref["vci_balanced"], rel=1e-9)


def test_unknown_vci_total_is_refused():
    h, y = _imbalanced([10, 10])
    with pytest.raises(DataError, match="unknown vci_total 'total'; expected one of sample, balanced"):
        neural_collapse(h, y, vci_total="total")


def test_perfect_collapse_is_all_zero():
    k, d = 4, 6
    etf = np.eye(k) - 1.0 / k  # simplex ETF in R^k, rows sum to zero
    means = np.zeros((k, d))
    means[:, :k] = etf * 3
    y = np.repeat(np.arange(k), 5)
    h = means[y]  # no within-class variability
    r = neural_collapse(h, y, classifier_weight=means, classifier_bias=np.zeros(k))
    assert r.nc1 == pytest.approx(0, abs=1e-12)
    assert r.nc2_equinorm == pytest.approx(0, abs=1e-12)
    assert r.nc2_max_angle == pytest.approx(0, abs=1e-12)
    assert r.nc3 == pytest.approx(0, abs=1e-12)
    assert r.nc4 == 0
    assert r.vci == pytest.approx(0, abs=1e-12)


def test_dump_input_and_errors():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    h = rng.normal(size=(60, 5)) + 4 * np.eye(5)[y]
    w = rng.normal(size=(3, 5))
    dump = Dump.from_arrays(h @ w.T, y, h.astype(np.float32), classifier_weight=w, classifier_bias=np.zeros(3),
                            name="CE")
    r = neural_collapse(dump, chunk_size=16)
    ref = numpy_reference(h.astype(np.float32).astype(np.float64), y, w, np.zeros(3))
    assert r.nc1 == pytest.approx(ref["nc1"], rel=1e-8) and r.name == "CE"
    with pytest.raises(DataError, match="at least 2 classes"):
        neural_collapse(h, np.zeros(60, int))
    h_bad = h.copy()
    h_bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        neural_collapse(h_bad, y)
    with pytest.raises(DataError, match=r"\(K, 5\)"):
        neural_collapse(h, y, classifier_weight=np.ones((3, 4)))


def _toy():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    h = rng.normal(size=(60, 4)) + np.repeat(np.eye(3, 4) * 3, 20, 0)
    w = rng.normal(size=(3, 4))
    return h, y, w, h @ w.T


def test_fractional_labels_are_refused():
    h, y, _, _ = _toy()
    with pytest.raises(DataError, match="integer class indices"):
        neural_collapse(h, y + 0.9)
    assert neural_collapse(h, y.astype(float)).nc1 == neural_collapse(h, y).nc1


def test_labels_beyond_k_are_refused():
    h, y, _, z = _toy()
    y_big = y.copy()
    y_big[-1] = 10**7
    with pytest.raises(DataError, match="labels reach class 10000000 but the logits have 3 columns"):
        neural_collapse(h, y_big, logits=z)
    with pytest.raises(DataError, match="labels reach class 10000000 but num_classes is 3"):
        neural_collapse(h, y_big, num_classes=3)


def test_sparse_labels_without_k_are_compacted():
    # no K known: a label of 10**12 used to allocate (10**12 + 1) x D sums; only the values present count
    h, y, _, _ = _toy()
    y_dense, y_sparse = y.copy(), y.copy()
    y_dense[-3:], y_sparse[-3:] = 3, 10**12
    r = neural_collapse(h, y_sparse, chunk_size=7)
    ref = numpy_reference(h, y_dense, np.eye(4), np.zeros(4))
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "vci"):
        assert getattr(r, key) == pytest.approx(ref[key], rel=1e-8, abs=1e-10), key
    np.testing.assert_array_equal(r.classes, [0, 1, 2, 10**12])
    np.testing.assert_array_equal(r.counts, [20, 20, 17, 3])


@pytest.mark.parametrize("kwargs, match", [
    ({"logits": "nan"}, "logits contain NaN or inf"),
    ({"logits": "narrow"}, "labels reach class 2 but the logits have 2 columns"),
    ({"logits": "1d"}, r"logits must be 2-D \[N, K\]"),
    ({"classifier_weight": "nan"}, "classifier weight contains NaN or inf"),
    ({"classifier_weight": "w", "classifier_bias": np.zeros(2)}, r"classifier bias has shape \(2,\); expected \(3,\)"),
    ({"classifier_weight": "w", "classifier_bias": np.zeros((3, 1))}, r"classifier bias has shape \(3, 1\)"),
    ({"classifier_weight": "w", "classifier_bias": np.array([0, np.inf, 0])}, "classifier bias contains NaN"),
    ({"classifier_weight": "narrow"}, "labels reach class 2 but the classifier weight has 2 rows"),
])
def test_bad_logits_and_classifier_are_refused(kwargs, match):
    h, y, w, z = _toy()
    z_nan = z.copy()
    z_nan[:5, 0] = np.nan
    pick = {"logits": {"nan": z_nan, "narrow": z[:, :2], "1d": z[:, 0]},
            "classifier_weight": {"nan": w * np.nan, "w": w, "narrow": w[:2]}}
    kwargs = {k: pick[k][v] if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(DataError, match=match):
        neural_collapse(h, y, **kwargs)


@pytest.mark.parametrize("case", ["constant", "same means"])
def test_coinciding_class_means_are_refused(case):
    y = np.r_[np.zeros(17, int), np.ones(43, int)]  # unequal counts: the means differ by rounding only
    if case == "constant":
        h = np.full((60, 4), 0.1)
    else:  # within-class spread, but both classes centred on the same point
        h = np.r_[np.tile([[1.0, 0.3], [-1.0, -0.3]], (8, 1)), [[0.0, 0.0]],
                  np.tile([[0.2, 1.0], [-0.2, -1.0]], (21, 1)), [[0.0, 0.0]]]
    with pytest.raises(DataError, match="the class means coincide"):
        neural_collapse(h, y)


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5])
def test_chunk_size_and_device_are_checked(chunk_size):
    h, y, _, _ = _toy()
    with pytest.raises(DataError, match=r"chunk_size \(rows per chunk\) must be an integer >= 1"):
        neural_collapse(h, y, chunk_size=chunk_size)
    with pytest.raises(DataError, match="unknown device 'gpu'"):
        neural_collapse(h, y, device="gpu")


def test_class_mean_at_the_global_mean_leaves_its_cosines_out():
    """Class means (-1, 0), (1, 0), (0, 0): the class-balanced global mean is (0, 0), so class 2 has no
    direction; the other two centred means are opposite: cosine -1, std 0, |cos + 1/(C-1)| = |-1 + 1/2|."""
    jitter = np.array([[0.1, 0.1], [0.1, -0.1], [-0.1, 0.1], [-0.1, -0.1]])
    means = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    h = (means[:, None, :] + jitter[None]).reshape(-1, 2)
    y = np.repeat([0, 1, 2], 4)
    with pytest.warns(RuntimeWarning, match=r"class\(es\) \[2\] have their mean at the global mean"):
        r = neural_collapse(h, y)
    assert r.nc2_equiangular == 0.0 and r.nc2_max_angle == pytest.approx(0.5, abs=1e-15)
    assert np.isfinite(r.nc1) and r.nc2_equinorm == pytest.approx(np.std([1, 1, 0], ddof=1) / (2 / 3))


@pytest.mark.parametrize("option", [None, "sample", "balanced"])
def test_collapse_cli_vci_total(tmp_path, capsys, option):
    import json

    from _cli import run_cli

    h, y = _imbalanced([200, 100, 50, 25])
    w = np.eye(4, 8)
    Dump.from_arrays(h @ w.T, y, h, classifier_weight=w, classifier_bias=np.zeros(4), name="A").save(tmp_path / "a")
    argv = ["collapse", str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--json"]
    code, out, err = run_cli(argv + (["--vci-total", option] if option else []), capsys)
    assert code == 0, err
    got = json.loads(out)[0]
    assert got["vci_total"] == (option or "sample")
    assert got["vci"] == pytest.approx(neural_collapse(h, y, vci_total=option or "sample").vci, rel=1e-9)

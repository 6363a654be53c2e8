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
    vci = 1 - np.trace(np.linalg.pinv(s_w + s_b, hermitian=True) @ s_b) / np.linalg.matrix_rank(s_b)
    l2 = np.linalg.norm(h, axis=1)
    return dict(nc1=nc1, nc2_equinorm=equinorm, nc2_equiangular=off.std(ddof=1),
                nc2_max_angle=np.abs(off + 1 / (c - 1)).mean(), nc3=nc3, nc4=np.mean(pred != ncc), vci=vci,
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

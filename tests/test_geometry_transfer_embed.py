"""Linear probe against scikit-learn's LogisticRegression; t-SNE / UMAP embeddings keep clusters apart."""
import numpy as np
import pytest

import repanalysis  # noqa: F401
from repanalysis.analyze.embed import embed_dump, embed_features
from repanalysis.analyze.transfer import fit_probe, linear_probe, probe_dumps
from repanalysis.errors import DataError
from repanalysis.extract.store import Dump

from _bars import record_bars


def _blobs(seed, n=300, d=8, k=4, spread=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(k, d))[y] * 2 + spread * rng.normal(size=(n, d)) + 5.0
    return x.astype(np.float32), y


def test_probe_matches_sklearn():
    import torch
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(0, spread=2.0)
    lam = 1e-2
    fit = fit_probe(torch.from_numpy(x), torch.from_numpy(y), 4, lam, max_iter=1000, tol=1e-9)
    xs = (x - x.mean(0)) / x.std(0)
    ref = LogisticRegression(C=1.0 / (len(x) * lam), tol=1e-10, max_iter=5000).fit(xs, y)
    np.testing.assert_allclose(fit.weight.numpy(), ref.coef_, atol=2e-3)
    p_ours = torch.softmax(fit.logits(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(p_ours, ref.predict_proba(xs), atol=1e-3)


def test_linear_probe_scores_and_selects_l2():
    x, y = _blobs(1, n=400, spread=2.5)
    r = linear_probe(x[:300], y[:300], x[300:], y[300:], device="cpu", l2_grid=(1e-4, 1e-2, 1.0))
    assert set(r.val_accuracy) == {1e-4, 1e-2, 1.0}
    assert r.l2 in r.val_accuracy and r.val_accuracy[r.l2] == max(r.val_accuracy.values())
    # test accuracy equals an independent count with sklearn at the chosen l2
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x[:300])
    ref = LogisticRegression(C=1.0 / (300 * r.l2), tol=1e-10, max_iter=5000).fit(sc.transform(x[:300]), y[:300])
    assert r.test_accuracy == pytest.approx(ref.score(sc.transform(x[300:]), y[300:]), abs=1 / 100 + 1e-9)
    assert r.n_train == 300 and r.n_test == 100 and r.num_classes == 4


def test_probe_dumps_and_errors():
    x, y = _blobs(2)
    tr = Dump.from_arrays(np.zeros((200, 1000)), y[:200], x[:200], class_names=list("abcdef"), name="CE")
    te = Dump.from_arrays(np.zeros((100, 1000)), y[200:], x[200:], class_names=list("abcdef"))
    r = probe_dumps(tr, te, l2=1e-3, device="cpu")
    assert r.num_classes == 6 and r.name == "CE" and r.test_accuracy > 0.9
    with pytest.raises(DataError, match="width"):
        linear_probe(x, y, x[:, :3], y, l2=1e-3, device="cpu")
    with pytest.raises(DataError, match="single class"):
        linear_probe(x, np.zeros_like(y), x, y, l2=1e-3, device="cpu")


def _knn_accuracy(coords, labels):
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.mean(labels[d.argmin(1)] == labels)


def test_tsne_seeded_and_separates():
    x, y = _blobs(3, n=240, d=20, k=6, spread=0.3)
    a = embed_features(x, y, [0, 2, 5], method="tsne", samples_per_class=30, seed=1, perplexity=15)
    b = embed_features(x, y, [0, 2, 5], method="tsne", samples_per_class=30, seed=1, perplexity=15)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.coords.shape == (len(a.labels), 2) and set(a.labels) == {0, 2, 5}
    assert _knn_accuracy(a.coords, a.labels) > 0.95


@pytest.mark.slow
def test_umap_separates_and_dump_names():
    x, y = _blobs(4, n=150, d=10, k=3, spread=0.3)
    dump = Dump.from_arrays(np.zeros((150, 3)), y, x, class_names=["cat", "dog", "fox"], name="LS")
    r = embed_dump(dump, method="umap", samples_per_class=None, seed=0, n_neighbors=10)
    assert r.class_names == ["cat", "dog", "fox"] and r.name == "LS"
    assert _knn_accuracy(r.coords, r.labels) > 0.95
    with pytest.raises(DataError, match="unknown embedding method"):
        embed_features(x, y, method="pca")


def test_umap_is_not_imported_at_import_time():
    import subprocess
    import sys

    code = ("import sys, repanalysis, repanalysis.analyze.embed, repanalysis.cli.embed; "
            "print('umap' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_embed_dump_takes_class_names():
    x, y = _blobs(5, n=120, d=6, k=3, spread=0.3)
    dump = Dump.from_arrays(np.zeros((120, 3)), y, x, class_names=["cat", "dog", "fox"], name="LS")
    r = embed_dump(dump, ["fox", "cat"], method="tsne", samples_per_class=None, seed=0)
    assert r.classes == [2, 0] and r.class_names == ["fox", "cat"] and set(r.labels.tolist()) == {0, 2}
    with pytest.raises(DataError, match="did you mean 'dog'"):
        embed_dump(dump, ["cat", "dgo"], method="tsne")


def test_probe_refuses_fractional_labels():
    x, y = _blobs(6, n=120)
    with pytest.raises(DataError, match="train labels must be integer class indices"):
        linear_probe(x, y + 0.5, x, y, l2=1e-2, device="cpu")
    with pytest.raises(DataError, match="test labels must be integer class indices"):
        linear_probe(x, y, x, y + 0.5, l2=1e-2, device="cpu")


_MAX_ITER = r"max_iter \(L-BFGS iterations\) must be an integer >= 1"
_VAL_FRACTION = r"val_fraction \(the held-out share of the train set\) must be a finite number > 0 and < 1"


@pytest.mark.parametrize("kwargs, match", [
    ({"l2": 1e-2, "max_iter": 0}, _MAX_ITER),
    ({"l2": 1e-2, "max_iter": -1}, _MAX_ITER),
    ({"l2": 1e-2, "max_iter": 2.5}, _MAX_ITER),
    ({"val_fraction": 0}, _VAL_FRACTION),
    ({"val_fraction": -0.2}, _VAL_FRACTION),
    ({"val_fraction": 1.0}, _VAL_FRACTION),
    ({"val_fraction": float("nan")}, _VAL_FRACTION),
])
def test_probe_checks_max_iter_and_val_fraction(kwargs, match):
    x, y = _blobs(7, n=120)
    with pytest.raises(DataError, match=match):
        linear_probe(x, y, x, y, device="cpu", **kwargs)


def test_probe_accepts_numpy_scalar_l2():
    x, y = _blobs(8, n=200, spread=2.5)
    a = linear_probe(x[:150], y[:150], x[150:], y[150:], l2=np.float32(1e-2), device="cpu")
    b = linear_probe(x[:150], y[:150], x[150:], y[150:], l2=float(np.float32(1e-2)), device="cpu")
    assert a.l2 == b.l2 and a.test_accuracy == b.test_accuracy
    assert a.test_nll == pytest.approx(b.test_nll, rel=1e-6)


@pytest.mark.parametrize("seed", [1.5, True, "a", -1, 2**70])
def test_probe_refuses_a_seed_that_is_no_valid_integer(seed):
    x, y = _blobs(9, n=120)
    with pytest.raises(DataError, match="seed"):
        linear_probe(x, y, x, y, device="cpu", seed=seed)


def test_probe_dumps_with_names_for_the_first_classes_only():
    # Dump.from_arrays allows fewer names than classes: K comes from the labels then (4 classes, 2 names)
    x, y = _blobs(10, k=4)
    tr = Dump.from_arrays(np.zeros((200, 4)), y[:200], x[:200], class_names=["a", "b"])
    te = Dump.from_arrays(np.zeros((100, 4)), y[200:], x[200:], class_names=["a", "b"])
    assert probe_dumps(tr, te, l2=1e-3, device="cpu").num_classes == 4


def test_umap_is_seeded_and_its_parameters_reach_umap_learn():
    import umap

    x, y = _blobs(11, n=120, d=10, k=3, spread=0.8)
    kw = {"n_neighbors": 8, "min_dist": 0.4, "metric": "euclidean"}
    a = embed_features(x, y, method="umap", samples_per_class=None, seed=7, **kw)
    b = embed_features(x, y, method="umap", samples_per_class=None, seed=7, **kw)
    np.testing.assert_array_equal(a.coords, b.coords)                   # two runs, identical coordinates
    assert a.params == kw and a.seed == 7

    def direct(**changes):     # umap-learn called directly on the same rows with the same parameters
        params = {**kw, "random_state": 7, **changes}
        return umap.UMAP(n_components=2, **params).fit_transform(x[a.sample_index]).astype(np.float64)

    np.testing.assert_array_equal(a.coords, direct())
    # each parameter changes umap-learn's answer, so the equality above shows every one of them reached it
    for change in ({"n_neighbors": 15}, {"min_dist": 0.1}, {"metric": "cosine"}, {"random_state": 8}):
        assert not np.allclose(a.coords, direct(**change)), change


def test_probe_and_embed_draw_their_progress_bars(monkeypatch):
    from repanalysis.analyze import embed, transfer

    bars = record_bars(monkeypatch, transfer)
    x, y = _blobs(12, n=200)
    linear_probe(x[:150], y[:150], x[150:], y[150:], device="cpu", l2_grid=(1e-3, 1e-2, 1e-1), name="CE")
    linear_probe(x[:150], y[:150], x[150:], y[150:], device="cpu", l2=1e-2, progress=False)
    assert [(b.total, b.n, b.kw["unit"], b.kw["enabled"]) for b in bars] == [(4, 4, "fit", True), (1, 1, "fit", False)]
    assert bars[0].kw["desc"] == "probe CE"

    seen = []

    def spy_track(items, **kw):
        items = list(items)
        seen.append((len(items), kw["unit"], kw["enabled"]))
        return iter(items)

    monkeypatch.setattr(embed, "track", spy_track)
    x, y = _blobs(13, n=90, d=6, k=3, spread=0.3)
    dumps = [Dump.from_arrays(np.zeros((90, 3)), y, x + i, class_names=["a", "b", "c"], name=n)
             for i, n in enumerate(("CE", "LS"))]
    results = embed.embed_dumps(dumps, method="tsne", samples_per_class=None, perplexity=10, progress=False)
    assert [r.name for r in results] == ["CE", "LS"] and seen == [(2, "model", False)]

"""embed_features on bad input: one-line DataErrors before UMAP / t-SNE run (constant features used to
segfault scikit-learn's t-SNE), and the spellings that are accepted give the same embedding."""
import numpy as np
import pytest

import repanalysis  # noqa: F401
from repanalysis.analyze.embed import embed_features
from repanalysis.errors import DataError


def _blobs(seed=0, n=60, d=5, k=3):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    x = rng.normal(size=(k, d))[y] * 3 + rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


def _tsne(x, y, classes=None, **kw):
    kw = {"method": "tsne", "samples_per_class": None, "seed": 0, "perplexity": 10, **kw}
    return embed_features(x, y, classes, **kw)


@pytest.mark.parametrize("method", ["tsne", "umap"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("fill", [0.0, 3.0])
def test_constant_features_are_refused_before_the_library_runs(method, metric, fill):
    # before: t-SNE killed the process (segmentation fault in its Barnes-Hut tree); UMAP returned coordinates
    x = np.full((40, 5), fill, np.float32)
    with pytest.raises(DataError, match=r"features have no spread \(all rows identical\)"):
        embed_features(x, np.repeat([0, 1, 2, 3], 10), method=method, metric=metric, samples_per_class=10)


def test_spread_below_float32_resolution_is_no_spread():
    # 1e-25 differences: the float32 variance underflows to 0 and t-SNE's PCA start divided by it (segfault)
    x = (1e-25 * np.random.default_rng(0).standard_normal((40, 5))).astype(np.float32)
    assert len(np.unique(x, axis=0)) == 40  # the rows do differ
    with pytest.raises(DataError, match="no spread"):
        _tsne(x, np.repeat([0, 1, 2, 3], 10), perplexity=30)


def test_one_differing_row_is_enough_spread():
    x = np.zeros((40, 5), np.float32)
    x[7] = 1.0
    r = _tsne(x, np.repeat([0, 1, 2, 3], 10))
    assert r.coords.shape == (40, 2) and np.isfinite(r.coords).all()


def test_accepted_spellings_give_the_same_embedding():
    x, y = _blobs()
    ref = _tsne(x, y, [0, 2])
    # features as a list (TypeError before), classes as '0,2' (ValueError before), integral float labels
    for r in (_tsne(x.tolist(), y, [0, 2]), _tsne(x, y, "0,2"), _tsne(x, y.astype(float), [0, 2]),
              _tsne(x, y, np.array([0, 2]))):
        assert r.classes == [0, 2]
        np.testing.assert_array_equal(r.sample_index, ref.sample_index)
        np.testing.assert_array_equal(r.coords, ref.coords)


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "bogus"}, "unknown metric 'bogus'; expected one of cosine, euclidean"),
    ({"perplexity": 0}, "perplexity must be a finite number > 0; got 0"),
    ({"perplexity": -5.0}, "perplexity must be a finite number > 0"),
    ({"perplexity": float("nan")}, "perplexity must be a finite number > 0"),
    ({"method": "umap", "n_neighbors": 1}, "n_neighbors must be an integer >= 2; got 1"),
    ({"method": "umap", "n_neighbors": 4.5}, "n_neighbors must be an integer >= 2; got 4.5"),
    ({"method": "umap", "min_dist": -0.1}, "min_dist must be a finite number >= 0 and <= 1"),
    ({"samples_per_class": 0}, "samples_per_class must be a positive integer or None .*; got 0"),
    ({"samples_per_class": -1}, "samples_per_class must be a positive integer or None"),
    ({"samples_per_class": 2.5}, "samples_per_class must be a positive integer or None .*; got 2.5"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": 2**32}, "seed must be an integer >= 0 and <= 4294967295"),
])
def test_bad_options_raise_one_line_data_errors(kwargs, message):
    x, y = _blobs()
    with pytest.raises(DataError, match=message) as err:
        embed_features(x, y, **{"method": "tsne", **kwargs})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make, message", [
    (lambda x, y: (x, y + 0.5, None), "labels must be integer class indices; got non-integer values"),
    (lambda x, y: (x, y[:, None], None), r"labels must be 1-D with one class index per sample; got shape \(60, 1\)"),
    (lambda x, y: (x, y - 1, None), "labels must be class indices >= 0; found -1"),
    (lambda x, y: (x, y.astype(str), None), "expected an array of numbers; got text"),
    (lambda x, y: (x[:, :3].astype(str), y, None), "features must be numbers"),
    (lambda x, y: ([[1.0, 2.0], [3.0]], [0, 1], None), "features must be an array of numbers"),
    (lambda x, y: (x, y, "cat,dog"), "classes must be class indices .*got 'cat,dog'.*embed_dump"),
    (lambda x, y: (x, y, [0, 1.5]), "classes must be integer class indices"),
    (lambda x, y: (x, y, [0, -1]), "classes must be class indices >= 0; found -1"),
    (lambda x, y: (x, y, 2), "classes must be class indices"),
    (lambda x, y: (x, y, [1, 1, 2]), r"classes must be distinct; got \[1, 1, 2\]"),
])
def test_bad_arrays_raise_one_line_data_errors(make, message):
    features, labels, classes = make(*_blobs())
    with pytest.raises(DataError, match=message) as err:
        embed_features(features, labels, classes, method="tsne")
    assert "\n" not in str(err.value)


def test_more_scipy_metrics_and_umap_only_options_for_umap():
    x = np.random.default_rng(0).normal(size=(30, 4)) + np.repeat(np.eye(3, 4) * 4, 10, 0)
    y = np.repeat([0, 1, 2], 10)
    r = embed_features(x, y, method="tsne", metric="correlation", samples_per_class=None, n_neighbors=15.0)
    assert r.coords.shape == (30, 2) and np.isfinite(r.coords).all()
    with pytest.raises(DataError, match="n_neighbors must be an integer >= 2"):
        embed_features(x, y, method="umap", n_neighbors=1)


def test_class_sample_is_the_same_whichever_classes_are_embedded():
    # each class draws from default_rng([seed, k]): the embedded rows of class 2 do not depend on the order or
    # on the other classes asked for (one shared generator made them depend on both)
    x, y = _blobs(n=120)
    want = np.sort(np.random.default_rng([3, 2]).choice(np.flatnonzero(y == 2), 12, replace=False))
    for classes in ([0, 2], [2, 0], [1, 2, 0], None):
        r = _tsne(x, y, classes, samples_per_class=12, seed=3, perplexity=5)
        np.testing.assert_array_equal(r.sample_index[r.labels == 2], want)
